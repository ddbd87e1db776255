"""The diagnostic endpoints of a simulated teleport process, reached by SSH forwarding.

- `diag_addr` (teleport.yaml `teleport.diag_addr` or `--diag-addr`): `/metrics` (Prometheus
  text format, real Teleport and client_golang metric names), `/healthz`, `/readyz`
  (lib/service/state.go readinessHandler: 200 ok, 503 degraded, 400 starting/recovering).
- `<data_dir>/debug.sock` (the debug service, lib/srv/debug): `GET`/`PUT /log-level`, and
  `/readyz`, `/metrics` like the diag listener.

Answers are laid out as Go's net/http server writes them (status line, sorted handler
headers, `Date`, `Content-Length` or chunked bodies over 2 KiB, `Connection: close` when the
request asked for it). Everything is in-process: no socket is opened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncssh
from asyncssh.channel import SSHChannel

from tpdump.sim.cluster import SimCluster, SimNode
from tpdump.sim.systemctl import process_start
from tpdump.sim.tctl import GO_VERSIONS, version_line

MAX_REQUEST = 64 * 1024
CHUNKING_THRESHOLD = 2048  # net/http bufferBeforeChunkingSize
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           422: "Unprocessable Entity", 431: "Request Header Fields Too Large",
           503: "Service Unavailable"}
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
READY = {"ok": (200, "ok"),
         "degraded": (503, "teleport is in a degraded state, check logs for details"),
         "recovering": (400, "teleport is recovering from a degraded state, check logs for "
                             "details"),
         "starting": (400, "teleport is starting and hasn't joined the cluster yet")}
PROCESS_STATE = {"ok": 0, "recovering": 1, "degraded": 2, "starting": 3}
SERVICE_METRIC = {"node": "ssh_service", "auth": "auth_service", "proxy": "proxy_service",
                  "kube": "kubernetes_service", "app": "application_service",
                  "db": "database_service", "windows_desktop": "windows_desktop_service"}
LOG_LEVELS = {"TRACE": "TRACE", "DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARN",
              "WARNING": "WARN", "ERR": "ERROR", "ERROR": "ERROR"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str | None = None  # None: net/http sniffs (text/plain for these bodies)
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


def go_float(v: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64), as the Prometheus text encoder prints values."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    sign = "-" if v < 0 else ""
    tup = decimal.Decimal(repr(abs(v))).normalize().as_tuple()
    digits = "".join(map(str, tup.digits))
    assert isinstance(tup.exponent, int)
    dp = len(digits) + tup.exponent
    exp = dp - 1
    if exp < -4 or exp >= 6:  # shortest formatting decides with precision 6
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


class MetricsText:
    """Prometheus text exposition: families sorted by name, labels by label name."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[tuple[dict[str, str], float, str]]]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float,
            labels: dict[str, str] | None = None, suffix: str = "") -> None:
        fam = self.families.setdefault(name, (kind, help_text, []))
        fam[2].append((labels or {}, value, suffix))

    def render(self) -> bytes:
        out: list[str] = []
        for name in sorted(self.families):
            kind, help_text, samples = self.families[name]
            esc = help_text.replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {name} {esc}\n# TYPE {name} {kind}\n")
            for labels, value, suffix in samples:
                lab = ""
                if labels:
                    lab = "{" + ",".join(f'{k}="{_label_value(v)}"'
                                         for k, v in sorted(labels.items())) + "}"
                out.append(f"{name}{suffix}{lab} {go_float(value)}\n")
        return "".join(out).encode()


