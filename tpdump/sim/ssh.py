"""SSH side of the simulated cluster: the proxy (jump host) and one asyncssh server per node.

Every node listens on its own loopback IP, port 3022; the proxy accepts user certificates and
relays `direct-tcpip` channels to the node's listener by TCP, adding `rtt_ms/2` of latency in
each direction. Node faults (SPEC §14) are applied here and in the SFTP hooks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import posixpath
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.connection import SSHServerConnection

from tpdump.sim.cluster import NODE_SSH_PORT, SimCluster, SimNode
from tpdump.sim.diag import (
    LOG_LEVELS,
    DebugState,
    HTTPTCPSession,
    HTTPUNIXSession,
    debug_handler,
    diag_handler,
)
from tpdump.sim.journal import JournalStore
from tpdump.sim.shell import (
    ExecResult,
    JournalRequest,
    batch_end,
    batch_frame,
    batch_step,
    fast_sh_c,
    is_batch,
    parse_batch,
    run_command,
)
from tpdump.sim.vfs import DEBUG_SOCKET_SINCE, FSBuilder, NodeFS, SFTPHooks, make_sftp_server

log = logging.getLogger(__name__)

# Teleport offers chacha20-poly1305 too; asyncssh's chacha costs a cipher context per packet,
# so the simulator offers only AES-GCM/CTR to keep its per-connection CPU low (one machine
# runs both the simulator and the collector in benchmarks).
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"]
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
FLOOD_MAX_BYTES = 4 << 30  # a flooding node still stops some day
_EOF = object()
_CLOSE = object()


# --- relay with latency ---------------------------------------------------------


class DelayPipe:
    """One direction of a relay: delivers chunks `delay` seconds after arrival, in order.

    Latency, not bandwidth: each chunk keeps its own deadline. Back-pressure pauses the
    source when too much is queued or when the sink is paused.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.queue: collections.deque[tuple[float, object]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.sink_paused = False
        self.src_paused = False
        self.closed = False
        self.write: Callable[[bytes], None] = lambda _d: None
        self.write_eof: Callable[[], None] = lambda: None
        self.close_sink: Callable[[], None] = lambda: None
        self.pause_src: Callable[[], None] = lambda: None
        self.resume_src: Callable[[], None] = lambda: None

    def feed(self, item: object) -> None:
        if self.closed:
            return
        if self.delay <= 0 and not self.queue:
            self._deliver(item)
        else:
            self.queue.append((self.loop.time() + self.delay, item))
            if isinstance(item, bytes):
                self.queued += len(item)
            if self.timer is None:
                self.timer = self.loop.call_at(self.queue[0][0], self._flush)
        self._pressure()

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.closed:
            _, item = self.queue.popleft()
            if isinstance(item, bytes):
                self.queued -= len(item)
            self._deliver(item)
        if self.queue and not self.closed:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)
        self._pressure()

    def _deliver(self, item: object) -> None:
        try:
            if isinstance(item, bytes):
                self.write(item)
            elif item is _EOF:
                self.write_eof()
            else:
                self.closed = True
                self.close_sink()
        except (OSError, asyncssh.Error, RuntimeError) as exc:
            log.debug("relay delivery failed: %s", exc)
            self.closed = True
            self.close_sink()

    def _pressure(self) -> None:
        want_pause = self.sink_paused or self.queued > HIGH_WATER
        if want_pause and not self.src_paused:
            self.src_paused = True
            self.pause_src()
        elif not want_pause and self.src_paused and self.queued <= LOW_WATER:
            self.src_paused = False
            self.resume_src()

    def set_sink_paused(self, paused: bool) -> None:
        self.sink_paused = paused
        self._pressure()

    def shutdown(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _NodeSide(asyncio.Protocol):
    """The TCP connection from the proxy to a node."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.relay.transport = transport
        transport.pause_reading()  # until the SSH channel is open

    def data_received(self, data: bytes) -> None:
        self.relay.to_chan.feed(data)

    def eof_received(self) -> bool:
        self.relay.to_chan.feed(_EOF)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.to_node.shutdown()
        self.relay.to_chan.feed(_CLOSE)

    def pause_writing(self) -> None:
        self.relay.to_node.set_sink_paused(True)

    def resume_writing(self) -> None:
        self.relay.to_node.set_sink_paused(False)


class Relay(asyncssh.SSHTCPSession[bytes]):
    """The SSH channel side of a proxied connection, paired with a `_NodeSide`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.to_node = DelayPipe(loop, delay)
        self.to_chan = DelayPipe(loop, delay)

    def wire(self) -> None:
        chan, tr = self.chan, self.transport
        assert chan is not None and tr is not None
        self.to_node.write = tr.write
        self.to_node.write_eof = lambda: tr.write_eof() if tr.can_write_eof() else None
        self.to_node.close_sink = tr.close
        self.to_node.pause_src = chan.pause_reading
        self.to_node.resume_src = chan.resume_reading
        self.to_chan.write = chan.write
        self.to_chan.write_eof = chan.write_eof
        self.to_chan.close_sink = chan.close
        self.to_chan.pause_src = tr.pause_reading
        self.to_chan.resume_src = tr.resume_reading

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self.wire()

    def session_started(self) -> None:
        tr = self.transport
        if tr is None or tr.is_closing():
            if self.chan is not None:
                self.chan.close()  # the node went away before the channel opened
            return
        if not self.to_chan.src_paused:
            tr.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.to_node.feed(data)

    def eof_received(self) -> bool:
        self.to_node.feed(_EOF)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.to_chan.shutdown()
        self.to_node.feed(_CLOSE)

    def pause_writing(self) -> None:
        self.to_chan.set_sink_paused(True)

    def resume_writing(self) -> None:
        self.to_chan.set_sink_paused(False)


# --- the proxy --------------------------------------------------------------------


class ProxyServer(asyncssh.SSHServer):
    """The jump host: resolves a destination to a node and relays to its listener."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        node = self.cluster.resolve(dest_host)
        if node is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"failed to dial target host: host {dest_host!r} is not known to the cluster")
        host, port = node.listen_addr
        if not node.inst.group.tunnel and not node.external:
            port = dest_port
        return self._dial(node, host, port)

    async def _dial(self, node: SimNode, host: str, port: int) -> Relay:
        loop = asyncio.get_running_loop()
        relay = Relay(loop, node.inst.group.rtt_ms / 2000.0)
        try:
            await loop.create_connection(lambda: _NodeSide(relay), host, port)
        except ConnectionRefusedError:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"failed connecting to node {node.hostname}. "
                f"dial tcp {host}:{port}: connect: connection refused") from None
        except OSError as exc:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"failed connecting to node {node.hostname}. dial tcp {host}:{port}: "
                f"connect: {(exc.strerror or str(exc)).lower()}") from None
        return relay


# --- nodes ------------------------------------------------------------------------


class _Blackhole(asyncio.Protocol):
    """Accepts TCP and never says anything (no SSH banner)."""

    def data_received(self, data: bytes) -> None:
        return None


def _split_hostport(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def addr_matches(listen: str, host: str, port: int, node_ip: str) -> bool:
    """Whether a connection to host:port reaches a listener bound to `listen`."""
    hp = _split_hostport(listen)
    if hp is None or hp[1] != port:
        return False
    lhost = hp[0].lower()
    host = host.lower().strip("[]")
    local = {"127.0.0.1", "localhost", "::1", node_ip}
    if lhost in ("", "0.0.0.0", "::"):
        return host in local or host.startswith("127.")
    if lhost in ("127.0.0.1", "localhost"):
        return host in ("127.0.0.1", "localhost")
    return host == lhost


class NodeLoad:
    """What tpdump asked of each node, for the benchmarks (`load.json` in the state
    dir): connections, channels opened, the most open at once, execs and how many of them
    ran niced (`nice`, or a script that renices itself)."""

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, int]] = {}

    def _of(self, node: SimNode) -> dict[str, int]:
        got = self.by_node.get(node.hostname)
        if got is None:
            got = self.by_node[node.hostname] = {"connections": 0, "channels": 0,
                                                  "peak_channels": 0, "execs": 0,
                                                  "execs_niced": 0}
        return got

    def connection(self, node: SimNode) -> None:
        self._of(node)["connections"] += 1

    def channel(self, node: SimNode, conn: object) -> None:
        """A channel opened on `conn`: open channels are counted as it opens (a peak
        can only start with an open)."""
        load = self._of(node)
        load["channels"] += 1
        open_now = len(getattr(conn, "_channels", {}))
        load["peak_channels"] = max(load["peak_channels"], open_now)

    def exec(self, node: SimNode, command: str) -> None:
        load = self._of(node)
        load["execs"] += 1
        if command.startswith("nice ") or "renice -n" in command:
            load["execs_niced"] += 1

    def summary(self) -> dict[str, object]:
        nodes = list(self.by_node.values())

        def most(key: str) -> int:
            return max((n[key] for n in nodes), default=0)
        return {"nodes": len(nodes), "max_connections_per_node": most("connections"),
                "max_channels_per_node": most("channels"),
                "max_open_channels_per_node": most("peak_channels"),
                "max_execs_per_node": most("execs"),
                "execs": sum(n["execs"] for n in nodes),
                "execs_niced": sum(n["execs_niced"] for n in nodes)}


class NodeServer(asyncssh.SSHServer):
    """Port forwarding on a node: its diag listener and its debug service socket, served
    in-process; anything else is refused like a closed port."""

    def __init__(self, node: SimNode, cluster: SimCluster, debug: DebugState,
                 load: NodeLoad | None = None) -> None:
        self.node = node
        self.cluster = cluster
        self.debug = debug
        self.load = load
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        if self.load is not None:
            self.load.connection(self.node)

    def _clock(self) -> float:
        return time.time() + self.node.inst.group.clock_offset_s

    def _delay(self) -> float:
        g = self.node.inst.group
        return g.delay_s if g.fault == "slow" else 0.0

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        if self.load is not None:
            self.load.channel(self.node, self.conn)
        diag = self.node.config.diag_addr
        if diag and addr_matches(diag, dest_host, dest_port, self.node.ip):
            return HTTPTCPSession(diag_handler(self.node, self.cluster), self._delay(),
                                  self._clock, self.node.fault == "garbage")
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Connection refused")

    def unix_connection_requested(self, dest_path: str) -> Any:
        if self.load is not None:
            self.load.channel(self.node, self.conn)
        sock = posixpath.join(posixpath.normpath(self.node.config.data_dir), "debug.sock")
        major = int(self.node.inst.version.split(".")[0])
        if major >= DEBUG_SOCKET_SINCE and posixpath.normpath(dest_path) == sock:
            return HTTPUNIXSession(debug_handler(self.node, self.cluster, self.debug),
                                   self._delay(), self._clock, self.node.fault == "garbage")
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                        "No such file or directory")


class NodeFaults(SFTPHooks):
    """The fault behaviour of one node around SFTP operations."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    async def before(self, op: str, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        g = self.node.inst.group
        if g.fault == "slow" and g.delay_s > 0:
            await asyncio.sleep(g.delay_s)
        if g.fault == "drop_mid" and op == "read":
            chan.get_connection().abort()
            await asyncio.sleep(3600)  # the connection is gone; this answer never goes out


class SSHCluster:
    """Starts and stops the proxy and every node server."""

    def __init__(self, cluster: SimCluster, fsb: FSBuilder,
                 journal_dir: Path | None = None) -> None:
        self.cluster = cluster
        self.fsb = fsb
        if journal_dir is None:
            journal_dir = Path(tempfile.mkdtemp(prefix="tpdump-sim-journals-"))
        self.journals = JournalStore(cluster, journal_dir)
        self._debug: dict[int, DebugState] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.proxy: asyncssh.SSHAcceptor | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self._options: dict[int, asyncssh.SSHServerConnectionOptions] = {}
        self._user_ca_keys = asyncssh.import_authorized_keys(
            "cert-authority " + cluster.keys.user_ca.export_public_key().decode())
        self._rogue_ca_keys = asyncssh.import_authorized_keys(
            "cert-authority " + cluster.keys.rogue_ca.export_public_key().decode())
        self._flood_block = self._make_flood_block()
        self.load = NodeLoad()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        keys = self.cluster.keys
        host, port = self.cluster.proxy_addr
        proxy_cert = keys.host_cert([host, "localhost", self.cluster.scenario.cluster_name,
                                     "proxy"], "proxy")
        self.proxy = await asyncssh.listen(
            host, port, server_factory=lambda: ProxyServer(self.cluster),
            server_host_keys=[(keys.host_key, proxy_cert)],
            authorized_client_keys=self._user_ca_keys, allow_scp=False,
            agent_forwarding=False, encoding=None, encryption_algs=CIPHERS, gss_host=None)
        for node in self.cluster.nodes:
            if not node.has_ssh or node.external or node.fault == "refused":
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((node.ip, NODE_SSH_PORT))
                sock.listen(128)
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            factory: Callable[[], asyncio.BaseProtocol] = (
                _Blackhole if node.fault == "blackhole" else self._conn_factory(node))
            self.servers.append(await self.loop.create_server(factory, sock=sock))

    async def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        for srv in self.servers:
            srv.close()
        if self.proxy is not None:
            await self.proxy.wait_closed()

    # --- per node -------------------------------------------------------------

    def _conn_factory(self, node: SimNode) -> Callable[[], asyncio.BaseProtocol]:
        def factory() -> asyncio.BaseProtocol:
            assert self.loop is not None
            # asyncssh.listen() builds connections exactly this way; doing it here lets one
            # options object per node be created lazily on its first connection.
            return SSHServerConnection(self.loop, self._node_options(node))
        return factory

    def _node_options(self, node: SimNode) -> asyncssh.SSHServerConnectionOptions:
        idx = node.inst.index
        opts = self._options.get(idx)
        if opts is None:
            keys = self.cluster.keys
            principals = [node.uuid, node.hostname,
                          f"{node.uuid}.{self.cluster.scenario.cluster_name}", node.ip,
                          "localhost"]
            cert = keys.host_cert(principals, node.uuid, rogue=node.fault == "bad_hostkey")
            fs_cache = self.fsb
            hooks = NodeFaults(node)
            load = self.load

            def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
                load.channel(node, chan.get_connection())
                return make_sftp_server(fs_cache.fs(node), hooks)(chan)

            async def process(proc: asyncssh.SSHServerProcess[bytes]) -> None:
                load.channel(node, proc.channel.get_connection())
                load.exec(node, proc.command or "")
                await self._exec(node, proc)

            debug = self._debug.setdefault(idx, DebugState(
                LOG_LEVELS.get(node.config.log_severity.upper(), "INFO")))
            cluster = self.cluster

            def server_factory() -> asyncssh.SSHServer:
                return NodeServer(node, cluster, debug, load)

            opts = asyncssh.SSHServerConnectionOptions(
                server_factory=server_factory,
                server_host_keys=[(keys.host_key, cert)],
                authorized_client_keys=(self._rogue_ca_keys if node.fault == "auth_denied"
                                        else self._user_ca_keys),
                process_factory=process, sftp_factory=sftp_factory, allow_scp=False,
                agent_forwarding=False, encoding=None, encryption_algs=CIPHERS,
                # no encoding: asyncssh would never make a line editor, only wrap every
                # session's channel in a pass-through one
                line_editor=False,
                gss_host=None)  # else asyncssh resolves this host's FQDN for every node
            self._options[idx] = opts
        return opts

    async def _exec(self, node: SimNode, proc: asyncssh.SSHServerProcess[bytes]) -> None:
        g = node.inst.group
        try:
            if g.fault == "drop_mid":
                proc.channel.get_connection().abort()
                return
            if g.fault == "slow" and g.delay_s > 0:
                await asyncio.sleep(g.delay_s)
            if g.fault == "hang":
                await proc.channel.wait_closed()
                return
            command = proc.command
            if command is None:
                proc.stderr.write(b"tpdump sim: interactive shells are not supported\n")
                proc.exit(1)
                return
            if g.fault == "flood":
                await self._flood(proc)
                return
            fs = self.fsb.fs(node)
            now = time.time()
            script = fast_sh_c(command)
            if script is not None and is_batch(script):
                await self._batch(node, fs, script, now, proc)
                return
            answer = run_command(command, fs, node, now, self.cluster)
            if isinstance(answer, JournalRequest):
                out, err, code = await self.journals.journalctl(node, list(answer.args), now)
                result = ExecResult(out, err, code)
            else:
                result = answer
            if result.stdout:
                proc.stdout.write(result.stdout)
            if result.stderr:
                proc.stderr.write(result.stderr)
            await proc.stdout.drain()
            proc.exit(result.code)
        except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
            proc.exit(255)
        except (BrokenPipeError, ConnectionError, asyncssh.Error) as exc:
            log.debug("exec on %s ended: %s", node.hostname, exc)

    async def _batch(self, node: SimNode, fs: NodeFS, script: str, now: float,
                     proc: asyncssh.SSHServerProcess[bytes]) -> None:
        """A tpdump batch, answered as dash runs it: each request's output framed by
        the boundary, with its status; streamed as it goes."""
        boundary, steps = parse_batch(script)
        for step in steps:
            answer = batch_step(step, fs, node, now, self.cluster)
            if isinstance(answer, JournalRequest):
                out, _, code = await self.journals.journalctl(node, list(answer.args), now)
            else:
                out, code = answer.stdout, answer.code
            proc.stdout.write(batch_frame(boundary, step, out, code))
            await proc.stdout.drain()
        proc.stdout.write(batch_end(boundary))
        await proc.stdout.drain()
        proc.exit(0)

    async def _flood(self, proc: asyncssh.SSHServerProcess[bytes]) -> None:
        sent = 0
        while sent < FLOOD_MAX_BYTES and not proc.channel.is_closing():
            proc.stdout.write(self._flood_block)
            sent += len(self._flood_block)
            await proc.stdout.drain()
        proc.exit(0)

    def _make_flood_block(self) -> bytes:
        lines = [
            f"2025-01-01T00:00:{i % 60:02d}.000Z INFO [NODE:1]    Flooding line {i} of an "
            f"endless stream. pid:4242.1 srv/flood.go:{i}\n" for i in range(600)
        ]
        return "".join(lines).encode()
