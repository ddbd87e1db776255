"""Node file systems: generated in memory from the scenario, served read-only over SFTP.

Each node's tree is built on first use and kept in a bounded cache; log files are produced
lazily and deterministically from the seed, so 10,000 nodes stay cheap in memory.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import stat as statmod
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import asyncssh
import yaml

from tpdump.sim import hostile
from tpdump.sim.cluster import (
    AUTH_PORT,
    PID_FILE,
    SYMLINKS,
    TELEPORT_BIN,
    TELEPORT_UNIT,
    SimCluster,
    SimNode,
)
from tpdump.sim.hostile import Stream
from tpdump.sim.logs import log_bytes
from tpdump.sim.procstate import ProcessStateBuilder
from tpdump.sim.tctl import version_line

__all__ = ["PID_FILE", "TELEPORT_BIN", "TELEPORT_UNIT", "FSBuilder", "NodeFS"]

HOME = "/home/tpdump"
FS_CACHE = 2048
LOG_CACHE = 256
DB_CACHE = 256
MAX_LINK_DEPTH = 40
EXISTS_CACHE = 48  # exists() answers kept per node file system
DEBUG_SOCKET_SINCE = 16  # Teleport major that added the debug service socket (approximate)
TOOLS_ALL = ("ss", "df", "nice", "ionice", "find")
TOOLS_SYSTEMD = ("journalctl", "systemctl")

MEMINFO = [("MemTotal", 8148260), ("MemFree", 2104420), ("MemAvailable", 5431180),
           ("Buffers", 201348), ("Cached", 3021452), ("SwapCached", 0), ("Active", 2410232),
           ("Inactive", 2911044), ("Active(anon)", 1398720), ("Inactive(anon)", 6340),
           ("Active(file)", 1011512), ("Inactive(file)", 2904704), ("Unevictable", 0),
           ("Mlocked", 0), ("SwapTotal", 0), ("SwapFree", 0), ("Dirty", 148),
           ("Writeback", 0), ("AnonPages", 1402312), ("Mapped", 398132), ("Shmem", 9016),
           ("KReclaimable", 187392), ("Slab", 301584), ("SReclaimable", 187392),
           ("SUnreclaim", 114192), ("KernelStack", 8320), ("PageTables", 14120),
           ("CommitLimit", 4074128), ("Committed_AS", 3512284), ("VmallocTotal", 34359738367),
           ("VmallocUsed", 28412), ("HardwareCorrupted", 0), ("AnonHugePages", 0),
           ("Hugetlb", 0), ("DirectMap4k", 206712), ("DirectMap2M", 8181760)]

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

# /proc/<pid>/limits rows; the kernel prints them with "%-25s %-20s %-20s %-10s\n".
_LIMITS = [
    ("Limit", "Soft Limit", "Hard Limit", "Units"),
    ("Max cpu time", "unlimited", "unlimited", "seconds"),
    ("Max file size", "unlimited", "unlimited", "bytes"),
    ("Max data size", "unlimited", "unlimited", "bytes"),
    ("Max stack size", "8388608", "unlimited", "bytes"),
    ("Max core file size", "0", "unlimited", "bytes"),
    ("Max resident set", "unlimited", "unlimited", "bytes"),
    ("Max processes", "63414", "63414", "processes"),
    ("Max open files", "{soft}", "{hard}", "files"),
    ("Max locked memory", "8388608", "8388608", "bytes"),
    ("Max address space", "unlimited", "unlimited", "bytes"),
    ("Max file locks", "unlimited", "unlimited", "locks"),
    ("Max pending signals", "63414", "63414", "signals"),
    ("Max msgqueue size", "819200", "819200", "bytes"),
    ("Max nice priority", "0", "0", ""),
    ("Max realtime priority", "0", "0", ""),
    ("Max realtime timeout", "unlimited", "unlimited", "us"),
]

# libyaml when available: tctl output of 10,000 heartbeats stays fast.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@functools.lru_cache(maxsize=64)  # the same bytes for every node
def proc_limits(soft: str, hard: str) -> bytes:
    """The content of /proc/<pid>/limits for a process with this open-files limit."""
    return "".join(
        f"{a:<25} {b.format(soft=soft, hard=hard):<20} {c.format(soft=soft, hard=hard):<20} "
        f"{d:<10}\n" for a, b, c, d in _LIMITS
    ).encode()


@functools.lru_cache(maxsize=64)  # the same bytes for every node
def meminfo() -> bytes:
    """/proc/meminfo in the kernel's layout (`%-16s%8lu kB`)."""
    return "".join(f"{name + ':':<16}{value:>8} kB\n" for name, value in MEMINFO).encode()


