"""SSH through the simulated proxy: certificates, SFTP, the probe against real sh, node faults."""

from __future__ import annotations

import asyncio
import os
import posixpath
import secrets
import shlex
import shutil
import stat
import time
from pathlib import Path

import anyio
import asyncssh
import pytest
from simharness import PROBE, Sim

pytestmark = pytest.mark.anyio


def probe_text(boundary: str, root: str = "", cap: int = 1 << 20) -> str:
    """The text the core sends: B, R and CAP set before probe.sh (docs/contracts.md)."""
    return f"B={boundary}\nR={shlex.quote(root)}\nCAP={cap}\n{PROBE}"


def sections(out: bytes, boundary: str) -> dict[str, bytes]:
    """Split probe output into {section name: content}."""
    marker = b"\n--" + boundary.encode() + b" "
    parts = out.split(marker)
    result: dict[str, bytes] = {}
    for part in parts[1:]:
        name, _, body = part.partition(b"\n")
        result[name.decode()] = body
    assert parts[0] == b""
    return result


async def node_conn(sim: Sim, proxy: asyncssh.SSHClientConnection, hostname: str,
                    **extra: object) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(sim.node_host(hostname), 3022, tunnel=proxy,
                                  **sim.client_options(**extra))


async def proxy_conn(sim: Sim) -> asyncssh.SSHClientConnection:
    host, port = sim.proxy_addr()
    return await asyncssh.connect(host, port, **sim.client_options())


async def test_cert_auth_through_proxy_and_sftp(main_sim: Sim) -> None:
    """A user certificate and the host-CA known_hosts line reach a node; SFTP reads its files."""
    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, "web-1") as conn:
        async with conn.start_sftp_client() as sftp:
            async with sftp.open("/etc/teleport.yaml", "rb") as f:
                text = await f.read()
            assert b"nodename: web-1" in text and b"ssh_service:" in text
            assert b"app_service:" in text
            assert "CANARY-join_token-" in text.decode()
            attrs = await sftp.stat("/usr/local/bin/teleport")
            assert attrs.permissions is not None and attrs.permissions & 0o111
            assert await sftp.readlink("/var/run") == "/run"
            assert "teleport.pid" in await sftp.listdir("/run")
            assert await sftp.realpath("/var/run/../etc") == "/etc"
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat("/nope")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                async with sftp.open("/etc/shadow", "rb") as f:
                    await f.read()
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                async with sftp.open("/tmp/x", "wb") as f:
                    await f.write(b"x")
        r = await conn.run("teleport version", check=False)
        assert r.exit_status == 0 and str(r.stdout).startswith("Teleport v17.4.2 git:")
        r = await conn.run("frobnicate --all", check=False)
        assert r.exit_status == 127 and r.stderr == "sh: 1: frobnicate: not found\n"


async def test_nodes_are_reached_by_uuid_hostname_and_tunnel(main_sim: Sim) -> None:
    """The proxy resolves `<uuid>:3022`, `<hostname>:3022`; a tunnel node has no address."""
    edge = main_sim.inst("edge-1")
    assert edge["addr"] == "" and edge["tunnel"]
    async with await proxy_conn(main_sim) as proxy:
        for host in (edge["uuid"], "web-2"):
            async with await asyncssh.connect(host, 3022, tunnel=proxy,
                                              **main_sim.client_options()) as conn:
                r = await conn.run("hostname", check=True)
                assert r.stdout in ("edge-1\n", "web-2\n")


async def mirror(sftp: asyncssh.SFTPClient, path: str, dest: Path) -> None:
    """Copy a node tree through SFTP (modes and symlinks; absolute links made relative)."""
    for name in await sftp.listdir(path):
        if name in (".", ".."):
            continue
        src = posixpath.join(path, name)
        target = dest / src.lstrip("/")
        attrs = await sftp.lstat(src)
        assert attrs.permissions is not None
        mode = attrs.permissions
        if stat.S_ISLNK(mode):
            link = await sftp.readlink(src)
            if link.startswith("/"):
                link = posixpath.relpath(link, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link, target)
        elif stat.S_ISDIR(mode):
            target.mkdir(parents=True, exist_ok=True)
            await mirror(sftp, src, dest)
        elif stat.S_ISSOCK(mode):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(target, mode)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                async with sftp.open(src, "rb") as f:
                    target.write_bytes(await f.read())
            except asyncssh.SFTPPermissionDenied:
                target.write_bytes(b"")
            target.chmod(stat.S_IMODE(mode))


