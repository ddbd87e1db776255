"""Teleport log lines of a simulated node, deterministic from the seed.

One generator feeds both the log file of `init: plain` nodes and the journal of systemd
nodes, so the same lines (and the same planted canaries) appear in both places.

Shapes (docs/teleport-formats.md): the slog text handler
`<RFC3339 ms> <LEVEL> [<COMPONENT>] padded to 12 <message> <key:value ...> <caller>` and the
slog JSON handler `{"timestamp", "level", "caller", "message", "component", attrs...}`.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from dataclasses import dataclass

from tpdump.sim.cluster import SimNode

LINE_INTERVAL_S = 7.3

Attrs = tuple[tuple[str, str], ...]

# (level, component, message, attrs, caller); "{pid}" etc. are filled per node.
_MESSAGES: list[tuple[str, str, str, Attrs, str]] = [
    ("info", "proc:1", "Service is creating new listener.",
     (("pid", "{pid}.1"), ("type", "debug"), ("address", "{data_dir}/debug.sock")),
     "service/signals.go:242"),
    ("info", "node:1", "Service is starting.", (("pid", "{pid}.1"), ("version", "{version}")),
     "service/service.go:3184"),
    ("info", "proc:1", "Connecting to the cluster with TLS client certificate.",
     (("pid", "{pid}.1"),), "service/connect.go:258"),
    ("info", "node:1:ca", "Cache \"node\" first init succeeded.", (), "cache/cache.go:1037"),
    ("debug", "keepalive", "Sent keepalive.", (("target", "{cluster}"),),
     "srv/keepalive.go:63"),
    ("info", "session:1", "Session started.", (("session_id", "{sid}"), ("login", "root")),
     "srv/sess.go:1156"),
    ("info", "audit", "session.start", (("cluster_name", "{cluster}"), ("code", "T2000I"),
                                        ("login", "root")), "events/emitter.go:287"),
    ("warn", "node:1", "Re-using existing host certificate.", (("pid", "{pid}.1"),),
     "service/connect.go:412"),
    ("debug", "node", "Heartbeat sent.", (("addr", "{addr}"),), "srv/heartbeatv2.go:455"),
]
_TUNNEL_MESSAGES: list[tuple[str, str, str, Attrs, str]] = [
    ("info", "node:1:agentpool", "Proxy transport established.",
     (("proxy", "{proxy}"), ("tunnel_addr", "{proxy_ip}:3024")), "reversetunnel/agent.go:511"),
    ("debug", "node:1:agentpool", "Reverse tunnel heartbeat.",
     (("proxy", "{proxy}"),), "reversetunnel/agent.go:432"),
]
_ERRORS: list[tuple[str, str, str, Attrs, str]] = [
    ("error", "proc:1", "Instance failed to establish connection to cluster.",
     (("pid", "{pid}.1"), ("error", "connection refused")), "service/connect.go:119"),
    ("error", "node:1", "Failed to dial the proxy.",
     (("error", "dial tcp {cluster}:443: i/o timeout"),), "reversetunnel/agent.go:391"),
    ("error", "node:1:ca", "Cache \"node\" failed to re-init.",
     (("error", "watcher is closed"),), "cache/cache.go:1012"),
]
# Where real secrets turn up in Teleport logs (headers, cookies, URLs); one line each.
_SECRETS: dict[str, tuple[str, str, str, Attrs, str]] = {
    "bearer": ("debug", "app:service", "Forwarding request to application.",
               (("method", "GET"), ("url", "https://grafana.internal:3000/api/health"),
                ("header", "Authorization: Bearer {canary}")), "app/transport.go:218"),
    "cookie": ("debug", "web", "Rejected request with an invalid web session.",
               (("header", "Cookie: session={canary}"), ("remote_addr", "10.12.0.7:51234")),
               "web/sessions.go:612"),
    "log_token": ("warn", "proc:1", "Failed to fetch the node installer script.",
                  (("url", "https://{cluster}:443/v1/webapi/scripts/installer?token={canary}"),
                   ("error", "connection refused")), "web/scripts.go:96"),
}

_QUOTE_RE = re.compile(r'[\s"=\x00-\x1f\x7f]')  # slog's needsQuoting


@dataclass(frozen=True)
class LogLine:
    """One line as the teleport process wrote it (`raw` ends with a newline)."""

    ts: float
    level: str  # debug | info | warn | error
    raw: bytes


def _go_quote(value: str) -> str:
    """strconv.Quote as the slog text handler uses it for values that need quoting."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def text_line(ts: float, level: str, component: str, message: str, attrs: Attrs,
              caller: str) -> str:
    """A line of Teleport's slog text handler (no newline)."""
    fields = " ".join(f"{k}:{_go_quote(v) if _QUOTE_RE.search(v) or not v else v}"
                      for k, v in attrs)
    comp = ("[" + component.upper() + "]").ljust(12)
    body = f"{message} {fields}" if fields else message
    return f"{stamp_ms(ts)} {level.upper()} {comp}{body} {caller}"


