"""SSH to nodes with asyncssh: through the proxy as a jump host (a small pool of shared
proxy connections), user certificate auth, host keys checked against the cluster host CA,
and classification of every way a connection can fail."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import structlog

from tpdump.config import Settings
from tpdump.discovery import Target
from tpdump.errors import UsageError

log = structlog.get_logger("tpdump.transport")


def _skip_disabled_asyncssh_logging() -> None:
    """asyncssh formats every packet's log arguments before its logger decides to drop
    them: about 4% of the coordinator's CPU at 1,000 nodes. Check the level first."""
    logger_cls = getattr(asyncssh.logging, "SSHLogger", None)
    packet_cls = getattr(asyncssh.packet, "SSHPacketLogger", None)
    if logger_cls is None or packet_cls is None or getattr(logger_cls, "_tpdump", False):
        return
    original_log = logger_cls.log
    original_packet = packet_cls._log_packet

    def log_if_enabled(self: Any, level: int, msg: object, *args: Any, **kw: Any) -> None:
        if self.isEnabledFor(level):
            original_log(self, level, msg, *args, **kw)

    def packet_if_enabled(self: Any, *args: Any) -> None:
        if getattr(self.logger, "_debug_level", 3) >= 3:
            original_packet(self, *args)

    logger_cls.log = log_if_enabled
    packet_cls._log_packet = packet_if_enabled
    logger_cls._tpdump = True


def _no_ignore_packets_with_aead() -> None:
    """asyncssh puts an empty SSH_MSG_IGNORE in front of every packet once a connection is
    encrypted: OpenSSH's old counter to chosen-plaintext attacks on CBC, whose next IV is
    the last cipher block. With an AEAD cipher (AES-GCM, ChaCha20-Poly1305: what tpdump,
    OpenSSH and Teleport negotiate first) every packet has its own nonce, so the ignore
    packet protects nothing, yet it doubled the packets: 55 of 116 sent per node, each
    encrypted and written on its own, and through the proxy each node packet is carried in
    a proxy packet that got its own ignore packet too. Other ciphers keep them."""
    conn_cls: Any = getattr(asyncssh.connection, "SSHConnection", None)
    aead = tuple(c for c in (getattr(asyncssh.encryption, "GCMEncryption", None),
                             getattr(asyncssh.encryption, "ChachaEncryption", None))
                 if c is not None)
    if conn_cls is None or not aead or getattr(conn_cls, "_tpdump_no_ignore", False):
        return
    ignore = 2  # SSH_MSG_IGNORE (RFC 4253)
    empty = asyncssh.packet.String(b"")
    original = conn_cls.send_packet

    def send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if (pkttype == ignore and args == (empty,)
                and isinstance(self._send_encryption, aead)):
            return
        original(self, pkttype, *args, handler=handler)

    conn_cls.send_packet = send_packet
    conn_cls._tpdump_no_ignore = True


def tune_asyncssh() -> None:
    """The two changes to asyncssh that tpdump and its simulator make at start-up."""
    _skip_disabled_asyncssh_logging()
    _no_ignore_packets_with_aead()


tune_asyncssh()


@dataclass(frozen=True)
class Failure:
    """Why a connection or a session failed: stable code, reason, and the detail."""

    code: str
    reason: str
    detail: str


REASONS = {
    "TPD200": "connection refused",
    "TPD201": "connect timed out",
    "TPD202": "collection timed out",
    "TPD203": "host key not trusted",
    "TPD204": "authentication rejected",
    "TPD205": "connection lost",
    "TPD206": "output capped",
    "TPD207": "unreachable (no SSH service)",
    "TPD208": "proxy unreachable",
    "TPD212": "SSH error",
}


