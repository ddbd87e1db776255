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


def _text_rest(level: str, component: str, message: str, attrs: Attrs, caller: str) -> str:
    """What follows the timestamp in a text line (no newline)."""
    fields = " ".join(f"{k}:{_go_quote(v) if _QUOTE_RE.search(v) or not v else v}"
                      for k, v in attrs)
    comp = ("[" + component.upper() + "]").ljust(12)
    body = f"{message} {fields}" if fields else message
    return f" {level.upper()} {comp}{body} {caller}"


def text_line(ts: float, level: str, component: str, message: str, attrs: Attrs,
              caller: str) -> str:
    """A line of Teleport's slog text handler (no newline)."""
    return stamp_ms(ts) + _text_rest(level, component, message, attrs, caller)


def _json_rest(level: str, component: str, message: str, attrs: Attrs, caller: str) -> str:
    """A JSON line without its leading `{"timestamp":"<stamp>",` (no newline)."""
    doc: dict[str, str | None] = {
        "timestamp": None,
        "level": "warning" if level == "warn" else level,
        "caller": caller,
        "message": message,
        "component": component,
    }
    for k, v in attrs:
        doc.setdefault(k, v)
    del doc["timestamp"]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))[1:]


def json_line(ts: float, level: str, component: str, message: str, attrs: Attrs,
              caller: str) -> str:
    """A line of Teleport's slog JSON handler (no newline)."""
    return '{"timestamp":"' + stamp_s(ts) + '",' + _json_rest(level, component, message,
                                                              attrs, caller)


_DAYS: dict[int, str] = {}
_SEC2 = [f"{i:02d}" for i in range(60)]
_MS3 = [f"{i:03d}" for i in range(1000)]


def _clock(sec: int) -> str:
    """`2026-11-26T21:00:00` of whole seconds since the epoch (the date made once a day)."""
    day, rem = divmod(sec, 86400)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = dt.datetime.fromtimestamp(day * 86400, dt.UTC).strftime(
            "%Y-%m-%dT")
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}"


