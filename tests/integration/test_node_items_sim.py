"""Everything a node has to say (SPEC §4), collected from simulated nodes: systemd units
with drop-ins, journald in both formats, log files, diag endpoints, the debug socket,
connections, host facts, the data_dir listing and the process state without secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import instances, run_dump, simulated
from tests.integration.test_cluster_sim import FAST, assert_no_canary, scenario

DATA = Path(__file__).resolve().parents[1] / "data" / "teleport"
AUTH_UNIT = "systemd/gravitational-teleport__examples__systemd__production__auth__teleport.service"
DROPIN = "[Service]\nLimitNOFILE=65536\nEnvironment=TELEPORT_DEBUG=0\n"


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One dump of a small cluster with systemd nodes (a drop-in, the updater timer),
    plain nodes with log files, a degraded node, a skewed clock and a hanging node."""
    tmp = tmp_path_factory.mktemp("items")
    (tmp / "real").mkdir()
    (tmp / "real" / "override.conf").write_text(DROPIN)
    for name in ("teleport-update.service", "teleport-update.timer"):
        src = DATA / ("systemd/gravitational-teleport__lib__autoupdate__agent__testdata__"
                      f"{name}.golden")
        (tmp / "real" / name).write_text(src.read_text())
    (tmp / "real" / "auth.service").write_text((DATA / AUTH_UNIT).read_text())
    groups = [
        {"name": "web", "count": 3, "services": ["node"], "init": "systemd", "diag": True,
         "log_lines": 300, "log_error_rate": 0.1,
         "files": {"/etc/systemd/system/teleport.service.d/override.conf": "real/override.conf",
                   "/etc/systemd/system/teleport-update.service":
                       "real/teleport-update.service",
                   "/etc/systemd/system/teleport-update.timer": "real/teleport-update.timer"}},
        {"name": "auth", "count": 1, "services": ["auth", "node"], "init": "systemd",
         "files": {"/etc/systemd/system/teleport.service": "real/auth.service"}},
        {"name": "db", "count": 2, "services": ["node", "db"], "init": "plain", "diag": True,
         "log_lines": 400, "log_format": "json"},
        {"name": "sick", "count": 1, "services": ["node"], "diag": True, "readyz": "degraded",
         "clock_offset_s": 30},
        {"name": "stuck", "count": 1, "services": ["node"], "fault": "hang", "diag": True},
    ]
    with simulated(tmp, scenario(groups)) as state:
        dump = run_dump(state, tmp / "out", *FAST)
        yield state, dump, {i["hostname"]: i for i in instances(state)}


def node_files(dump: Any, insts: dict[str, Any], hostname: str) -> tuple[str, dict[str, Any]]:
    uuid = insts[hostname]["uuid"]
    node = next(n for n in dump.report["node_results"] if n["uuid"] == uuid)
    return node["dir"], json.loads(dump.files[f"{node['dir']}/node.json"])


def test_systemd_units_with_dropins_and_timers(items: Any) -> None:
    """Every teleport* unit comes back as `systemctl cat` shows it, with its drop-in, plus
    status and the updater timer."""
    _, dump, insts = items
    base, meta = node_files(dump, insts, "web-1")
    unit = dump.files[f"{base}/teleport.service/teleport.service"].decode()
    assert "# /etc/systemd/system/teleport.service" in unit
    assert "ExecStart=/usr/local/bin/teleport start --config /etc/teleport.yaml" in unit
    assert "# /etc/systemd/system/teleport.service.d/override.conf" in unit
    assert "LimitNOFILE=65536" in unit
    # byte for byte the layout the real systemd of the nspawn lab prints (see
    # tests/lab/test_nspawn_lab.py::test_tpdump_cluster_dumps_real_systemd_nodes)
    ref = (DATA / "systemd/gravitational-teleport__examples__systemd__teleport.service")
    assert unit == (f"# /etc/systemd/system/teleport.service\n{ref.read_text()}\n"
                    f"# /etc/systemd/system/teleport.service.d/override.conf\n{DROPIN}")
    status = dump.files[f"{base}/teleport.service/teleport.service.status.txt"].decode()
    assert "teleport.service" in status and "Active: active (running)" in status
    assert f"{base}/teleport.service/teleport-update.timer" in dump.files
    assert "teleport-update.timer" in dump.files[f"{base}/teleport.service/timers.txt"].decode()
    assert set(meta["facts"]["systemd_units"]) >= {"teleport.service", "teleport-update.timer"}


