"""`tpdump cluster` end to end against the simulated cluster, one fault at a time and all
together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from tests.integration.helpers import (
    find_archive,
    instances,
    read_archive,
    run_dump,
    simulated,
    tpdump_cmd,
)

REF = Path(__file__).resolve().parents[1] / "data" / "teleport"

# fault -> the code every node with it must fail with
FAULT_CODES = {
    "refused": "TPD200",
    "blackhole": "TPD201",
    "hang": "TPD202",
    "flood": "TPD206",
    "auth_denied": "TPD204",
    "drop_mid": "TPD205",
    "bad_hostkey": "TPD203",
}
FAST = ["--connect-timeout", "3", "--node-timeout", "30", "--item-timeout", "15",
        "--max-output", "256KiB"]


def scenario(groups: list[dict[str, Any]], **auth: Any) -> dict[str, Any]:
    return {
        "cluster_name": "acme.example.com",
        "teleport_version": "17.4.2",
        "seed": 7,
        "auth": {"fault": "none", **auth},
        "groups": groups,
        "secrets": {"plant": True},
    }


def control_plane() -> list[dict[str, Any]]:
    return [
        {"name": "auth", "count": 1, "services": ["auth"]},
        {"name": "proxy", "count": 1, "services": ["proxy"]},
    ]


def tctl_calls(state: Path) -> list[list[str]]:
    lines = (state / "tctl_calls.jsonl").read_text().splitlines()
    return [json.loads(line)["argv"] for line in lines if line.strip()]


def assert_no_canary(state: Path, files: dict[str, bytes]) -> int:
    canaries = [c for c in (state / "canaries.txt").read_text().splitlines() if c.strip()]
    assert canaries, "the simulator planted no canaries"
    for path, data in files.items():
        for canary in canaries:
            assert canary.encode() not in data, f"canary {canary} leaked into {path}"
    return len(canaries)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[dict[str, Any]]]:
    """One dump of 200 simulated nodes mixing every fault (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("mixed")
    groups = [*control_plane(),
              {"name": "web", "count": 114, "services": ["node"], "init": "systemd"},
              {"name": "db", "count": 10, "services": ["node", "db"], "init": "plain"},
              {"name": "slow", "count": 10, "services": ["node"], "fault": "slow",
               "delay_s": 0.05},
              {"name": "garbage", "count": 8, "services": ["node"], "fault": "garbage"}]
    groups += [{"name": fault.replace("_", ""), "count": 8, "services": ["node"],
                "fault": fault} for fault in FAULT_CODES]
    with simulated(tmp, scenario(groups)) as state:
        dump = run_dump(state, tmp / "out", *FAST, "--concurrency", "50", "--timeout", "60")
        yield state, dump, instances(state)


def test_mixed_faults_every_instance_and_reason(mixed: Any) -> None:
    """Every instance has its directory; every failed node's reason matches its fault;
    healthy nodes are complete; the run ends within --timeout and exits 1."""
    _state, dump, insts = mixed
    assert len(insts) == 200
    assert dump.returncode == 1, dump.stderr
    assert dump.seconds < 60
    report = dump.report
    assert report["verdict"] == "INCOMPLETE"
    by_uuid = {n["uuid"]: n for n in report["node_results"]}
    assert set(by_uuid) == {i["uuid"] for i in insts}
    for inst in insts:
        node = by_uuid[inst["uuid"]]
        base = node["dir"]
        assert f"{base}/node.json" in dump.files
        fault = inst["fault"]
        if "node" not in inst["services"]:
            assert node["status"] == "skipped" and node["code"] == "TPD207"
            assert f"{base}/role.{inst['services'][0]}" in dump.files
        elif fault in FAULT_CODES:
            assert node["code"] == FAULT_CODES[fault], (inst["hostname"], node)
            assert f"{base}/error.txt" in dump.files
            assert FAULT_CODES[fault].encode() in dump.files[f"{base}/error.txt"]
        elif fault in ("none", "slow"):
            assert node["status"] == "ok", (inst["hostname"], node)
            for name in ("teleport.yaml", "cmdline", "version.txt", "role.node"):
                assert f"{base}/{name}" in dump.files, (inst["hostname"], name)
            cmdline = dump.files[f"{base}/cmdline"].split(b"\0")
            assert cmdline[1] == b"start"
            assert dump.files[f"{base}/version.txt"].startswith(b"Teleport v17.4.2")
            meta = json.loads(dump.files[f"{base}/node.json"])
            assert meta["status"] == "ok" and meta["facts"]["configured_services"]


def test_mixed_faults_bad_hostkey_refused(mixed: Any) -> None:
    """Nodes whose host key is not signed by the cluster host CA give no data at all."""
    _, dump, insts = mixed
    bad = [i for i in insts if i["fault"] == "bad_hostkey"]
    assert bad
    for inst in bad:
        node = next(n for n in dump.report["node_results"] if n["uuid"] == inst["uuid"])
        names = {p.rsplit("/", 1)[1] for p in dump.files if p.startswith(node["dir"] + "/")}
        assert "teleport.yaml" not in names and "cmdline" not in names


def test_mixed_faults_report_groups_errors(mixed: Any) -> None:
    """Errors are aggregated by code with counts and named targets in report.txt."""
    _, dump, _ = mixed
    groups = {g["code"]: g for g in dump.report["problems"]}
    for code in FAULT_CODES.values():
        assert groups[code]["count"] == 8
    text = dump.files["report.txt"].decode()
    assert "TPD200" in text and "connection refused" in text
    assert "INCOMPLETE" in dump.stdout


def test_mixed_faults_no_secret_and_manifest(mixed: Any) -> None:
    """No planted canary is anywhere in the archive; the manifest lists every file."""
    state, dump, _ = mixed
    assert_no_canary(state, dump.files)
    manifest = dump.json("manifest.json")
    listed = {f["path"] for f in manifest["files"]}
    assert set(dump.files) - {"manifest.json"} == listed


def test_mixed_faults_gentle_on_auth(mixed: Any) -> None:
    """One tctl call per kind (not per node), never `get all`, never --with-secrets."""
    state, _dump, _ = mixed
    calls = tctl_calls(state)
    assert all("--with-secrets" not in argv for argv in calls)
    assert all(not ("get" in argv and "all" in argv) for argv in calls)
    gets = [argv[argv.index("get") + 1] for argv in calls if "get" in argv]
    assert len(gets) == len(set(gets))
    assert len(calls) <= len(gets) + 3  # + inventory, status, version


def test_auth_down_is_fatal_fast(tmp_path: Path) -> None:
    """With the auth server down, tpdump exits 3 within 5 s and still writes an archive
    whose report says why."""
    with simulated(tmp_path, scenario(
            [{"name": "web", "count": 3, "services": ["node"]}], fault="down")) as state:
        dump = run_dump(state, tmp_path / "out")
    assert dump.returncode == 3, dump.stderr
    assert dump.seconds < 5
    assert dump.report["verdict"] == "FAILED"
    assert "TPD100" in dump.report["fatal"]
    assert "Cannot connect to the auth server" in dump.files["report.txt"].decode()


def test_auth_hang_is_fatal_within_preflight(tmp_path: Path) -> None:
    """A hanging auth server stops the run at the preflight deadline with exit 3."""
    with simulated(tmp_path, scenario(
            [{"name": "web", "count": 2, "services": ["node"]}], fault="hang")) as state:
        dump = run_dump(state, tmp_path / "out", "--preflight-timeout", "2")
    assert dump.returncode == 3
    assert dump.seconds < 8
    assert "cluster/tctl_status.error" in dump.files


def test_denied_unsupported_and_alerts(tmp_path: Path) -> None:
    """Denied kinds become .error files with the reason; the dump goes on; alerts on
    stderr with exit 0 are kept and are not failures."""
    with simulated(tmp_path, scenario(
            [{"name": "web", "count": 3, "services": ["node"]}],
            denied_kinds=["cert_authority", "user"],
            alerts=["Cluster alert: upgrade soon"])) as state:
        dump = run_dump(state, tmp_path / "out", *FAST)
    err = dump.files["objects/tctl_get_cert_authority.error"].decode()
    assert "access denied" in err and "TPD101" in err
    assert "objects/tctl_get_user.error" in dump.files
    assert "objects/tctl_get_role.yaml" in dump.files
    assert dump.report["objects"]["role"]["status"] == "ok"
    assert dump.returncode == 1  # RBAC gaps make it incomplete
    assert all(n["status"] == "ok" for n in dump.report["node_results"])
    assert b"upgrade soon" in dump.files["cluster/tctl_stderr.txt"]


def test_inventory_unsupported_falls_back_to_heartbeats(tmp_path: Path) -> None:
    """An old cluster without `tctl inventory` is enumerated from heartbeats."""
    with simulated(tmp_path, scenario(
            [{"name": "web", "count": 4, "services": ["node"]}], inventory=False)) as state:
        dump = run_dump(state, tmp_path / "out", *FAST)
        insts = instances(state)
    assert {n["uuid"] for n in dump.report["node_results"]} == {i["uuid"] for i in insts}
    assert "TPD105" in {g["code"] for g in dump.report["problems"]}
    assert "cluster/inventory.error" in dump.files
    assert dump.returncode == 0


def test_real_config_comes_back_verbatim(tmp_path: Path) -> None:
    """A reference teleport.yaml placed on nodes comes back line for line but for its
    secrets, and its settings are read (data_dir, log output)."""
    ref = REF / "config" / "gravitational-teleport__docker__one-node.yaml"
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "teleport.yaml").write_text(ref.read_text())
    sc = scenario([{"name": "web", "count": 2, "services": ["node"], "init": "plain",
                    "files": {"/etc/teleport.yaml": "real/teleport.yaml"}}])
    with simulated(tmp_path, sc) as state:
        dump = run_dump(state, tmp_path / "out", *FAST)
    src = ref.read_text().splitlines()
    for node in dump.report["node_results"]:
        got = dump.files[f"{node['dir']}/teleport.yaml"].decode().splitlines()
        diff = [(a, b) for a, b in zip(src, got, strict=True) if a != b]
        assert diff == [("  auth_token: foo",
                         '  auth_token: "<redacted by tpdump: join token>"')]
        facts = json.loads(dump.files[f"{node['dir']}/node.json"])["facts"]
        assert facts["data_dir"] == "/var/lib/teleport"
        assert facts["log_output"] == "/var/lib/teleport/teleport.log"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_a_valid_archive_fast(tmp_path: Path, signum: int) -> None:
    """SIGINT or SIGTERM during a dump of a slow cluster: a valid archive within 2 s,
    exit 130, and the report says interrupted."""
    sc = scenario([{"name": "slow", "count": 40, "services": ["node"], "fault": "slow",
                    "delay_s": 1.0}])
    with simulated(tmp_path, sc) as state:
        out = tmp_path / "out"
        out.mkdir()
        proc = subprocess.Popen(
            tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out}/",
                       "-q", "--concurrency", "5"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not list(out.glob("*.partial")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # well into the node fan-out
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    assert proc.returncode == 130, proc.stderr.read() if proc.stderr else ""
    assert elapsed < 2.0, f"took {elapsed:.2f} s to finish after SIGINT"
    archive = find_archive(out)
    assert archive is not None and not list(out.glob("*.partial"))
    files = read_archive(archive)
    report = json.loads(files["report.json"])
    assert report["verdict"] == "INTERRUPTED" and report["interrupted"]
    assert len(report["node_results"]) == 40
    assert "TPD300" in {g["code"] for g in report["problems"]}
    assert os.path.getsize(archive) > 0


def test_sim_rejects_bad_scenario(tmp_path: Path) -> None:
    """A bad scenario file is refused with the field named and exit 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(scenario([{"name": "w", "count": 1, "fault": "bogus"}])))
    done = subprocess.run(tpdump_cmd("sim", "--scenario", str(path), "--state-dir",
                                     str(tmp_path / "s")), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "groups[0].fault" in done.stderr


def test_verbose_json_logs_and_progress(tmp_path: Path) -> None:
    """-v --log-format json puts one JSON event per step on stderr (each node's end among
    them) besides the progress lines; without -q the progress line is printed."""
    with simulated(tmp_path, scenario(
            [{"name": "web", "count": 3, "services": ["node"]}])) as state:
        out = tmp_path / "out"
        done = subprocess.run(
            tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out}/",
                       "-v", "--log-format", "json"),
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    ends = [e for e in events if e["event"] == "node done"]
    assert len(ends) == 3 and all(e["status"] == "ok" and "node" in e for e in ends)
    assert any(line.startswith("nodes 3/3") for line in done.stderr.splitlines())
    assert "archive:" in done.stdout and "tpdump complete" in done.stdout


def test_demo_prints_archive_and_summary(tmp_path: Path) -> None:
    """`tpdump demo` starts the built-in simulated cluster, dumps it, prints the archive
    path and the report summary, and exits 0 although the demo has faulty nodes."""
    done = subprocess.run(tpdump_cmd("demo", "-q", "-o", f"{tmp_path}/"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.split("archive: ", 1)[1].split()[0])
    assert path.exists() and path.parent == tmp_path
    assert "nodes: 50 total" in done.stdout and "TPD200" in done.stdout
    files = read_archive(path)
    assert json.loads(files["report.json"])["verdict"] == "INCOMPLETE"


@pytest.mark.parametrize("version", ["16.4.0", "17.4.2"])
def test_status_of_either_layout_is_parsed(tmp_path: Path, version: str) -> None:
    """cluster/status.json holds the parsed `tctl status` of v16 and v17 clusters, and the
    archive is named after the cluster it reports."""
    sc = scenario([{"name": "web", "count": 1, "services": ["node"], "version": version}])
    sc["teleport_version"] = version
    with simulated(tmp_path, sc) as state:
        dump = run_dump(state, tmp_path / "out", *FAST)
    status = dump.json("cluster/status.json")
    assert status["layout"] == ("v16" if version.startswith("16") else "v17")
    assert status["cluster"] == "acme.example.com" and status["version"] == version
    assert status["ca_pins"] and any(a["type"] == "host" for a in status["authorities"])
    assert dump.archive is not None and "tpdump-acme.example.com-" in dump.archive.name


def test_ssh_config_instead_of_key_flags(tmp_path: Path) -> None:
    """--ssh-config (the shape `tsh config` writes: IdentityFile, CertificateFile,
    UserKnownHostsFile) replaces --ssh-key and --known-hosts."""
    with simulated(tmp_path, scenario(
            [{"name": "web", "count": 2, "services": ["node"]}])) as state:
        config = yaml.safe_load((state / "tpdump.yaml").read_text())
        key = config.pop("ssh_key")
        known = config.pop("known_hosts")
        (state / "ssh_config").write_text(
            "Host *\n"
            f'    UserKnownHostsFile "{known}"\n'
            f'    IdentityFile "{key}"\n'
            f'    CertificateFile "{key}-cert.pub"\n')
        config["ssh_config"] = str(state / "ssh_config")
        (state / "tpdump.yaml").write_text(yaml.safe_dump(config))
        dump = run_dump(state, tmp_path / "out", *FAST)
        # the same with a known_hosts that trusts another CA: nothing is trusted
        rogue = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        (state / "rogue_known_hosts").write_text(f"@cert-authority * {rogue}")
        (state / "ssh_config").write_text(
            (state / "ssh_config").read_text().replace(known, str(state / "rogue_known_hosts")))
        refused = run_dump(state, tmp_path / "out2", *FAST)
    assert dump.returncode == 0, dump.stdout + dump.stderr
    assert all(n["status"] == "ok" for n in dump.report["node_results"])
    assert refused.returncode == 1
    assert {n["code"] for n in refused.report["node_results"]} == {"TPD203"}
