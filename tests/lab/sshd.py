"""A real OpenSSH lab for tpdump tests: one jump host and N nodes on loopback.

Everything runs on this machine and talks only over 127.0.<x>.0/24 (loopback):

* jump host: ``sshd`` on ``127.0.<x>.1:3023`` (user CA trusted, host certificate,
  TCP forwarding allowed, no TTY);
* node ``i`` (0-based): ``sshd`` on ``127.0.<x>.<i+2>:3022``, host name ``lab-<i+1>``.

Every ``sshd`` is PID 1 of its own PID + mount (+ UTS) namespace, made with
``unshare --mount --pid --uts --fork --mount-proc --propagation private --kill-child``.
Inside a node namespace a small setup shell

1. mounts a tmpfs on ``/run`` (so the node has its own ``/run/teleport.pid``;
   ``/run/sshd`` is created there because sshd needs it),
2. mounts overlays (lower = the host directory, upper = a directory under
   ``LabNode.root_overlay_dir``) on ``/etc``, ``/usr/local/bin`` and ``/var/lib``.
   The per-node files (``/etc/teleport.yaml``, ``/etc/hostname``,
   ``/usr/local/bin/teleport``, ``/var/lib/teleport/``) are written into the upper
   directories *before* the mount, so ``root_overlay_dir/<path>`` is what the node
   sees at ``/<path>`` (the host's own /etc etc. are never written),
3. sets the UTS host name, starts the Teleport stand-in in the background exactly as
   ``/usr/local/bin/teleport start --config /etc/teleport.yaml
   --pid-file=/run/teleport.pid``, waits (bounded) for the pid file,
4. starts a lifetime watchdog ``sh -c 'sleep LIFETIME; kill -TERM 1' &`` so that a lab
   whose owner died goes away by itself, and
5. ``exec sshd -D -f <node>/sshd_config -E <node>/sshd.log``.

All mounts live only in the private mount namespaces and vanish with them; the
host's mount table is never changed. Nodes share the host network namespace.

The Teleport stand-in
---------------------
``/usr/local/bin/teleport`` is a ``#!/bin/sh`` script. ``teleport version`` prints
``Teleport v17.4.2 git:v17.4.2-0-g1234abcd go1.23.8``. For ``teleport start ...`` the
kernel first runs it as ``/bin/sh /usr/local/bin/teleport start ...`` (a shebang puts
the interpreter first in argv). Real Teleport is a Go binary whose argv[0] is its own
path, and tpdump's probe takes argv[0] of the cmdline as the executable to run
``version`` with, so the script re-executes ``/bin/sh`` with argv[0] set to its own
path (``bash -c 'exec -a ...'``) running a body file named ``start`` from its working
directory; that body writes ``teleport`` into ``/proc/$$/comm``, writes its pid to the
``--pid-file`` and sleeps (bounded loop). The result, the same PID throughout:

* ``/proc/<pid>/comm``    = ``teleport\\n``
* ``/proc/<pid>/cmdline`` = :data:`EXPECTED_CMDLINE`, i.e.
  ``b"/usr/local/bin/teleport\\0start\\0--config\\0/etc/teleport.yaml\\0"
  b"--pid-file=/run/teleport.pid\\0"``
* ``/proc/<pid>/exe``     -> ``/usr/bin/dash`` (differs from real Teleport)
* cwd = ``<root_overlay_dir>/../standin`` (holds the ``start`` body file)
* its pid (inside the node's PID namespace) is in ``/run/teleport.pid`` and
  ``LabNode.teleport_pid``; it appends one line to ``/var/lib/teleport/teleport.log``.

The login
---------
Logins use the dedicated local user ``tpdlab`` (shell ``/bin/sh``, password field
``*`` so that sshd with ``UsePAM no`` accepts it, home ``/home/tpdlab``). It is
created with ``useradd`` when missing and is **left in place** by ``stop()`` (other
labs may run concurrently and use it). If it exists but is locked (``!`` in
``/etc/shadow``) its password field is set to ``*``.

Clients
-------
``Lab.key_path`` / ``Lab.cert_path`` (user key + certificate, principal ``tpdlab``),
``Lab.known_hosts`` (``@cert-authority * <host CA>``), and ``Lab.ssh_config`` for real
OpenSSH: ``ssh -F <ssh_config> -J tpdlab@<proxy> -p 3022 tpdlab@<node ip> CMD``
(``ssh -J`` hands ``-F`` on to the jump-hop ssh but not ``-o``/``-i`` options).

Stopping
--------
``Lab.stop()`` SIGTERMs each namespace's PID 1 (sshd), which makes the kernel kill the
rest of that namespace, and reaps the ``unshare`` wrappers; after a bounded wait it
SIGKILLs the namespace init, then the wrapper. Only PIDs this lab started are signalled
(each init is found as the only child of our own, unreaped, unshare process). There
is nothing to unmount on the host. The x of 127.0.x.0/24 is claimed with an flock on
``/tmp/tpdump-sshd-lab-locks/127.0.<x>.lock`` held while the lab runs (the empty lock
files stay). The working directory (keys, configs, logs, overlay upper dirs) is left
for inspection.

Requires root, ``sshd`` (openssh-server), ``ssh``, ``ssh-keygen``, ``unshare``
(util-linux), ``bash``, ``useradd``, overlayfs, tmpfs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

LOGIN = "tpdlab"
LOGIN_HOME = Path("/home/tpdlab")
JUMP_PORT = 3023
NODE_PORT = 3022
TELEPORT_VERSION_LINE = "Teleport v17.4.2 git:v17.4.2-0-g1234abcd go1.23.8"
TELEPORT_EXE = "/usr/local/bin/teleport"
TELEPORT_ARGV = (
    TELEPORT_EXE,
    "start",
    "--config",
    "/etc/teleport.yaml",
    "--pid-file=/run/teleport.pid",
)
#: What ``/proc/<teleport pid>/cmdline`` holds on every node.
EXPECTED_CMDLINE = b"".join(a.encode() + b"\0" for a in TELEPORT_ARGV)
#: Third octets tried for 127.0.<x>.0/24, in order starting at an offset from the pid.
OCTET_RANGE = range(100, 200)
OCTET_TRIES = 30
READY_TIMEOUT = 10.0
DEFAULT_LIFETIME = 3600  # seconds; each sshd namespace kills itself after this
LOCK_DIR = Path("/tmp/tpdump-sshd-lab-locks")
SSHD = "/usr/sbin/sshd"
REQUIRED_TOOLS = ("sshd", "ssh", "ssh-keygen", "unshare", "bash", "useradd")


class LabError(RuntimeError):
    """The lab could not be started."""


def missing_requirements() -> list[str]:
    """Return why this machine cannot run the lab (empty list: it can)."""
    why = []
    if os.geteuid() != 0:
        why.append("not running as root")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None and not (tool == "sshd" and os.access(SSHD, os.X_OK)):
            why.append(
                f"`{tool}` not found"
                + (" (apt-get install -y openssh-server)" if tool == "sshd" else "")
            )
    return why


def require(lab: str, why: list[str]) -> None:
    """In a pytest test or fixture: fail under ``CI=true``, else skip, when `why` lists
    what this machine lacks for `lab` (``.ci/lab-setup.sh`` installs it)."""
    import pytest

    if not why:
        return
    reason = f"{lab} unavailable: " + "; ".join(why)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: the lab is required)", pytrace=False)
    pytest.skip(reason)


def require_lab() -> None:
    """Fail under ``CI=true``, else skip, when the sshd lab cannot run here."""
    require("sshd lab", missing_requirements())


@dataclass(frozen=True)
class LabNode:
    """One node. ``addr`` is ``ip:3022``; ``pid_of_sshd`` is the host PID of the node's
    sshd (PID 1 inside its namespace); ``teleport_pid`` is the stand-in's PID *inside*
    the node's PID namespace (what ``/run/teleport.pid`` holds and the probe prints);
    ``root_overlay_dir/<path>`` is the upper dir of the overlay the node sees at
    ``/<path>`` (``etc``, ``usr/local/bin``, ``var/lib``). Files added there while the
    node runs do show up (overlayfs calls changes to a mounted upper dir undefined, but
    new files work in practice); prefer writing before ``start_lab`` returns or via SSH.
    """

    index: int
    uuid: str
    hostname: str
    addr: str
    pid_of_sshd: int
    root_overlay_dir: Path
    expected_cmdline: bytes
    canary: str
    log_path: Path
    teleport_pid: int

    @property
    def host(self) -> str:
        return self.addr.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    ns_init_pid: int | None = None  # host PID of the namespace's PID 1 (the sshd)


@dataclass
class Lab:
    """A running lab. Use as a context manager or call :meth:`stop`."""

    workdir: Path
    cluster_name: str
    octet: int
    proxy: str
    login: str
    key_path: Path
    cert_path: Path
    known_hosts: Path
    ssh_config: Path
    user_ca_pub: Path
    host_ca_pub: Path
    jump_log: Path
    jump_pid: int
    nodes: list[LabNode]
    created_user: bool
    timings: dict[str, float] = field(default_factory=dict)
    _procs: list[_Proc] = field(default_factory=list, repr=False)
    _lock_fd: int | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def pids(self) -> list[int]:
        """Host PIDs this lab started: the unshare wrappers and each namespace's PID 1."""
        out = []
        for pr in self._procs:
            out.append(pr.popen.pid)
            if pr.ns_init_pid is not None:
                out.append(pr.ns_init_pid)
        return out

    @property
    def proxy_host(self) -> str:
        return self.proxy.rsplit(":", 1)[0]

    @property
    def proxy_port(self) -> int:
        return int(self.proxy.rsplit(":", 1)[1])

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop exactly the processes this lab started (by recorded PID)."""
        if self._stopped:
            return
        self._stopped = True
        _stop_procs(self._procs, timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# --------------------------------------------------------------------------- helpers


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(argv, capture_output=True, timeout=30, check=False, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise LabError(
            f"{shlex.join(argv)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}"
        )
    return res


def _keygen(path: Path, comment: str) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _sign(ca: Path, pub: Path, ident: str, principals: list[str], host: bool) -> Path:
    argv = ["ssh-keygen", "-q", "-s", str(ca), "-I", ident, "-n", ",".join(principals)]
    if host:
        argv.append("-h")
    _run([*argv, str(pub)])
    return pub.with_name(pub.name[: -len(".pub")] + "-cert.pub")


def _ensure_login() -> bool:
    """Make sure ``tpdlab`` exists and can log in with UsePAM no. True if created."""
    created = False
    try:
        pwd.getpwnam(LOGIN)
    except KeyError:
        res = subprocess.run(
            [
                "useradd",
                "--create-home",
                "--home-dir",
                str(LOGIN_HOME),
                "--shell",
                "/bin/sh",
                "--password",
                "*",
                LOGIN,
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        try:
            pwd.getpwnam(LOGIN)
        except KeyError:
            raise LabError(
                f"useradd {LOGIN} failed: {res.stderr.decode(errors='replace')}"
            ) from None
        created = res.returncode == 0
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == LOGIN and rest.startswith("!"):
                _run(["usermod", "--password", "*", LOGIN])
    return created


def _port_free(ip: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _claim_octet(n_nodes: int) -> tuple[int, int]:
    """Pick x so that 127.0.x.1:3023 and 127.0.x.2..:3022 are free; hold a lock on it."""
    LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
    start = os.getpid() % len(OCTET_RANGE)
    for k in range(OCTET_TRIES):
        x = OCTET_RANGE[(start + k) % len(OCTET_RANGE)]
        fd = os.open(LOCK_DIR / f"127.0.{x}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        ips = [(f"127.0.{x}.1", JUMP_PORT)] + [
            (f"127.0.{x}.{i + 2}", NODE_PORT) for i in range(n_nodes)
        ]
        if all(_port_free(ip, port) for ip, port in ips):
            return x, fd
        os.close(fd)
    raise LabError(f"no free 127.0.x.0/24 range after {OCTET_TRIES} tries")


def _sshd_config(d: Path, listen: str, port: int, user_ca: Path, jump: bool) -> Path:
    lines = [
        f"ListenAddress {listen}:{port}",
        f"HostKey {d / 'ssh_host_ed25519_key'}",
        f"HostCertificate {d / 'ssh_host_ed25519_key-cert.pub'}",
        f"TrustedUserCAKeys {user_ca}",
        "AuthorizedKeysFile none",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        f"AllowUsers {LOGIN}",
        "UsePAM no",
        "StrictModes no",
        "PermitTTY no",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "MaxStartups 200:30:500",
        "MaxSessions 50",
        "LogLevel VERBOSE",
        "AcceptEnv LANG LC_*",
    ]
    if jump:
        lines += [
            "AllowTcpForwarding yes",
            "PermitOpen any",
            f"PidFile {d / 'sshd.pid'}",  # holds the in-namespace pid (1)
            "Subsystem sftp internal-sftp",
        ]
    else:
        lines += [
            "AllowTcpForwarding no",
            "PidFile none",
            "Subsystem sftp internal-sftp",
        ]
    path = d / "sshd_config"
    path.write_text("\n".join(lines) + "\n")
    return path


def _teleport_yaml(i: int, hostname: str, listen: str, auth: str, cluster: str, canary: str) -> str:
    # Based on gravitational/teleport docker/one-node.yaml.
    return f"""\
