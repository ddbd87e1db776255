"""Tests of the real-OpenSSH lab harness (tests/lab/sshd.py)."""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import anyio
import asyncssh
import pytest

from .sshd import (
    EXPECTED_CMDLINE,
    LOGIN,
    TELEPORT_VERSION_LINE,
    Lab,
    LabNode,
    require_lab,
    start_lab,
)

PROBE_SH = Path(__file__).resolve().parents[2] / "tpdump" / "collectors" / "probe.sh"
CONNECT_TIMEOUT = 10


pytestmark = pytest.mark.lab


@pytest.fixture
def wrong_known_hosts(tmp_path: Path) -> Path:
    """A known_hosts trusting a different host CA."""
    ca = tmp_path / "other_ca"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)]
    subprocess.run(argv, check=True, timeout=10)
    path = tmp_path / "wrong_known_hosts"
    path.write_text(f"@cert-authority * {ca.with_suffix('.pub').read_text().strip()}\n")
    return path


def _client_keys(lab: Lab) -> list[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]]:
    return [(asyncssh.read_private_key(lab.key_path), asyncssh.read_certificate(lab.cert_path))]


async def _jump(lab: Lab, known_hosts: Path | None = None) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        lab.proxy_host,
        lab.proxy_port,
        username=lab.login,
        client_keys=_client_keys(lab),
        known_hosts=str(known_hosts or lab.known_hosts),
        agent_path=None,
        config=[],
        connect_timeout=CONNECT_TIMEOUT,
    )


async def _node(
    lab: Lab,
    jump: asyncssh.SSHClientConnection,
    host: str,
    port: int,
    known_hosts: Path | None = None,
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        host,
        port,
        tunnel=jump,
        username=lab.login,
        client_keys=_client_keys(lab),
        known_hosts=str(known_hosts or lab.known_hosts),
        agent_path=None,
        config=[],
        connect_timeout=CONNECT_TIMEOUT,
    )


def probe_command(boundary: str) -> str:
    """The exec tpdump runs on a node (docs/contracts.md, "The probe")."""
    text = f"B={boundary}\nR=''\nCAP=65536\n" + PROBE_SH.read_text()
    return "/bin/sh -c " + shlex.quote(text)


def parse_probe(out: bytes, boundary: str) -> dict[str, bytes]:
    sections: dict[str, bytes] = {}
    for chunk in out.split(f"\n--{boundary} ".encode())[1:]:
        name, _, body = chunk.partition(b"\n")
        sections[name.decode()] = body
    return sections


# ----------------------------------------------------------------------------- layout


