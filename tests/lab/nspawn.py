"""A real-systemd lab for tpdump: N ``systemd-nspawn`` nodes and a real sshd jump host.

Each node boots real systemd as PID 1 (``systemd-nspawn -D ROOT -b``) with journald,
dbus, sshd and a Teleport stand-in service. Everything talks only over a bridge on
``10.200.<x>.0/24`` that this lab creates (``<x>`` claimed with a lock file):

* host side: bridge ``tpdnb<x>`` with ``10.200.<x>.1/24``; the **jump host** is a real
  ``sshd`` listening on ``10.200.<x>.1:3023`` (host network namespace, own PID + mount
  namespace, as in :mod:`tests.lab.sshd`), TCP forwarding allowed;
* node ``i`` (0-based): network namespace ``tpdn<x>-<i>`` (``ip netns``), veth
  ``tpdn<x>h<i>`` (host, enslaved to the bridge) <-> ``eth0`` (node) with
  ``10.200.<x>.<i+2>/24`` and **no default route**; host name ``nlab-<i>``, nspawn
  machine name ``tpdnlab-<x>-<i>``; sshd (the stock Debian ``ssh.service`` with the
  lab's ``/etc/ssh/sshd_config``) on port 3022.

Before any namespace is created, ``ip route add unreachable 10.200.0.0/16`` is ensured
on the host (the per-lab bridge route is more specific and wins).

A node's root
-------------
``<workdir>/node-<i>/root`` is a plain directory (private ``/var``, ``/home``, ``/root``,
``/opt``, ``/tmp``) plus, made in a private mount namespace (``unshare --mount
--propagation private``) that then execs ``systemd-nspawn`` (so the host's mount table
never sees them and they vanish with the node):

* ``/usr``: bind of the host's ``/usr``, read-only (``/bin``, ``/sbin``, ``/lib*`` are
  symlinks into it, as on the host);
* ``/usr/local/bin``: read-only overlay, lower = ``node-<i>/localbin`` (the stand-ins
  ``teleport`` and ``teleport-update``) over the host's ``/usr/local/bin``;
* ``/etc``: overlay, lower = host ``/etc``, upper = ``node-<i>/etc-upper`` (the node's
  ``passwd``/``group``/``shadow``/``gshadow``, ``hostname``, ``hosts``, ``machine-id``,
  ``fstab``, ``ssh/sshd_config`` + ``ssh/tpdlab/`` keys, ``teleport.yaml``,
  ``default/teleport``). ``etc-upper/systemd/system`` is an *opaque* overlay directory
  (xattr ``trusted.overlay.opaque=y``): none of the host's enablements (postgresql, apt
  timers, getty) reach the node; it holds only the lab's units and ``.wants`` links;
* ``/run/systemd/nspawn``: a private tmpfs (nspawn's propagation dir), so concurrent
  labs never share it;
* read-only binds (``--bind-ro``) of the project root and of the Python installation
  (``sys.prefix`` and the realpath of ``sys.base_prefix``; here the venv inside the
  project and ``/root/.pyenv/versions/3.11.7``) at the same paths, so ``sys.executable
  -m tpdump node`` runs inside a node (``/root`` in the node is mode 0711 for that), and
  of the host's ``/var/lib/dpkg`` (the package database matching the shared ``/usr``).

nspawn runs with ``--register=no --keep-unit`` (no systemd/machined on the host),
``--link-journal=no --resolv-conf=off --timezone=off``,
``--network-namespace-path=/run/netns/tpdn<x>-<i>``, ``--console=read-only`` (the boot
console goes to ``node-<i>/console.log``). ``machinectl``/``systemd-run -M`` need
machined, so :meth:`NspawnLab.run_in_node` uses ``nsenter --target <leader> --mount
--uts --ipc --net --pid --root --wd`` (root, a clean environment, the host cgroup).

Units and the login
-------------------
``/etc/systemd/system`` in a node: ``teleport.service`` (examples/systemd/teleport.service
verbatim), ``teleport.service.d/override.conf`` (``Environment=TELEPORT_DEBUG=0``,
``LimitNOFILE=16384``: below this host's hard limit of 20000, which root cannot raise
here for lack of CAP_SYS_RESOURCE, so the unit's own 524288 is clamped to 20000),
``teleport-update.service`` + ``teleport-update.timer`` (the autoupdate goldens verbatim;
the timer is enabled: ``teleport.service.wants/``),
``multi-user.target.wants/{teleport,ssh,tpdnlab-lifetime}.service``,
``tpdnlab-lifetime.service`` (sleeps ``lifetime`` s, then ``systemctl poweroff``: a node
whose owner died goes away by itself), and ``console-getty.service`` masked.

The login ``tpdlab`` (uid/gid of the host's ``tpdlab``, created there if missing for the
jump host; shell ``/bin/sh``, password field ``*``, home ``/home/tpdlab``) is a member
of ``systemd-journal`` in the node, so ``journalctl -u teleport`` works as that user;
``systemctl cat/status`` work as that user over the node's D-Bus system bus. With
``allow_root=True`` nodes also accept ``root`` (``PermitRootLogin prohibit-password``)
with a second user certificate (principal ``root``): :attr:`NspawnLab.root_key_path`.

Node sshd (``/etc/ssh/sshd_config``): port 3022, host key + host certificate (principals:
the node UUID, ``nlab-<i>``, ``<uuid>.<cluster>``, the node IP, ``localhost``),
``TrustedUserCAKeys``, ``AuthorizedKeysFile none``, ``UsePAM no``,
``AllowTcpForwarding yes``, ``AllowStreamLocalForwarding yes``, ``PermitOpen any``,
``Subsystem sftp internal-sftp``.

The Teleport stand-in (``tests/lab/nspawn_standin/``)
-----------------------------------------------------
``/usr/local/bin/teleport`` is a ``#!/usr/bin/python3`` script (the host's Python, seen
read-only in the node). ``teleport version`` prints :data:`TELEPORT_VERSION_LINE`. For
``teleport start ...`` (the unit's ExecStart) it ``chdir``s to ``/opt/teleport-standin``
and ``execv("/usr/bin/python3", ["/usr/local/bin/teleport", "start", ...])``: Python
runs the body file ``./start`` as its script. Same PID throughout (systemd's MainPID):

* ``/proc/<pid>/cmdline`` = :data:`EXPECTED_CMDLINE` =
  ``b"/usr/local/bin/teleport\\0start\\0--config\\0/etc/teleport.yaml\\0"
  b"--pid-file=/run/teleport.pid\\0"`` (exactly the ExecStart words);
* ``/proc/<pid>/comm`` = ``teleport\\n`` (the body writes ``/proc/self/comm``);
* ``/proc/<pid>/exe`` -> ``/usr/bin/python3.11`` and cwd ``/opt/teleport-standin``
  (these differ from real Teleport);
* ``/proc/<pid>/limits``: ``Max open files 16384 16384`` (from the drop-in).

It creates ``/var/lib/teleport`` (0755) with ``host_uuid`` and ``proc/sqlite.db`` (0644;
table ``kv``; ``/ids/node/current`` holds a PEM key with ``NSPAWNCANARY-sqlite-<i>``,
``/states/node`` JSON), serves ``127.0.0.1:3434`` (``/metrics``, ``/healthz``,
``/readyz``) and ``/var/lib/teleport/debug.sock`` (0666; ``GET /log-level`` -> ``INFO``),
writes ``/run/teleport.pid`` last, and logs Teleport-shaped lines to stderr (journald)
at start and every 3 s, some with ``Bearer NSPAWNCANARY-bearer-<i>``. The node index
comes from ``/etc/default/teleport`` (the unit's ``EnvironmentFile``). The join token
canary is ``NSPAWNCANARY-token-<i>`` in ``/etc/teleport.yaml``.

Stopping
--------
:meth:`NspawnLab.stop`: SIGTERM to each ``systemd-nspawn`` this lab started (nspawn halts
the container cleanly), bounded wait; then SIGKILL of the container's PID 1 (only if it
is still the child of our nspawn) and of nspawn; the jump host as in the sshd lab; then
``ip netns del`` of each node namespace (removes its veth pair and the ``/run/netns``
mount) and ``ip link del`` of the bridge; the lock is released. Only PIDs this lab
started are signalled. The unreachable /16 route and ``/run/systemd/nspawn`` (empty
dir) stay. The working directory is left for inspection. Stale interfaces/namespaces of
a dead lab (same names, no processes inside) are removed when their ``<x>`` is claimed
again.

Requires root, ``systemd-nspawn`` (systemd-container), ``sshd`` (openssh-server),
``ssh-keygen``, ``ip`` (iproute2), ``unshare``/``nsenter`` (util-linux), ``useradd``,
``/usr/bin/python3``, overlayfs with trusted xattrs. ``.ci/lab-setup.sh`` installs them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .sshd import (
    _JUMP_SETUP,
    JUMP_PORT,
    LOGIN,
    NODE_PORT,
    TELEPORT_VERSION_LINE,
    LabError,
    _banner,
    _ensure_login,
    _keygen,
    _ns_init_pid,
    _parallel,
    _Proc,
    _sign,
    _spawn,
    _sshd_config,
    _stop_procs,
    _tail,
    require,
)

__all__ = [
    "EXPECTED_CMDLINE",
    "LOGIN",
    "TELEPORT_VERSION_LINE",
    "LabError",
    "NspawnLab",
    "NspawnNode",
    "missing_requirements",
    "require_nspawn_lab",
    "start_nspawn_lab",
]

STANDIN_DIR = Path(__file__).resolve().with_name("nspawn_standin")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TELEPORT_EXE = "/usr/local/bin/teleport"
TELEPORT_ARGV = (
    TELEPORT_EXE,
    "start",
    "--config",
    "/etc/teleport.yaml",
    "--pid-file=/run/teleport.pid",
)
#: What ``/proc/<teleport pid>/cmdline`` holds on every node (= the unit's ExecStart).
EXPECTED_CMDLINE = b"".join(a.encode() + b"\0" for a in TELEPORT_ARGV)
SAFETY_ROUTE = "10.200.0.0/16"
OCTET_RANGE = range(100, 250)
OCTET_TRIES = 40
LOCK_DIR = Path("/tmp/tpdump-nspawn-lab-locks")
DEFAULT_LIFETIME = 3600
READY_TIMEOUT = 60.0
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_TOOLS = ("systemd-nspawn", "sshd", "ssh-keygen", "ip", "unshare", "nsenter",
                  "useradd", "mount")
SSHD = "/usr/sbin/sshd"
HOST_PYTHON3 = "/usr/bin/python3"


# ------------------------------------------------------------------ requirements


def missing_requirements() -> list[str]:
    """Why this machine cannot run the nspawn lab (empty list: it can)."""
    why = []
    if os.geteuid() != 0:
        why.append("not running as root")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None and not (tool == "sshd" and os.access(SSHD, os.X_OK)):
            hint = {"systemd-nspawn": " (apt-get install -y systemd-container)",
                    "sshd": " (apt-get install -y openssh-server)"}.get(tool, "")
            why.append(f"`{tool}` not found{hint}")
    if not os.access(HOST_PYTHON3, os.X_OK):
        why.append(f"{HOST_PYTHON3} not found (it runs the Teleport stand-in in the nodes)")
    if not Path("/usr/lib/systemd/systemd").exists():
        why.append("/usr/lib/systemd/systemd not found (apt-get install -y systemd)")
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            why.append("overlayfs not available")
    except OSError:
        why.append("cannot read /proc/filesystems")
    return why


def require_nspawn_lab() -> None:
    """Fail under ``CI=true``, else skip, when the nspawn lab cannot run here."""
    require("nspawn lab", missing_requirements())


# ------------------------------------------------------------------------ model


@dataclass
class NspawnNode:
    """One booted node. ``addr`` is ``ip:3022``; ``leader_pid`` is the host PID of the
    node's systemd (PID 1 inside); ``nspawn_pid`` the host PID of its ``systemd-nspawn``;
    ``teleport_pid`` the stand-in's PID *inside* the node (``/run/teleport.pid``) when
    the lab became ready; ``canaries`` = [join token, sqlite key, bearer token]."""

    index: int
    uuid: str
    hostname: str
    ip: str
    addr: str
    machine: str
    netns: str
    leader_pid: int
    nspawn_pid: int
    teleport_pid: int
    expected_cmdline: bytes
    canaries: list[str]
    node_dir: Path
    root: Path
    etc_upper: Path
    console_log: Path

    @property
    def host(self) -> str:
        return self.ip

    @property
    def port(self) -> int:
        return NODE_PORT


@dataclass
class _NodeRun:
    index: int
    hostname: str
    ip: str
    uuid: str
    machine: str
    netns: str
    node_dir: Path
    popen: subprocess.Popen[bytes] | None = None
    leader_pid: int | None = None


@dataclass
class NspawnLab:
    """A running nspawn lab. Use as a context manager or call :meth:`stop`."""

    workdir: Path
    cluster_name: str
    octet: int
    bridge: str
    proxy: str
    login: str
    key_path: Path
    cert_path: Path
    known_hosts: Path
    ssh_config: Path
    user_ca_pub: Path
    host_ca_pub: Path
    root_key_path: Path | None = None
    root_cert_path: Path | None = None
    jump_log: Path | None = None
    jump_pid: int = 0
    nodes: list[NspawnNode] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _runs: list[_NodeRun] = field(default_factory=list, repr=False)
    _jump: _Proc | None = field(default=None, repr=False)
    _netns: list[str] = field(default_factory=list, repr=False)
    _bridge_made: bool = field(default=False, repr=False)
    _lock_fd: int | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def proxy_host(self) -> str:
        return self.proxy.rsplit(":", 1)[0]

    @property
    def proxy_port(self) -> int:
        return int(self.proxy.rsplit(":", 1)[1])

    def pids(self) -> list[int]:
        """Host PIDs this lab started: each nspawn and container PID 1, the jump host's
        unshare wrapper and its sshd."""
        out = []
        for r in self._runs:
            if r.popen is not None:
                out.append(r.popen.pid)
            if r.leader_pid:
                out.append(r.leader_pid)
        if self._jump is not None:
            out.append(self._jump.popen.pid)
            if self._jump.ns_init_pid:
                out.append(self._jump.ns_init_pid)
        return out

    def node_running(self, i: int) -> bool:
        """Whether node ``i``'s ``systemd-nspawn`` is still running (reaps it if not)."""
        popen = self._runs[i].popen
        return popen is not None and popen.poll() is None

    def run_in_node(
        self,
        i: int,
        argv: list[str],
        timeout: float = 30.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` as root inside node ``i`` (all its namespaces, its root file
        system, cwd ``/``) with ``nsenter``; output captured. The environment is
        ``PATH``, ``HOME=/root``, ``LANG=C.UTF-8`` plus ``env``. Raises
        ``subprocess.TimeoutExpired`` after ``timeout`` s."""
        node = self._runs[i]
        if not node.leader_pid:
            raise LabError(f"node {i} has no running systemd")
        return _nsenter(node.leader_pid, argv, timeout, input, env)

    def __enter__(self) -> NspawnLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 8.0) -> None:
        """Stop exactly what this lab started; remove its netns, veths and bridge."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        running = [r for r in self._runs if r.popen is not None and r.popen.poll() is None]
        for r in running:
            assert r.popen is not None
            with contextlib.suppress(ProcessLookupError):
                r.popen.send_signal(signal.SIGTERM)  # nspawn: halt the container
        deadline = time.monotonic() + timeout
        for r in running:
            assert r.popen is not None
            try:
                r.popen.wait(timeout=max(0.05, deadline - time.monotonic()))
                continue
            except subprocess.TimeoutExpired:
                pass
            if r.leader_pid and _ppid(r.leader_pid) == r.popen.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(r.leader_pid, signal.SIGKILL)
            try:
                r.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                r.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.popen.wait(timeout=3)
        if self._jump is not None:
            _stop_procs([self._jump], 3.0)
        for r in self._runs:
            _remove_cgroups(r.machine)
        for ns in self._netns:
            _ip(["netns", "del", ns], check=False)
        if self._bridge_made:
            _ip(["link", "del", self.bridge], check=False)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.timings["stop"] = time.monotonic() - t0


# ---------------------------------------------------------------------- helpers


def _run(argv: list[str], timeout: float = 30, check: bool = True,
         **kw: object) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({res.returncode}): "
                       f"{res.stderr.decode(errors='replace').strip()}")
    return res


def _ip(args: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return _run(["ip", *args], timeout=15, check=check)


def _nsenter(leader: int, argv: list[str], timeout: float, input: bytes | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    full_env.update(env or {})
    cmd = ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net", "--pid",
           "--root", "--wd", "--", *argv]
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                          check=False, env=full_env,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _find_leader(nspawn_pid: int) -> int | None:
    """The container's PID 1: the child of our nspawn whose innermost PID is 1."""
    try:
        kids = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    for k in kids:
        try:
            status = Path(f"/proc/{k}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^NSpid:\s+(.*)$", status, re.M)
        if m and len(m.group(1).split()) >= 2 and m.group(1).split()[-1] == "1":
            return int(k)
    return None


CGROUP_HIERARCHIES = ("/sys/fs/cgroup", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")


def _remove_cgroups(machine: str) -> None:
    """Remove ``tpdnlab/<machine>`` (and its empty sub-cgroups, deepest first) from each
    cgroup hierarchy; a cgroup that still holds processes stays. Then ``tpdnlab`` itself
    if it is empty (other labs may still use it)."""
    for h in CGROUP_HIERARCHIES:
        top = Path(h, "tpdnlab", machine)
        if not top.is_dir():
            continue
        dirs = [top]
        for _ in range(10000):  # bounded walk
            if len(dirs) > 5000:
                break
            grown = False
            for d in list(dirs):
                try:
                    for c in d.iterdir():
                        if c.is_dir() and c not in dirs:
                            dirs.append(c)
                            grown = True
                except OSError:
                    pass
            if not grown:
                break
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.parent.rmdir()


def ensure_safety_route() -> None:
    """``ip route add unreachable 10.200.0.0/16`` unless present (must precede netns)."""
    _ip(["route", "add", "unreachable", SAFETY_ROUTE], check=False)
    out = _ip(["-4", "route", "show", "type", "unreachable"]).stdout.decode()
    if not any(line.split()[:2] == ["unreachable", SAFETY_ROUTE] or
               line.split()[:1] == [SAFETY_ROUTE] for line in out.splitlines() if line.split()):
        raise LabError(f"cannot add the safety route `unreachable {SAFETY_ROUTE}`: {out!r}")


def _names(x: int) -> tuple[str, str]:
    return f"tpdnb{x}", f"tpdn{x}-"


def _claim_octet() -> tuple[int, int]:
    """Pick x so that 10.200.x.0/24 is used by nothing on this host; hold its lock.
    Leftovers of a dead lab with the same x (our names, no process inside) are removed."""
    LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
    addrs = _ip(["-4", "-o", "addr", "show"]).stdout.decode()
    routes = _ip(["-4", "route", "show", "table", "all"]).stdout.decode()
    netns = _ip(["netns", "list"], check=False).stdout.decode().split("\n")
    netns_names = [line.split()[0] for line in netns if line.strip()]
    links = _ip(["-o", "link", "show"]).stdout.decode()
    start = os.getpid() % len(OCTET_RANGE)
    for k in range(OCTET_TRIES):
        x = OCTET_RANGE[(start + k) % len(OCTET_RANGE)]
        fd = os.open(LOCK_DIR / f"10.200.{x}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        bridge, ns_prefix = _names(x)
        ours = [n for n in netns_names if n.startswith(ns_prefix)]
        busy = any(_ip(["netns", "pids", n], check=False).stdout.strip() for n in ours)
        has_bridge = re.search(rf"^\d+: {bridge}[:@]", links, re.M) is not None
        foreign_addr = f" 10.200.{x}." in addrs and not has_bridge
        foreign_route = re.search(rf"^10\.200\.{x}\.", routes, re.M) and not has_bridge
        if busy or foreign_addr or foreign_route:
            os.close(fd)
            continue
        for n in ours:  # stale: a dead lab's namespaces (empty)
            _ip(["netns", "del", n], check=False)
        if has_bridge:
            _ip(["link", "del", bridge], check=False)
        return x, fd
    raise LabError(f"no free 10.200.x.0/24 after {OCTET_TRIES} tries")


def _copy_standin(name: str, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STANDIN_DIR / name, dest)
    dest.chmod(mode)


def _symlink(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)


def _node_accounts(etc: Path, allow_root: bool) -> None:
    """passwd/group/shadow/gshadow for the node: the host's, with ``tpdlab`` (uid/gid of
    the host's) in ``systemd-journal``; root's password field ``*`` when root may log in."""
    pw = pwd.getpwnam(LOGIN)
    uid, gid = pw.pw_uid, pw.pw_gid

    def rewrite(name: str, ours: str, fix: dict[str, object]) -> None:
        try:
            lines = Path("/etc", name).read_text().splitlines()
        except OSError:
            lines = []
        out = []
        for line in lines:
            parts = line.split(":")
            if parts[0] == LOGIN:
                continue
            if parts[0] in fix:
                f = fix[parts[0]]
                parts = f(parts) if callable(f) else parts
            out.append(":".join(parts))
        out.append(ours)
        (etc / name).write_text("\n".join(out) + "\n")

    def add_member(parts: list[str]) -> list[str]:
        members = [m for m in parts[-1].split(",") if m]
        if LOGIN not in members:
            members.append(LOGIN)
        parts[-1] = ",".join(members)
        return parts

    def root_star(parts: list[str]) -> list[str]:
        if allow_root and parts[1].startswith("!"):
            parts[1] = "*"
        return parts

    rewrite("passwd", f"{LOGIN}:x:{uid}:{gid}::/home/{LOGIN}:/bin/sh", {})
    rewrite("group", f"{LOGIN}:x:{gid}:", {"systemd-journal": add_member})
    rewrite("shadow", f"{LOGIN}:*:19000:0:99999:7:::", {"root": root_star})
    rewrite("gshadow", f"{LOGIN}:!::", {"systemd-journal": add_member})
    (etc / "shadow").chmod(0o640)
    (etc / "gshadow").chmod(0o640)
    # systemd-journal must exist for the journal group to work.
    if "systemd-journal:" not in (etc / "group").read_text():
        raise LabError("host /etc/group has no systemd-journal group")


def _node_sshd_config(allow_root: bool) -> str:
    users = f"{LOGIN} root" if allow_root else LOGIN
    return "\n".join([
        "# tpdump nspawn lab node sshd (the stock ssh.service runs it)",
        f"Port {NODE_PORT}",
        "ListenAddress 0.0.0.0",
        "HostKey /etc/ssh/tpdlab/ssh_host_ed25519_key",
        "HostCertificate /etc/ssh/tpdlab/ssh_host_ed25519_key-cert.pub",
        "TrustedUserCAKeys /etc/ssh/tpdlab/user_ca.pub",
        "AuthorizedKeysFile none",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        f"PermitRootLogin {'prohibit-password' if allow_root else 'no'}",
        f"AllowUsers {users}",
        "UsePAM no",
        "StrictModes no",
        "PermitTTY yes",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "MaxStartups 200:30:500",
        "MaxSessions 50",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "PermitOpen any",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        "AcceptEnv LANG LC_*",
        "",
    ])


_LIFETIME_UNIT = """\
[Unit]
Description=tpdump nspawn lab: power this node off after its lifetime

[Service]
Type=simple
ExecStart=/bin/sh -c 'sleep {lifetime} && exec systemctl --no-block poweroff'

[Install]
WantedBy=multi-user.target
"""


def _prepare_node(run: _NodeRun, *, cluster: str, proxy_ip: str, keys: Path,
                  lifetime: int, allow_root: bool) -> None:
    """Write the node's private root and /etc upper directory (before it boots)."""
    nd = run.node_dir
    _remove_cgroups(run.machine)  # a dead lab's, if empty
    for sub in ("root", "etc-upper", "etc-work", "localbin"):
        p = nd / sub
        if p.exists():
            _run(["rm", "-rf", "--one-file-system", str(p)])
        p.mkdir(parents=True)
    root, etc = nd / "root", nd / "etc-upper"
    for d in ("usr", "etc", "proc", "sys", "dev", "run", "home", "opt", "srv", "mnt",
              "var/lib/teleport", "var/log/journal", "var/tmp", "var/cache", "tmp", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    (root / "root").chmod(0o711)
    (root / "var/lib/teleport").chmod(0o755)
    for entry in Path("/").iterdir():  # bin, sbin, lib, lib64 ... -> usr/...
        if entry.is_symlink() and os.readlink(entry).startswith("usr/"):
            _symlink(os.readlink(entry), root / entry.name)
    (root / "var/lib/teleport/host_uuid").write_text(run.uuid)

    # Teleport stand-in: the body in the node's private /opt, binaries in /usr/local/bin.
    _copy_standin("start", root / "opt/teleport-standin/start", 0o644)
    _copy_standin("teleport", nd / "localbin/teleport", 0o755)
    _copy_standin("teleport-update", nd / "localbin/teleport-update", 0o755)

    # /etc upper.
    _node_accounts(etc, allow_root)
    home = root / "home" / LOGIN
    home.mkdir(parents=True, exist_ok=True)
    pw = pwd.getpwnam(LOGIN)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    (etc / "hostname").write_text(run.hostname + "\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{run.ip}\t{run.hostname} {run.hostname}.{cluster}\n{proxy_ip}\tlab-proxy\n")
    (etc / "machine-id").write_text(uuid.UUID(run.uuid).hex + "\n")
    (etc / "fstab").write_text("# tpdump nspawn lab: nothing to mount\n")
    index = run.index
    (etc / "teleport.yaml").write_text(
        (STANDIN_DIR / "teleport.yaml.in").read_text().format(
            nodename=run.hostname, token=f"NSPAWNCANARY-token-{index}",
            auth_server=f"{proxy_ip}:3025", cluster=cluster, index=index))
    (etc / "teleport.yaml").chmod(0o644)
    (etc / "default").mkdir()
    (etc / "default/teleport").write_text(
        "# tpdump nspawn lab: read by the Teleport stand-in (teleport.service "
        "EnvironmentFile)\n"
        f"TPDLAB_NODE_INDEX={index}\n")
    ssh = etc / "ssh"
    (ssh / "tpdlab").mkdir(parents=True)
    (ssh / "sshd_config").write_text(_node_sshd_config(allow_root))
    hk = keys / f"node-{index}_host"
    shutil.copyfile(hk, ssh / "tpdlab/ssh_host_ed25519_key")
    (ssh / "tpdlab/ssh_host_ed25519_key").chmod(0o600)
    shutil.copyfile(hk.with_name(hk.name + ".pub"), ssh / "tpdlab/ssh_host_ed25519_key.pub")
    shutil.copyfile(hk.with_name(hk.name + "-cert.pub"),
                    ssh / "tpdlab/ssh_host_ed25519_key-cert.pub")
    shutil.copyfile(keys / "user_ca.pub", ssh / "tpdlab/user_ca.pub")

    # Units: an opaque /etc/systemd/system (no host enablements) with the lab's units.
    units = etc / "systemd/system"
    units.mkdir(parents=True)
    try:
        os.setxattr(units, "trusted.overlay.opaque", b"y")
    except OSError as e:
        raise LabError(f"cannot make {units} an opaque overlay dir: {e}") from e
    _copy_standin("teleport.service", units / "teleport.service", 0o644)
    _copy_standin("override.conf", units / "teleport.service.d/override.conf", 0o644)
    _copy_standin("teleport-update.service", units / "teleport-update.service", 0o644)
    _copy_standin("teleport-update.timer", units / "teleport-update.timer", 0o644)
    (units / "tpdnlab-lifetime.service").write_text(_LIFETIME_UNIT.format(lifetime=lifetime))
    wants = units / "multi-user.target.wants"
    _symlink("/etc/systemd/system/teleport.service", wants / "teleport.service")
    _symlink("/lib/systemd/system/ssh.service", wants / "ssh.service")
    _symlink("/lib/systemd/system/ssh.service", units / "sshd.service")
    _symlink("/etc/systemd/system/tpdnlab-lifetime.service", wants / "tpdnlab-lifetime.service")
    _symlink("/etc/systemd/system/teleport-update.timer",
             units / "teleport.service.wants/teleport-update.timer")
    _symlink("/dev/null", units / "console-getty.service")


# Runs as `unshare --mount --propagation private /bin/sh -c SCRIPT NAME NODEDIR ARGS...`
# and becomes systemd-nspawn (exec): the mounts live only in this private namespace.
_NODE_BOOT = """\
set -e
N=$1; M=$2; shift 2
R=$N/root
# Own cgroup subtree per node (no systemd on the host: nspawn --keep-unit would use the
# host's root cgroup, and all nodes would share /payload/system.slice/...).
cg_enter() { mkdir -p "$1/tpdnlab/$M" && echo $$ > "$1/tpdnlab/$M/cgroup.procs"; }
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cg_enter /sys/fs/cgroup
else
  if [ -d /sys/fs/cgroup/systemd ]; then cg_enter /sys/fs/cgroup/systemd; fi
  if [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then cg_enter /sys/fs/cgroup/unified; fi
fi
mount --bind /usr "$R/usr"
mount -o remount,bind,ro "$R/usr"
mount -t overlay tpdnlab -o "lowerdir=$N/localbin:/usr/local/bin" "$R/usr/local/bin"
mount -t overlay tpdnlab -o "lowerdir=/etc,upperdir=$N/etc-upper,workdir=$N/etc-work" "$R/etc"
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755,size=4m tpdnlab /run/systemd/nspawn
exec systemd-nspawn -D "$R" -M "$M" "$@"
"""


def _python_binds() -> list[str]:
    """Read-only binds so that sys.executable and the project work inside a node, and
    the host's dpkg database (the node's /usr is the host's: `dpkg -l` tells the truth;
    `sos collect` checks for the sosreport package that way)."""
    paths: list[Path] = [PROJECT_ROOT]
    if Path("/var/lib/dpkg/status").is_file():
        paths.append(Path("/var/lib/dpkg"))
    for p in (Path(sys.prefix), Path(os.path.realpath(sys.base_prefix)),
              Path(os.path.realpath(sys.executable)).parent.parent):
        if str(p).startswith("/usr/") or str(p) == "/usr":
            continue
        if any(p == q or q in p.parents for q in paths):
            continue
        paths.append(p)
    return [f"--bind-ro={p}" for p in paths]


def _spawn_node(run: _NodeRun) -> None:
    argv = [
        "unshare", "--mount", "--propagation", "private",
        "/bin/sh", "-c", _NODE_BOOT, f"tpdnlab-boot-{run.index}", str(run.node_dir),
        run.machine, "-b", "--register=no", "--keep-unit", "--link-journal=no",
        "--resolv-conf=off", "--timezone=off", "--console=read-only",
        f"--network-namespace-path=/run/netns/{run.netns}", f"--hostname={run.hostname}",
        *_python_binds(),
    ]
    with open(run.node_dir / "console.log", "wb") as out:
        run.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True, close_fds=True)


def _setup_net(x: int, run: _NodeRun, bridge: str) -> None:
    hv = f"tpdn{x}h{run.index}"
    _ip(["netns", "add", run.netns])
    _ip(["link", "add", hv, "type", "veth", "peer", "name", "eth0", "netns", run.netns])
    _ip(["link", "set", hv, "master", bridge, "up"])
    n = ["-n", run.netns]
    _ip([*n, "addr", "add", f"{run.ip}/24", "dev", "eth0"])
    _ip([*n, "link", "set", "eth0", "up"])
    _ip([*n, "link", "set", "lo", "up"])


def _node_up(run: _NodeRun) -> bool:
    """sshd answers and the stand-in has written its pid file (after its servers)."""
    if run.leader_pid is None:
        assert run.popen is not None
        run.leader_pid = _find_leader(run.popen.pid)
        if run.leader_pid is None:
            return False
    r = Path(f"/proc/{run.leader_pid}/root")
    try:
        if not (r / "run/teleport.pid").read_text().strip():
            return False
        if not (r / "var/lib/teleport/debug.sock").exists():
            return False
    except OSError:
        return False
    return _banner(run.ip, NODE_PORT)


def _wait_nodes(runs: list[_NodeRun], timeout: float, timings: dict[str, float],
                t0: float) -> None:
    pending = list(runs)
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        for run in list(pending):
            assert run.popen is not None
            if run.popen.poll() is not None:
                raise LabError(f"{run.machine}: systemd-nspawn exited "
                               f"({run.popen.returncode}) before ready:\n"
                               f"{_tail(run.node_dir / 'console.log', 3000)}")
            if _node_up(run):
                pending.remove(run)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if pending:
        names = ", ".join(r.machine for r in pending)
        logs = "\n".join(f"--- {r.machine}:\n{_tail(r.node_dir / 'console.log', 2000)}"
                         for r in pending)
        raise LabError(f"nodes not up after {timeout:.0f} s: {names}\n{logs}")
    timings["nodes_up"] = time.monotonic() - t0
    # Confirm with systemd itself (bounded retries per node).
    bad: list[str] = []

    def confirm(run: _NodeRun) -> None:
        assert run.leader_pid is not None
        out = b""
        for _ in range(50):
            res = _nsenter(run.leader_pid, ["systemctl", "is-active", "teleport.service",
                                            "ssh.service", "dbus.service"], 10)
            out = res.stdout
            if res.returncode == 0:
                return
            time.sleep(0.1)
        bad.append(f"{run.machine}: {out.decode(errors='replace').split()}")

    _parallel([lambda r=r: confirm(r) for r in runs])
    if bad:
        raise LabError("units not active: " + "; ".join(bad))
    timings["units_active"] = time.monotonic() - t0


# ------------------------------------------------------------------------- main


def start_nspawn_lab(
    workdir: Path | str,
    n_nodes: int,
    cluster_name: str = "lab.example.com",
    *,
    allow_root: bool = False,
    lifetime: int = DEFAULT_LIFETIME,
    ready_timeout: float = READY_TIMEOUT,
) -> NspawnLab:
    """Boot ``n_nodes`` nspawn nodes (in parallel) and the jump host; return when every
    node's sshd answers and ``teleport.service`` is active."""
    why = missing_requirements()
    if why:
        raise LabError("cannot start the nspawn lab: " + "; ".join(why))
    if not 1 <= n_nodes <= 200:
        raise LabError("n_nodes must be in 1..200")
    t0 = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    _ensure_login()  # the jump host logs tpdlab in on the host
    ensure_safety_route()  # before any namespace exists
    x, lock_fd = _claim_octet()
    bridge, ns_prefix = _names(x)
    proxy_ip = f"10.200.{x}.1"
    keys = workdir / "keys"
    lab = NspawnLab(
        workdir=workdir, cluster_name=cluster_name, octet=x, bridge=bridge,
        proxy=f"{proxy_ip}:{JUMP_PORT}", login=LOGIN, key_path=keys / "id_ed25519",
        cert_path=keys / "id_ed25519-cert.pub", known_hosts=workdir / "known_hosts",
        ssh_config=workdir / "ssh_config", user_ca_pub=keys / "user_ca.pub",
        host_ca_pub=keys / "host_ca.pub", timings=timings, _lock_fd=lock_fd,
    )
    try:
        runs = []
        for i in range(n_nodes):
            hostname = f"nlab-{i}"
            runs.append(_NodeRun(
                index=i, hostname=hostname, ip=f"10.200.{x}.{i + 2}",
                uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS,
                                    f"{hostname}.{cluster_name}.tpdump-nspawn-lab")),
                machine=f"tpdnlab-{x}-{i}", netns=f"{ns_prefix}{i}",
                node_dir=workdir / f"node-{i}"))
        lab._runs = runs

        # Keys and certificates.
        if keys.exists():
            shutil.rmtree(keys)
        keys.mkdir()
        jobs = [(keys / "user_ca", "tpdnlab-user-ca"), (keys / "host_ca", "tpdnlab-host-ca"),
                (keys / "id_ed25519", "tpdump"), (keys / "jump_host", "jump")]
        if allow_root:
            jobs.append((keys / "id_root", "tpdump-root"))
        jobs += [(keys / f"node-{r.index}_host", r.hostname) for r in runs]
        _parallel([lambda p=p, c=c: _keygen(p, c) for p, c in jobs])
        timings["keygen"] = time.monotonic() - t0
        sign = [
            lambda: _sign(keys / "user_ca", keys / "id_ed25519.pub", "tpdump", [LOGIN], False),
            lambda: _sign(keys / "host_ca", keys / "jump_host.pub", "lab-proxy",
                          [proxy_ip, "localhost", "lab-proxy", cluster_name,
                           f"proxy.{cluster_name}"], True),
        ]
        if allow_root:
            sign.append(lambda: _sign(keys / "user_ca", keys / "id_root.pub", "tpdump-root",
                                      ["root"], False))
        for r in runs:
            sign.append(lambda r=r: _sign(
                keys / "host_ca", keys / f"node-{r.index}_host.pub", r.hostname,
                [r.uuid, r.hostname, f"{r.uuid}.{cluster_name}", r.ip, "localhost"], True))
        _parallel(sign)
        if allow_root:
            lab.root_key_path = keys / "id_root"
            lab.root_cert_path = keys / "id_root-cert.pub"
        timings["certs"] = time.monotonic() - t0
        lab.known_hosts.write_text(
            f"@cert-authority * {lab.host_ca_pub.read_text().strip()}\n")
        lab.ssh_config.write_text(
            "Host *\n"
            f"  User {LOGIN}\n"
            f"  IdentityFile {lab.key_path}\n"
            f"  CertificateFile {lab.cert_path}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {lab.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  UpdateHostKeys no\n"
            "  BatchMode yes\n"
            "  ControlMaster no\n"
            "  ControlPath none\n"
            "  ConnectTimeout 5\n"
            "  LogLevel ERROR\n")

        # Node file systems (before boot).
        _parallel([lambda r=r: _prepare_node(r, cluster=cluster_name, proxy_ip=proxy_ip,
                                             keys=keys, lifetime=lifetime,
                                             allow_root=allow_root) for r in runs], width=4)
        timings["roots"] = time.monotonic() - t0

        # Network: bridge, then per node a netns + veth.
        _ip(["link", "add", bridge, "type", "bridge"])
        lab._bridge_made = True
        _ip(["addr", "add", f"{proxy_ip}/24", "dev", bridge])
        _ip(["link", "set", bridge, "up"])
        lab._netns = [r.netns for r in runs]
        _parallel([lambda r=r: _setup_net(x, r, bridge) for r in runs], width=8)
        timings["net"] = time.monotonic() - t0

        # Boot all nodes, then the jump host.
        for r in runs:
            _spawn_node(r)
        timings["spawned"] = time.monotonic() - t0
        jump_dir = workdir / "jump"
        jump_dir.mkdir(exist_ok=True)
        for f in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                  "ssh_host_ed25519_key-cert.pub"):
            src = {"ssh_host_ed25519_key": "jump_host",
                   "ssh_host_ed25519_key.pub": "jump_host.pub",
                   "ssh_host_ed25519_key-cert.pub": "jump_host-cert.pub"}[f]
            shutil.copyfile(keys / src, jump_dir / f)
        (jump_dir / "ssh_host_ed25519_key").chmod(0o600)
        (jump_dir / "sshd.log").unlink(missing_ok=True)
        _sshd_config(jump_dir, proxy_ip, JUMP_PORT, lab.user_ca_pub, jump=True)
        lab._jump = _spawn("tpdnlab-jump", _JUMP_SETUP, [str(jump_dir), str(lifetime)],
                           jump_dir / "unshare.out")
        lab.jump_log = jump_dir / "sshd.log"
        for _ in range(200):
            if lab._jump.popen.poll() is not None:
                raise LabError(f"jump sshd exited:\n{_tail(lab.jump_log)}")
            if _banner(proxy_ip, JUMP_PORT):
                break
            time.sleep(0.05)
        else:
            raise LabError(f"jump sshd not up:\n{_tail(lab.jump_log)}")
        lab._jump.ns_init_pid = _ns_init_pid(lab._jump)
        lab.jump_pid = lab._jump.ns_init_pid or 0
        timings["jump_up"] = time.monotonic() - t0

        _wait_nodes(runs, ready_timeout, timings, t0)
        for r in runs:
            assert r.popen is not None and r.leader_pid is not None
            tp = int(Path(f"/proc/{r.leader_pid}/root/run/teleport.pid").read_text().strip())
            lab.nodes.append(NspawnNode(
                index=r.index, uuid=r.uuid, hostname=r.hostname, ip=r.ip,
                addr=f"{r.ip}:{NODE_PORT}", machine=r.machine, netns=r.netns,
                leader_pid=r.leader_pid, nspawn_pid=r.popen.pid, teleport_pid=tp,
                expected_cmdline=EXPECTED_CMDLINE,
                canaries=[f"NSPAWNCANARY-token-{r.index}", f"NSPAWNCANARY-sqlite-{r.index}",
                          f"NSPAWNCANARY-bearer-{r.index}"],
                node_dir=r.node_dir, root=r.node_dir / "root",
                etc_upper=r.node_dir / "etc-upper", console_log=r.node_dir / "console.log"))
        timings["ready"] = time.monotonic() - t0
        return lab
    except BaseException:
        lab.stop(timeout=5.0)
        raise