def test_cmdline_matches_the_units_execstart(items: Any) -> None:
    """A node running the production auth unit has that ExecStart as its cmdline, and
    its --diag-addr is used for the diag endpoints."""
    _, dump, insts = items
    base, meta = node_files(dump, insts, "auth-1")
    unit = dump.files[f"{base}/teleport.service/teleport.service"].decode()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    words = exec_start.split("=", 1)[1].split()
    assert dump.files[f"{base}/cmdline"].rstrip(b"\0").split(b"\0") == \
        [w.encode() for w in words]
    assert meta["facts"]["diag"]["addr"] == "127.0.0.1:3434"
    assert b"process_state" in dump.files[f"{base}/diag/metrics.txt"]


def test_journald_both_formats(items: Any) -> None:
    """log.txt in short-iso-precise with timestamps, log.json with one JSON entry a line."""
    _, dump, insts = items
    base, _ = node_files(dump, insts, "web-2")
    text = dump.files[f"{base}/teleport.service/log.txt"].decode().splitlines()
    assert len(text) >= 100
    assert any("T" in line[:20] and line[4] == "-" for line in text)
    entries = [json.loads(line) for line in
               dump.files[f"{base}/teleport.service/log.json"].decode().splitlines() if line]
    assert entries and all("__REALTIME_TIMESTAMP" in e and "MESSAGE" in e for e in entries)
    assert {e.get("_SYSTEMD_UNIT") for e in entries} == {"teleport.service"}


def test_log_file_newest_lines(items: Any) -> None:
    """Plain nodes give the file of teleport.log.output, newest lines kept."""
    _, dump, insts = items
    base, meta = node_files(dump, insts, "db-1")
    logs = [p for p in dump.files if p.startswith(f"{base}/logs/")]
    assert len(logs) == 1
    lines = dump.files[logs[0]].decode().splitlines()
    assert len(lines) >= 100
    json.loads(lines[-1])  # log_format json
    assert meta["facts"]["log_output"].startswith("/")


def test_diag_health_and_readiness(items: Any) -> None:
    """/metrics, /healthz, /readyz through port forwarding; a degraded node answers 503."""
    _, dump, insts = items
    base, meta = node_files(dump, insts, "web-1")
    assert meta["facts"]["diag"]["status"] == {"/metrics": 200, "/healthz": 200,
                                               "/readyz": 200}
    assert b"teleport" in dump.files[f"{base}/diag/metrics.txt"]
    _, sick = node_files(dump, insts, "sick-1")
    assert sick["facts"]["diag"]["status"]["/readyz"] == 503
    assert abs(sick["clock_offset_s"] - 30) < 2


def test_host_facts_connections_datadir_state(items: Any) -> None:
    """Host facts, the process's connections, the data_dir listing, the process state."""
    _, dump, insts = items
    base, meta = node_files(dump, insts, "web-3")
    facts = meta["facts"]
    assert facts["limits"]["open_files_soft"]
    assert facts["memtotal_kb"] > 0 and facts["uptime_s"] > 0
    assert facts["data_dir_free_kb"] > 0
    assert facts["connected_addresses"] and all(c["peer"] for c in facts["connected_addresses"])
    assert "/var/lib/teleport/proc/sqlite.db" in dump.files[f"{base}/data_dir.txt"].decode()
    sql = dump.files[f"{base}/proc/sqlite.sql"].decode()
    assert "CREATE TABLE" in sql and "<redacted by tpdump: process state value>" in sql
    assert facts.get("debug_log_level")


def test_hanging_commands_lose_nothing_else(items: Any) -> None:
    """On a node whose commands hang, what SFTP and forwarding give is still collected,
    and the node is partial with reason `collection timed out`."""
    _, dump, insts = items
    base, meta = node_files(dump, insts, "stuck-1")
    assert meta["status"] == "partial" and meta["code"] == "TPD202"
    for name in ("teleport.yaml", "data_dir.txt", "proc/sqlite.sql", "diag/metrics.txt"):
        assert f"{base}/{name}" in dump.files, name


def test_no_secret_anywhere(items: Any) -> None:
    """No canary of configs, logs, command lines or the process state is in the archive."""
    state, dump, _ = items
    count = assert_no_canary(state, dump.files)
    print(f"{count} canaries checked against {len(dump.files)} files")
