"""Everything a node has to say (SPEC §4), from a `Host`: the probe (one exec for the
teleport processes, version and host facts), teleport.yaml, systemd units, journald or the
log file, diag endpoints, the debug socket, connections, disk, the data_dir listing and the
process-state database. Each item has its own deadline and byte cap; one failing or
hanging item never stops the others."""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import anyio
import structlog
import yaml

from tpdump.archive import ArchiveWriter
from tpdump.batch import Want
from tpdump.collectors.sqlite import dump_process_state
from tpdump.config import Settings
from tpdump.hosts import DirEntry, Exec, Host, ItemError, credential_store, shown_name
from tpdump.redact import Loader, Redactor
from tpdump.results import ItemResult, NodeResult
from tpdump.transport import Failure, failure, first_leaf

log = structlog.get_logger("tpdump.node")

PROBE_SCRIPT = resources.files("tpdump.collectors").joinpath("probe.sh").read_text("utf-8")
DEFAULT_CONFIG = "/etc/teleport.yaml"
# The files the probe prints (section -> the paths it may read): where they really are
# is asked in the batch beside the probe, and a link into a credential store is refused.
PROBE_FILES = {"hostname": ("/etc/hostname",),
               "os-release": ("/etc/os-release", "/usr/lib/os-release")}
DEFAULT_DATA_DIR = "/var/lib/teleport"
_LOG_TARGETS = {"stderr", "stdout", "syslog", "", "2", "1"}
# systemd's unit search path, most specific first.
_UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
              "/usr/lib/systemd/system", "/lib/systemd/system")
# Well-known Teleport ports, to name what a connection goes to.
_PORT_ROLES = {3025: "auth", 3024: "proxy tunnel", 3023: "proxy ssh", 3080: "proxy web",
               443: "proxy web"}
# The systemctl listings of a live host, by name.
SYSTEMCTL_LISTS = {
    "units": ("systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
              "teleport*"),
    "timers": ("systemctl", "list-timers", "--all", "--no-pager", "teleport*"),
    "files": ("systemctl", "list-unit-files", "--plain", "--no-legend", "--no-pager",
              "teleport*"),
}
# The unit nearly every host has: fetched with the rest before its listing is read.
LIKELY_UNIT = "teleport.service"
SS_ARGV = ("ss", "-Htnp", "state", "established")
# What `systemctl status` exits with for a unit that exists (LSB: 3 = not running).
STATUS_OK = (0, 1, 2, 3)