def test_layout(sshd_lab: Lab) -> None:
    lab = sshd_lab
    x = lab.octet
    assert lab.proxy == f"127.0.{x}.1:3023"
    assert lab.login == LOGIN
    assert [n.addr for n in lab.nodes] == [f"127.0.{x}.{i + 2}:3022" for i in range(5)]
    assert [n.hostname for n in lab.nodes] == [f"lab-{i + 1}" for i in range(5)]
    assert len({n.uuid for n in lab.nodes}) == 5
    assert lab.key_path.is_file() and lab.cert_path.name == lab.key_path.name + "-cert.pub"
    assert lab.known_hosts.read_text().startswith("@cert-authority * ssh-ed25519 ")
    host_mnt = os.readlink("/proc/self/ns/mnt")
    mnts = set()
    for n in lab.nodes:
        assert n.expected_cmdline == EXPECTED_CMDLINE
        assert n.canary == f"LABCANARY-token-{n.index}"
        assert Path(f"/proc/{n.pid_of_sshd}/comm").read_text() == "sshd\n"
        mnts.add(os.readlink(f"/proc/{n.pid_of_sshd}/ns/mnt"))
        assert os.readlink(f"/proc/{n.pid_of_sshd}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert (n.root_overlay_dir / "etc/teleport.yaml").is_file()
    assert len(mnts) == 5 and host_mnt not in mnts
    # The host's own /etc and /usr/local/bin are untouched.
    assert not Path("/etc/teleport.yaml").exists()
    assert not Path("/usr/local/bin/teleport").exists()
    assert EXPECTED_CMDLINE == (
        b"/usr/local/bin/teleport\0start\0--config\0/etc/teleport.yaml\0--pid-file=/run/teleport.pid\0"
    )


# ------------------------------------------------------------------------- asyncssh


@pytest.mark.anyio
async def test_probe_every_node_through_jump(sshd_lab: Lab) -> None:
    lab = sshd_lab
    boundary = secrets.token_hex(16)
    cmd = probe_command(boundary)
    with anyio.fail_after(15):
        async with await _jump(lab) as jump:
            for n in lab.nodes:
                async with await _node(lab, jump, n.host, n.port) as conn:
                    res = await conn.run(cmd, encoding=None, check=True, timeout=10)
                sec = parse_probe(res.stdout, boundary)
                cmdlines = {k: v for k, v in sec.items() if k.startswith("cmdline ")}
                assert cmdlines == {f"cmdline {n.teleport_pid}": n.expected_cmdline}, sec
                assert sec["version"].startswith(TELEPORT_VERSION_LINE.encode() + b"\n")
                assert sec["hostname"] == f"{n.hostname}\n".encode()
                assert b"ID=" in sec["os-release"]
                assert sec["uname"].startswith(b"Linux ")
                assert float(sec["date"]) > 1e9
                assert "end" in sec


@pytest.mark.anyio
async def test_sftp_reads_each_nodes_own_config(sshd_lab: Lab) -> None:
    lab = sshd_lab
    with anyio.fail_after(15):
        async with await _jump(lab) as jump:
            for n in lab.nodes:
                async with (
                    await _node(lab, jump, n.host, n.port) as conn,
                    conn.start_sftp_client() as sftp,
                ):
                    async with sftp.open("/etc/teleport.yaml", "rb") as f:
                        yaml = (await f.read()).decode()
                    async with sftp.open("/run/teleport.pid", "rb") as f:
                        pid = int(await f.read())
                    async with sftp.open(f"/proc/{pid}/cmdline", "rb") as f:
                        # /proc files stat as size 0: read() without a size
                        # returns b"" in asyncssh, so give one.
                        empty = await f.read()
                        cmdline = await f.read(65536, 0)
                assert f"  nodename: {n.hostname}\n" in yaml
                assert f"  auth_token: {n.canary}\n" in yaml
                assert "  data_dir: /var/lib/teleport\n" in yaml
                assert empty == b""
                assert cmdline == n.expected_cmdline


@pytest.mark.anyio
async def test_host_cert_principals_uuid_and_hostname(sshd_lab: Lab) -> None:
    """The node's host certificate is valid for its UUID and hostname too."""
    lab = sshd_lab
    n = lab.nodes[2]
    with anyio.fail_after(15):
        async with await _jump(lab) as jump:
            for name in (n.uuid, n.hostname, f"{n.uuid}.{lab.cluster_name}", "localhost"):
                # Reach the node's IP but verify the certificate against `name`.
                async with await asyncssh.connect(
                    n.host,
                    n.port,
                    tunnel=jump,
                    username=lab.login,
                    host_key_alias=name,
                    client_keys=_client_keys(lab),
                    known_hosts=str(lab.known_hosts),
                    agent_path=None,
                    config=[],
                    connect_timeout=CONNECT_TIMEOUT,
                ) as conn:
                    res = await conn.run("cat /etc/hostname", check=True, timeout=10)
                    assert res.stdout == f"{n.hostname}\n"


@pytest.mark.anyio
async def test_wrong_host_ca_is_rejected(sshd_lab: Lab, wrong_known_hosts: Path) -> None:
    lab = sshd_lab
    wrong = wrong_known_hosts
    with anyio.fail_after(15):
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await _jump(lab, known_hosts=wrong)
        async with await _jump(lab) as jump:
            n = lab.nodes[0]
            with pytest.raises(asyncssh.HostKeyNotVerifiable):
                await _node(lab, jump, n.host, n.port, known_hosts=wrong)


@pytest.mark.anyio
async def test_key_without_user_cert_is_refused(sshd_lab: Lab) -> None:
    lab = sshd_lab
    with anyio.fail_after(15):
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                lab.proxy_host,
                lab.proxy_port,
                username=lab.login,
                client_keys=[asyncssh.read_private_key(lab.key_path)],
                known_hosts=str(lab.known_hosts),
                agent_path=None,
                config=[],
                connect_timeout=CONNECT_TIMEOUT,
            )