def failure(code: str, detail: str) -> Failure:
    return Failure(code, REASONS.get(code, "failed"), detail)


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first non-group exception of a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def classify(exc: BaseException) -> Failure:
    """Map an exception from connecting or talking to a node to a Failure."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return failure("TPD203", text)
    if isinstance(exc, asyncssh.PermissionDenied):
        return failure("TPD204", text)
    if isinstance(exc, asyncssh.ChannelOpenError):
        if "refused" in low:
            return failure("TPD200", text)
        if "timed out" in low or "timeout" in low:
            return failure("TPD201", text)
        return failure("TPD212", f"the proxy could not open a channel to the node: {text}")
    if isinstance(exc, ConnectionRefusedError):
        return failure("TPD200", text)
    if isinstance(exc, TimeoutError):
        return failure("TPD201", text)
    if isinstance(exc, asyncssh.ConnectionLost | ConnectionResetError | BrokenPipeError |
                  asyncssh.ChannelOpenError | EOFError | asyncssh.sftp.SFTPConnectionLost):
        return failure("TPD205", text)
    if isinstance(exc, asyncssh.DisconnectError):
        if exc.code == asyncssh.DISC_HOST_KEY_NOT_VERIFIABLE:
            return failure("TPD203", text)
        if exc.code == asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE:
            return failure("TPD204", text)
        return failure("TPD205", text)
    if isinstance(exc, OSError):
        if "refused" in low:
            return failure("TPD200", text)
        return failure("TPD205", text)
    return failure("TPD212", f"{type(exc).__name__}: {text}")


class ProxyError(Exception):
    """The jump host itself could not be reached; every node behind it fails alike."""

    def __init__(self, why: Failure) -> None:
        super().__init__(why.detail)
        self.failure = why


def read_known_hosts(path: str) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """Host keys and `@cert-authority` keys of a known_hosts file. Every CA line is
    trusted whatever its host pattern: tpdump checks nodes against the cluster host CA,
    and Teleport nodes are dialled by UUID or IP that a pattern would not name."""
    host_keys: list[asyncssh.SSHKey] = []
    ca_keys: list[asyncssh.SSHKey] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--known-hosts {path}: cannot read: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = fields[0] if fields[0].startswith("@") else ""
        if marker:
            fields = fields[1:]
        if marker == "@revoked" or len(fields) < 3:
            continue
        try:
            key = asyncssh.import_public_key(f"{fields[1]} {fields[2]}")
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise UsageError(f"--known-hosts {path}:{number}: bad key: {exc}") from exc
        (ca_keys if marker == "@cert-authority" else host_keys).append(key)
    if not host_keys and not ca_keys:
        raise UsageError(f"--known-hosts {path}: no host keys or @cert-authority lines")
    return host_keys, ca_keys


def _split(addr: str, default_port: int) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError as exc:
        raise UsageError(f"bad address {addr!r}: port is not a number") from exc


class _Jump:
    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self.active = 0


class Transport:
    """Opens SSH connections to nodes for one run."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._options = self._make_options(settings)
        self._proxy = _split(settings.proxy, 3023) if settings.proxy else None
        self._jumps: list[_Jump] = []
        self._jump_lock = anyio.Lock()
        self._per_jump = settings.tunnels_per_proxy_connection
        self.proxy_failure: Failure | None = None

    @staticmethod
    def _make_options(settings: Settings) -> asyncssh.SSHClientConnectionOptions:
        kwargs: dict[str, Any] = {
            "username": settings.ssh_user,
            "agent_path": None,
            "preferred_auth": "publickey",
            "keepalive_interval": 15,
            "keepalive_count_max": 3,
            "config": [settings.ssh_config] if settings.ssh_config else None,
        }
        if settings.ssh_key:
            try:
                key = asyncssh.read_private_key(settings.ssh_key)
            except (OSError, asyncssh.KeyImportError) as exc:
                raise UsageError(f"--ssh-key {settings.ssh_key}: {exc}") from exc
            cert_path = Path(settings.ssh_key + "-cert.pub")
            cert = None
            if cert_path.exists():
                try:
                    cert = asyncssh.read_certificate(str(cert_path))
                except (OSError, asyncssh.KeyImportError) as exc:
                    raise UsageError(f"certificate {cert_path}: {exc}") from exc
            kwargs["client_keys"] = [(key, cert)] if cert else [key]
        elif not settings.ssh_config:
            raise UsageError("--ssh-key is required (an OpenSSH key; KEY-cert.pub is its "
                             "certificate), or --ssh-config")
        if settings.insecure_accept_any_host_key:
            kwargs["known_hosts"] = None
        elif settings.known_hosts:
            host_keys, ca_keys = read_known_hosts(settings.known_hosts)
            kwargs["known_hosts"] = (host_keys, ca_keys, [])
        elif not settings.ssh_config:
            raise UsageError("--known-hosts is required (with the cluster's host CA as an "
                             "@cert-authority line), or --insecure-accept-any-host-key")
        try:
            return asyncssh.SSHClientConnectionOptions(**kwargs)
        except (ValueError, OSError, asyncssh.Error) as exc:
            raise UsageError(f"SSH options: {exc}") from exc

    async def _jump(self) -> _Jump | None:
        """A proxy connection with room for one more tunnel (opened when needed)."""
        if self._proxy is None:
            return None
        async with self._jump_lock:
            self._jumps = [j for j in self._jumps if not _closed(j.conn)]
            for jump in self._jumps:
                if jump.active < self._per_jump:
                    jump.active += 1
                    return jump
            host, port = self._proxy
            try:
                with anyio.fail_after(self._settings.connect_timeout):
                    conn = await asyncssh.connect(host, port, options=self._options)
            except Exception as exc:
                why = classify(exc)
                if why.code in ("TPD200", "TPD201", "TPD205", "TPD212"):
                    why = failure("TPD208", f"proxy {host}:{port}: {why.reason}: {why.detail}")
                else:
                    why = Failure(why.code, why.reason, f"proxy {host}:{port}: {why.detail}")
                self.proxy_failure = why
                raise ProxyError(why) from exc
            jump = _Jump(conn)
            jump.active = 1
            self._jumps.append(jump)
            log.debug("proxy connection", proxy=f"{host}:{port}", pool=len(self._jumps))
            return jump

    async def connect(self, target: Target) -> tuple[asyncssh.SSHClientConnection, _Jump | None]:
        """An SSH connection to the node (through the proxy when one is configured)."""
        jump = await self._jump()
        try:
            conn = await asyncssh.connect(
                target.host, target.port, tunnel=jump.conn if jump else None,
                options=self._options, family=socket.AF_UNSPEC,
            )
        except BaseException:
            self.release(jump)
            raise
        return conn, jump

    def release(self, jump: _Jump | None) -> None:
        if jump is not None:
            jump.active -= 1

    async def preflight(self) -> Failure | None:
        """Check that the proxy answers and accepts our certificate (a few seconds)."""
        if self._proxy is None:
            return None
        try:
            jump = await self._jump()
        except ProxyError as exc:
            return exc.failure
        self.release(jump)
        return None

    async def aclose(self) -> None:
        for jump in self._jumps:
            jump.conn.close()
        self._jumps.clear()


def _closed(conn: asyncssh.SSHClientConnection) -> bool:
    return conn.is_closed()
