"""`tpdump node --sysroot`: a mounted root file system dumped without SSH or auth API."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.integration.helpers import find_archive, read_archive, tpdump_cmd

DATA = Path(__file__).resolve().parents[1] / "data" / "teleport"
UUID = "6204f089-7da7-4381-b28b-d247d5122a2e"
SECRET_KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEsysrootCANARYkey\n"
              "-----END RSA PRIVATE KEY-----\n")


def make_sysroot(root: Path) -> None:
    """A stopped Teleport host's disk: config, unit with a drop-in, log file, data_dir."""
    (root / "etc/systemd/system/teleport.service.d").mkdir(parents=True)
    unit = (DATA / "systemd/gravitational-teleport__examples__systemd__teleport.service")
    (root / "etc/systemd/system/teleport.service").write_text(unit.read_text())
    (root / "etc/systemd/system/teleport.service.d/override.conf").write_text(
        "[Service]\nLimitNOFILE=65536\n")
    (root / "etc/hostname").write_text("db-7\n")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    config = (DATA / "config/gravitational-teleport__docker__one-node.yaml").read_text()
    (root / "etc/teleport.yaml").write_text(config)
    data = root / "var/lib/teleport"
    (data / "proc").mkdir(parents=True)
    (data / "host_uuid").write_text(UUID + "\n")
    now = time.time()
    stamp = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600 + i)) for i in range(500)]
    (data / "teleport.log").write_text("".join(
        f"{stamp[i]} INFO [NODE] line {i} "
        f"{'Authorization: Bearer sysrootCANARYbearer' if i == 5 else 'ok'}\n"
        for i in range(500)))
    db = sqlite3.connect(data / "proc/sqlite.db")
    db.execute("CREATE TABLE kv (key TEXT NOT NULL PRIMARY KEY, modified INTEGER NOT NULL, "
               "expires DATETIME, value BLOB, revision TEXT)")
    db.execute("INSERT INTO kv VALUES (?, 1, NULL, ?, 'r1')",
               ("/ids/node/current", json.dumps({"key": SECRET_KEY}).encode()))
    db.execute("INSERT INTO kv VALUES (?, 2, NULL, ?, 'r2')",
               ("/states/node", json.dumps({"spec": {"rotation": {"state": "standby"}}})))
    db.commit()
    db.close()


def test_node_sysroot(tmp_path: Path) -> None:
    """The config (token stripped), units with drop-ins, the log file's tail, the data_dir
    listing and the process state without its secrets, under the host's UUID."""
    root = tmp_path / "root"
    make_sysroot(root)
    out = tmp_path / "out"
    done = subprocess.run(tpdump_cmd("node", "--sysroot", str(root), "-o", f"{out}/", "-q"),
                          capture_output=True, text=True, timeout=120)
    archive = find_archive(out)
    assert archive is not None, done.stderr
    files = read_archive(archive)
    base = f"nodes/{UUID}"
    conf = files[f"{base}/teleport.yaml"].decode()
    assert "auth_token: \"<redacted by tpdump: join token>\"" in conf
    assert "severity: INFO" in conf
    unit = files[f"{base}/teleport.service/teleport.service"].decode()
    assert "ExecStart=/usr/local/bin/teleport start" in unit
    assert "LimitNOFILE=65536" in unit and "override.conf" in unit
    log = files[f"{base}/logs/teleport.log"].decode()
    assert "line 499" in log and "sysrootCANARYbearer" not in log
    listing = files[f"{base}/data_dir.txt"].decode()
    assert "/var/lib/teleport/proc/sqlite.db" in listing
    sql = files[f"{base}/proc/sqlite.sql"].decode()
    assert "/ids/node/current" in sql and "standby" in sql
    assert "CANARYkey" not in sql and "PRIVATE KEY" not in sql
    for data in files.values():
        assert b"sysrootCANARY" not in data
    report = json.loads(files["report.json"])
    assert report["node_results"][0]["uuid"] == UUID
    assert "archive:" in done.stdout


def test_node_without_teleport(tmp_path: Path) -> None:
    """A root with no Teleport: it says so clearly and still writes host facts."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("plain-host\n")
    (root / "etc/os-release").write_text("ID=debian\n")
    out = tmp_path / "out"
    done = subprocess.run(tpdump_cmd("node", "--sysroot", str(root), "-o", f"{out}/", "-q"),
                          capture_output=True, text=True, timeout=120)
    assert "TPD213" in done.stdout and "no Teleport" in done.stdout
    archive = find_archive(out)
    assert archive is not None
    files = read_archive(archive)
    assert any(p.endswith("host/os-release") for p in files)
    assert done.returncode == 1


def test_bad_sysroot_is_a_usage_error(tmp_path: Path) -> None:
    """--sysroot that is not a directory: exit 2 with the option named."""
    done = subprocess.run(tpdump_cmd("node", "--sysroot", str(tmp_path / "nope")),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--sysroot" in done.stderr
