"""Tests of the real-systemd lab (tests/lab/nspawn.py): systemd-nspawn nodes with real
systemd, journald, dbus and sshd, reached through a real sshd jump host with asyncssh,
as the unprivileged login ``tpdlab``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import asyncssh
import pytest

from .nspawn import (
    EXPECTED_CMDLINE,
    LOGIN,
    PROJECT_ROOT,
    STANDIN_DIR,
    TELEPORT_VERSION_LINE,
    NspawnLab,
    NspawnNode,
    require_nspawn_lab,
    start_nspawn_lab,
)

pytestmark = pytest.mark.lab

CONNECT_TIMEOUT = 10
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference" / "teleport" / "systemd"
REFERENCE_FILES = {
    "teleport.service": "gravitational-teleport__examples__systemd__teleport.service",
    "teleport-update.service":
        "gravitational-teleport__lib__autoupdate__agent__testdata__teleport-update.service.golden",
    "teleport-update.timer":
        "gravitational-teleport__lib__autoupdate__agent__testdata__teleport-update.timer.golden",
}


def _client_keys(lab: NspawnLab) -> list[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]]:
    return [(asyncssh.read_private_key(lab.key_path), asyncssh.read_certificate(lab.cert_path))]


async def _jump(lab: NspawnLab) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        lab.proxy_host, lab.proxy_port, username=lab.login, client_keys=_client_keys(lab),
        known_hosts=str(lab.known_hosts), agent_path=None, config=[],
        connect_timeout=CONNECT_TIMEOUT)


async def _node(lab: NspawnLab, jump: asyncssh.SSHClientConnection,
                n: NspawnNode) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        n.ip, n.port, tunnel=jump, username=lab.login, client_keys=_client_keys(lab),
        known_hosts=str(lab.known_hosts), agent_path=None, config=[],
        connect_timeout=CONNECT_TIMEOUT)


async def _http(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes],
                path: str, host: str) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    raw = b""
    for _ in range(1000):  # bounded; the server closes after one response
        chunk = await reader.read(65536)
        if not chunk:
            break
        raw += chunk
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ---------------------------------------------------------------------------- layout


def test_layout(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    x = lab.octet
    assert lab.proxy == f"10.200.{x}.1:3023"
    assert lab.login == LOGIN == "tpdlab"
    assert [n.addr for n in lab.nodes] == [f"10.200.{x}.{i + 2}:3022" for i in range(5)]
    assert [n.hostname for n in lab.nodes] == [f"nlab-{i}" for i in range(5)]
    assert len({n.uuid for n in lab.nodes}) == 5
    assert lab.known_hosts.read_text().startswith("@cert-authority * ssh-ed25519 ")
    assert EXPECTED_CMDLINE == (
        b"/usr/local/bin/teleport\0start\0--config\0/etc/teleport.yaml\0"
        b"--pid-file=/run/teleport.pid\0")
    namespaces: dict[str, set[str]] = {"pid": set(), "mnt": set(), "net": set()}
    for n in lab.nodes:
        assert n.expected_cmdline == EXPECTED_CMDLINE
        assert n.canaries == [f"NSPAWNCANARY-{k}-{n.index}" for k in ("token", "sqlite", "bearer")]
        assert Path(f"/proc/{n.leader_pid}/comm").read_text() == "systemd\n"
        for ns in namespaces:
            namespaces[ns].add(os.readlink(f"/proc/{n.leader_pid}/ns/{ns}"))
    for ns, seen in namespaces.items():
        assert len(seen) == 5 and os.readlink(f"/proc/self/ns/{ns}") not in seen, ns
    # Nothing landed on the host itself.
    assert not Path("/etc/teleport.yaml").exists()
    assert not Path("/usr/local/bin/teleport").exists()
    assert not Path("/var/lib/teleport/debug.sock").exists()
    assert "tpdnlab" not in Path("/proc/self/mountinfo").read_text()
    # The safety route is in place and nodes have no default route.
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True,
                            text=True, check=True, timeout=10).stdout
    assert "10.200.0.0/16" in routes
    res = lab.run_in_node(1, ["ip", "-4", "route"], timeout=10)
    assert res.stdout.decode().split("\n")[0].startswith(f"10.200.{x}.0/24 dev eth0")
    assert b"default" not in res.stdout


def test_units_are_the_reference_files(nspawn_lab: NspawnLab) -> None:
    """The stand-in copies equal the reference files (when shared/ is beside the repo),
    and the node runs exactly those files."""
    for name, ref in REFERENCE_FILES.items():
        ours = (STANDIN_DIR / name).read_bytes()
        if REFERENCE.is_dir():
            assert ours == (REFERENCE / ref).read_bytes(), name
        res = nspawn_lab.run_in_node(3, ["cat", f"/etc/systemd/system/{name}"], timeout=10)
        assert res.stdout == ours, name


def test_run_in_node(nspawn_lab: NspawnLab) -> None:
    res = nspawn_lab.run_in_node(0, [sys.executable, "-c", "print(1)"], timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"1\n"
    res = nspawn_lab.run_in_node(0, ["sh", "-c", "hostname; cat /proc/1/comm; id -u"], timeout=10)
    assert res.stdout == b"nlab-0\nsystemd\n0\n"


def test_tpdump_node_runs_inside_a_node(nspawn_lab: NspawnLab) -> None:
    """The project and its Python are visible read-only in the node: `tpdump node`
    dumps the node's own (stand-in) Teleport."""
    lab = nspawn_lab
    res = lab.run_in_node(4, [sys.executable, "-m", "tpdump", "node", "--cluster-name",
                              lab.cluster_name, "-o", "/tmp/tpdump-out/", "-q"], timeout=60)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    res = lab.run_in_node(4, ["sh", "-c", "tar -xzOf /tmp/tpdump-out/*.tar.gz --wildcards "
                                          "'*/report.json'"], timeout=20)
    report = json.loads(res.stdout)
    assert report["verdict"] == "complete"
    assert report["node_results"][0]["hostname"] == "nlab-4"