# -------------------------------------------------------------------------- OpenSSH


def _openssh_argvs(lab: Lab, n: LabNode, command: str) -> dict[str, list[str]]:
    """Two equivalent real-OpenSSH invocations through the jump host.

    `ssh -J` passes `-F FILE` on to the jump-host ssh but not `-o`/`-i` options, so
    `-F /dev/null -o ... -J` fails at the jump hop ("Host key verification failed").
    Working forms: `-F <lab ssh_config> -J`, or `-F /dev/null` with an explicit
    ProxyCommand carrying the same options.
    """
    opts = ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab.known_hosts}"]
    opts += ["-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"]
    opts += ["-i", str(lab.key_path)]
    jump = f"{lab.login}@{lab.proxy}"
    target = ["-p", str(n.port), f"{lab.login}@{n.host}", command]
    proxy_cmd = shlex.join(["ssh", "-F", "/dev/null", *opts, "-W", "[%h]:%p"])
    proxy_cmd += f" -p {lab.proxy_port} {lab.login}@{lab.proxy_host}"
    return {
        "config+J": ["ssh", "-F", str(lab.ssh_config), *opts, "-J", jump, *target],
        "devnull+ProxyCommand": [
            "ssh", "-F", "/dev/null", *opts, "-o", f"ProxyCommand={proxy_cmd}", *target
        ],
    }  # fmt: skip


def test_openssh_proxyjump(sshd_lab: Lab, tmp_path: Path) -> None:
    """Real OpenSSH `ssh` reaches nodes through the jump host with the same key,
    certificate and known_hosts, without touching the invoking user's ~/.ssh."""
    lab = sshd_lab
    home = tmp_path / "home"
    home.mkdir()
    user_ssh = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    before = sorted(p.name for p in user_ssh.iterdir()) if user_ssh.is_dir() else None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C"}
    for n in (lab.nodes[0], lab.nodes[-1]):
        for form, argv in _openssh_argvs(lab, n, "cat /etc/hostname").items():
            res = subprocess.run(argv, capture_output=True, env=env, timeout=20, check=False)
            assert res.returncode == 0, (form, res.stderr.decode())
            assert res.stdout == f"{n.hostname}\n".encode(), form
    after = sorted(p.name for p in user_ssh.iterdir()) if user_ssh.is_dir() else None
    assert before == after
    assert not (home / ".ssh").exists()


def test_openssh_rejects_wrong_ca(sshd_lab: Lab, wrong_known_hosts: Path) -> None:
    lab = sshd_lab
    wrong = wrong_known_hosts
    argv = [
        "ssh",
        "-F",
        str(lab.ssh_config),
        "-o",
        f"UserKnownHostsFile={wrong}",
        "-p",
        str(lab.proxy_port),
        f"{lab.login}@{lab.proxy_host}",
        "true",
    ]
    res = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    assert res.returncode == 255
    assert b"Host key verification failed" in res.stderr


# ------------------------------------------------------------------------ lifecycle


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return False


def test_second_lab_start_and_stop_only_its_own(sshd_lab: Lab, tmp_path: Path) -> None:
    require_lab()
    t0 = time.monotonic()
    with start_lab(tmp_path / "lab2", 2) as lab2:
        started = time.monotonic() - t0
        assert lab2.octet != sshd_lab.octet
        ours = [lab2.jump_pid] + [n.pid_of_sshd for n in lab2.nodes]
        wrappers = [p for p in lab2.pids() if p not in ours]
        assert len(wrappers) == 3
        assert all(Path(f"/proc/{p}").exists() for p in ours + wrappers)
    assert started < 5, started
    assert _gone(ours + wrappers, 5)
    # The session lab is untouched.
    assert Path(f"/proc/{sshd_lab.jump_pid}").exists()
    assert all(Path(f"/proc/{n.pid_of_sshd}").exists() for n in sshd_lab.nodes)


def test_lifetime_watchdog_stops_a_forgotten_lab(tmp_path: Path) -> None:
    require_lab()
    lab = start_lab(tmp_path / "lab3", 1, lifetime=2)
    try:
        pids = [lab.jump_pid, lab.nodes[0].pid_of_sshd]
        assert _gone(pids, 8), "watchdog did not stop the lab"
    finally:
        lab.stop()