def stamp_ms(ts: float) -> str:
    """`2026-11-26T21:00:00.123Z`, by integer arithmetic (millions of lines are stamped)."""
    sec = int(ts)
    ms = min(999, round((ts - sec) * 1_000_000) // 1000)
    return f"{_clock(sec)}.{ms:03d}Z"


def stamp_s(ts: float) -> str:
    """`2026-11-26T21:00:00Z` exactly as `datetime.fromtimestamp(ts, UTC).strftime(
    "%Y-%m-%dT%H:%M:%SZ")` prints it (microseconds rounded half to even first)."""
    if ts < 0:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sec = int(ts)
    if round((ts - sec) * 1e6) >= 1_000_000:
        sec += 1
    return f"{_clock(sec)}Z"


def secret_positions(n: int) -> dict[int, str]:
    """Line numbers of the planted secret lines in a log of `n` lines."""
    out: dict[int, str] = {}
    for kind, at in (("bearer", n // 3), ("log_token", n // 2), ("cookie", (2 * n) // 3)):
        while at in out and at + 1 < n:
            at += 1
        if 0 <= at < n and at not in out:
            out[at] = kind
    return out


class _Template:
    """A message rendered for one node: everything after the timestamp, or (for messages
    that carry a per-line session id) what is needed to render it per line."""

    __slots__ = ("level", "parts", "rest")

    def __init__(self, level: str, rest: str | None,
                 parts: tuple[str, str, str, Attrs, str, dict[str, str]] | None) -> None:
        self.level = level
        self.rest = rest  # None: depends on the session id
        self.parts = parts

    def render(self, sid: str, json_fmt: bool) -> str:
        if self.rest is not None:
            return self.rest
        assert self.parts is not None
        level, comp, msg, attrs, caller, values = self.parts
        fill = dict(values, sid=sid)
        real = tuple((k, v.format_map(fill)) for k, v in attrs)
        return (_json_rest if json_fmt else _text_rest)(level, comp, msg, real, caller) + "\n"


def _template(msg: tuple[str, str, str, Attrs, str], values: dict[str, str],
              json_fmt: bool) -> _Template:
    level, comp, text, attrs, caller = msg
    if any("{sid}" in v for _, v in attrs):
        return _Template(level, None, (level, comp, text, attrs, caller, values))
    real = tuple((k, v.format_map(values)) for k, v in attrs)
    rest = (_json_rest if json_fmt else _text_rest)(level, comp, text, real, caller)
    return _Template(level, rest + "\n", None)


def _generate(node: SimNode, end: float, seed: int, cluster_name: str,
              proxy_ip: str, text_only: bool = False
              ) -> tuple[list[float], list[str], list[str]]:
    """Timestamps, levels and text (newline included) of the node's log lines (only the
    text, the other two lists left empty, when `text_only`).

    Every message is rendered once per node; a line is its timestamp and that text. The
    random draws are the same, in the same order, as rendering each line in full."""
    g = node.inst.group
    n = g.log_lines
    rnd = random.Random(f"{seed}:{node.uuid}:log")
    end += g.clock_offset_s
    json_fmt = node.config.log_format == "json"
    values = {"pid": str(node.pid), "version": node.inst.version, "cluster": cluster_name,
              "addr": node.heartbeat_addr or "tunnel", "data_dir": node.config.data_dir,
              "proxy": f"{cluster_name}:3080", "proxy_ip": proxy_ip or "127.0.0.1"}
    secret_at = {i: _template(_SECRETS[kind], dict(values, canary=node.canaries[kind]),
                              json_fmt)
                 for i, kind in (secret_positions(n) if node.canaries else {}).items()
                 if kind in node.canaries}
    normal = [_template(m, values, json_fmt)
              for m in _MESSAGES + (_TUNNEL_MESSAGES if g.tunnel else [])]
    errors = [_template(m, values, json_fmt) for m in _ERRORS]
    error_rate = g.log_error_rate
    random_, choice, getrandbits = rnd.random, rnd.choice, rnd.getrandbits
    tss: list[float] = []
    levels: list[str] = []
    texts: list[str] = []
    last_minute, prefix = -1, ""
    for i in range(n):
        ts = end - (n - i) * LINE_INTERVAL_S + random_()
        tpl = secret_at.get(i)
        if tpl is not None:
            rest = tpl.rest
        else:
            tpl = choice(errors if random_() < error_rate else normal)
            bits = getrandbits(64)
            rest = tpl.rest
            if rest is None:
                rest = tpl.render(f"{bits:016x}", json_fmt)
        assert rest is not None
        if not text_only:
            tss.append(ts)
            levels.append(tpl.level)
        # stamp_ms / stamp_s inline: the date and hh:mm are kept while the minute lasts
        if ts < 0:
            texts.append(('{"timestamp":"' + stamp_s(ts) + '",' if json_fmt
                          else stamp_ms(ts)) + rest)
            continue
        sec = int(ts)
        us = round((ts - sec) * 1_000_000)
        if json_fmt:
            if us >= 1_000_000:
                sec += 1
            minute = sec // 60
            if minute != last_minute:
                last_minute, prefix = minute, stamp_ms(minute * 60)[:-7]
            texts.append(f'{{"timestamp":"{prefix}{_SEC2[sec - minute * 60]}Z",{rest}')
        else:
            minute = sec // 60
            if minute != last_minute:
                last_minute, prefix = minute, stamp_ms(minute * 60)[:-7]
            ms = us // 1000
            if ms > 999:
                ms = 999
            texts.append(f"{prefix}{_SEC2[sec - minute * 60]}.{_MS3[ms]}Z{rest}")
    return tss, levels, texts


def _garble(i: int, raw: bytes) -> bytes:
    return raw[:20] + b"\xff\xfe\x00\xc3" + raw[20:] if i % 97 == 5 else raw


def log_rows(node: SimNode, end: float, seed: int, cluster_name: str,
             proxy_ip: str = "") -> tuple[list[float], list[str], list[bytes]]:
    """`log_lines` as three lists (timestamps, levels, raw lines): no object per line."""
    tss, levels, texts = _generate(node, end, seed, cluster_name, proxy_ip)
    if node.inst.group.fault != "garbage":
        return tss, levels, [text.encode() for text in texts]
    raws = [_garble(i, text.encode()) for i, text in enumerate(texts)]
    if raws:
        raws[-1] = raws[-1][: len(raws[-1]) // 2]
    return tss, levels, raws


def log_lines(node: SimNode, end: float, seed: int, cluster_name: str,
              proxy_ip: str = "") -> list[LogLine]:
    """The node's Teleport log, the newest line just before `end` (node clock, offset added
    here), one line every ~7.3 s. Deterministic for a given (seed, node, end)."""
    tss, levels, raws = log_rows(node, end, seed, cluster_name, proxy_ip)
    return [LogLine(ts, level, raw) for ts, level, raw in zip(tss, levels, raws, strict=True)]


def log_bytes(node: SimNode, end: float, seed: int, cluster_name: str,
              proxy_ip: str = "") -> bytes:
    """The log file: the raw lines of `log_lines` joined (without making a LogLine each)."""
    if node.inst.group.fault == "garbage":
        return b"".join(log_rows(node, end, seed, cluster_name, proxy_ip)[2])
    return "".join(_generate(node, end, seed, cluster_name, proxy_ip, True)[2]).encode()