def metrics(node: SimNode, cluster: SimCluster, state: str) -> bytes:
    """/metrics of the node's teleport process."""
    seed = (cluster.scenario.seed, node.uuid)
    version = node.inst.version
    major = int(version.split(".")[0])
    go = GO_VERSIONS.get(major, "go1.23.7")
    gitref = version_line(version).split()[2].removeprefix("git:")
    start = process_start(node, cluster)
    m = MetricsText()
    gc = "A summary of the pause duration of garbage collection cycles."
    for q, base in (("0", 2.1e-05), ("0.25", 4.3e-05), ("0.5", 6.2e-05), ("0.75", 9.8e-05),
                    ("1", 0.002713)):
        m.add("go_gc_duration_seconds", "summary", gc, base * (1 + _h(*seed, q) % 50 / 100),
              {"quantile": q})
    m.add("go_gc_duration_seconds", "summary", gc, 0.41 + _h(*seed, "gcs") % 900 / 1000, None,
          "_sum")
    m.add("go_gc_duration_seconds", "summary", gc, 4000 + _h(*seed, "gcn") % 3000, None,
          "_count")
    m.add("go_goroutines", "gauge", "Number of goroutines that currently exist.",
          180 + _h(*seed, "gr") % 300)
    m.add("go_info", "gauge", "Information about the Go environment.", 1, {"version": go})
    m.add("go_memstats_alloc_bytes", "gauge", "Number of bytes allocated and still in use.",
          3.1e7 + _h(*seed, "alloc") % 20_000_000)
    m.add("go_memstats_heap_objects", "gauge", "Number of allocated objects.",
          150_000 + _h(*seed, "obj") % 200_000)
    m.add("go_threads", "gauge", "Number of OS threads created.", 12 + _h(*seed, "th") % 10)
    assert node.model is not None
    soft = node.model.nofile[0]
    m.add("process_cpu_seconds_total", "counter",
          "Total user and system CPU time spent in seconds.",
          round(100 + _h(*seed, "cpu") % 90_000 / 100, 2))
    m.add("process_max_fds", "gauge", "Maximum number of open file descriptors.",
          float(soft) if soft.isdigit() else 1.8446744073709552e19)
    m.add("process_open_fds", "gauge", "Number of open file descriptors.",
          30 + _h(*seed, "fds") % 40)
    m.add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
          9.0e7 + _h(*seed, "rss") % 80_000_000)
    m.add("process_start_time_seconds", "gauge",
          "Start time of the process since unix epoch in seconds.", round(start, 2))
    m.add("process_state", "gauge", "State of the teleport process: 0 - ok, 1 - recovering, "
          "2 - degraded, 3 - starting", PROCESS_STATE[state])
    m.add("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
          1.4e9 + _h(*seed, "vm") % 400_000_000)
    m.add("teleport_build_info", "gauge", "Provides build information of Teleport including "
          "gitref (git describe --long --tags), Go version, and Teleport version. The value of "
          "this gauge will always be 1.", 1,
          {"gitref": gitref, "goversion": go, "version": version})
    for svc in node.services:
        if svc in SERVICE_METRIC:
            m.add("teleport_services", "gauge", "Teleport services currently enabled and running",
                  1, {"service_name": SERVICE_METRIC[svc]})
    others = [n for n in cluster.nodes if n is not node]
    if "auth" in node.services:
        counts = {"node": sum(1 for n in others if "node" in n.services),
                  "app_server": sum(1 for n in others if "app" in n.services),
                  "db_server": sum(1 for n in others if "db" in n.services),
                  "kube_server": sum(1 for n in others if "kube" in n.services)}
        for kind, count in counts.items():
            if count:
                m.add("teleport_connected_resources", "gauge",
                      "Tracks the number and type of resources connected via keepalives",
                      count, {"type": kind})
    if "proxy" in node.services:
        tunnels = sum(1 for n in cluster.nodes if n.inst.group.tunnel)
        m.add("teleport_reverse_tunnels_connected", "gauge", "Number of reverse SSH tunnels "
              "connected to the Teleport Proxy Service by Teleport instances", tunnels,
              {"type": "node"})
        m.add("proxy_missing_ssh_tunnels", "gauge", "Number of missing SSH tunnels", 0)
    return m.render()


def _json(status: int, doc: dict[str, object]) -> Response:
    """roundtrip.ReplyJSON: json.Marshal (compact, no newline), application/json."""
    return Response(status, json.dumps(doc, separators=(",", ":")).encode(), "application/json")


def not_found() -> Response:
    return Response(404, b"404 page not found\n", "text/plain; charset=utf-8",
                    [("X-Content-Type-Options", "nosniff")])


def readyz(node: SimNode) -> Response:
    status, text = READY[node.inst.group.readyz]
    doc: dict[str, object] = {"status": text}
    if int(node.inst.version.split(".")[0]) >= 17:
        doc["pid"] = node.pid
    return _json(status, doc)


def diag_handler(node: SimNode, cluster: SimCluster) -> Handler:
    """The diag listener's mux."""
    def handle(req: Request) -> Response:
        path = req.path.split("?", 1)[0]
        if path == "/metrics":
            return Response(200, metrics(node, cluster, node.inst.group.readyz), METRICS_TYPE)
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            return readyz(node)
        return not_found()
    return handle


@dataclass
class DebugState:
    """The debug service's mutable log level of one node."""

    level: str


