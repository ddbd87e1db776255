"""Findings about the cluster in a dump: `tpdump analyze ARCHIVE`, and the same analyzers
at dump time (report.json `findings`, report.txt, readme.html).

Data-driven: `ANALYZERS` is a table of functions over a read-only view of the archive's
files (`DumpView`); their limits are data (`THRESHOLDS`). Each finding has an id, a
severity (critical, warning, info), a one-line summary, the affected targets and evidence:
archive path, line number and the line itself."""

from __future__ import annotations

import base64
import json
import re
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import yaml

from tpdump.redact import Loader

SEVERITIES = ("critical", "warning", "info")
_QUOTED = re.compile(r'"[^"\n]*"')

# Every limit the analyzers use; change here (or pass another mapping to `analyze`).
THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "max_majors_behind": 1,          # agents more majors behind auth than this: critical
    "ca_expiry_warning_days": 30,    # a CA certificate expiring sooner: warning
    "ca_expiry_critical_days": 7,    # ... sooner than this (or expired): critical
    "heartbeat_stale_s": 600,        # inventory last_seen older than this: offline
    "error_share": 0.05,             # share of a log's lines at ERROR that is a burst
    "error_min_lines": 20,           # ... with at least this many error lines
    "clock_warning_s": 5,            # |clock offset| at least this: warning
    "clock_critical_s": 60,          # ... at least this: critical (certificates fail)
    "unreachable_critical_share": 0.5,  # this share of instances failed: critical
})

# Roles Teleport itself creates: never "orphaned" (they exist on every cluster).
PRESET_LABEL = "teleport.internal/resource-type"


@dataclass(frozen=True)
class Evidence:
    path: str
    line: int  # 1-based; 0 when the whole file is the evidence
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "text": self.text}


@dataclass
class Finding:
    id: str
    severity: str
    summary: str
    targets: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "summary": self.summary,
                "targets": self.targets, "evidence": [e.as_dict() for e in self.evidence],
                "details": self.details}