# What probe.sh itself runs; none of the tools it reports (journalctl ... ionice).
HOST_UTILS = ("head", "tr", "grep", "date", "uname", "timeout", "hostname")


def probe_path(tmp: Path, root: Path) -> str:
    """PATH for real sh on a materialised node: the probe's own utilities from this host,
    then the node's PATH directories under `root` (so `command -v` sees the node's tools)."""
    tools = tmp / "hostbin"
    tools.mkdir(exist_ok=True)
    for name in HOST_UTILS:
        found = shutil.which(name)
        assert found, name
        if not (tools / name).exists():
            os.symlink(found, tools / name)
    node_dirs = [f"{root}{d}" for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                        "/usr/bin", "/sbin", "/bin")]
    return ":".join([str(tools), *node_dirs])


@pytest.mark.parametrize("hostname", ["web-1", "db-1", "garbage-1", "auth-1"])
async def test_probe_matches_real_sh(main_sim: Sim, tmp_path: Path, hostname: str) -> None:
    """The simulated probe answer equals real /bin/sh on the node's files (bar uname/date),
    including the v2 sections limits, init, tools, uptime and meminfo."""
    root = tmp_path / "root"
    root.mkdir()
    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, hostname) as conn:
        async with conn.start_sftp_client() as sftp:
            await mirror(sftp, "/", root)
        boundary = secrets.token_hex(16)
        cmd = "/bin/sh -c " + shlex.quote(probe_text(boundary))
        sim_out = (await conn.run(cmd, encoding=None, check=True)).stdout
    assert isinstance(sim_out, bytes)
    text = probe_text(boundary, str(root))
    real = await anyio.run_process(["/bin/sh", "-c", text], check=False,
                                   env={"PATH": probe_path(tmp_path, root), "LC_ALL": "C"})
    want, got = sections(real.stdout, boundary), sections(sim_out, boundary)
    for name in ("uname", "date"):
        assert got.pop(name) and want.pop(name)
    assert got == want
    assert real.stdout.count(b" limits ") == sim_out.count(b" limits ")
    assert any(k.startswith("cmdline ") for k in got) and got["version"].startswith(b"Teleport")
    assert any(k.startswith("limits ") for k in got)
    systemd = main_sim.inst(hostname)["init"] == "systemd"
    assert got["init"] == (b"systemd\n" if systemd else b"init\n")
    tools = ["journalctl", "systemctl"] if systemd else []
    assert got["tools"].decode().split() == [*tools, "ss", "df", "nice", "ionice"]
    assert got["uptime"] and got["meminfo"].startswith(b"MemTotal:")


async def test_refused_node_fails_channel_open(main_sim: Sim) -> None:
    """`refused`: the proxy's channel open fails with OPEN_CONNECT_FAILED, connection refused."""
    async with await proxy_conn(main_sim) as proxy:
        with pytest.raises(asyncssh.ChannelOpenError) as info:
            await node_conn(main_sim, proxy, "refused-1")
    assert info.value.code == asyncssh.OPEN_CONNECT_FAILED
    assert "connection refused" in info.value.reason


async def test_bad_hostkey_is_not_verifiable(main_sim: Sim) -> None:
    """`bad_hostkey`: the host certificate is signed by another CA."""
    async with await proxy_conn(main_sim) as proxy:
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await node_conn(main_sim, proxy, "spoof-1")


async def test_auth_denied_rejects_the_user(main_sim: Sim) -> None:
    """`auth_denied`: the node rejects the user certificate."""
    async with await proxy_conn(main_sim) as proxy:
        with pytest.raises(asyncssh.PermissionDenied):
            await node_conn(main_sim, proxy, "denied-1")


async def test_blackhole_never_sends_a_banner(main_sim: Sim) -> None:
    """`blackhole`: TCP is accepted but the SSH handshake never completes."""
    async with await proxy_conn(main_sim) as proxy:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await node_conn(main_sim, proxy, "blackhole-1", connect_timeout=0.8)


async def test_hang_exec_never_ends_but_sftp_works(main_sim: Sim) -> None:
    """`hang`: exec produces nothing and never exits; SFTP still answers."""
    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, "hang-1") as conn:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(conn.run("teleport version"), 0.8)
        async with conn.start_sftp_client() as sftp:
            assert (await sftp.stat("/etc/hostname")).size