@functools.lru_cache(maxsize=64)  # the same bytes for every node
def tool_stub(name: str) -> bytes:
    """Stand-in for a system binary: present for `command -v`, answered by the simulator."""
    return (f"#!/bin/sh\n# {name}: a tpdump simulator stand-in; the simulator answers "
            f"`{name}` itself.\nexit 0\n").encode()


@functools.lru_cache(maxsize=64)  # the same bytes for every node
def teleport_script(version: str) -> bytes:
    """The simulated `/usr/local/bin/teleport`: answers `version` like the real binary."""
    line = version_line(version).rstrip("\n")
    return (
        "#!/bin/sh\n"
        "# Simulated Teleport binary (tpdump sim): only `version` is implemented.\n"
        'case "$1" in\n'
        f"  version) echo '{line}' ;;\n"
        "  *) echo \"teleport: simulated binary: only 'version' is supported\" >&2; exit 1 ;;\n"
        "esac\n"
    ).encode()


def parse_teleport_script(data: bytes) -> str | None:
    """The version line a simulated teleport script prints, if `data` is one."""
    if not data.startswith(b"#!/bin/sh\n# Simulated Teleport binary"):
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("version) echo '"):
            return line[len("version) echo '"):].split("' ;;")[0] + "\n"
    return None


_S_IFMT = {"file": statmod.S_IFREG, "dir": statmod.S_IFDIR, "link": statmod.S_IFLNK,
           "sock": statmod.S_IFSOCK}
_SFTP_TYPE = {"file": asyncssh.FILEXFER_TYPE_REGULAR, "dir": asyncssh.FILEXFER_TYPE_DIRECTORY,
              "link": asyncssh.FILEXFER_TYPE_SYMLINK, "sock": asyncssh.FILEXFER_TYPE_SOCKET}

_GENERATED: OrderedDict[int, tuple[Entry, bytes]] = OrderedDict()
_GENERATED_KEEP = 512


@dataclass
class Entry:
    """A file, directory, symlink or socket of a node file system."""

    kind: str  # "file" | "dir" | "link" | "sock"
    mode: int
    mtime: float
    data: bytes | Callable[[], bytes] | Stream = b""
    target: str = ""
    readable: bool = True
    children: list[str] = field(default_factory=list)

    def content(self) -> bytes:
        if isinstance(self.data, Stream):
            return self.data.read_at(0, self.data.size)  # whole: only `cat` asks for it
        if not callable(self.data):
            return self.data
        # Generated files (logs, databases) are made on demand; a stat, an open and the
        # reads of one file must not make it three times, so keep the last few.
        key = id(self)
        cached = _GENERATED.get(key)
        if cached is not None and cached[0] is self:
            _GENERATED.move_to_end(key)
            return cached[1]
        data = self.data()
        _GENERATED[key] = (self, data)
        while len(_GENERATED) > _GENERATED_KEEP:
            _GENERATED.popitem(last=False)
        return data

    def size(self) -> int:
        return self.data.size if isinstance(self.data, Stream) else len(self.content())

    def read_at(self, offset: int, size: int) -> bytes:
        """`size` bytes from `offset` (a stream is read piece by piece, never whole)."""
        if isinstance(self.data, Stream):
            return self.data.read_at(offset, size)
        return self.content()[offset:offset + size]

    def attrs(self) -> asyncssh.SFTPAttrs:
        size = len(self.target) if self.kind == "link" else (
            self.size() if self.kind == "file" else 4096 if self.kind == "dir" else 0)
        return asyncssh.SFTPAttrs(
            type=_SFTP_TYPE[self.kind],
            size=size, uid=0, gid=0, owner="root", group="root",
            permissions=_S_IFMT[self.kind] | self.mode, atime=int(self.mtime),
            mtime=int(self.mtime), nlink=2 if self.kind == "dir" else 1,
        )