class DumpView:
    """A read-only view of a dump's files, with parsing helpers (cached)."""

    def __init__(self, files: Mapping[str, bytes], now: float | None = None) -> None:
        self.files = MappingProxyType(files if isinstance(files, dict) else dict(files))
        self._lines: dict[str, list[str]] = {}
        self._quoted: dict[str, dict[str, int]] = {}
        self.now = now if now is not None else self._dump_time()

    def _dump_time(self) -> float:
        report = self.json("report.json")
        if isinstance(report, dict) and isinstance(report.get("started"), str):
            t = parse_time(report["started"])
            if t is not None:
                return t
        return datetime.now(UTC).timestamp()

    def text(self, path: str) -> str | None:
        data = self.files.get(path)
        return None if data is None else data.decode("utf-8", "replace")

    def lines(self, path: str) -> list[str]:
        if path not in self._lines:
            text = self.text(path)
            self._lines[path] = [] if text is None else text.splitlines()
        return self._lines[path]

    def json(self, path: str) -> Any:
        text = self.text(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return None

    def yaml_docs(self, path: str) -> Iterator[tuple[int, Any]]:
        """(first line number, document) of each document of a multi-document YAML file,
        one at a time (ten thousand node objects are not held at once, nor kept as lines)."""
        lines = self._lines.get(path)
        if lines is None:
            text = self.text(path)
            lines = [] if text is None else text.splitlines()
        start, chunk = 1, list[str]()
        for i, line in enumerate([*lines, "---"], start=1):
            if line.rstrip() == "---":
                if any(x.strip() for x in chunk):
                    try:
                        doc = yaml.load("\n".join(chunk), Loader=Loader)
                    # ValueError: a value YAML cannot build (`2024-02-30`, `!!int abc`).
                    except (yaml.YAMLError, ValueError, RecursionError):
                        pass
                    else:
                        yield start, doc
                start, chunk = i + 1, []
            else:
                chunk.append(line)

    def find(self, path: str, needle: str, start: int = 1) -> Evidence:
        """The first line at or after `start` containing `needle` (else line 0). A quoted
        string searched from the top is looked up in an index of the file's quoted
        strings (thousands of agents: one pass, not one per agent)."""
        lines = self.lines(path)
        if start <= 1 and len(needle) > 2 and needle[0] == needle[-1] == '"' \
                and '"' not in needle[1:-1]:
            index = self._quoted.get(path)
            if index is None:
                index = self._quoted[path] = {}
                for n, line in enumerate(lines, start=1):
                    for token in _QUOTED.findall(line):
                        index.setdefault(token, n)
            at = index.get(needle)
            if at is not None:
                return Evidence(path, at, lines[at - 1].strip()[:300])
            return Evidence(path, 0, "")
        for i in range(max(start, 1) - 1, len(lines)):
            if needle in lines[i]:
                return Evidence(path, i + 1, lines[i].strip()[:300])
        return Evidence(path, 0, "")

    def node_dirs(self) -> list[str]:
        return sorted({p.rsplit("/", 1)[0] for p in self.files
                       if p.startswith("nodes/") and p.endswith("/node.json")})

    def nodes(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for d in self.node_dirs():
            doc = self.json(f"{d}/node.json")
            if isinstance(doc, dict):
                yield d, doc


def parse_time(text: str) -> float | None:
    """RFC 3339 (Go's nanoseconds allowed) to epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?", text.strip())
    if not m:
        return None
    tz = m.group(3) or "Z"
    tz = "+00:00" if tz == "Z" else tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    try:
        base = datetime.fromisoformat(m.group(1) + tz).timestamp()
    except ValueError:
        return None
    return base + (float("0" + m.group(2)) if m.group(2) else 0.0)


def _map(value: Any) -> Mapping[str, Any]:
    """An object of a dump that must be a mapping; anything else (a damaged or foreign
    file) counts as empty."""
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> list[Any]:
    """A field that must be a list; anything else counts as empty."""
    return value if isinstance(value, list) else []


def _name(doc: Mapping[str, Any]) -> str:
    return str(doc.get("hostname") or doc.get("uuid") or "?")


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


Analyzer = Callable[[DumpView, Mapping[str, float]], list[Finding]]


# --- version skew ------------------------------------------------------------------


def _instances(v: DumpView) -> list[dict[str, Any]]:
    disc = v.json("cluster/discovery.json")
    if isinstance(disc, dict) and isinstance(disc.get("instances_list"), list):
        return [x for x in disc["instances_list"] if isinstance(x, dict)]
    return [doc for _, doc in v.nodes()]


def version_skew(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    insts = _instances(v)
    auth = [x for x in insts if "auth" in _seq(x.get("services"))]
    status = v.json("cluster/status.json")
    auth_ver = None
    if auth:
        auth_ver = parse_version(str(auth[0].get("version", "")))
    if auth_ver is None and isinstance(status, dict):
        auth_ver = parse_version(str(status.get("version", "")))
    if auth_ver is None:
        return []
    behind: list[tuple[dict[str, Any], tuple[int, int, int]]] = []
    newer: list[tuple[dict[str, Any], tuple[int, int, int]]] = []
    for x in insts:
        ver = parse_version(str(x.get("version", "")))
        if ver is None or "auth" in _seq(x.get("services")):
            continue
        if auth_ver[0] - ver[0] > t["max_majors_behind"]:
            behind.append((x, ver))
        elif ver > auth_ver:
            newer.append((x, ver))
    out = []
    auth_s = ".".join(map(str, auth_ver))
    for kind, items, what in (("version_skew_behind", behind,
                               f"more than {t['max_majors_behind']:g} major behind auth"),
                              ("version_skew_newer", newer, "newer than auth")):
        if not items:
            continue
        versions = sorted({".".join(map(str, ver)) for _, ver in items})
        out.append(Finding(
            kind, "critical",
            f"{len(items)} agents {what} (auth v{auth_s}; agents v{', v'.join(versions)})",
            targets=[_name(x) for x, _ in items],
            evidence=[_version_evidence(v, x) for x, _ in items[:10]],
            details={"auth_version": auth_s, "agent_versions": versions}))
    return out


def _version_evidence(v: DumpView, x: Mapping[str, Any]) -> Evidence:
    d = f"nodes/{x.get('uuid')}"
    if f"{d}/version.txt" in v.files:
        return v.find(f"{d}/version.txt", "")
    start = v.find("cluster/discovery.json", f'"{x.get("uuid")}"')
    return v.find("cluster/discovery.json", '"version"', start.line or 1)


# --- certificate authorities ---------------------------------------------------------


def _cert_not_after(b64: str) -> float | None:
    try:
        from cryptography import x509
        pem = base64.b64decode(b64)
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
    except Exception:  # anything unparsable is no evidence
        return None


def cert_authorities(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    path = "objects/tctl_get_cert_authority.yaml"
    out: list[Finding] = []
    rotating: list[tuple[str, str, Evidence]] = []
    expiring: list[tuple[str, float, Evidence]] = []
    for start, doc in v.yaml_docs(path):
        if not isinstance(doc, dict):
            continue
        spec = _map(doc.get("spec"))
        ca = str(spec.get("type") or doc.get("sub_kind") or "?")
        rot = spec.get("rotation") or {}
        if isinstance(rot, dict) and rot.get("state") == "in_progress":
            rotating.append((ca, str(rot.get("phase", "")), v.find(path, "phase:", start)))
        for entry in _seq(_map(spec.get("active_keys")).get("tls")):
            if isinstance(entry, dict) and isinstance(entry.get("cert"), str):
                na = _cert_not_after(entry["cert"])
                if na is not None and (na - v.now) / 86400 < t["ca_expiry_warning_days"]:
                    expiring.append((ca, na, v.find(path, "cert:", start)))
    if rotating:
        phases = sorted({p for _, p, _ in rotating})
        out.append(Finding(
            "ca_rotating", "warning",
            f"{len(rotating)} certificate authorities rotating (phase {', '.join(phases)})",
            targets=[f"{ca} CA" for ca, _, _ in rotating],
            evidence=[e for _, _, e in rotating], details={"phases": phases}))
    if expiring:
        days = min((na - v.now) / 86400 for _, na, _ in expiring)
        sev = "critical" if days < t["ca_expiry_critical_days"] else "warning"
        when = "already expired" if days < 0 else f"expire within {days:.0f} days"
        out.append(Finding(
            "ca_expiring", sev,
            f"{len(expiring)} certificate authorities {when}",
            targets=[f"{ca} CA" for ca, _, _ in expiring],
            evidence=[e for _, _, e in expiring],
            details={ca: datetime.fromtimestamp(na, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                     for ca, na, _ in expiring}))
    return out


# --- heartbeats ----------------------------------------------------------------------


def heartbeats(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    expired: list[tuple[str, Evidence]] = []
    stale: list[tuple[str, Evidence]] = []
    inv = v.json("cluster/inventory.json")
    path = "cluster/inventory.json"
    for doc in inv if isinstance(inv, list) else []:
        if not isinstance(doc, dict):
            continue
        meta, spec = _map(doc.get("metadata")), _map(doc.get("spec"))
        name = str(spec.get("hostname") or meta.get("name"))
        exp = parse_time(str(meta.get("expires", "")))
        seen = parse_time(str(spec.get("last_seen", "")))
        # Evidence only for the agents found wanting: the file's index of quoted strings
        # (tens of MB for ten thousand agents) is not built for a healthy cluster.
        if exp is not None and exp < v.now:
            at = v.find(path, f'"{meta.get("name")}"')
            expired.append((name, v.find(path, '"expires"', at.line or 1)))
        elif seen is not None and v.now - seen > t["heartbeat_stale_s"]:
            at = v.find(path, f'"{meta.get("name")}"')
            stale.append((name, v.find(path, '"last_seen"', at.line or 1)))
    npath = "objects/tctl_get_node.yaml"
    expired_names = {n for n, _ in expired}
    for start, doc in v.yaml_docs(npath):
        if not isinstance(doc, dict):
            continue
        meta, spec = _map(doc.get("metadata")), _map(doc.get("spec"))
        exp = parse_time(str(meta.get("expires", "")))
        name = str(spec.get("hostname") or meta.get("name"))
        if exp is not None and exp < v.now and name not in expired_names:
            expired.append((name, v.find(npath, "expires:", start)))
            expired_names.add(name)
    out = []
    if expired:
        out.append(Finding("heartbeat_expired", "critical",
                           f"{len(expired)} agents with expired heartbeats (offline)",
                           targets=[n for n, _ in expired],
                           evidence=[e for _, e in expired[:20]]))
    if stale:
        out.append(Finding(
            "heartbeat_stale", "warning",
            f"{len(stale)} agents not seen for more than {t['heartbeat_stale_s']:g} s",
            targets=[n for n, _ in stale], evidence=[e for _, e in stale[:20]]))
    return out


# --- /readyz -------------------------------------------------------------------------


def readyz(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    bad: dict[str, list[tuple[str, Evidence]]] = defaultdict(list)
    for d, doc in v.nodes():
        path = f"{d}/diag/readyz.json"
        body = v.json(path)
        if not isinstance(body, dict) or body.get("status") == "ok":
            continue
        status = str(body.get("status", "?"))
        state = ("degraded" if "degraded" in status else "starting" if "starting" in status
                 else "recovering" if "recovering" in status else status[:60])
        bad[state].append((_name(doc), v.find(path, "status")))
    return [Finding(f"readyz_{state}", "critical" if state == "degraded" else "warning",
                    f"{len(items)} agents report /readyz {state}",
                    targets=[n for n, _ in items], evidence=[e for _, e in items[:20]])
            for state, items in sorted(bad.items())]


# --- error bursts in logs ------------------------------------------------------------

_TEXT_LINE = re.compile(r"(\d{4}-\d\d-\d\dT[\d:.]+Z?)\s+(ERROR|WARN|INFO|DEBUG)\s+"
                        r"\[[^\]]*\]\s*(.*)$")
_MSG = re.compile(r"^(.*?[.!?])(?=\s|$)")


def _classify(line: str) -> tuple[str, str, str] | None:
    """(level, time, message) of a Teleport log line (text or JSON), journal prefix or not."""
    if line.startswith("{") or '{"' in line[:60]:
        try:
            doc = json.loads(line[line.index("{"):])
        except (ValueError, RecursionError):
            return None
        if isinstance(doc, dict):
            return (str(doc.get("level", "")).upper(), str(doc.get("timestamp", "")),
                    str(doc.get("message", "")))
        return None
    m = _TEXT_LINE.search(line)
    if not m:
        return None
    msg = _MSG.match(m.group(3))
    return m.group(2), m.group(1), (msg.group(1) if msg else m.group(3)[:80]).strip()


DIGEST = "#log-digest"  # at dump time a log is read once and kept as this summary


def _is_log(path: str) -> bool:
    return path.startswith("nodes/") and (
        path.endswith("/teleport.service/log.txt")
        or ("/logs/" in path and path.endswith(".log")))


def log_digest(data: bytes) -> dict[str, Any]:
    """Lines, ERROR lines, their top messages, first and last time, the first one. (What
    `_classify` gives, with the message worked out only for ERROR lines: a big cluster's
    logs are millions of lines, nearly all of them not errors.)"""
    text = data.decode("utf-8", "replace")
    total, errors, first_ev = 0, 0, None
    msgs: Counter[str] = Counter()
    first = last = ""
    search = _TEXT_LINE.search
    for i, line in enumerate(text.splitlines(), start=1):
        if line.startswith("{") or line.find('{"', 0, 60) >= 0:
            c = _classify(line)
            if c is None:
                continue
            total += 1
            if c[0] != "ERROR":
                continue
        else:
            m = search(line)
            if m is None:
                continue
            total += 1
            if m.group(2) != "ERROR":
                continue
            msg = _MSG.match(m.group(3))
            c = ("ERROR", m.group(1), (msg.group(1) if msg else m.group(3)[:80]).strip())
        errors += 1
        msgs[c[2]] += 1
        first = first or c[1]
        last = c[1]
        if first_ev is None:
            first_ev = [i, line.strip()[:300]]
    return {"lines": total, "errors": errors, "first": first, "last": last,
            "top": [{"message": m, "count": n} for m, n in msgs.most_common(5)],
            "evidence": first_ev}


def error_bursts(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    logs: dict[str, list[str]] = defaultdict(list)
    for p in v.files:
        base = p.removesuffix(DIGEST)
        if _is_log(base):
            logs["/".join(base.split("/")[:2])].append(p)
    names = {d: _name(doc) for d, doc in v.nodes() if doc} if logs else {}
    out = []
    for d in sorted(logs):
        name = names.get(d) or d.split("/")[-1]
        for path in sorted(logs[d]):
            s = v.json(path) if path.endswith(DIGEST) else log_digest(v.files[path])
            if not isinstance(s, dict):  # a damaged digest: nothing to say about it
                continue
            errors, total, ev = s.get("errors", 0), s.get("lines", 0), s.get("evidence")
            if not (isinstance(errors, int) and isinstance(total, int)
                    and isinstance(ev, list) and len(ev) == 2 and isinstance(ev[0], int)):
                continue
            if errors >= t["error_min_lines"] and total and errors / total >= t["error_share"]:
                top = s.get("top") if isinstance(s.get("top"), list) else []
                head = top[0] if top and isinstance(top[0], dict) else {}
                out.append(Finding(
                    "log_error_burst", "warning",
                    f"{name}: {errors} of {total} log lines at ERROR "
                    f"({errors / total:.0%}), top: {head.get('message', '?')} "
                    f"({head.get('count', '?')})",
                    targets=[name],
                    evidence=[Evidence(path.removesuffix(DIGEST), ev[0], str(ev[1]))],
                    details={"errors": errors, "lines": total, "first": s.get("first"),
                             "last": s.get("last"), "top": top}))
    return out


# --- clock offset --------------------------------------------------------------------


def clock_offset(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    by_sev: dict[str, list[tuple[str, float, Evidence]]] = defaultdict(list)
    for d, doc in v.nodes():
        off = doc.get("clock_offset_s")
        if not isinstance(off, (int, float)) or abs(off) < t["clock_warning_s"]:
            continue
        sev = "critical" if abs(off) >= t["clock_critical_s"] else "warning"
        by_sev[sev].append((_name(doc), float(off),
                            v.find(f"{d}/node.json", '"clock_offset_s"')))
    return [Finding("clock_offset", sev,
                    f"{len(items)} agents' clocks off by up to "
                    f"{max(abs(o) for _, o, _ in items):.0f} s (limit "
                    f"{t['clock_warning_s' if sev == 'warning' else 'clock_critical_s']:g} s)",
                    targets=[n for n, _, _ in items], evidence=[e for _, _, e in items[:20]],
                    details={n: o for n, o, _ in items})
            for sev, items in sorted(by_sev.items())]


# --- reverse tunnels -----------------------------------------------------------------


def tunnels(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    down: list[tuple[str, Evidence]] = []
    for d, doc in v.nodes():
        path = f"{d}/tunnel.json"
        data = v.json(path)
        if not isinstance(data, dict) or not data.get("uses_reverse_tunnel"):
            continue
        lines = [str(x) for x in _seq(data.get("log_lines"))]
        established = [i for i, x in enumerate(lines) if "transport established" in x.lower()]
        failed = [i for i, x in enumerate(lines)
                  if (c := _classify(x)) is not None and c[0] == "ERROR"]
        if failed and (not established or established[-1] < failed[-1]):
            quoted = json.dumps(lines[failed[-1]])[1:-1]
            down.append((_name(doc), v.find(path, quoted[:80])))
    if not down:
        return []
    return [Finding("tunnel_down", "critical",
                    f"{len(down)} agents' reverse tunnels down (newest tunnel log line is "
                    "an error)", targets=[n for n, _ in down],
                    evidence=[e for _, e in down[:20]])]


# --- RBAC ----------------------------------------------------------------------------


def _allows_all(spec: Mapping[str, Any]) -> bool:
    for rule in _seq(_map(spec.get("allow")).get("rules")):
        if isinstance(rule, dict) and "*" in _seq(rule.get("resources")) \
                and "*" in _seq(rule.get("verbs")):
            return True
    return False


def rbac(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    rpath, upath = "objects/tctl_get_role.yaml", "objects/tctl_get_user.yaml"
    roles = [(s, d) for s, d in v.yaml_docs(rpath) if isinstance(d, dict)]
    users = [(s, d) for s, d in v.yaml_docs(upath) if isinstance(d, dict)]
    if not roles or not users:
        return []
    held: set[str] = set()
    no_role: list[tuple[str, Evidence]] = []
    for start, u in users:
        names = [str(r) for r in _seq(_map(u.get("spec")).get("roles"))]
        held.update(names)
        if not names:
            name = str(_map(u.get("metadata")).get("name"))
            no_role.append((name, v.find(upath, "name:", start)))
    # Roles granted through SSO connectors are held too.
    for kind in ("github", "oidc", "saml", "connectors"):
        for _, doc in v.yaml_docs(f"objects/tctl_get_{kind}.yaml"):
            held.update(_connector_roles(doc))
    unused, allow_all = [], []
    for start, r in roles:
        meta = _map(r.get("metadata"))
        name = str(meta.get("name"))
        if _map(meta.get("labels")).get(PRESET_LABEL) == "preset":
            continue  # Teleport's own roles
        ev = v.find(rpath, "name:", start)
        if name not in held:
            unused.append((name, ev))
        if _allows_all(_map(r.get("spec"))):
            allow_all.append((name, v.find(rpath, "resources:", start)))
    out = []
    if unused:
        out.append(Finding("rbac_role_unused", "info",
                           f"{len(unused)} roles no user or SSO connector has",
                           targets=[n for n, _ in unused], evidence=[e for _, e in unused]))
    if no_role:
        out.append(Finding("rbac_user_no_role", "warning",
                           f"{len(no_role)} users with no role", targets=[n for n, _ in no_role],
                           evidence=[e for _, e in no_role]))
    if allow_all:
        out.append(Finding("rbac_allow_all", "warning",
                           f"{len(allow_all)} roles allow every verb on every resource",
                           targets=[n for n, _ in allow_all],
                           evidence=[e for _, e in allow_all]))
    return out


def _connector_roles(doc: Any) -> set[str]:
    out: set[str] = set()
    if not isinstance(doc, dict):
        return out
    spec = _map(doc.get("spec"))
    for key in ("teams_to_logins", "teams_to_roles"):
        for m in map(_map, _seq(spec.get(key))):
            out.update(str(x) for x in _seq(m.get("logins") or m.get("roles")))
    for key in ("claims_to_roles", "attributes_to_roles"):
        for m in map(_map, _seq(spec.get(key))):
            out.update(str(x) for x in _seq(m.get("roles")))
    return out


# --- unreachable nodes ---------------------------------------------------------------


def unreachable(v: DumpView, t: Mapping[str, float]) -> list[Finding]:
    failed: dict[str, list[tuple[str, str, Evidence]]] = defaultdict(list)
    total = 0
    for d, doc in v.nodes():  # one node.json parsed at a time: ten thousand are not held
        total += 1
        if doc.get("status") == "failed" and doc.get("code"):
            code = str(doc["code"])
            path = f"{d}/error.txt" if f"{d}/error.txt" in v.files else f"{d}/node.json"
            ev = v.find(path, code)
            failed[code].append((_name(doc), str(doc.get("reason") or ""), ev))
    out = []
    for code, items in sorted(failed.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        share = len(items) / max(1, total)
        sev = "critical" if share >= t["unreachable_critical_share"] else "warning"
        out.append(Finding(f"unreachable_{code}", sev,
                           f"{len(items)} agents could not be collected: {code} "
                           f"{items[0][1]} (tpdump explain {code})",
                           targets=[n for n, _, _ in items],
                           evidence=[e for _, _, e in items[:20]],
                           details={"code": code}))
    return out


ANALYZERS: Mapping[str, Analyzer] = MappingProxyType({
    "version_skew": version_skew,
    "cert_authorities": cert_authorities,
    "heartbeats": heartbeats,
    "readyz": readyz,
    "error_bursts": error_bursts,
    "clock_offset": clock_offset,
    "tunnels": tunnels,
    "rbac": rbac,
    "unreachable": unreachable,
})

_ORDER = {s: i for i, s in enumerate(SEVERITIES)}


def analyze(files: Mapping[str, bytes], now: float | None = None,
            thresholds: Mapping[str, float] = THRESHOLDS,
            stop: Callable[[], bool] | None = None) -> list[Finding]:
    """Every analyzer over the files; one that fails becomes an `info` finding. Once
    `stop()` holds, the analyzers not yet run are left out."""
    view = DumpView(files, now)
    out: list[Finding] = []
    for name, func in ANALYZERS.items():
        if stop is not None and stop():
            break
        try:
            out.extend(func(view, thresholds))
        except Exception as exc:  # one analyzer never stops the others
            out.append(Finding(f"analyzer_failed_{name}", "info",
                               f"analyzer {name} failed: {type(exc).__name__}: {exc}"))
    return sorted(out, key=lambda f: (_ORDER.get(f.severity, 9), f.id))


def render(findings: list[dict[str, Any]]) -> list[str]:
    """Text lines of findings (report.txt and `tpdump analyze`)."""
    if not findings:
        return ["  none"]
    out = []
    for f in findings:
        out.append(f"  [{f['severity']}] {f['id']}: {f['summary']}")
        if f["targets"]:
            shown = ", ".join(f["targets"][:10])
            more = f", … +{len(f['targets']) - 10}" if len(f["targets"]) > 10 else ""
            out.append(f"    targets: {shown}{more}")
        for e in f["evidence"][:3]:
            out.append(f"    {e['path']}:{e['line']}: {e['text'][:160]}")
    return out


# --- dump time: the files the analyzers read, kept as the archive writer writes them ---


def wanted_at_dump_time(name: str) -> bool:
    """The files the analyzers read (not the bulky ones they ignore)."""
    return (name.startswith(("cluster/", "objects/")) or name.endswith(
        ("/version.txt", "/diag/readyz.json", "/tunnel.json", "/teleport.service/log.txt",
         "/error.txt")) or ("/logs/" in name and name.endswith(".log")))


class DumpTimeFiles:
    """What the analyzers read at the end of a run, kept as the archive writer writes it
    (its `on_emit`, in its thread, on the bytes as archived: redacted, obfuscated, cut to
    the size budget), zlib-compressed: each log's digest, only when it has ERROR lines
    (the others can make no finding), and the other files the analyzers read (cluster/,
    objects/, a node's version, readiness, tunnel and error files: a few hundred bytes
    per node). Nothing is read back from the archive, in either format."""

    def __init__(self) -> None:
        self._kept: dict[str, bytes] = {}  # path -> zlib of its bytes, or of a digest
        self._lock = threading.Lock()

    def __call__(self, path: str, data: bytes) -> None:
        name = path
        if _is_log(path):
            digest = log_digest(data)
            if not digest["errors"]:
                return
            name, data = path + DIGEST, json.dumps(digest).encode()
        elif not wanted_at_dump_time(path):
            return
        packed = zlib.compress(data, 1)
        with self._lock:
            self._kept[name] = packed

    def files(self) -> dict[str, bytes]:
        with self._lock:
            kept = list(self._kept.items())
        return {name: zlib.decompress(data) for name, data in kept}


def _dump_time_findings(seen: DumpTimeFiles | None, node_files: Mapping[str, bytes],
                        now: float, stop: Callable[[], bool] | None = None
                        ) -> list[dict[str, Any]]:
    files = seen.files() if seen is not None else {}
    files.update(node_files)
    return [f.as_dict() for f in analyze(files, now, stop=stop)]


async def at_dump_time(seen: DumpTimeFiles | None, node_files: Mapping[str, bytes],
                       now: float, budget: float = 20.0,
                       stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Findings for the report of a run: the files its archive writer has written
    (`seen`, its on_emit) plus each node's node.json. Call when the writer is idle
    (settled). In a worker thread, within `budget` seconds, and until `stop()` (polled)
    holds: then an `info` finding says the analyzers were skipped."""
    import anyio

    result: list[dict[str, Any]] | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        while stop is None or not stop():  # noqa: ASYNC110 - a flag set by a signal watcher
            await anyio.sleep(0.1)
        scope.cancel()  # interrupted: finishing the archive comes first

    abandoned = threading.Event()  # the thread, left behind, stops at its next check
    with anyio.move_on_after(budget):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            result = await anyio.to_thread.run_sync(_dump_time_findings, seen, node_files,
                                                    now, abandoned.is_set,
                                                    abandon_on_cancel=True)
            tg.cancel_scope.cancel()
    if result is not None:
        return result
    abandoned.set()
    return [Finding("analyzers_skipped", "info",
                    "the analyzers were skipped (time budget or interrupt): run "
                    "tpdump analyze on the archive").as_dict()]


def cmd_analyze(path: str, *, as_json: bool = False) -> int:
    """`tpdump analyze ARCHIVE`: 0 without critical findings, 1 with."""
    import sys

    from tpdump.inspect import load
    findings = [f.as_dict() for f in analyze(load(path))]
    if as_json:
        print(json.dumps(findings, indent=1))
    else:
        sev = Counter(f["severity"] for f in findings)
        print(f"{len(findings)} findings: " + ", ".join(
            f"{sev.get(s, 0)} {s}" for s in SEVERITIES))
        print("\n".join(render(findings)))
    sys.stdout.flush()
    return 1 if any(f["severity"] == "critical" for f in findings) else 0