async def test_flood_output_exceeds_any_cap(main_sim: Sim) -> None:
    """`flood`: exec output never ends; a client reads past its cap and closes."""
    cap = 2 << 20
    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, "flood-1") as conn:
        proc = await conn.create_process("teleport version", encoding=None)
        got = 0
        while got <= cap:
            chunk = await asyncio.wait_for(proc.stdout.read(1 << 16), 5)
            assert chunk
            got += len(chunk)
        proc.close()
    assert got > cap


async def test_drop_mid_resets_the_connection(main_sim: Sim) -> None:
    """`drop_mid`: the connection is lost once collection starts (exec or SFTP read)."""
    async with await proxy_conn(main_sim) as proxy:
        async with await node_conn(main_sim, proxy, "drop-1") as conn:
            proc = await conn.create_process("teleport version")
            with pytest.raises(asyncssh.ConnectionLost):
                await asyncio.wait_for(proc.stdout.read(), 5)
        async with await node_conn(main_sim, proxy, "drop-1") as conn, \
                conn.start_sftp_client() as sftp:
            assert (await sftp.stat("/etc/hostname")).size  # metadata still answers
            with pytest.raises(asyncssh.ConnectionLost):
                async with sftp.open("/etc/hostname", "rb") as f:
                    await asyncio.wait_for(f.read(), 5)


async def test_slow_delays_every_operation(main_sim: Sim) -> None:
    """`slow`: each exec and SFTP operation waits `delay_s` (0.4 s here)."""
    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, "slow-1") as conn:
        start = time.monotonic()
        await conn.run("true", check=True)
        assert time.monotonic() - start >= 0.4
        async with conn.start_sftp_client() as sftp:
            start = time.monotonic()
            await sftp.stat("/etc/hostname")
            assert time.monotonic() - start >= 0.4


async def test_rtt_adds_latency(main_sim: Sim) -> None:
    """`rtt_ms: 150`: one request/answer through the proxy takes at least one RTT."""
    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, "far-1") as far, \
            await node_conn(main_sim, proxy, "web-1") as near, \
            far.start_sftp_client() as fs, near.start_sftp_client() as ns:
        start = time.monotonic()
        await fs.stat("/etc/hostname")
        far_rt = time.monotonic() - start
        start = time.monotonic()
        await ns.stat("/etc/hostname")
        near_rt = time.monotonic() - start
    assert far_rt >= 0.150
    assert near_rt < 0.1


async def test_garbage_node_serves_invalid_bytes(main_sim: Sim) -> None:
    """`garbage`: teleport.yaml is malformed with NUL and invalid UTF-8; files are truncated."""
    import yaml

    async with await proxy_conn(main_sim) as proxy, \
            await node_conn(main_sim, proxy, "garbage-1") as conn, \
            conn.start_sftp_client() as sftp:
        async with sftp.open("/etc/teleport.yaml", "rb") as f:
            data = await f.read()
        async with sftp.open("/etc/os-release", "rb") as f:
            osr = await f.read()
        async with sftp.open("/var/lib/teleport/teleport.log", "rb") as f:
            log = await f.read()
    assert b"\x00" in data and b"\xff" in data
    with pytest.raises((yaml.YAMLError, UnicodeDecodeError)):
        yaml.safe_load(data.decode())
    assert not osr.endswith(b"\n")
    assert not log.endswith(b"\n") and b"\xff\xfe\x00" in log


async def test_external_addrs_are_relayed_not_simulated(tmp_path: Path) -> None:
    """A group with `external_addrs` gets no simulated sshd; the proxy relays to the address."""
    from simharness import start_sim, stop_sim

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2 lab\r\n" + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scenario = f"groups: [{{name: lab, count: 1, external_addrs: ['127.0.0.1:{port}']}}]\n"
    sim = await anyio.to_thread.run_sync(start_sim, tmp_path, scenario)
    try:
        inst = sim.inst("lab-1")
        assert inst["addr"] == f"127.0.0.1:{port}" and inst["external"]
        nodes = sim.tctl("get", "node", "--format=json")
        assert f"127.0.0.1:{port}" in nodes.stdout
        async with await proxy_conn(sim) as proxy:
            for host in ("lab-1", inst["uuid"]):
                reader, writer = await proxy.open_connection(host, port)
                writer.write(b"hello\n")
                assert await asyncio.wait_for(reader.read(), 5) == (
                    b"SSH-2.0-OpenSSH_9.2 lab\r\nhello\n")
                writer.close()
    finally:
        server.close()
        await anyio.to_thread.run_sync(stop_sim, sim)
