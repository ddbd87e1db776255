"""The probe: real /bin/sh on a prepared root, parsed back; framing cannot be forged."""

import os
import subprocess
from pathlib import Path

from tpdump.collectors.node import (
    PROBE_SCRIPT,
    config_facts,
    config_path,
    parse_probe,
    probe_command,
    split_cmdline,
)


def make_root(root: Path, cmdline: bytes) -> None:
    (root / "run").mkdir(parents=True)
    (root / "run/teleport.pid").write_text("4242\n")
    proc = root / "proc/4242"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("teleport\n")
    (proc / "cmdline").write_bytes(cmdline)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("web-7\n")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    bindir = root / "usr/local/bin"
    bindir.mkdir(parents=True)
    exe = bindir / "teleport"
    exe.write_text("#!/bin/sh\necho 'Teleport v17.4.2 git:v17.4.2-0-gabc go1.23.8'\n")
    exe.chmod(0o755)


def run_probe(root: Path, boundary: str) -> bytes:
    cmd = probe_command(boundary, str(root), 65536)
    return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, check=True,
                          timeout=20).stdout


def test_probe_on_a_real_shell(tmp_path: Path) -> None:
    """Run by a real shell, the probe reports cmdline, version and host facts."""
    cmdline = (b"/usr/local/bin/teleport\0start\0--config\0/etc/teleport.yaml\0"
               b"--pid-file=/run/teleport.pid\0")
    make_root(tmp_path, cmdline)
    sections = parse_probe(run_probe(tmp_path, "b" * 32), "b" * 32)
    assert sections["cmdline 4242"] == cmdline
    assert sections["version"].startswith(b"Teleport v17.4.2")
    assert sections["hostname"] == b"web-7\n"
    assert b"ID=debian" in sections["os-release"]
    assert float(sections["date"].strip()) > 1.6e9
    assert "end" in sections
    argv = split_cmdline(sections["cmdline 4242"])
    assert config_path(argv) == "/etc/teleport.yaml"


def test_boundary_cannot_be_forged(tmp_path: Path) -> None:
    """A hostile file that prints section-like lines cannot add or replace sections."""
    make_root(tmp_path, b"/usr/local/bin/teleport\0start\0")
    (tmp_path / "etc/hostname").write_text("x\n--fake version\nEVIL\n")
    boundary = os.urandom(16).hex()
    sections = parse_probe(run_probe(tmp_path, boundary), boundary)
    assert sections["version"].startswith(b"Teleport v17.4.2")
    assert b"EVIL" in sections["hostname"]


def test_probe_without_teleport(tmp_path: Path) -> None:
    """On a host with no teleport process the probe still ends cleanly."""
    (tmp_path / "etc").mkdir()
    sections = parse_probe(run_probe(tmp_path, "c" * 32), "c" * 32)
    assert not any(name.startswith("cmdline") for name in sections)
    assert "end" in sections


def test_config_path_forms() -> None:
    """--config X, --config=X, -c X, and the default."""
    assert config_path(["teleport", "start", "--config=/a.yaml"]) == "/a.yaml"
    assert config_path(["teleport", "start", "-c", "/b.yaml"]) == "/b.yaml"
    assert config_path(["teleport", "start"]) == "/etc/teleport.yaml"


def test_config_facts() -> None:
    """Facts are read from teleport.yaml: services, data_dir, diag_addr, log output."""
    facts = config_facts("teleport:\n  nodename: n1\n  data_dir: /var/lib/teleport\n"
                         "  diag_addr: 127.0.0.1:3000\n  log:\n    output: stderr\n"
                         "ssh_service:\n  enabled: yes\nproxy_service:\n  enabled: no\n")
    assert facts["configured_services"] == ["node"]
    assert facts["diag_addr"] == "127.0.0.1:3000"
    assert facts["log_output"] == "stderr"
    assert config_facts("a: [")["config_error"].startswith("not valid YAML")


def test_script_is_posix() -> None:
    """The probe script parses with sh -n (it runs on any host's /bin/sh)."""
    subprocess.run(["/bin/sh", "-n", "-c", PROBE_SCRIPT], check=True)