def unit_argvs(unit: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`systemctl cat` and `systemctl status` of one unit."""
    return (("systemctl", "cat", "--no-pager", unit),
            ("systemctl", "status", "--no-pager", "--full", "-n", "0", unit))


def probe_command(boundary: str, root: str, cap: int) -> str:
    """The exact command line that runs the probe (see docs/contracts.md)."""
    text = f"B={boundary}\nR={shlex.quote(root)}\nCAP={cap}\n{PROBE_SCRIPT}"
    return "/bin/sh -c " + shlex.quote(text)


def parse_probe(output: bytes, boundary: str) -> dict[str, bytes]:
    """Sections of the probe's output by name; content without the framing newline."""
    marker = f"\n--{boundary} ".encode()
    sections: dict[str, bytes] = {}
    for chunk in output.split(marker)[1:]:
        name, _, body = chunk.partition(b"\n")
        sections[name.decode("utf-8", "replace").strip()] = body
    return sections


def split_cmdline(raw: bytes) -> list[str]:
    """`/proc/<pid>/cmdline` (NUL-separated) as arguments."""
    return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")]


def _flag(argv: list[str], names: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def config_path(argv: list[str]) -> str:
    """The config file a `teleport start` command line names, else the default."""
    return _flag(argv, ("-c", "--config")) or DEFAULT_CONFIG


def diag_addr_from(argv: list[str]) -> str | None:
    return _flag(argv, ("--diag-addr",))


def split_hostport(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def config_facts(text: str) -> dict[str, Any]:
    """What support needs at a glance from teleport.yaml (already redacted)."""
    try:
        doc = yaml.load(text, Loader=Loader)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: a value YAML cannot build (`2024-02-30`, `!!int abc`).
        return {"config_error": f"not valid YAML: {(str(exc).splitlines() or [''])[0]}"}
    if not isinstance(doc, dict):
        return {"config_error": "not a YAML mapping"}
    tp = doc.get("teleport") if isinstance(doc.get("teleport"), dict) else {}
    assert isinstance(tp, dict)
    facts: dict[str, Any] = {}
    for key in ("nodename", "data_dir", "diag_addr", "auth_server", "proxy_server", "ca_pin"):
        if tp.get(key) is not None:
            facts[key] = tp[key]
    if isinstance(tp.get("auth_servers"), list):
        facts["auth_servers"] = tp["auth_servers"]
    logcfg = tp.get("log")
    if isinstance(logcfg, dict):
        facts["log_output"] = logcfg.get("output")
        fmt = logcfg.get("format")
        facts["log_format"] = fmt.get("output") if isinstance(fmt, dict) else None
    services = []
    for section, name in (("auth_service", "auth"), ("ssh_service", "node"),
                          ("proxy_service", "proxy"), ("kubernetes_service", "kube"),
                          ("app_service", "app"), ("db_service", "db"),
                          ("windows_desktop_service", "windows_desktop"),
                          ("discovery_service", "discovery")):
        sec = doc.get(section)
        if isinstance(sec, dict) and str(sec.get("enabled")).lower() in ("true", "yes", "1"):
            services.append(name)
    facts["configured_services"] = services
    return facts


def configured_addresses(facts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("auth_server", "proxy_server"):
        if isinstance(facts.get(key), str):
            out.append(facts[key])
    out += [a for a in facts.get("auth_servers", []) if isinstance(a, str)]
    return out


def parse_connections(text: str, pids: set[str]) -> list[dict[str, Any]]:
    """Established TCP connections of the teleport processes, from `ss -Htnp`."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not any(f"pid={p}," in line for p in pids):
            continue
        local, peer = fields[-3], fields[-2]
        hp = split_hostport(peer)
        role = _PORT_ROLES.get(hp[1], "") if hp else ""
        out.append({"local": local, "peer": peer, "role": role})
    return out


# What --max-size cuts first: logs (newest lines kept), then bulk items (head kept);
# everything else is whole or dropped (SPEC §10).
_LOG_ITEMS = ("journal ", "log file")
_BULK_ITEMS = ("diag /metrics", "data_dir listing", "probe", "process state")


def item_priority(name: str) -> str:
    """The archive priority of a node item, by its name."""
    if name.startswith(_LOG_ITEMS):
        return "log"
    if name.startswith(_BULK_ITEMS):
        return "bulk"
    return "normal"


def newest_last(data: bytes, truncated: bool) -> bytes:
    """Entries of a newest-first listing in time order (a cut last line is dropped). An
    entry is a line and the indented continuation lines of a multi-line message, which
    `journalctl -r` prints in their own order: they stay in it."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif truncated and lines:
        lines.pop()  # cut mid-line by the byte cap
    entries: list[list[bytes]] = []
    for line in lines:
        if entries and line[:1] in (b" ", b"\t"):
            entries[-1].append(line)
        else:
            entries.append([line])
    return b"".join(line + b"\n" for entry in reversed(entries) for line in entry)


_STAMP = re.compile(
    rb'^(?:\{.*?"(?:timestamp|time|ts)"\s*:\s*")?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)')


def line_time(line: bytes) -> float | None:
    """The UTC time at the start of a Teleport log line (text or JSON), if any."""
    match = _STAMP.match(line[:200])
    if not match:
        return None
    try:
        # what strptime("%Y-%m-%dT%H:%M:%S") accepts of the matched digits, fifteen times
        # faster (a log of thousands of lines older than the window is read line by line)
        stamp = datetime.fromisoformat(match.group(1).decode())
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC).timestamp()


def within_window(data: bytes, since: float, max_lines: int) -> tuple[bytes, bool]:
    """The newest `max_lines` lines not older than `since` (lines without a time stamp
    go with the line before them). Returns (data, whether anything was dropped)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    start = max(0, len(lines) - max_lines)
    # the first line, from the start of the kept range, whose stamp is in the window
    for i in range(start, len(lines)):
        stamp = line_time(lines[i])
        if stamp is not None:
            if stamp >= since:
                start = i
                break
            start = i + 1
    kept = lines[start:]
    out = b"".join(line + b"\n" for line in kept)
    return out, start > 0


def tunnel_metrics(body: bytes) -> list[str]:
    """The samples of /metrics (Prometheus text format) whose metric name is about
    reverse tunnels; comments and every other metric left out."""
    return [line for line in body.decode("utf-8", "replace").splitlines()
            if line and not line.startswith("#") and "tunnel" in line.split("{")[0]]


def parse_number(raw: bytes) -> float | None:
    """A finite number printed by the node (`date +%s.%N`, /proc/uptime), else None: `nan`
    or `inf` would make node.json invalid JSON and the clock offset meaningless."""
    try:
        value = float(raw.strip().decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if math.isfinite(value) else None


_FIND_KINDS = {"f": "file", "d": "dir", "l": "link", "s": "socket"}


def parse_find(text: str, path: str, limit: int) -> list[DirEntry]:
    """`find PATH -printf '%y %s %T@ %p\\0'` output as entries (at most `limit`): records
    end with a NUL byte (no name holds one; a newline in a name stays in its entry);
    output without NUL bytes is read a line an entry. Records that do not parse are
    skipped."""
    out: list[DirEntry] = []
    for line in text.split("\0") if "\0" in text else text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4 or parts[3] == path.rstrip("/"):
            continue
        try:
            out.append(DirEntry(parts[3], _FIND_KINDS.get(parts[0], "other"), int(parts[1]),
                                float(parts[2])))
        except ValueError:
            continue
        if len(out) >= limit:
            break
    return out


def utc_stamp(mtime: float) -> str:
    """A file time as ISO UTC; `?` for one no calendar holds (a damaged or hostile
    listing: `nan`, `1e300`)."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    except (OverflowError, OSError, ValueError):
        return "?"


def parse_limits(text: str) -> dict[str, str]:
    for line in text.splitlines():
        if line.startswith("Max open files"):
            parts = line[len("Max open files"):].split()
            if len(parts) >= 2:
                return {"open_files_soft": parts[0], "open_files_hard": parts[1]}
    return {}


def parse_meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            with contextlib.suppress(ValueError):
                out[key.lower() + "_kb"] = int(rest.split()[0])
    return out


@dataclass(frozen=True)
class Item:
    """One collector item: a name, when it applies, and what it does."""

    name: str
    run: Callable[[NodeCollector], Awaitable[None]]
    when: Callable[[NodeCollector], bool]


class NodeCollector:
    """Collects one node from a Host into the archive."""

    def __init__(self, host: Host, result: NodeResult, archive: ArchiveWriter,
                 redactor: Redactor, settings: Settings, *, root: str = "") -> None:
        self.host = host
        self.result = result
        self.archive = archive
        self.redactor = redactor
        self.settings = settings
        self.root = root
        self.sections: dict[str, bytes] = {}
        self.argv: list[list[str]] = []
        self.pids: set[str] = set()
        self.tools: set[str] = set()
        self.init = ""
        self.config: str = DEFAULT_CONFIG
        self.config_data: tuple[bytes, bool] | ItemError | None = None
        self.config_text = ""
        self.facts: dict[str, Any] = result.facts
        self.metrics = b""
        self.log_tail: list[str] = []
        self.remote_now: float | None = None
        self._probe_times = (0.0, 0.0)
        self._probe_started = 0.0
        self._probe_error: ItemError | None = None
        self._probe_ran: Exec | None = None

    @property
    def base(self) -> str:
        return self.result.dir

    @property
    def data_dir(self) -> str:
        value = self.facts.get("data_dir")
        return value if isinstance(value, str) and value.startswith("/") else DEFAULT_DATA_DIR

    # --- writing -------------------------------------------------------------
    async def write(self, name: str, path: str, data: bytes | str, *, source: str,
                    truncated: bool = False, started: float) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        rel = await self.archive.add(f"{self.base}/{path}", data, source=source,
                                     truncated=truncated, priority=item_priority(name),
                                     node=self.result.instance.uuid)
        self.result.items.append(ItemResult(name, "truncated" if truncated else "ok", rel,
                                            len(data), round(time.monotonic() - started, 3)))
        if truncated and item_priority(name) != "log":
            # Logs are bounded on purpose (newest kept, --log-bytes): the manifest marks
            # them truncated, the node is not partial for it.
            self.result.fail("TPD206", "output capped", f"{name}: cut at its byte cap")

    def item_failed(self, name: str, why: Failure, started: float, *,
                    status: str = "failed") -> None:
        self.result.items.append(ItemResult(name, status, None, 0,
                                            round(time.monotonic() - started, 3), why.code,
                                            why.detail))
        if why.code in ("TPD202", "TPD205", "TPD214"):
            self.result.fail(why.code, why.reason, f"{name}: {why.detail}")

    async def guarded(self, name: str, work: Callable[[], Awaitable[None]],
                      budget: float | None = None) -> None:
        """Run one item under its own deadline; its failures become data."""
        started = time.monotonic()
        budget = self.settings.item_timeout if budget is None else budget
        with anyio.move_on_after(budget) as scope:
            try:
                await work()
            except ItemError as exc:
                self.item_failed(name, exc.failure, started,
                                 status="missing" if exc.missing else "failed")
            except ExceptionGroup as group:  # from an item's own parallel parts
                leaf = first_leaf(group)
                if not isinstance(leaf, ItemError):
                    raise
                self.item_failed(name, leaf.failure, started,
                                 status="missing" if leaf.missing else "failed")
            except Exception as exc:  # a bug on one item must not cost the others
                log.exception("item crashed", item=name)
                self.item_failed(name, failure("TPD212", f"internal error: "
                                               f"{type(exc).__name__}: {exc}"), started)
        if scope.cancelled_caught:
            self.item_failed(name, failure("TPD202", f"no answer within {budget:g} s"),
                             started)

    # --- phases --------------------------------------------------------------
    async def discover(self) -> None:
        """The probe and, meanwhile, the default config file: what tells where the rest
        is. Writes nothing yet (the local mode learns the host UUID from it)."""
        async def probe() -> None:
            await self.run_probe()

        async def early_config() -> None:
            with anyio.move_on_after(self.settings.item_timeout):
                # One exec beside the probe's (cheaper than starting SFTP); a config
                # that is not there or not readable is asked for again by SFTP.
                await self.host.prefetch([Want("head", (DEFAULT_CONFIG,),
                                               self.settings.max_output),
                                          *(Want("real", (path,)) for paths in
                                            PROBE_FILES.values() for path in paths)],
                                         self.settings.item_timeout / 2)
                try:
                    self.config_data = await self.host.read(DEFAULT_CONFIG,
                                                            self.settings.max_output)
                except ItemError as exc:
                    self.config_data = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            if not self.root:
                tg.start_soon(early_config)
        if self.argv:
            self.config = config_path(self.argv[0])
        if self.config != DEFAULT_CONFIG or self.root or self.config_data is None:
            with anyio.move_on_after(self.settings.item_timeout):
                try:
                    self.config_data = await self.host.read(self.config,
                                                            self.settings.max_output)
                except ItemError as exc:
                    self.config_data = exc
        if isinstance(self.config_data, tuple):
            text = self.config_data[0].decode("utf-8", "surrogateescape")
            self.config_text, parsed = self.redactor.yaml_text(text)
            if parsed:
                self.facts.update(config_facts(self.config_text))
            else:
                self.facts["config_error"] = "not valid YAML"

    async def collect(self) -> None:
        """discover() and then every item."""
        await self.discover()
        await self.collect_rest()

    async def collect_rest(self) -> None:
        await self.write_probe()
        await self.write_config()
        items = [item for item in ITEMS
                 if item.when(self) and item.name not in self.settings.skip_items]
        async with anyio.create_task_group() as tg:
            for item in items:  # what needs no batch starts now
                if item.name == "diag":
                    tg.start_soon(self.guarded, item.name, _bind(item.run, self))
            if self._probe_error is None and "end" in self.sections:
                # What the other items will ask for, in one round trip; what it misses
                # they ask for on their own.
                await self.host.prefetch(self.planned({i.name for i in items}),
                                         self.settings.item_timeout)
            for item in items:
                if item.name != "diag":
                    tg.start_soon(self.guarded, item.name, _bind(item.run, self))
        await self.guarded("tunnel status", self.tunnel_status)

    def planned(self, items: set[str]) -> list[Want]:
        """The commands and reads the items named will make (same arguments, same caps),
        for one batch."""
        cap, log_cap = self.settings.max_output, self.settings.log_bytes
        wants: list[Want] = []
        if self.root:
            return wants
        if "systemd" in items:
            wants += [Want("run", argv, cap) for argv in SYSTEMCTL_LISTS.values()]
            wants += [Want("run", argv, cap, STATUS_OK) for argv in unit_argvs(LIKELY_UNIT)]
        if "journal" in items:
            wants += [Want("run", tuple(self.journal_argv(fmt)), log_cap)
                      for fmt in self.journal_formats()]
        if "log file" in items:
            wants.append(Want("tail", (str(self.facts["log_output"]),), log_cap))
        if "debug socket" in items:
            wants.append(Want("kind", (f"{self.data_dir}/debug.sock",)))
        if "connections" in items:
            wants.append(Want("run", SS_ARGV, cap))
        if "disk" in items:
            wants.append(Want("run", ("df", "-Pk", self.data_dir), 64 * 1024))
        if "data_dir listing" in items:
            wants.append(Want("run", tuple(find_argv(self.data_dir, 5)),
                              200 * self.settings.datadir_entries))
        if "process state" in items:
            wants.append(Want("head", (f"{self.data_dir}/proc/sqlite.db",),
                              self.settings.sqlite_bytes))
        return wants

    # --- the probe -----------------------------------------------------------
    async def run_probe(self) -> None:
        self._probe_started = time.monotonic()
        boundary = secrets.token_hex(16)
        command = probe_command(boundary, self.root, self.settings.max_output)
        sent = time.time()
        with anyio.move_on_after(self.settings.item_timeout) as scope:
            try:
                self._probe_ran = await self.host.run_text(command, self.settings.max_output)
            except ItemError as exc:
                self._probe_error = exc
                return
        if scope.cancelled_caught:
            self._probe_error = ItemError(failure(
                "TPD202", f"the probe command did not finish within "
                          f"{self.settings.item_timeout:g} s"))
            return
        assert self._probe_ran is not None
        self._probe_times = (sent, time.time())
        self.sections = parse_probe(self._probe_ran.stdout, boundary)
        for name, body in self.sections.items():
            if name.startswith("cmdline "):
                self.argv.append(split_cmdline(body))
                self.pids.add(name.split(" ", 1)[1])
        self.tools = {t.strip() for t in self.sections.get("tools", b"").decode(
            "utf-8", "replace").splitlines() if t.strip()}
        self.init = self.sections.get("init", b"").decode("utf-8", "replace").strip()
        self.facts["init"] = self.init or None
        self.facts["tools"] = sorted(self.tools)
        prefix: list[str] = []
        if "nice" in self.tools:
            prefix = ["nice", "-n", "10"]
            if "ionice" in self.tools:
                prefix += ["ionice", "-c", "3"]
        self.host.prefix = prefix

    async def write_probe(self) -> None:
        started = self._probe_started or time.monotonic()
        if self._probe_error is not None:
            self.item_failed("probe", self._probe_error.failure, started)
            return
        ran = self._probe_ran
        if ran is None:
            return
        source = "command: sh -c <probe>"
        refused = {name: why for name in PROBE_FILES
                   if (why := await self.probe_file_refused(name)) is not None}
        if ran.truncated and refused:  # the raw output holds the refused files too
            self.item_failed("probe", next(iter(refused.values())), started)
        elif ran.truncated:
            await self.write("probe", "probe.out", self.redactor.data(ran.stdout),
                             source=source, truncated=True, started=started)
        if "end" not in self.sections and not ran.truncated:
            detail = ran.stderr.decode("utf-8", "replace").strip()[:500]
            why = failure("TPD209", f"the probe ended early (exit {ran.exit_status}): {detail}")
            self.item_failed("probe", why, started)
            self.result.fail(why.code, "item failed", why.detail)
        for n, (name, body) in enumerate((k, v) for k, v in self.sections.items()
                                         if k.startswith("cmdline ")):
            pid = name.split(" ", 1)[1]
            args = self.redactor.cmdline(split_cmdline(body))
            await self.write(f"cmdline {pid}", "cmdline" if n == 0 else f"cmdline.{pid}",
                             "\0".join(args) + "\0", source=f"file: /proc/{pid}/cmdline",
                             started=started)
        for n, (name, body) in enumerate((k, v) for k, v in self.sections.items()
                                         if k.startswith("environ ")):
            pid = name.split(" ", 1)[1]
            await self.write(f"environ {pid}", "environ" if n == 0 else f"environ.{pid}",
                             self.redactor.environ(body), source=f"file: /proc/{pid}/environ",
                             started=started)
        if not self.argv:
            self.item_failed("cmdline", failure("TPD210", "no teleport process found"),
                             started, status="missing")
        version = self.sections.get("version", b"").strip()
        if version:
            await self.write("version", "version.txt", self.redactor.data(version) + b"\n",
                             source="command: teleport version", started=started)
            self.facts["teleport_version"] = version.decode("utf-8", "replace")[:200]
        else:
            self.item_failed("version", failure("TPD209", "`teleport version` gave no output"),
                             started, status="missing")
        host_files = {"hostname": "host/hostname", "os-release": "host/os-release",
                      "uname": "host/uname", "uptime": "host/uptime",
                      "meminfo": "host/meminfo"}
        for name, path in host_files.items():
            content = self.sections.get(name)
            if content and name in refused:
                self.item_failed(name, refused[name], started)
                continue
            if content:
                await self.write(name, path, self.redactor.data(content),
                                 source=f"probe: {name}", started=started)
        for name, body in self.sections.items():
            if name.startswith("limits "):
                await self.write(name, f"host/limits.{name.split(' ', 1)[1]}", body,
                                 source=f"file: /proc/{name.split(' ', 1)[1]}/limits",
                                 started=started)
                self.facts.setdefault("limits", parse_limits(body.decode("utf-8", "replace")))
        self.facts.update(parse_meminfo(self.sections.get("meminfo", b"").decode(
            "utf-8", "replace")))
        uptime = parse_number((self.sections.get("uptime", b"").split() or [b""])[0])
        if uptime is not None:
            self.facts["uptime_s"] = uptime
        self.remote_now = parse_number(self.sections.get("date", b""))
        if self.remote_now is not None and not self.root:
            sent, received = self._probe_times
            self.result.clock_offset_s = self.remote_now - (sent + received) / 2

    async def probe_file_refused(self, name: str) -> Failure | None:
        """TPD214 when a file the probe printed in section `name` is, or leads into, a
        credential store (as far as the host knows where it leads)."""
        for path in PROBE_FILES[name]:
            reals = await self.host.known_real(path)
            pattern = credential_store(path, *reals)
            if pattern is not None:
                real = next((r for r in reals if r != path), path)
                return Failure("TPD214", "credential store refused",
                               f"{path} (resolves to {shown_name(real)}): in a credential "
                               f"store ({pattern}); not copied")
        return None

    async def write_config(self) -> None:
        started = time.monotonic()
        got = self.config_data
        if isinstance(got, ItemError):
            self.item_failed("teleport.yaml", got.failure, started,
                             status="missing" if got.missing else "failed")
            return
        if got is None:
            self.item_failed("teleport.yaml", failure("TPD202", f"{self.config}: not read "
                                                                "in time"), started)
            return
        await self.write("teleport.yaml", "teleport.yaml", self.config_text,
                         source=f"file: {self.config}", truncated=got[1], started=started)
        self.facts["config_path"] = self.config
        self.facts["configured_addresses"] = configured_addresses(self.facts)

    # --- items ---------------------------------------------------------------
    async def systemd(self) -> None:
        """Every teleport* unit (with drop-ins), its status, and the timers."""
        started = time.monotonic()
        cap = self.settings.max_output
        root = [f"--root={self.root}"] if self.root else []
        lists: dict[str, Exec] = {}

        async def listing(name: str, argv: list[str]) -> None:
            lists[name] = await self.host.run(argv, cap)

        async with anyio.create_task_group() as tg:
            if not self.root:
                tg.start_soon(listing, "units", list(SYSTEMCTL_LISTS["units"]))
                tg.start_soon(listing, "timers", list(SYSTEMCTL_LISTS["timers"]))
            files = SYSTEMCTL_LISTS["files"]
            tg.start_soon(listing, "files", [files[0], *root, *files[1:]])
        units: list[str] = []
        for name in ("units", "files"):
            for line in lists[name].stdout.decode("utf-8", "replace").splitlines() \
                    if name in lists else []:
                unit = line.split()[0] if line.split() else ""
                if unit.startswith("teleport") and unit not in units:
                    units.append(unit)
        text = "".join(f"$ systemctl {name}\n" + lists[name].stdout.decode("utf-8", "replace")
                       for name in ("units", "files", "timers") if name in lists)
        await self.write("systemd units", "teleport.service/units.txt", text,
                         source="command: systemctl list-units/list-unit-files/list-timers",
                         started=started)
        if "timers" in lists:
            await self.write("systemd timers", "teleport.service/timers.txt",
                             lists["timers"].stdout, source="command: systemctl list-timers",
                             started=started)
        self.facts["systemd_units"] = units
        if not units:
            raise ItemError(failure("TPD209", "no teleport* systemd unit"), missing=True)

        async def one(unit: str) -> None:
            t0 = time.monotonic()
            if self.root:  # `systemctl cat` refuses --root: read the files as it would
                text, cut, source = await self.unit_files(unit), False, "unit files"
            else:
                cat = await self.host.run(list(unit_argvs(unit)[0]), cap)
                text, cut, source = cat.stdout, cat.truncated, f"command: systemctl cat {unit}"
            await self.write(f"systemctl cat {unit}", f"teleport.service/{unit}",
                             self.redactor.data(text), source=source, truncated=cut,
                             started=t0)
            if not self.root:
                st = await self.host.run(list(unit_argvs(unit)[1]), cap)
                await self.write(f"systemctl status {unit}",
                                 f"teleport.service/{unit}.status.txt",
                                 self.redactor.data(st.stdout), truncated=st.truncated,
                                 source=f"command: systemctl status {unit}", started=t0)

        if not self.root:  # the other units' cat and status: one more batch for them all
            await self.host.prefetch([Want("run", argv, cap, STATUS_OK) for unit in units[:20]
                                      if unit != LIKELY_UNIT for argv in unit_argvs(unit)],
                                     self.settings.item_timeout / 2)
        async with anyio.create_task_group() as tg:
            for unit in units[:20]:
                tg.start_soon(self.guarded, f"unit {unit}", _bind(one, unit))

    async def unit_files(self, unit: str) -> bytes:
        """A unit and its drop-ins from the unit search path, shaped like `systemctl cat`
        (the first directory holding the unit wins; drop-ins from every directory)."""
        parts: list[bytes] = []
        found = False
        for directory in _UNIT_DIRS:
            if not found:
                try:
                    data, _ = await self.host.read(f"{directory}/{unit}", 1024 * 1024)
                    parts.append(f"# {directory}/{unit}\n".encode() + data)
                    found = True
                except ItemError:
                    pass
        for directory in _UNIT_DIRS:
            try:
                entries = await self.host.listdir(f"{directory}/{unit}.d", 100, 1)
            except ItemError:
                continue
            for entry in entries:
                if entry.path.endswith(".conf"):
                    try:
                        data, _ = await self.host.read(entry.path, 1024 * 1024)
                    except ItemError as exc:
                        if exc.failure.code != "TPD214":
                            raise
                        # A drop-in leading into a credential store: the unit and its
                        # other drop-ins are still shown; this one is named, not copied.
                        self.item_failed(f"unit file {shown_name(entry.path)}", exc.failure,
                                         time.monotonic())
                        data = f"# not copied by tpdump: {exc.failure.detail}\n".encode()
                    parts.append(f"# {entry.path}\n".encode() + data)
        if not found:
            raise ItemError(failure("TPD209", f"unit {unit}: no unit file"), missing=True)
        return b"\n".join(parts)

    def journal_argv(self, fmt: str) -> list[str]:
        now = self.remote_now or time.time()
        since = int(now - self.settings.log_window_h * 3600)
        where = [f"--root={self.root}"] if self.root else []
        # Newest first (-r), so that -n and the byte cap keep the newest entries and
        # journalctl stops early; put back in time order by the item.
        return ["journalctl", *where, "--no-pager", "-u", "teleport.service", "-o", fmt,
                "--since", f"@{since}", "-r", "-n", str(self.settings.log_lines)]

    def journal_formats(self) -> list[str]:
        return ["short-iso-precise", "json"] if self.settings.journal_json else \
            ["short-iso-precise"]

    async def journal(self) -> None:
        """journalctl -u teleport.service in short-iso-precise and JSON, newest kept."""
        cap = self.settings.log_bytes
        argvs = {fmt: self.journal_argv(fmt) for fmt in self.journal_formats()}

        async def one(fmt: str, path: str) -> None:
            t0 = time.monotonic()
            ran = await self.host.run(argvs[fmt], cap)
            ran = Exec(newest_last(ran.stdout, ran.truncated), ran.stderr, ran.exit_status,
                       ran.truncated)
            if ran.exit_status not in (0, None):
                raise ItemError(failure("TPD209", f"journalctl exit {ran.exit_status}: "
                                        f"{ran.stderr.decode('utf-8', 'replace')[:300]}"))
            data = self.redactor.json_lines(ran.stdout) if fmt == "json" else \
                self.redactor.data(ran.stdout)
            await self.write(f"journal {fmt}", path, data, source=f"command: journalctl "
                             f"-u teleport.service -o {fmt}", truncated=ran.truncated,
                             started=t0)
            if fmt == "short-iso-precise":
                self.keep_tunnel_lines(data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self.guarded, "journal text",
                          _bind(one, "short-iso-precise", "teleport.service/log.txt"))
            if self.settings.journal_json:
                tg.start_soon(self.guarded, "journal json",
                              _bind(one, "json", "teleport.service/log.json"))

    async def log_file(self) -> None:
        """The file named in teleport.log.output, its newest part."""
        started = time.monotonic()
        path = str(self.facts["log_output"])
        data, truncated = await self.host.read(path, self.settings.log_bytes, tail=True)
        now = self.remote_now or time.time()
        # The window and line count bound the log as journalctl's --since/-n do: that is
        # the profile's choice, not a cut (only the byte cap marks the file truncated).
        data, _ = within_window(data, now - self.settings.log_window_h * 3600,
                                self.settings.log_lines)
        json_log = self.facts.get("log_format") == "json" or data[:1] == b"{"
        clean = self.redactor.json_lines(data) if json_log else self.redactor.data(data)
        name = path.rsplit("/", 1)[-1] or "teleport.log"
        await self.write("log file", f"logs/{name}", clean, source=f"file: {path} (tail)",
                         truncated=truncated, started=started)
        self.keep_tunnel_lines(clean)

    def keep_tunnel_lines(self, data: bytes) -> None:
        """The newest log lines about reverse tunnels (for tunnel.json)."""
        low = data.lower()
        found: list[str] = []
        end = len(data)
        while len(found) < 50:
            i = low.rfind(b"tunnel", 0, end)
            if i < 0:
                break
            start = data.rfind(b"\n", 0, i) + 1
            stop = data.find(b"\n", i)
            found.append(data[start:len(data) if stop < 0 else stop].decode("utf-8", "replace"))
            end = start
        self.log_tail = found[::-1]

    def diag_target(self) -> tuple[str, int] | None:
        addr = (diag_addr_from(self.argv[0]) if self.argv else None) or \
            self.facts.get("diag_addr")
        return split_hostport(addr) if isinstance(addr, str) else None

    async def diag(self) -> None:
        """/metrics, /healthz, /readyz: pipelined on one forwarded connection to
        diag_addr."""
        target = self.diag_target()
        assert target is not None
        started = time.monotonic()
        paths = {"/metrics": "diag/metrics.txt", "/healthz": "diag/healthz.json",
                 "/readyz": "diag/readyz.json"}
        if not self.settings.metrics:
            del paths["/metrics"]
        answers = await self.host.http_get(target, list(paths), self.settings.max_output)
        for path in list(paths)[len(answers):]:  # the server closed after fewer answers
            answers += await self.host.http_get(target, [path], self.settings.max_output)
        codes: dict[str, int] = {}
        for (path, out), answer in zip(paths.items(), answers, strict=True):
            codes[path] = answer.status
            body = self.redactor.data(answer.body)
            await self.write(f"diag {path}", out, body, truncated=answer.truncated,
                             source=f"http: {target[0]}:{target[1]}{path}", started=started)
            if path == "/metrics":
                self.metrics = body
        self.facts["diag"] = {"addr": f"{target[0]}:{target[1]}", "status": codes}

    async def debug_socket(self) -> None:
        """The debug service's socket, when present: its log level."""
        started = time.monotonic()
        path = f"{self.data_dir}/debug.sock"
        if await self.host.kind(path) != "socket":
            raise ItemError(failure("TPD209", f"{path}: not present"), missing=True)
        (answer,) = await self.host.http_get(path, ["/log-level"], 64 * 1024)
        await self.write("debug socket", "diag/debug_log_level.txt", answer.body,
                         source=f"http+unix: {path} /log-level", started=started)
        self.facts["debug_log_level"] = answer.body.decode("utf-8", "replace").strip()[:40]

    async def connections(self) -> None:
        started = time.monotonic()
        ran = await self.host.run(list(SS_ARGV), self.settings.max_output)
        conns = parse_connections(ran.stdout.decode("utf-8", "replace"), self.pids)
        lines = [line for line in ran.stdout.decode("utf-8", "replace").splitlines()
                 if any(f"pid={p}," in line for p in self.pids)]
        await self.write("connections", "net/connections.txt", "\n".join(lines) + "\n",
                         source="command: ss -Htnp state established (teleport only)",
                         started=started)
        self.facts["connected_addresses"] = conns

    async def disk(self) -> None:
        started = time.monotonic()
        ran = await self.host.run(["df", "-Pk", self.data_dir], 64 * 1024)
        await self.write("disk", "host/df.txt", ran.stdout, source=f"command: df -Pk "
                         f"{self.data_dir}", started=started)
        rows = ran.stdout.decode("utf-8", "replace").splitlines()
        if len(rows) >= 2 and len(rows[1].split()) >= 4:
            with contextlib.suppress(ValueError):
                self.facts["data_dir_free_kb"] = int(rows[1].split()[3])

    async def data_dir_listing(self) -> None:
        """Names, sizes and times under data_dir: one `find` (GNU -printf) when it works,
        else a listing by SFTP (a few requests per directory)."""
        started = time.monotonic()
        entries = await self.find(self.data_dir, self.settings.datadir_entries, 5)
        if entries is None:
            entries = await self.host.listdir(self.data_dir, self.settings.datadir_entries, 5)
        # Names as text, one entry a line: a control character or a byte that is not UTF-8
        # is shown escaped (a newline in a name cannot start a line of its own).
        lines = [f"{e.kind:<6} {e.size:>12} {utc_stamp(e.mtime)} {shown_name(e.path)}"
                 for e in entries]
        cut = len(entries) >= self.settings.datadir_entries
        await self.write("data_dir listing", "data_dir.txt", "\n".join(lines) + "\n",
                         source=f"listing: {self.data_dir}", truncated=cut, started=started)

    async def find(self, path: str, limit: int, depth: int) -> list[DirEntry] | None:
        """The listing by one GNU `find -printf`, or None when that does not work here."""
        if self.root:
            return None
        ran = None
        # Half the item's time at most: if commands hang on this node, the SFTP listing
        # still gets the other half.
        with anyio.move_on_after(self.settings.item_timeout / 2):
            try:
                ran = await self.host.run(find_argv(path, depth), 200 * limit)
            except ItemError:
                return None
        if ran is None or (ran.exit_status != 0 and not ran.truncated):
            return None
        return parse_find(ran.stdout.decode("utf-8", "surrogateescape"), path, limit)

    async def process_state(self) -> None:
        started = time.monotonic()
        path = f"{self.data_dir}/proc/sqlite.db"
        data, truncated = await self.host.read(path, self.settings.sqlite_bytes)
        if truncated:
            raise ItemError(failure("TPD206", f"{path} is larger than "
                                    f"{self.settings.sqlite_bytes} bytes; not dumped"))
        try:
            sql = await anyio.to_thread.run_sync(dump_process_state, data, self.redactor)
        except ValueError as exc:
            raise ItemError(failure("TPD209", f"{path}: {exc}")) from exc
        await self.write("process state", "proc/sqlite.sql", sql,
                         source=f"file: {path} (secret values removed)", started=started)

    async def tunnel_status(self) -> None:
        """Reverse-tunnel state from the metrics and the log lines that mention it."""
        metrics = tunnel_metrics(self.metrics)
        inst = self.result.instance
        if not metrics and not self.log_tail and not inst.tunnel:
            return
        data = {"uses_reverse_tunnel": inst.tunnel, "metrics": metrics,
                "log_lines": self.log_tail}
        await self.write("tunnel status", "tunnel.json", json.dumps(data, indent=1),
                         source="metrics and logs", started=time.monotonic())


def find_argv(path: str, depth: int) -> list[str]:
    """One GNU `find` listing names, sizes and times under `path`, each entry ended by a
    NUL byte."""
    return ["find", path, "-maxdepth", str(depth), "-printf", "%y %s %T@ %p\\0"]


def _bind(func: Callable[..., Awaitable[None]], *args: Any) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await func(*args)
    return call


def _systemd(c: NodeCollector) -> bool:
    return (c.init == "systemd" and "systemctl" in c.tools) or bool(c.root)


def _journald(c: NodeCollector) -> bool:
    return "journalctl" in c.tools and (c.init == "systemd" or bool(c.root))


def _log_file(c: NodeCollector) -> bool:
    out = c.facts.get("log_output")
    return isinstance(out, str) and out.startswith("/") and out not in _LOG_TARGETS


def _live(c: NodeCollector) -> bool:
    return not c.root


ITEMS: tuple[Item, ...] = (
    Item("systemd", NodeCollector.systemd, _systemd),
    Item("journal", NodeCollector.journal, _journald),
    Item("log file", NodeCollector.log_file, _log_file),
    Item("diag", NodeCollector.diag, lambda c: _live(c) and c.diag_target() is not None),
    Item("debug socket", NodeCollector.debug_socket, _live),
    Item("connections", NodeCollector.connections, lambda c: _live(c) and "ss" in c.tools
         and bool(c.pids)),
    Item("disk", NodeCollector.disk, lambda c: _live(c) and "df" in c.tools),
    Item("data_dir listing", NodeCollector.data_dir_listing, lambda c: True),
    Item("process state", NodeCollector.process_state, lambda c: True),
)


def node_json(result: NodeResult, *, brief: bool = False) -> str:
    """node.json: one line per key, one line per item (readable, and written by the C
    JSON encoder: json.dumps(indent=...) runs in Python, a cost paid for every node).
    `brief` leaves out the facts and items (the last keys: every other line stays where it
    is in the full file), for the dump-time analyzers of ten thousand nodes."""
    lines = []
    for key, value in result.to_json().items():
        if brief and key in ("facts", "items"):
            continue
        name = json.dumps(key)
        if isinstance(value, list) and value:
            inner = ",\n".join("  " + json.dumps(v, default=str) for v in value)
            lines.append(f" {name}: [\n{inner}\n ]")
        else:
            lines.append(f" {name}: {json.dumps(value, default=str)}")
    return "{\n" + ",\n".join(lines) + "\n}"
