"""`systemctl` on a simulated systemd node, printed as systemd 252 (Debian 12) prints it.

Verbs: list-units, list-unit-files, list-timers, cat, status, is-active, is-enabled.
Sources (docs/teleport-formats.md): src/systemctl/systemctl-{list-units,list-unit-files,cat,
show}.c, src/shared/{format-table,pretty-print}.c and src/basic/time-util.c of v252.
Output is not a terminal under SSH exec: no colours, no pager, no ellipsis.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import re
from dataclasses import dataclass

from tpdump.sim.cluster import SimCluster, SimNode
from tpdump.sim.systemd import UnitFile

USEC_PER_SEC = 1_000_000
USEC_PER_MSEC = 1000
USEC_PER_MINUTE = 60 * USEC_PER_SEC
USEC_PER_HOUR = 60 * USEC_PER_MINUTE
USEC_PER_DAY = 24 * USEC_PER_HOUR
USEC_PER_WEEK = 7 * USEC_PER_DAY
USEC_PER_MONTH = 2_629_800 * USEC_PER_SEC
USEC_PER_YEAR = 31_557_600 * USEC_PER_SEC

EXIT_NOT_RUNNING = 3  # LSB "program is not running"
EXIT_UNKNOWN = 4  # LSB "program or service status is unknown" (no such unit)

ACTIVE_GLYPH = {"active": "●", "inactive": "○", "failed": "×", "reloading": "↻",
                "activating": "●", "deactivating": "●"}
_SUB_ACTIVE = {"timer": "waiting", "socket": "listening", "path": "waiting",
               "target": "active", "mount": "mounted"}


# --- time and size formatting (src/basic/time-util.c, format-util.c) ----------------


def format_timestamp(ts: float) -> str:
    """`%a %Y-%m-%d %H:%M:%S %Z` in UTC (the nodes run in UTC)."""
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC")


def format_timestamp_relative(ts: float, now: float) -> str:
    """format_timestamp_relative(): `3 days ago`, `4min 2s left`, ..."""
    t, n = int(ts * USEC_PER_SEC), int(now * USEC_PER_SEC)
    if n > t:
        d, s = n - t, " ago"
    else:
        d, s = t - n, " left"

    def plural(v: int, one: str, many: str) -> str:
        return one if v == 1 else many

    if d >= USEC_PER_YEAR:
        y, m = d // USEC_PER_YEAR, (d % USEC_PER_YEAR) // USEC_PER_MONTH
        return f"{y} {plural(y, 'year', 'years')} {m} {plural(m, 'month', 'months')}{s}"
    if d >= USEC_PER_MONTH:
        m, dd = d // USEC_PER_MONTH, (d % USEC_PER_MONTH) // USEC_PER_DAY
        return f"{m} {plural(m, 'month', 'months')} {dd} {plural(dd, 'day', 'days')}{s}"
    if d >= USEC_PER_WEEK:
        w, dd = d // USEC_PER_WEEK, (d % USEC_PER_WEEK) // USEC_PER_DAY
        return f"{w} {plural(w, 'week', 'weeks')} {dd} {plural(dd, 'day', 'days')}{s}"
    if d >= 2 * USEC_PER_DAY:
        return f"{d // USEC_PER_DAY} days{s}"
    if d >= 25 * USEC_PER_HOUR:
        return f"1 day {(d - USEC_PER_DAY) // USEC_PER_HOUR}h{s}"
    if d >= 6 * USEC_PER_HOUR:
        return f"{d // USEC_PER_HOUR}h{s}"
    if d >= USEC_PER_HOUR:
        return f"{d // USEC_PER_HOUR}h {(d % USEC_PER_HOUR) // USEC_PER_MINUTE}min{s}"
    if d >= 5 * USEC_PER_MINUTE:
        return f"{d // USEC_PER_MINUTE}min{s}"
    if d >= USEC_PER_MINUTE:
        return f"{d // USEC_PER_MINUTE}min {(d % USEC_PER_MINUTE) // USEC_PER_SEC}s{s}"
    if d >= USEC_PER_SEC:
        return f"{d // USEC_PER_SEC}s{s}"
    if d >= USEC_PER_MSEC:
        return f"{d // USEC_PER_MSEC}ms{s}"
    if d > 0:
        return f"{d}us{s}"
    return "now"


_SPAN_TABLE = (("y", USEC_PER_YEAR), ("month", USEC_PER_MONTH), ("w", USEC_PER_WEEK),
               ("d", USEC_PER_DAY), ("h", USEC_PER_HOUR), ("min", USEC_PER_MINUTE),
               ("s", USEC_PER_SEC), ("ms", USEC_PER_MSEC), ("us", 1))


def format_timespan(t: int, accuracy: int) -> str:
    """format_timespan(): `2h 3min 4.567s` for `t` microseconds."""
    if t <= 0:
        return "0"
    parts: list[str] = []
    something = False
    for suffix, unit in _SPAN_TABLE:
        if t <= 0 or (t < accuracy and something):
            break
        if t < unit:
            continue
        a, b = divmod(t, unit)
        done = False
        if t < USEC_PER_MINUTE and b > 0:
            j = 0
            cc = unit
            while cc > 1:
                j += 1
                cc //= 10
            cc = accuracy
            while cc > 1:
                b //= 10
                j -= 1
                cc //= 10
            if j > 0:
                parts.append(f"{a}.{b:0{j}d}{suffix}")
                t = 0
                done = True
        if not done:
            parts.append(f"{a}{suffix}")
            t = b
        something = True
    return " ".join(parts)


_BYTE_TABLE = (("E", 1024**6), ("P", 1024**5), ("T", 1024**4), ("G", 1024**3), ("M", 1024**2),
               ("K", 1024))


def format_bytes(t: int) -> str:
    """format_bytes() (IEC factors, one decimal, `B` below 1 KiB)."""
    n = len(_BYTE_TABLE)
    for i, (suffix, factor) in enumerate(_BYTE_TABLE):
        if t >= factor:
            if i != n - 1:
                dec = (t // _BYTE_TABLE[i + 1][1] * 10 // _BYTE_TABLE[n - 1][1]) % 10
            else:
                dec = (t * 10 // factor) % 10
            return f"{t // factor}.{dec}{suffix}"
    return f"{t}B"


def parse_timespan(value: str) -> float:
    """Seconds of a systemd time span such as `5m`, `1h 30min`, `90` (0 if unparsable)."""
    units = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1,
             "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
             "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400,
             "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip().lower()):
        total += float(num) * units.get(unit or "s", 0)
    return total


def quote_arg(arg: str) -> str:
    """How systemd quotes a command-line argument in `status` (shell_maybe_quote)."""
    if arg and not re.search(r"[\s'\"\\$`;&|<>(){}\[\]*?!~#]|[^\x20-\x7e]", arg):
        return arg
    return '"' + re.sub(r'(["\\$`])', r"\\\1", arg) + '"'


def table(rows: list[list[str]], header: list[str] | None, right: frozenset[int] = frozenset(),
          ) -> str:
    """format-table output: columns as wide as their widest cell, one space apart, the last
    column not padded."""
    all_rows = ([header] if header else []) + rows
    if not all_rows:
        return ""
    ncol = len(all_rows[0])
    widths = [max(len(r[i]) for r in all_rows) for i in range(ncol)]
    out = []
    for r in all_rows:
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i])
                 for i in range(ncol)]
        out.append(" ".join(cells).rstrip(" ") + "\n")
    return "".join(out)


# --- the runtime state of a node's units -------------------------------------------------


@dataclass(frozen=True)
class UnitState:
    """What the manager knows of one unit at a given time (node clock)."""

    unit: UnitFile
    active: str
    sub: str
    since: float
    main_pid: int = 0
    last_trigger: float = 0.0
    next_elapse: float = 0.0
    exit_pid: int = 0


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


def boot_time(node: SimNode, cluster: SimCluster) -> float:
    """When the node booted (node clock): /proc/uptime is 3 days + the instance index."""
    return cluster.started + node.inst.group.clock_offset_s - (86400 * 3 + node.inst.index)


def process_start(node: SimNode, cluster: SimCluster) -> float:
    """When the teleport process (the main unit) started, node clock: shortly after boot."""
    unit = node.model.main_unit if node.model else ""
    return boot_time(node, cluster) + 14.2 + _h(cluster.scenario.seed, node.uuid, unit) % 50 / 10


class Systemctl:
    """`systemctl` of one node."""

    def __init__(self, node: SimNode, cluster: SimCluster, now: float) -> None:
        assert node.model is not None
        self.node = node
        self.cluster = cluster
        self.units = node.model.units
        self.offset = node.inst.group.clock_offset_s
        self.now = now + self.offset
        self.boot = boot_time(node, cluster)
        self.states = {name: self._state(u) for name, u in self.units.items()}

    # --- model --------------------------------------------------------------------

    def _triggered_by(self, name: str) -> list[str]:
        out = []
        for other in self.units.values():
            if other.kind == "timer" and self._activates(other) == name:
                out.append(other.name)
        return sorted(out)

    def _activates(self, timer: UnitFile) -> str:
        return timer.get("Timer.Unit") or timer.name.rsplit(".", 1)[0] + ".service"

    def _state(self, unit: UnitFile) -> UnitState:
        assert self.node.model is not None
        seed = (self.cluster.scenario.seed, self.node.uuid, unit.name)
        if unit.name == self.node.model.main_unit:
            return UnitState(unit, "active", "running", process_start(self.node, self.cluster),
                             main_pid=self.node.pid)
        if unit.kind == "timer":
            period = (parse_timespan(unit.get("Timer.OnUnitActiveSec"))
                      or parse_timespan(unit.get("Timer.OnUnitInactiveSec")) or 3600.0)
            spread = parse_timespan(unit.get("Timer.RandomizedDelaySec"))
            last = self.now - (_h(*seed, "last") % max(1, int(period)))
            nxt = last + period + (_h(*seed, "delay") % max(1, int(spread * 10))) / 10
            if nxt <= self.now:
                nxt = self.now + 1
            return UnitState(unit, "active", "waiting", self.boot + 16.0, last_trigger=last,
                             next_elapse=nxt)
        if unit.kind == "service":
            timers = self._triggered_by(unit.name)
            if timers:
                last = self._state(self.units[timers[0]]).last_trigger
                return UnitState(unit, "inactive", "dead", last + 1.5 + _h(*seed) % 30 / 10,
                                 exit_pid=1000 + _h(*seed, "pid") % 60000)
            return UnitState(unit, "inactive", "dead", 0.0)
        return UnitState(unit, "active", _SUB_ACTIVE.get(unit.kind, "active"), self.boot + 9.0)

    def resolve(self, name: str) -> str:
        """A unit name as systemctl mangles it (no suffix: `.service`)."""
        if "." not in name.rsplit("/", 1)[-1]:
            return name + ".service"
        return name

    # --- verbs --------------------------------------------------------------------------

    def run(self, args: list[str]) -> tuple[bytes, bytes, int]:
        """Answer `systemctl ARGS` as (stdout, stderr, exit status)."""
        flags: set[str] = set()
        lines = 10
        words: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-n", "--lines") and i + 1 < len(args):
                lines = int(args[i + 1]) if args[i + 1].isdigit() else lines
                i += 2
                continue
            if a.startswith("--lines="):
                lines = int(a.split("=", 1)[1] or 0)
            elif a.startswith("-n") and a[2:].isdigit():
                lines = int(a[2:])
            elif a in ("-a", "--all"):
                flags.add("all")
            elif a in ("-l", "--full"):
                flags.add("full")
            elif a in ("--plain", "--no-legend", "--no-pager", "-q", "--quiet"):
                flags.add(a.lstrip("-"))
            elif a.startswith("--root="):
                return b"", f"Verb '{words[0] if words else 'cat'}' cannot be used with " \
                            f"--root= or --image=.\n".encode(), 1
            elif a.startswith("-"):
                return b"", f"systemctl: unrecognized option '{a}'\n".encode(), 1
            else:
                words.append(a)
            i += 1
        del lines  # `-n 0`: no journal lines follow the status (the only value tpdump uses)
        verb, rest = (words[0], words[1:]) if words else ("list-units", [])
        if verb == "list-units":
            return self.list_units(rest, flags), b"", 0
        if verb == "list-unit-files":
            return self.list_unit_files(rest, flags), b"", 0
        if verb == "list-timers":
            return self.list_timers(rest, flags), b"", 0
        if verb == "cat":
            return self.cat(rest)
        if verb == "status":
            return self.status(rest)
        if verb in ("is-active", "is-enabled"):
            return self.is_x(verb, rest, "quiet" in flags)
        return b"", f"Unknown command verb '{verb}'.\n".encode(), 1

    def _match(self, patterns: list[str]) -> list[str]:
        names = sorted(self.units, key=lambda n: (n.rsplit(".", 1)[-1].lower(), n.lower()))
        if not patterns:
            return names
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]

    def list_units(self, patterns: list[str], flags: set[str]) -> bytes:
        rows = []
        for name in self._match(patterns):
            st = self.states[name]
            if st.active == "inactive" and "all" not in flags:
                continue
            rows.append([name, "loaded", st.active, st.sub, st.unit.description])
        header = None if "no-legend" in flags else ["UNIT", "LOAD", "ACTIVE", "SUB",
                                                     "DESCRIPTION"]
        if "plain" not in flags:
            rows = [[" ", *r] for r in rows]
            header = ["", *header] if header else None
        out = table(rows, header) if rows or header else ""
        if "no-legend" not in flags:
            n = len(rows)
            if n:
                out += ("\nLOAD   = Reflects whether the unit definition was properly loaded.\n"
                        "ACTIVE = The high-level unit activation state, i.e. generalization "
                        "of SUB.\n"
                        "SUB    = The low-level unit activation state, values depend on unit "
                        "type.\n")
            if "all" in flags:
                out += (f"{n} loaded units listed.\n"
                        "To show all installed unit files use 'systemctl list-unit-files'.\n")
            else:
                out += (f"{n} loaded units listed. Pass --all to see loaded but inactive units, "
                        "too.\nTo show all installed unit files use "
                        "'systemctl list-unit-files'.\n")
        return out.encode("utf-8", "surrogateescape")  # hostile unit names

    def list_unit_files(self, patterns: list[str], flags: set[str]) -> bytes:
        rows = []
        for name in self._match(patterns):
            state = self.units[name].file_state
            rows.append([name, state, "enabled" if state in ("enabled", "disabled") else "-"])
        header = None if "no-legend" in flags else ["UNIT FILE", "STATE", "PRESET"]
        out = table(rows, header) if rows or header else ""
        if "no-legend" not in flags:
            out += f"\n{len(rows)} unit files listed.\n"
        return out.encode("utf-8", "surrogateescape")  # hostile unit names

    def list_timers(self, patterns: list[str], flags: set[str]) -> bytes:
        timers = sorted((self.states[n] for n in self._match(patterns)
                         if self.states[n].unit.kind == "timer"), key=lambda st: st.next_elapse)
        rows = []
        for st in timers:
            name = st.unit.name
            rows.append([format_timestamp(st.next_elapse),
                         format_timestamp_relative(st.next_elapse, self.now),
                         format_timestamp(st.last_trigger),
                         format_timestamp_relative(st.last_trigger, self.now),
                         name, self._activates(st.unit)])
        header = None if "no-legend" in flags else ["NEXT", "LEFT", "LAST", "PASSED", "UNIT",
                                                     "ACTIVATES"]
        out = table(rows, header)
        if "no-legend" not in flags:
            out += f"\n{len(rows)} timers listed.\n"
            if "all" not in flags:
                out += "Pass --all to see loaded but inactive timers, too.\n"
        return out.encode("utf-8", "surrogateescape")  # hostile unit names

    def cat(self, names: list[str]) -> tuple[bytes, bytes, int]:
        out: list[str] = []
        err = ""
        code = 0
        first = True
        for raw in names:
            name = self.resolve(raw)
            unit = self.units.get(name)
            if unit is None:
                err += f"No files found for {name}.\n"
                code = 1
                continue
            if not first:
                out.append("\n")
            first = False
            parts = [(unit.path, unit.text), *unit.dropins]
            for n, (path, text) in enumerate(parts):
                out.append(("\n" if n else "") + f"# {path}\n")
                out.extend(line + "\n" for line in _read_lines(text))
        return "".join(out).encode("utf-8", "surrogateescape"), err.encode(), code

    def is_x(self, verb: str, names: list[str], quiet: bool) -> tuple[bytes, bytes, int]:
        out = []
        code = 0
        for raw in names:
            name = self.resolve(raw)
            unit = self.units.get(name)
            if verb == "is-active":
                state = self.states[name].active if unit else "inactive"
                code = code or (0 if state == "active" else EXIT_NOT_RUNNING)
            else:
                state = unit.file_state if unit else "not-found"
                code = code or (0 if state == "enabled" else 1)
                if unit is None:
                    return b"", f"Failed to get unit file state for {name}: No such file or " \
                                f"directory\n".encode(), 1
            out.append(state + "\n")
        return (b"" if quiet else "".join(out).encode()), b"", code

    def status(self, names: list[str]) -> tuple[bytes, bytes, int]:
        blocks: list[str] = []
        err = ""
        code = 0
        for raw in names or [self.node.model.main_unit if self.node.model else ""]:
            name = self.resolve(raw)
            if name not in self.units:
                err += f"Unit {name} could not be found.\n"
                code = code or EXIT_UNKNOWN
                continue
            blocks.append(self._status_one(self.states[name]))
            if self.states[name].active != "active":
                code = code or EXIT_NOT_RUNNING
        return "\n".join(blocks).encode("utf-8", "surrogateescape"), err.encode(), code

    def _status_one(self, st: UnitState) -> str:
        u = st.unit
        lines = [f"{ACTIVE_GLYPH.get(st.active, '●')} {u.name}"
                 + (f" - {u.description}" if u.description != u.name else "")]
        state = u.file_state
        preset = "; preset: enabled" if state in ("enabled", "disabled") else ""
        lines.append(f"     Loaded: loaded ({u.path}; {state}{preset})")
        if u.dropins:
            current = ""
            last = False
            text = ""
            for n, (path, _) in enumerate(u.dropins):
                d, base = path.rsplit("/", 1)
                if not current or last:
                    text += "             " if current else "    Drop-In: "
                    current = d
                    text += f"{d}\n             └─"
                last = not (n + 1 < len(u.dropins) and u.dropins[n + 1][0].startswith(current))
                text += base + ("\n" if last else ", ")
            lines.extend(text.rstrip("\n").split("\n"))
        since = ""
        if st.since:
            since = (f" since {format_timestamp(st.since)}; "
                     f"{format_timestamp_relative(st.since, self.now)}")
        lines.append(f"     Active: {st.active} ({st.sub}){since}")
        for n, t in enumerate(self._triggered_by(u.name)):
            glyph = ACTIVE_GLYPH.get(self.states[t].active, "●")
            lines.append(f"{'TriggeredBy:' if n == 0 else ' ' * 12} {glyph} {t}")
        if u.kind == "timer":
            lines.append(f"    Trigger: {format_timestamp(st.next_elapse)}; "
                         f"{format_timestamp_relative(st.next_elapse, self.now)}")
            target = self._activates(u)
            tstate = self.states.get(target)
            glyph = ACTIVE_GLYPH.get(tstate.active if tstate else "inactive", "○")
            lines.append(f"   Triggers: {glyph} {target}")
        seed = (self.cluster.scenario.seed, self.node.uuid, u.name)
        if u.kind == "service" and st.main_pid:
            argv = self.node.argv
            lines.append(f"   Main PID: {st.main_pid} (teleport)")
            lines.append(f"      Tasks: {12 + _h(*seed, 'tasks') % 9} (limit: 9489)")
            memory = format_bytes(90_000_000 + _h(*seed, "mem") % 80_000_000)
            lines.append(f"     Memory: {memory}")
            cpu_usec = int((self.now - st.since) * 900) + _h(*seed, "cpu") % 10_000_000
            lines.append(f"        CPU: {format_timespan(cpu_usec, USEC_PER_MSEC)}")
            lines.append(f"     CGroup: /system.slice/{u.name}")
            cmd = " ".join(quote_arg(a) for a in argv)
            if self.node.fault == "garbage":
                cmd += ' "--\\xff\\xfe"'
            lines.append(f"             └─{st.main_pid} {cmd}")
        elif u.kind == "service" and st.exit_pid:
            argv = u.exec_start()
            lines.append(f"    Process: {st.exit_pid} ExecStart={' '.join(argv)} "
                         "(code=exited, status=0/SUCCESS)")
            lines.append(f"   Main PID: {st.exit_pid} (code=exited, status=0/SUCCESS)")
            cpu = format_timespan(40_000 + _h(*seed, "cpu") % 400_000, USEC_PER_MSEC)
            lines.append(f"        CPU: {cpu}")
        return "\n".join(lines) + "\n"


def _read_lines(text: bytes) -> list[str]:
    """Lines as systemd's read_line() splits them (`\\n`, `\\r\\n`, `\\r` or NUL end one)."""
    s = text.decode("utf-8", "surrogateescape")
    lines = re.split(r"\r\n|\n|\r|\x00", s)
    if lines and lines[-1] == "":
        lines.pop()
    return lines