def json_line(ts: float, level: str, component: str, message: str, attrs: Attrs,
              caller: str) -> str:
    """A line of Teleport's slog JSON handler (no newline)."""
    doc: dict[str, str] = {
        "timestamp": dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "level": "warning" if level == "warn" else level,
        "caller": caller,
        "message": message,
        "component": component,
    }
    for k, v in attrs:
        doc.setdefault(k, v)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


_DAYS: dict[int, str] = {}


def stamp_ms(ts: float) -> str:
    """`2026-11-26T21:00:00.123Z`, by integer arithmetic (millions of lines are stamped)."""
    sec = int(ts)
    ms = min(999, round((ts - sec) * 1_000_000) // 1000)
    day, rem = divmod(sec, 86400)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = dt.datetime.fromtimestamp(day * 86400, dt.UTC).strftime(
            "%Y-%m-%dT")
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}Z"


def secret_positions(n: int) -> dict[int, str]:
    """Line numbers of the planted secret lines in a log of `n` lines."""
    out: dict[int, str] = {}
    for kind, at in (("bearer", n // 3), ("log_token", n // 2), ("cookie", (2 * n) // 3)):
        while at in out and at + 1 < n:
            at += 1
        if 0 <= at < n and at not in out:
            out[at] = kind
    return out


def log_lines(node: SimNode, end: float, seed: int, cluster_name: str,
              proxy_ip: str = "") -> list[LogLine]:
    """The node's Teleport log, the newest line just before `end` (node clock, offset added
    here), one line every ~7.3 s. Deterministic for a given (seed, node, end)."""
    g = node.inst.group
    n = g.log_lines
    rnd = random.Random(f"{seed}:{node.uuid}:log")
    end += g.clock_offset_s
    json_fmt = node.config.log_format == "json"
    garbage = g.fault == "garbage"
    values = {"pid": str(node.pid), "version": node.inst.version, "cluster": cluster_name,
              "addr": node.heartbeat_addr or "tunnel", "data_dir": node.config.data_dir,
              "proxy": f"{cluster_name}:3080", "proxy_ip": proxy_ip or "127.0.0.1"}
    secret_at = secret_positions(n) if node.canaries else {}
    normal = _MESSAGES + (_TUNNEL_MESSAGES if g.tunnel else [])
    out: list[LogLine] = []
    for i in range(n):
        ts = end - (n - i) * LINE_INTERVAL_S + rnd.random()
        kind = secret_at.get(i)
        if kind is not None and kind in node.canaries:
            level, comp, msg, attrs, caller = _SECRETS[kind]
            fill = dict(values, canary=node.canaries[kind])
        else:
            pick = _ERRORS if rnd.random() < g.log_error_rate else normal
            level, comp, msg, attrs, caller = rnd.choice(pick)
            fill = dict(values, sid=f"{rnd.getrandbits(64):016x}")
        real_attrs = tuple((k, v.format(**fill)) for k, v in attrs)
        make = json_line if json_fmt else text_line
        raw = make(ts, level, comp, msg, real_attrs, caller).encode() + b"\n"
        if garbage and i % 97 == 5:
            raw = raw[:20] + b"\xff\xfe\x00\xc3" + raw[20:]
        out.append(LogLine(ts, level, raw))
    if garbage and out:
        last = out[-1]
        out[-1] = LogLine(last.ts, last.level, last.raw[: len(last.raw) // 2])
    return out