# ---------------------------------------------------------------- through the jump host


@pytest.mark.anyio
async def test_every_node_through_jump(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    results: dict[str, str] = {}

    async def one(jump: asyncssh.SSHClientConnection, n: NspawnNode) -> None:
        async with await _node(lab, jump, n) as conn:
            res = await conn.run("hostname; id -un; id -Gn; systemctl is-active teleport.service;"
                                 " /usr/local/bin/teleport version", check=True, timeout=10)
            results[n.hostname] = str(res.stdout)

    with anyio.fail_after(20):
        async with await _jump(lab) as jump, anyio.create_task_group() as tg:
            for n in lab.nodes:
                tg.start_soon(one, jump, n)
    for n in lab.nodes:
        lines = results[n.hostname].splitlines()
        assert lines[0] == n.hostname
        assert lines[1] == LOGIN
        assert "systemd-journal" in lines[2].split()
        assert lines[3] == "active"
        assert lines[4] == TELEPORT_VERSION_LINE


@pytest.mark.anyio
async def test_systemctl_cat_and_status(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    n = lab.nodes[0]
    unit = (STANDIN_DIR / "teleport.service").read_text()
    dropin = (STANDIN_DIR / "override.conf").read_text()
    with anyio.fail_after(20):
        async with await _jump(lab) as jump, await _node(lab, jump, n) as conn:
            cat = await conn.run("systemctl cat --no-pager teleport.service", timeout=10)
            status = await conn.run("systemctl status --no-pager --full -n 0 teleport.service",
                                    timeout=10)
            timers = await conn.run("systemctl list-timers --all --no-pager 'teleport*'",
                                    timeout=10)
            files = await conn.run("systemctl list-unit-files --plain --no-legend --no-pager "
                                   "'teleport*'", timeout=10)
            pid = int(str((await conn.run("cat /run/teleport.pid", check=True)).stdout))
    assert cat.exit_status == 0, cat.stderr
    assert cat.stdout == (
        f"# /etc/systemd/system/teleport.service\n{unit}\n"
        f"# /etc/systemd/system/teleport.service.d/override.conf\n{dropin}")
    out = str(status.stdout)
    assert status.exit_status == 0, (out, status.stderr)
    assert out.startswith("● teleport.service - Teleport Service\n")
    assert "Loaded: loaded (/etc/systemd/system/teleport.service; enabled;" in out
    assert "Drop-In: /etc/systemd/system/teleport.service.d\n" in out and "override.conf" in out
    assert "Active: active (running) since " in out
    assert f"Main PID: {pid} (teleport)" in out
    assert "CGroup: /system.slice/teleport.service\n" in out
    assert f"─{pid} /usr/local/bin/teleport start --config /etc/teleport.yaml" in out
    assert "teleport-update.timer" in str(timers.stdout)
    assert "1 timers listed." in str(timers.stdout)
    assert "teleport-update.timer enabled" in " ".join(str(files.stdout).split())


@pytest.mark.anyio
async def test_journal_json_as_tpdlab(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    n = lab.nodes[1]
    with anyio.fail_after(20):
        async with await _jump(lab) as jump, await _node(lab, jump, n) as conn:
            res = await conn.run("journalctl --no-pager -u teleport.service -o json -n 5",
                                 timeout=10)
            all_lines = await conn.run("journalctl --no-pager -u teleport.service -o cat",
                                       timeout=10)
    assert res.exit_status == 0, res.stderr
    entries = [json.loads(line) for line in str(res.stdout).splitlines()]
    assert len(entries) == 5
    for e in entries:
        assert int(e["__REALTIME_TIMESTAMP"]) > 1_600_000_000 * 10**6
        assert e["_SYSTEMD_UNIT"] == "teleport.service"
        assert e["_HOSTNAME"] == n.hostname
        assert e["_COMM"] == "teleport"
    text = str(all_lines.stdout)
    assert "Starting Teleport v17.4.2" in text
    assert f"Bearer {n.canaries[2]}" in text


@pytest.mark.anyio
async def test_proc_cmdline_comm_limits(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    with anyio.fail_after(20):
        async with await _jump(lab) as jump:
            for n in (lab.nodes[0], lab.nodes[4]):
                async with await _node(lab, jump, n) as conn, conn.start_sftp_client() as sftp:
                    async with sftp.open("/run/teleport.pid", "rb") as f:
                        pid = int(await f.read())
                    async with sftp.open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmdline = await f.read(65536, 0)  # /proc files stat as size 0
                    async with sftp.open(f"/proc/{pid}/comm", "rb") as f:
                        comm = await f.read(256, 0)
                    async with sftp.open(f"/proc/{pid}/limits", "rb") as f:
                        limits = (await f.read(65536, 0)).decode()
                assert cmdline == n.expected_cmdline
                assert comm == b"teleport\n"
                nofile = [ln for ln in limits.splitlines() if ln.startswith("Max open files")]
                assert nofile[0].split()[3:5] == ["16384", "16384"], nofile  # the drop-in


@pytest.mark.anyio
async def test_diag_and_debug_socket_through_ssh(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    n = lab.nodes[2]
    with anyio.fail_after(20):
        async with await _jump(lab) as jump, await _node(lab, jump, n) as conn:
            got = {}
            for path in ("/metrics", "/healthz", "/readyz"):
                reader, writer = await conn.open_connection("127.0.0.1", 3434)
                got[path] = await _http(reader, writer, path, "127.0.0.1:3434")
            reader, writer = await conn.open_unix_connection("/var/lib/teleport/debug.sock")
            level = await _http(reader, writer, "/log-level", "teleport")
    code, metrics = got["/metrics"]
    assert code == 200
    lines = metrics.decode().splitlines()
    assert "process_state 0" in lines
    assert any(ln.startswith('teleport_build_info{gitref="v17.4.2-0-g1234abcd",'
                             'goversion="go1.23.8",version="17.4.2"} 1') for ln in lines)
    assert any(ln.startswith("go_goroutines ") for ln in lines)
    assert got["/healthz"] == (200, b'{"status":"ok"}')
    assert got["/readyz"] == (200, b'{"status":"ok"}')
    assert level == (200, b"INFO")


@pytest.mark.anyio
async def test_sftp_sqlite_db(nspawn_lab: NspawnLab, tmp_path: Path) -> None:
    lab = nspawn_lab
    n = lab.nodes[3]
    with anyio.fail_after(20):
        async with await _jump(lab) as jump, await _node(lab, jump, n) as conn, \
                conn.start_sftp_client() as sftp:
            async with sftp.open("/var/lib/teleport/proc/sqlite.db", "rb") as f:
                data = await f.read()
            async with sftp.open("/etc/teleport.yaml", "rb") as f:
                conf = (await f.read()).decode()
            names = sorted(await sftp.listdir("/var/lib/teleport"))
    db = tmp_path / "sqlite.db"
    db.write_bytes(data)
    con = sqlite3.connect(db)
    try:
        rows = dict(con.execute("SELECT key, value FROM kv").fetchall())
        cols = [r[1] for r in con.execute("PRAGMA table_info(kv)")]
    finally:
        con.close()
    assert cols == ["key", "modified", "expires", "value", "revision"]
    assert set(rows) == {"/ids/node/current", "/states/node"}
    ident = json.loads(rows["/ids/node/current"])
    assert ident["spec"]["key"].startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert n.canaries[1] in ident["spec"]["key"]
    assert json.loads(rows["/states/node"])["spec"]["host_uuid"] == n.uuid
    assert f"  nodename: {n.hostname}\n" in conf
    assert f"  auth_token: {n.canaries[0]}\n" in conf
    assert "  diag_addr: 127.0.0.1:3434\n" in conf and "    output: stderr\n" in conf
    assert {"debug.sock", "host_uuid", "proc"} <= set(names)


# ------------------------------------------------------------------------ tpdump cluster


def test_tpdump_cluster_dumps_real_systemd_nodes(nspawn_lab: NspawnLab, tmp_path: Path) -> None:
    """`tpdump cluster` through the real jump host as tpdlab: every node complete, the
    real unit file and cmdline captured, none of the planted secrets in the archive."""
    from tests.integration.helpers import dump_lab

    lab = nspawn_lab
    dump = dump_lab(lab, tmp_path, "--connect-timeout", "5", "--node-timeout", "30")
    assert dump.returncode == 0, dump.stdout + dump.stderr
    results = dump.report["node_results"]
    assert len(results) == len(lab.nodes)
    assert all(r["status"] == "ok" for r in results), results
    unit = (STANDIN_DIR / "teleport.service").read_text()
    dropin = (STANDIN_DIR / "override.conf").read_text()
    cat = (f"# /etc/systemd/system/teleport.service\n{unit}\n"
           f"# /etc/systemd/system/teleport.service.d/override.conf\n{dropin}").encode()
    by_addr = {n.addr: n for n in lab.nodes}
    seen = set()
    for r in results:
        meta = json.loads(dump.files[f"{r['dir']}/node.json"])
        node = by_addr[meta["target"]]
        # Real dash ran the batches: probe, teleport.yaml, the batch, the other units'
        # batch, diag, debug socket; nothing asked again on its own.
        assert meta["requests"] <= 6 and "requests_direct" not in meta["facts"], meta
        assert dump.files[f"{r['dir']}/host/hostname"] == f"{node.hostname}\n".encode()
        assert dump.files[f"{r['dir']}/cmdline"] == node.expected_cmdline
        assert dump.files[f"{r['dir']}/teleport.service/teleport.service"] == cat  # systemctl cat
        status = dump.files[f"{r['dir']}/teleport.service/teleport.service.status.txt"]
        assert b"Active: active (running)" in status
        text = dump.files[f"{r['dir']}/teleport.service/log.txt"].decode().splitlines()
        assert text and all(line[:4].isdigit() and line[4] == "-" and "T" in line[:11]
                            for line in text if not line.startswith("-- "))
        entries = [json.loads(line) for line in
                   dump.files[f"{r['dir']}/teleport.service/log.json"].decode().splitlines()]
        assert entries and all(int(e["__REALTIME_TIMESTAMP"]) > 0 for e in entries)
        # journalctl -u also gives systemd's own messages about the unit (init.scope)
        assert "teleport.service" in {e.get("_SYSTEMD_UNIT") for e in entries}
        assert b"process_state" in dump.files[f"{r['dir']}/diag/metrics.txt"]
        assert b"CREATE TABLE" in dump.files[f"{r['dir']}/proc/sqlite.sql"]
        seen.add(node.hostname)
    assert seen == {n.hostname for n in lab.nodes}
    planted = [c.encode() for n in lab.nodes for c in n.canaries]
    leaks = {c for c in planted for body in dump.files.values() if c in body}
    assert not leaks, sorted(leaks)


# --------------------------------------------------------------------------- lifecycle


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return False


def test_second_lab_stops_only_its_own(nspawn_lab: NspawnLab, tmp_path: Path) -> None:
    """A second lab gets another /24; stop() ends its processes and removes its
    namespaces, bridge and cgroups, and leaves the session lab running."""
    require_nspawn_lab()
    with start_nspawn_lab(tmp_path / "lab2", 1) as lab2:
        assert lab2.octet != nspawn_lab.octet
        pids = lab2.pids()
        assert len(pids) == 4 and all(Path(f"/proc/{p}").exists() for p in pids)
        machine, netns = lab2.nodes[0].machine, lab2.nodes[0].netns
        assert lab2.run_in_node(0, ["hostname"], timeout=10).stdout == b"nlab-0\n"
    assert _gone(pids, 5)
    assert lab2.timings["stop"] < 8
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True,
                           timeout=10).stdout
    assert f"{lab2.bridge}:" not in links
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                       check=True, timeout=10).stdout
    assert not any(Path(h, "tpdnlab", machine).exists()
                   for h in ("/sys/fs/cgroup", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"))
    # The session lab is untouched.
    assert all(Path(f"/proc/{n.leader_pid}").exists() for n in nspawn_lab.nodes)
    assert nspawn_lab.run_in_node(0, ["systemctl", "is-active", "teleport.service"],
                                  timeout=10).stdout == b"active\n"


def test_lifetime_powers_off_a_forgotten_node(tmp_path: Path) -> None:
    """Each node powers itself off after `lifetime` seconds (tpdnlab-lifetime.service),
    and the jump host's watchdog ends it too: a lab whose owner died goes away."""
    require_nspawn_lab()
    lab = start_nspawn_lab(tmp_path / "lab3", 1, lifetime=3)
    try:
        node = lab.nodes[0]
        assert _gone([node.leader_pid, lab.jump_pid], 15), "still running"
        for _ in range(100):  # nspawn exits once its container has powered off
            if not lab.node_running(0):
                break
            time.sleep(0.05)
        assert not lab.node_running(0)
        assert b"Container tpdnlab-" in node.console_log.read_bytes()
    finally:
        lab.stop()