class FSError(OSError):
    """A path error with an errno (ENOENT, EACCES, ENOTDIR, ELOOP, EISDIR)."""

    def __init__(self, code: int, path: str) -> None:
        super().__init__(code, os.strerror(code), path)


class NodeFS:
    """One node's read-only file system."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries
        # exists() answers by path (the tree never changes): PATH lookups ask the same
        # few paths on every exec. Bounded: cleared when full.
        self._exists: dict[str, Entry | None] = {}

    def lookup(self, path: str, follow: bool = True, depth: int = 0) -> tuple[str, Entry]:
        """(resolved path, entry), resolving `.`, `..` and symlinks component by component
        like realpath(3); a final symlink is followed only when `follow`."""
        if depth > MAX_LINK_DEPTH:
            raise FSError(errno.ELOOP, path)
        parts = [p for p in path.split("/") if p and p != "."]
        cur = "/"
        for i, part in enumerate(parts):
            if part == "..":
                cur = posixpath.dirname(cur)
                continue
            parent = self.entries.get(cur)
            if parent is None or parent.kind != "dir":
                raise FSError(errno.ENOTDIR if parent else errno.ENOENT, path)
            nxt = posixpath.join(cur, part)
            ent = self.entries.get(nxt)
            if ent is None:
                raise FSError(errno.ENOENT, path)
            if ent.kind == "link" and (follow or i < len(parts) - 1):
                target = ent.target if ent.target.startswith("/") else posixpath.join(
                    cur, ent.target)
                rest = "/".join(parts[i + 1:])
                return self.lookup(f"{target}/{rest}" if rest else target, follow, depth + 1)
            cur = nxt
        return cur, self.entries[cur]

    def read(self, path: str) -> bytes:
        """The whole content of a readable regular file (EACCES, EISDIR, ENOENT otherwise)."""
        _, ent = self.lookup(path)
        if ent.kind == "dir":
            raise FSError(errno.EISDIR, path)
        if not ent.readable:
            raise FSError(errno.EACCES, path)
        if ent.kind == "sock":
            raise FSError(errno.ENXIO, path)
        return ent.content()

    def exists(self, path: str) -> Entry | None:
        if path in self._exists:
            return self._exists[path]
        try:
            ent: Entry | None = self.lookup(path)[1]
        except FSError:
            ent = None
        if len(self._exists) >= EXISTS_CACHE:
            self._exists.clear()
        self._exists[path] = ent
        return ent


class FSBuilder:
    """Builds node trees from the cluster model (cached, bounded)."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.get = functools.lru_cache(maxsize=FS_CACHE)(self._build)
        self.log = functools.lru_cache(maxsize=LOG_CACHE)(self._log)
        self.db = functools.lru_cache(maxsize=DB_CACHE)(self._db)
        self.procstate = ProcessStateBuilder(cluster)

    def fs(self, node: SimNode) -> NodeFS:
        return self.get(node.inst.index)

    # --- tree ---------------------------------------------------------------

    def _build(self, index: int) -> NodeFS:
        node = self.cluster.nodes[index]
        files = self.files(node)
        entries: dict[str, Entry] = {"/": Entry("dir", 0o755, self.cluster.started)}
        mtime = self.cluster.started - 86400 * 3

        def add_dirs(path: str) -> None:
            parent = posixpath.dirname(path)
            if parent not in entries:
                add_dirs(parent)
                entries[parent] = Entry("dir", 0o755, mtime)
            name = posixpath.basename(path)
            if name not in entries[parent].children:
                entries[parent].children.append(name)

        for path, (data, mode) in files.items():
            add_dirs(path)
            if isinstance(data, str):
                entries[path] = Entry("link", 0o777, mtime, target=data)
            elif mode & statmod.S_IFSOCK == statmod.S_IFSOCK:
                entries[path] = Entry("sock", mode & 0o7777, self.cluster.started)
            else:
                entries[path] = Entry("file", mode, mtime, data=data,
                                      readable=not path.startswith("/etc/shadow")
                                      or node.fault == "hostile")
        if node.fault == "hostile":
            for parent, name, content in hostile.raw_entries(
                    posixpath.normpath(node.config.data_dir)):
                if parent not in entries:
                    add_dirs(parent)
                    entries[parent] = Entry("dir", 0o755, mtime)
                entries[parent].children.append(name)
                entries[parent + "/" + name] = Entry("file", 0o644, mtime, data=content)
        for d, mode in self.dirs(node):
            if d not in entries:
                add_dirs(d)
                entries[d] = Entry("dir", mode, mtime)
            elif entries[d].kind == "dir":
                entries[d].mode = mode
        for ent in entries.values():
            ent.children.sort()
        return NodeFS(entries)

    def dirs(self, node: SimNode) -> list[tuple[str, int]]:
        """Directories that exist even when empty (the data_dir tree of a teleport host)."""
        d = posixpath.normpath(node.config.data_dir)
        out = [(HOME, 0o755), ("/tmp", 0o1777), ("/var/log", 0o755), (d, 0o750),
               (posixpath.join(d, "proc"), 0o700), (posixpath.join(d, "cache"), 0o700),
               (posixpath.join(d, "log"), 0o700)]
        if "node" in node.services:
            out.append((posixpath.join(d, "log", "upload", "streaming", "default"), 0o700))
        if "auth" in node.services:
            out += [(posixpath.join(d, "log", "events"), 0o700),
                    (posixpath.join(d, "log", "records"), 0o700)]
        return out

    def files(self, node: SimNode
              ) -> dict[str, tuple[bytes | Callable[[], bytes] | Stream | str, int]]:
        """path -> (content | lazy content | symlink target, mode); a mode with S_IFSOCK
        makes a socket."""
        g = node.inst.group
        model = node.model
        assert model is not None
        garbage = g.fault == "garbage"
        pid = node.pid
        index = node.inst.index
        out: dict[str, tuple[bytes | Callable[[], bytes] | Stream | str, int]] = {}
        for link, target in SYMLINKS.items():
            out[link] = (target, 0o777)
        hostname = node.hostname.encode() + (b"\xff\xfe\x00garbage" if garbage else b"") + b"\n"
        out["/etc/hostname"] = (hostname, 0o644)
        osr = OS_RELEASE.encode()
        out["/etc/os-release"] = (osr[:37] if garbage else osr, 0o644)
        out["/usr/lib/os-release"] = (osr, 0o644)
        out["/etc/shadow"] = (b"root:*:19700:0:99999:7:::\n", 0o640)
        out[model.config_path] = (self.teleport_yaml(node, garbage), 0o600)
        out[model.pid_file] = (f"{pid}\n".encode(), 0o644)
        exe = node.argv[0] if node.argv[0].startswith("/") else TELEPORT_BIN
        out[exe] = (teleport_script(node.inst.version), 0o755)
        cmdline = b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in node.argv)
        if garbage:
            cmdline += b"--\xff\xfe\0"
        out[f"/proc/{pid}/cmdline"] = (cmdline, 0o444)
        out[f"/proc/{pid}/environ"] = (node.environ, 0o400)
        out[f"/proc/{pid}/comm"] = (b"teleport\n", 0o644)
        out[f"/proc/{pid}/limits"] = (proc_limits(*model.nofile), 0o444)
        out["/proc/1/comm"] = (b"systemd\n" if node.systemd else b"init\n", 0o644)
        out["/proc/1/cmdline"] = (b"/sbin/init\0", 0o444)
        up = 86400 * 3 + index
        out["/proc/uptime"] = (f"{up}.42 {up * 2 - 7}.13\n".encode(), 0o444)
        out["/proc/meminfo"] = (meminfo(), 0o444)
        out["/proc/loadavg"] = (b"0.08 0.12 0.10 1/312 " + str(pid).encode() + b"\n", 0o444)
        for tool in TOOLS_ALL + (TOOLS_SYSTEMD if node.systemd else ()):
            out[f"/usr/bin/{tool}"] = (tool_stub(tool), 0o755)
        data_dir = posixpath.normpath(node.config.data_dir)
        out[posixpath.join(data_dir, "host_uuid")] = (node.uuid.encode(), 0o600)
        out[posixpath.join(data_dir, "proc", "sqlite.db")] = (lambda: self.db(index), 0o600)
        if int(node.inst.version.split(".")[0]) >= DEBUG_SOCKET_SINCE:
            out[posixpath.join(data_dir, "debug.sock")] = (b"", statmod.S_IFSOCK | 0o755)
        for path, target in model.links.items():
            out[path] = (target, 0o777)
        log_out = node.config.log_output
        if log_out.startswith("/"):
            out[posixpath.normpath(log_out)] = (lambda: self.log(index), 0o640)
        for path, data in node.files.items():
            out[path] = (data, 0o644 if path != model.config_path else 0o600)
        if g.fault == "hostile":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.cluster.started - 60))
            out.update(hostile.files(node.inst.n, model.secrets, stamp, data_dir))
        return out

    def teleport_yaml(self, node: SimNode, garbage: bool) -> bytes:
        if garbage:
            return (b"version: v3\nteleport:\n  nodename: " + node.hostname.encode()
                    + b"\xff\xfe\x00\n  data_dir: [/var/lib/teleport\n\tauth_token: \x00\x00"
                    b"\n  log: {output: stderr\nssh_service:\n  enabled: \"yes")
        g = node.inst.group
        cfg = node.config
        scen = self.cluster.scenario
        tele: dict[str, object] = {"nodename": node.hostname, "data_dir": cfg.data_dir}
        token = node.canaries.get("join_token")
        if token and g.init == "plain":
            tele["auth_token"] = token
        else:
            tele["join_params"] = {"method": "token",
                                   "token_name": token or "/var/lib/teleport/token"}
        if g.tunnel:
            tele["proxy_server"] = f"{scen.cluster_name}:3080"
        elif "auth" not in cfg.services:
            tele["auth_server"] = f"{self.cluster.auth_addr[0]}:{AUTH_PORT}"
        tele["ca_pin"] = self.cluster.keys.tls["host"].spki_sha256
        tele["log"] = {"output": cfg.log_output, "severity": cfg.log_severity,
                       "format": {"output": cfg.log_format}}
        if cfg.diag_addr:
            tele["diag_addr"] = cfg.diag_addr
        doc: dict[str, object] = {"version": "v3", "teleport": tele}
        on = set(cfg.services)
        doc["auth_service"] = ({"enabled": "yes", "cluster_name": scen.cluster_name,
                                "listen_addr": "0.0.0.0:3025"} if "auth" in on
                               else {"enabled": "no"})
        doc["ssh_service"] = ({"enabled": "yes", "labels": {"group": g.name}} if "node" in on
                              else {"enabled": "no"})
        doc["proxy_service"] = ({"enabled": "yes", "public_addr": f"{scen.cluster_name}:443"}
                                if "proxy" in on else {"enabled": "no"})
        if "kube" in on:
            doc["kubernetes_service"] = {"enabled": "yes",
                                         "kube_cluster_name": f"{node.hostname}-k8s"}
        if "app" in on:
            doc["app_service"] = {"enabled": "yes", "apps": [
                {"name": f"grafana-{node.hostname}", "uri": "http://localhost:3000"}]}
        if "db" in on:
            doc["db_service"] = {"enabled": "yes", "databases": [
                {"name": f"postgres-{node.hostname}", "protocol": "postgres",
                 "uri": "localhost:5432"}]}
        if "windows_desktop" in on:
            doc["windows_desktop_service"] = {"enabled": "yes"}
        return yaml.dump(doc, sort_keys=False, default_flow_style=False, Dumper=_DUMPER).encode()

    # --- lazy contents -----------------------------------------------------------

    def _log(self, index: int) -> bytes:
        node = self.cluster.nodes[index]
        scen = self.cluster.scenario
        return log_bytes(node, self.cluster.started, scen.seed, scen.cluster_name,
                         self.cluster.proxy_addr[0])

    def _db(self, index: int) -> bytes:
        return self.procstate.build(self.cluster.nodes[index])