def debug_handler(node: SimNode, cluster: SimCluster, state: DebugState) -> Handler:
    """The debug service's mux on `<data_dir>/debug.sock`."""
    def handle(req: Request) -> Response:
        path = req.path.split("?", 1)[0]
        if path == "/log-level":
            if req.method in ("GET", "HEAD"):
                return Response(200, state.level.encode())
            if req.method == "PUT":
                level = LOG_LEVELS.get(req.body.decode("utf-8", "replace").strip().upper())
                if level is None:
                    return Response(422, b"Invalid log level.")
                if level == state.level:
                    return Response(200, f'Log level already set to "{level}".'.encode())
                old, state.level = state.level, level
                return Response(200, f'Changed log level from "{old}" to "{level}".'.encode())
            return Response(405, b"Method Not Allowed\n", "text/plain; charset=utf-8",
                            [("Allow", "GET, HEAD, PUT"), ("X-Content-Type-Options", "nosniff")])
        if path == "/readyz":
            return readyz(node)
        if path == "/metrics":
            return Response(200, metrics(node, cluster, node.inst.group.readyz), METRICS_TYPE)
        return not_found()
    return handle


def http_date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def render(resp: Response, close: bool, now: float, head: bool = False) -> bytes:
    """The response as Go's net/http server writes it."""
    lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}"]
    user = list(resp.headers)
    if resp.content_type is not None:
        user.append(("Content-Type", resp.content_type))
    for k, v in sorted(user):
        lines.append(f"{k}: {v}")
    chunked = len(resp.body) > CHUNKING_THRESHOLD
    lines.append(f"Date: {http_date(now)}")
    if not chunked:
        lines.append(f"Content-Length: {len(resp.body)}")
    if resp.content_type is None:
        lines.append("Content-Type: text/plain; charset=utf-8")
    if close:
        lines.append("Connection: close")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if head:
        return head_bytes
    if not chunked:
        return head_bytes + resp.body
    body = bytearray()
    for i in range(0, len(resp.body), CHUNKING_THRESHOLD):
        chunk = resp.body[i:i + CHUNKING_THRESHOLD]
        body += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    body += b"0\r\n\r\n"
    return head_bytes + bytes(body)


def garble(data: bytes) -> bytes:
    """What a `garbage` node does to an answer: invalid bytes inside, the end cut off."""
    if not data:
        return data
    mid = len(data) // 3
    return (data[:mid] + b"\xff\xfe\x00\xc3" + data[mid:])[: max(1, (len(data) * 3) // 4)]


class _HTTPChannel:
    """HTTP/1.1 over one forwarded channel: parses requests, writes answers."""

    def __init__(self, handler: Handler, delay: float, clock: Callable[[], float],
                 garbage: bool = False) -> None:
        self.handler = handler
        self.delay = delay
        self.clock = clock
        self.garbage = garbage
        self.buf = bytearray()
        self.chan: SSHChannel[bytes] | None = None
        self.busy = False
        self.closed = False

    def connection_made(self, chan: SSHChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.buf += data
        if len(self.buf) > MAX_REQUEST and b"\r\n\r\n" not in self.buf:
            self._send(render(Response(431, b"431 Request Header Fields Too Large"),
                              True, self.clock()), close=True)
            return
        self._next()

    def eof_received(self) -> bool:
        if not self.busy and self.chan is not None and not self.buf:
            self.chan.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def _next(self) -> None:
        if self.busy or self.closed:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or length < 0:
            del self.buf[:]
            self._send(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8"
                       b"\r\nConnection: close\r\n\r\n400 Bad Request", close=True)
            return
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        req = Request(parts[0], parts[1], headers, body)
        close = headers.get("connection", "").lower() == "close" or parts[2] == "HTTP/1.0"
        self.busy = True
        loop = asyncio.get_running_loop()
        if self.delay > 0:
            loop.call_later(self.delay, self._answer, req, close)
        else:
            self._answer(req, close)

    def _answer(self, req: Request, close: bool) -> None:
        if self.closed:
            return
        resp = self.handler(req)
        data = render(resp, close, self.clock(), head=req.method == "HEAD")
        if self.garbage:
            data = data[:data.find(b"\r\n\r\n") + 4] + garble(data[data.find(b"\r\n\r\n") + 4:])
        self.busy = False
        self._send(data, close)
        if not close:
            self._next()

    def _send(self, data: bytes, close: bool) -> None:
        chan = self.chan
        if chan is None or self.closed:
            return
        try:
            chan.write(data)
            if close:
                chan.write_eof()
                chan.close()
                self.closed = True
        except (OSError, asyncssh.Error, RuntimeError):
            self.closed = True


class HTTPTCPSession(_HTTPChannel, asyncssh.SSHTCPSession[bytes]):
    """An HTTP server on a `direct-tcpip` channel."""


class HTTPUNIXSession(_HTTPChannel, asyncssh.SSHUNIXSession[bytes]):
    """An HTTP server on a `direct-streamlocal@openssh.com` channel."""
