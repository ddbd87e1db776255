"""systemd unit files of a simulated node: parsing, the unit search path, enablement.

Pure functions on file contents (no cluster model), so that `cluster.py` can derive a
node's command line and limits from its units and `systemctl.py` can print them.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field

# The unit search path of a Debian 12 system manager (/lib is a symlink to /usr/lib).
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system")
UNIT_SUFFIXES = (".service", ".timer", ".socket", ".path", ".target", ".mount")
DEFAULT_NOFILE = ("1024", "524288")  # systemd >= 240 DefaultLimitNOFILE=1024:524288


@dataclass
class UnitFile:
    """A unit as systemd loads it: its fragment, its drop-ins and their settings."""

    name: str
    path: str
    text: bytes
    dropins: list[tuple[str, bytes]] = field(default_factory=list)
    settings: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def get(self, key: str, default: str = "") -> str:
        """The effective value of `Section.Key` (the last assignment)."""
        values = self.settings.get(key)
        return values[-1] if values else default

    def values(self, key: str) -> list[str]:
        """Every value of a list setting, honouring empty assignments that reset it."""
        out: list[str] = []
        for v in self.settings.get(key, []):
            if v == "":
                out.clear()
            else:
                out.append(v)
        return out

    @property
    def description(self) -> str:
        return self.get("Unit.Description", self.name)

    @property
    def wanted_by(self) -> list[str]:
        out: list[str] = []
        for v in self.values("Install.WantedBy") + self.values("Install.RequiredBy"):
            out += v.split()
        return out

    @property
    def file_state(self) -> str:
        """`enabled` when it has an [Install] section (the simulator enables those), else
        `static`."""
        return "enabled" if self.wanted_by else "static"

    def exec_start(self) -> list[str]:
        """argv of the (last) ExecStart=, prefixes such as `-` or `@` removed."""
        starts = self.values("Service.ExecStart")
        return exec_argv(starts[-1]) if starts else []

    def nofile(self) -> tuple[str, str]:
        """(soft, hard) open-files limit as /proc/<pid>/limits prints them."""
        value = self.get("Service.LimitNOFILE")
        if not value:
            return DEFAULT_NOFILE
        soft, _, hard = value.partition(":")
        hard = hard or soft

        def fmt(v: str) -> str:
            v = v.strip()
            return "unlimited" if v in ("infinity", "") else v

        return fmt(soft), fmt(hard)


def parse_settings(text: bytes, into: dict[str, list[str]]) -> None:
    """Add the `Section.Key` assignments of one unit file (continuations and comments as
    systemd's config parser reads them)."""
    section = ""
    pending = ""
    for raw in text.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if pending:
            if line.startswith(("#", ";")):
                continue
            line = pending + " " + line
            pending = ""
        elif not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, eq, value = line.partition("=")
        if eq:
            into.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    if pending:
        key, eq, value = pending.partition("=")
        if eq:
            into.setdefault(f"{section}.{key.strip()}", []).append(value.strip())


def exec_argv(value: str) -> list[str]:
    """Split an Exec*= value into argv (quotes as systemd reads them; `%%` is `%`)."""
    try:
        argv = shlex.split(value.replace("%%", "%"), posix=True)
    except ValueError:
        argv = value.split()
    if argv:
        first = argv[0].lstrip("@-:+!")
        argv[0] = first
    return argv


def find_units(files: dict[str, bytes]) -> dict[str, UnitFile]:
    """Every unit under the search path of `files` (canonical paths), with drop-ins."""
    fragments: dict[str, tuple[int, str]] = {}
    dropins: dict[str, dict[str, tuple[int, str]]] = {}
    for path in files:
        d, base = posixpath.split(path)
        if d in UNIT_DIRS and base.endswith(UNIT_SUFFIXES):
            rank = UNIT_DIRS.index(d)
            if base not in fragments or rank < fragments[base][0]:
                fragments[base] = (rank, path)
            continue
        parent, unit_d = posixpath.split(d)
        if parent in UNIT_DIRS and unit_d.endswith(".d") and base.endswith(".conf"):
            rank = UNIT_DIRS.index(parent)
            seen = dropins.setdefault(unit_d[:-2], {})
            if base not in seen or rank < seen[base][0]:
                seen[base] = (rank, path)
    units: dict[str, UnitFile] = {}
    for name, (_, path) in fragments.items():
        unit = UnitFile(name, path, files[path])
        parse_settings(unit.text, unit.settings)
        for _, (_, dpath) in sorted(dropins.get(name, {}).items()):
            unit.dropins.append((dpath, files[dpath]))
            parse_settings(files[dpath], unit.settings)
        units[name] = unit
    return units


def enable_links(units: dict[str, UnitFile]) -> dict[str, str]:
    """The `.wants/` symlinks `systemctl enable` would have made: link path -> target."""
    links: dict[str, str] = {}
    for unit in units.values():
        for target in unit.wanted_by:
            kind = "requires" if target in unit.values("Install.RequiredBy") else "wants"
            links[f"/etc/systemd/system/{target}.{kind}/{unit.name}"] = unit.path
    return links


def main_unit(units: dict[str, UnitFile]) -> UnitFile | None:
    """The unit that runs `teleport start`: teleport.service, else the first service whose
    ExecStart runs a `teleport` binary."""
    if "teleport.service" in units:
        return units["teleport.service"]
    for name in sorted(units):
        unit = units[name]
        argv = unit.exec_start()
        if unit.kind == "service" and argv and posixpath.basename(argv[0]) == "teleport":
            return unit
    return None