# --- SFTP ---------------------------------------------------------------------


@dataclass
class _Handle:
    path: str
    entry: Entry
    size: int
    data: bytes | None = None  # what was opened (None: a stream, read piece by piece)


def _sftp_error(exc: FSError) -> asyncssh.SFTPError:
    if exc.errno == errno.ENOENT or exc.errno == errno.ENOTDIR:
        return asyncssh.SFTPNoSuchFile(f"No such file: {exc.filename}")
    if exc.errno == errno.EACCES:
        return asyncssh.SFTPPermissionDenied("Permission denied")
    return asyncssh.SFTPFailure(os.strerror(exc.errno or errno.EIO))


def make_sftp_server(fs: NodeFS, hooks: SFTPHooks) -> Callable[[asyncssh.SSHServerChannel[bytes]],
                                                                 asyncssh.SFTPServer]:
    """An SFTPServer factory serving `fs` read-only, with fault hooks around each operation."""

    def factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return ReadOnlySFTPServer(chan, fs, hooks)

    return factory


class SFTPHooks:
    """Fault behaviour around SFTP operations (the default does nothing)."""

    async def before(self, op: str, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """Called before every operation; `op` is e.g. "read" or "stat"."""


def _read_only() -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied("Read-only file system")


class ReadOnlySFTPServer(asyncssh.SFTPServer):
    """Serves a NodeFS; every write operation is refused."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], fs: NodeFS,
                 hooks: SFTPHooks) -> None:
        super().__init__(chan, chroot=None)
        self._fs = fs
        self._hooks = hooks
        self._chan = chan

    def _p(self, path: bytes) -> str:
        s = path.decode("utf-8", "surrogateescape")
        return posixpath.join(HOME, s) if not s.startswith("/") else s

    async def realpath(self, path: bytes) -> bytes:
        await self._hooks.before("realpath", self._chan)
        p = self._p(path)
        try:
            resolved, _ = self._fs.lookup(p)
        except FSError:
            resolved = posixpath.normpath(p)  # a missing path is still answered, normalised
        return resolved.encode("utf-8", "surrogateescape")

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        await self._hooks.before("stat", self._chan)
        try:
            return self._fs.lookup(self._p(path))[1].attrs()
        except FSError as exc:
            raise _sftp_error(exc) from None

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        await self._hooks.before("lstat", self._chan)
        try:
            return self._fs.lookup(self._p(path), follow=False)[1].attrs()
        except FSError as exc:
            raise _sftp_error(exc) from None

    async def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        await self._hooks.before("fstat", self._chan)
        assert isinstance(file_obj, _Handle)
        attrs = file_obj.entry.attrs()
        attrs.size = file_obj.size
        return attrs

    async def readlink(self, path: bytes) -> bytes:
        await self._hooks.before("readlink", self._chan)
        try:
            _, ent = self._fs.lookup(self._p(path), follow=False)
        except FSError as exc:
            raise _sftp_error(exc) from None
        if ent.kind != "link":
            raise asyncssh.SFTPInvalidParameter("Not a symbolic link")
        return ent.target.encode("utf-8", "surrogateescape")

    async def open(self, path: bytes, pflags: int,
                   attrs: asyncssh.SFTPAttrs) -> object:
        await self._hooks.before("open", self._chan)
        if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT
                     | asyncssh.FXF_TRUNC):
            raise asyncssh.SFTPPermissionDenied("Read-only file system")
        p = self._p(path)
        try:
            resolved, ent = self._fs.lookup(p)
            if ent.kind == "dir":
                raise asyncssh.SFTPFailure("Is a directory")
            if isinstance(ent.data, Stream):  # served piece by piece, never whole
                if not ent.readable:
                    raise FSError(errno.EACCES, p)
                return _Handle(resolved, ent, ent.data.size)
            data = self._fs.read(resolved)
        except FSError as exc:
            raise _sftp_error(exc) from None
        return _Handle(resolved, ent, len(data), data)

    async def read(self, file_obj: object, offset: int,
                   size: int) -> bytes:
        await self._hooks.before("read", self._chan)
        assert isinstance(file_obj, _Handle)
        if file_obj.data is not None:
            return file_obj.data[offset:offset + size]
        return file_obj.entry.read_at(offset, min(size, max(0, file_obj.size - offset)))

    def close(self, file_obj: object) -> None:
        return None

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        await self._hooks.before("scandir", self._chan)
        try:
            resolved, ent = self._fs.lookup(self._p(path))
        except FSError as exc:
            raise _sftp_error(exc) from None
        if ent.kind != "dir":
            raise asyncssh.SFTPNoSuchFile("Not a directory")
        if not ent.readable:
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        for name in (".", "..", *ent.children):
            # joined by hand: a hostile name ("/abs") must not replace the directory
            child = ent if name in (".", "..") else self._fs.entries[
                resolved.rstrip("/") + "/" + name]
            yield asyncssh.SFTPName(name.encode("utf-8", "surrogateescape"),
                                    attrs=child.attrs())

    # Every write operation is refused: the simulated nodes are read-only.

    def write(self, file_obj: object, offset: int, data: bytes) -> NoReturn:
        raise _read_only()

    def remove(self, path: bytes) -> NoReturn:
        raise _read_only()

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> NoReturn:
        raise _read_only()

    def rmdir(self, path: bytes) -> NoReturn:
        raise _read_only()

    def rename(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        raise _read_only()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        raise _read_only()

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> NoReturn:
        raise _read_only()

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> NoReturn:
        raise _read_only()

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> NoReturn:
        raise _read_only()

    def symlink(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        raise _read_only()

    def link(self, oldpath: bytes, newpath: bytes) -> NoReturn:
        raise _read_only()


def materialize(fs: NodeFS, root: Path) -> None:
    """Write a node file system under `root` (tests compare the probe against real sh).

    Absolute symlink targets are made relative so that they stay inside `root`.
    """
    for path, ent in sorted(fs.entries.items()):
        dest = root / path.lstrip("/")
        if ent.kind == "dir":
            dest.mkdir(parents=True, exist_ok=True)
        elif ent.kind == "sock":
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(dest, statmod.S_IFSOCK | ent.mode)
        elif ent.kind == "link":
            dest.parent.mkdir(parents=True, exist_ok=True)
            target = ent.target
            if target.startswith("/"):
                target = posixpath.relpath(target, posixpath.dirname(path))
            os.symlink(target, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(ent.content())
            dest.chmod(ent.mode)