version: v3
teleport:
  nodename: {hostname}
  auth_server: {auth}
  auth_token: {canary}
  log:
    output: /var/lib/teleport/teleport.log
    severity: INFO

  data_dir: /var/lib/teleport
  storage:
    path: /var/lib/teleport/backend
    type: dir

auth_service:
  enabled: no

ssh_service:
  enabled: yes
  listen_addr: {listen}
  labels:
    cluster: {cluster}
    lab-index: "{i}"
  commands:
    - name: kernel
      command: [ /bin/uname, -r ]
      period: 5m

proxy_service:
  enabled: no
"""


_STANDIN = """\
#!/bin/sh
# Teleport stand-in for the tpdump sshd lab. NOT Teleport.
case "$1" in
  version)
    echo "@VERSION@"
    exit 0 ;;
  start)
    # Run the body file "start" with argv[0] = this path (like a real binary's
    # cmdline) instead of "/bin/sh /usr/local/bin/teleport start ...".
    cd "@STANDIN_DIR@" || exit 1
    exec bash -c 'exec -a "$0" /bin/sh "$@"' "$0" "$@" ;;
  *)
    echo "teleport stand-in: unsupported: $*" >&2
    exit 2 ;;
esac
"""

# Body of the stand-in "teleport start"; runs as `/bin/sh start ARGS` (argv[0] replaced).
_STANDIN_START = """\
printf teleport > /proc/$$/comm
pidfile=""
config=""
prev=""
for a in "$@"; do
  case "$prev" in --pid-file) pidfile=$a ;; --config|-c) config=$a ;; esac
  case "$a" in --pid-file=*) pidfile=${a#--pid-file=} ;; --config=*) config=${a#--config=} ;; esac
  prev=$a
done
[ -n "$pidfile" ] && echo $$ > "$pidfile"
echo "INFO [PROC:1] Teleport stand-in starting. config:$config pid:$$" \\
  >> /var/lib/teleport/teleport.log
trap 'exit 0' TERM INT
i=0
while [ $i -lt 48 ]; do sleep 3600; i=$((i + 1)); done
"""

# Setup shell run as PID 1 of the node namespace (becomes sshd via exec).
_NODE_SETUP = """\
set -e
N=$1; HOSTNAME_=$2; LIFETIME=$3
mount -n -t tmpfs -o mode=0755,size=16m tpdlab-run /run
mkdir -m 0755 /run/sshd
for d in etc usr/local/bin var/lib; do
  mount -n -t overlay tpdlab-ovl -o "lowerdir=/$d,upperdir=$N/root/$d,workdir=$N/ovlwork/$d" "/$d"
done
hostname "$HOSTNAME_"
set +e
umask 022
/usr/local/bin/teleport start --config /etc/teleport.yaml --pid-file=/run/teleport.pid \
  </dev/null >>"$N/teleport.out" 2>&1 &
i=0
while [ ! -s /run/teleport.pid ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i + 1)); done
/bin/sh -c 'sleep "$1"; kill -TERM 1' tpdlab-watchdog "$LIFETIME" </dev/null >/dev/null 2>&1 &
exec /usr/sbin/sshd -D -f "$N/sshd_config" -E "$N/sshd.log"
"""

_JUMP_SETUP = """\
set -e
D=$1; LIFETIME=$2
mount -n -t tmpfs -o mode=0755,size=1m tpdlab-run /run
mkdir -m 0755 /run/sshd
/bin/sh -c 'sleep "$1"; kill -TERM 1' tpdlab-watchdog "$LIFETIME" </dev/null >/dev/null 2>&1 &
exec /usr/sbin/sshd -D -f "$D/sshd_config" -E "$D/sshd.log"
"""

_UNSHARE = [
    "unshare",
    "--mount",
    "--pid",
    "--uts",
    "--fork",
    "--mount-proc",
    "--propagation",
    "private",
    "--kill-child",
]


def _spawn(name: str, script: str, args: list[str], log: Path) -> _Proc:
    with open(log, "ab") as out:
        p = subprocess.Popen(
            [*_UNSHARE, "/bin/sh", "-c", script, name, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    return _Proc(name, p)


def _ns_init_pid(proc: _Proc) -> int | None:
    pid = proc.popen.pid
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if len(kids) == 1 else None


def _stop_procs(procs: list[_Proc], timeout: float) -> None:
    """SIGTERM each namespace's PID 1 (sshd exits; the kernel then kills the rest of
    that PID namespace and our unshare process exits), wait up to ``timeout``, then
    SIGKILL the namespace init, and only last the unshare process itself.

    The namespace init is found as the only child of our own, not yet reaped, unshare
    process, so no PID that this lab did not start is ever signalled. Killing unshare
    first would leave the init (killed by --kill-child) as a zombie of the host's PID 1.
    """
    for pr in procs:
        if pr.popen.poll() is None:
            init = _ns_init_pid(pr)
            if init is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pr in procs:
        try:
            pr.popen.wait(timeout=max(0.05, deadline - time.monotonic()))
            continue
        except subprocess.TimeoutExpired:
            pass
        init = _ns_init_pid(pr)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        try:
            pr.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pr.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                pr.popen.wait(timeout=2)


def _read_teleport_pid(ns_init_pid: int) -> int:
    # /proc/<pid>/root is the node's own view of the file system (its /run tmpfs).
    path = Path(f"/proc/{ns_init_pid}/root/run/teleport.pid")
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise LabError(f"node (sshd pid {ns_init_pid}) has no readable {path}: {e}") from e


def _banner(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.3) as s:
            s.settimeout(0.5)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return "(no log)"


def _wait_ready(targets: dict[str, tuple[str, int, _Proc, Path]], timeout: float) -> None:
    pending = dict(targets)
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        for name, (ip, port, pr, log) in list(pending.items()):
            if pr.popen.poll() is not None:
                raise LabError(f"{name} exited ({pr.popen.returncode}) before ready:\n{_tail(log)}")
            if _banner(ip, port):
                del pending[name]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if pending:
        names = ", ".join(sorted(pending))
        logs = "\n".join(f"--- {n}:\n{_tail(v[3])}" for n, v in pending.items())
        raise LabError(f"not ready after {timeout:.0f} s: {names}\n{logs}")


# ------------------------------------------------------------------------------ main


def start_lab(
    workdir: Path,
    n_nodes: int,
    cluster_name: str = "lab.example.com",
    lifetime: int = DEFAULT_LIFETIME,
) -> Lab:
    """Start a jump host and ``n_nodes`` nodes; return the running :class:`Lab`."""
    why = missing_requirements()
    if why:
        raise LabError("cannot start the sshd lab: " + "; ".join(why))
    if not 1 <= n_nodes <= 250:
        raise LabError("n_nodes must be in 1..250")
    t0 = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    created_user = _ensure_login()
    x, lock_fd = _claim_octet(n_nodes)
    procs: list[_Proc] = []
    try:
        keys = workdir / "keys"
        keys.mkdir(exist_ok=True)
        user_ca, host_ca, user_key = keys / "user_ca", keys / "host_ca", keys / "id_ed25519"
        jump_dir = workdir / "jump"
        jump_dir.mkdir(exist_ok=True)
        node_dirs = [workdir / f"node-{i}" for i in range(n_nodes)]
        for nd in node_dirs:
            nd.mkdir(exist_ok=True)

        # All keys in parallel (ssh-keygen is ~5 ms each, but there are 2N+4).
        jobs = [
            (user_ca, "tpdlab-user-ca"),
            (host_ca, "tpdlab-host-ca"),
            (user_key, "tpdump"),
            (jump_dir / "ssh_host_ed25519_key", "jump"),
        ]
        jobs += [(nd / "ssh_host_ed25519_key", nd.name) for nd in node_dirs]
        for p, _ in jobs:
            for f in (p, p.with_name(p.name + ".pub"), p.with_name(p.name + "-cert.pub")):
                f.unlink(missing_ok=True)
        _parallel([lambda p=p, c=c: _keygen(p, c) for p, c in jobs])
        timings["keygen"] = time.monotonic() - t0

        proxy_ip = f"127.0.{x}.1"
        sign_jobs = [
            lambda: _sign(
                user_ca, user_key.with_name("id_ed25519.pub"), "tpdump", [LOGIN], host=False
            ),
            lambda: _sign(
                host_ca,
                jump_dir / "ssh_host_ed25519_key.pub",
                "lab-proxy",
                [proxy_ip, "localhost", "lab-proxy", cluster_name, f"proxy.{cluster_name}"],
                host=True,
            ),
        ]
        nodes_meta = []
        for i, nd in enumerate(node_dirs):
            hostname = f"lab-{i + 1}"
            ip = f"127.0.{x}.{i + 2}"
            node_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{hostname}.{cluster_name}.tpdump-lab"))
            nodes_meta.append((i, nd, hostname, ip, node_uuid))
            sign_jobs.append(
                lambda nd=nd, hostname=hostname, ip=ip, u=node_uuid: _sign(
                    host_ca,
                    nd / "ssh_host_ed25519_key.pub",
                    hostname,
                    [u, hostname, f"{u}.{cluster_name}", ip, "localhost"],
                    host=True,
                )
            )
        _parallel(sign_jobs)
        cert_path = keys / "id_ed25519-cert.pub"
        timings["certs"] = time.monotonic() - t0

        user_ca_pub = keys / "user_ca.pub"
        host_ca_pub = keys / "host_ca.pub"
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"@cert-authority * {host_ca_pub.read_text().strip()}\n")
        ssh_config = workdir / "ssh_config"
        ssh_config.write_text(
            "Host *\n"
            f"  User {LOGIN}\n"
            f"  IdentityFile {user_key}\n"
            f"  CertificateFile {cert_path}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  UpdateHostKeys no\n"
            "  BatchMode yes\n"
            "  ControlMaster no\n"
            "  ControlPath none\n"
            "  ConnectTimeout 5\n"
            "  LogLevel ERROR\n"
        )

        # Jump host.
        _sshd_config(jump_dir, proxy_ip, JUMP_PORT, user_ca_pub, jump=True)
        jlog = jump_dir / "sshd.log"
        jump = _spawn(
            "tpdlab-jump", _JUMP_SETUP, [str(jump_dir), str(lifetime)], jump_dir / "unshare.out"
        )
        procs.append(jump)

        # Nodes: files into the overlay upper dirs, then start all in parallel.
        targets: dict[str, tuple[str, int, _Proc, Path]] = {
            "jump": (proxy_ip, JUMP_PORT, jump, jlog)
        }
        partial: list[tuple[int, Path, str, str, str, str, _Proc]] = []
        for i, nd, hostname, ip, node_uuid in nodes_meta:
            canary = f"LABCANARY-token-{i}"
            root = nd / "root"
            for sub in ("etc", "usr/local/bin", "var/lib/teleport"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            for sub in ("etc", "usr/local/bin", "var/lib"):
                w = nd / "ovlwork" / sub
                if w.exists():
                    shutil.rmtree(w)
                w.mkdir(parents=True)
            standin_dir = nd / "standin"
            standin_dir.mkdir(exist_ok=True)
            (standin_dir / "start").write_text(_STANDIN_START)
            exe = root / "usr/local/bin/teleport"
            exe.write_text(
                _STANDIN.replace("@VERSION@", TELEPORT_VERSION_LINE).replace(
                    "@STANDIN_DIR@", str(standin_dir)
                )
            )
            exe.chmod(0o755)
            yaml_path = root / "etc/teleport.yaml"
            yaml_path.write_text(
                _teleport_yaml(
                    i, hostname, f"{ip}:{NODE_PORT}", f"{proxy_ip}:3025", cluster_name, canary
                )
            )
            yaml_path.chmod(0o644)
            (root / "etc/hostname").write_text(hostname + "\n")
            (root / "var/lib/teleport/teleport.log").write_text("")
            for f in ("sshd.log", "teleport.out"):
                (nd / f).unlink(missing_ok=True)
            _sshd_config(nd, ip, NODE_PORT, user_ca_pub, jump=False)
            pr = _spawn(
                f"tpdlab-{hostname}",
                _NODE_SETUP,
                [str(nd), hostname, str(lifetime)],
                nd / "unshare.out",
            )
            procs.append(pr)
            targets[hostname] = (ip, NODE_PORT, pr, nd / "sshd.log")
            partial.append((i, nd, hostname, ip, node_uuid, canary, pr))
        timings["spawned"] = time.monotonic() - t0

        _wait_ready(targets, READY_TIMEOUT)
        timings["ready"] = time.monotonic() - t0

        for pr in procs:
            pr.ns_init_pid = _ns_init_pid(pr)
            if pr.ns_init_pid is None:
                raise LabError(f"cannot find the namespace init of {pr.name} (pid {pr.popen.pid})")
        nodes = [
            LabNode(
                index=i,
                uuid=node_uuid,
                hostname=hostname,
                addr=f"{ip}:{NODE_PORT}",
                pid_of_sshd=pr.ns_init_pid or 0,
                root_overlay_dir=nd / "root",
                expected_cmdline=EXPECTED_CMDLINE,
                canary=canary,
                log_path=nd / "sshd.log",
                teleport_pid=_read_teleport_pid(pr.ns_init_pid or 0),
            )
            for i, nd, hostname, ip, node_uuid, canary, pr in partial
        ]
        return Lab(
            workdir=workdir,
            cluster_name=cluster_name,
            octet=x,
            proxy=f"{proxy_ip}:{JUMP_PORT}",
            login=LOGIN,
            key_path=user_key,
            cert_path=cert_path,
            known_hosts=known_hosts,
            ssh_config=ssh_config,
            user_ca_pub=user_ca_pub,
            host_ca_pub=host_ca_pub,
            jump_log=jlog,
            jump_pid=jump.ns_init_pid or 0,
            nodes=nodes,
            created_user=created_user,
            timings=timings,
            _procs=procs,
            _lock_fd=lock_fd,
        )
    except BaseException:
        _stop_procs(procs, 1.0)
        os.close(lock_fd)
        raise


def _parallel(fns: list, width: int = 16) -> None:
    """Run callables on up to ``width`` threads; re-raise the first error."""
    errors: list[BaseException] = []
    todo = list(fns)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not todo or errors:
                    return
                fn = todo.pop()
            try:
                fn()
            except BaseException as e:
                with lock:
                    errors.append(e)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(width, len(fns)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
