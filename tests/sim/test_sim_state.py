"""The state directory contract (docs/contracts.md) and the simulator's process life cycle."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from simharness import Sim, start_sim, stop_sim

STATE_FILES = ["tpdump.yaml", "instances.json", "canaries.txt", "tctl_calls.jsonl",
               "bin/tctl", "keys/id_ed25519", "keys/id_ed25519-cert.pub", "known_hosts",
               "sim.pid"]


def test_state_files_exist_and_ready_is_last(main_sim: Sim) -> None:
    """Every contract file exists and `ready` is not older than any of them."""
    ready = (main_sim.state / "ready").stat().st_mtime
    for name in STATE_FILES:
        path = main_sim.state / name
        assert path.exists(), name
        if name != "tctl_calls.jsonl":
            assert path.stat().st_mtime <= ready, name
    assert os.access(main_sim.state / "bin" / "tctl", os.X_OK)
    key_mode = stat.S_IMODE((main_sim.state / "keys" / "id_ed25519").stat().st_mode)
    assert key_mode == 0o600
    assert int((main_sim.state / "sim.pid").read_text()) == main_sim.proc.pid


def test_tpdump_yaml_keys(main_sim: Sim) -> None:
    """tpdump.yaml has the keys the core reads, pointing at existing files."""
    cfg = main_sim.config
    assert set(cfg) == {"cluster_name", "auth_server", "identity", "tctl", "proxy", "ssh_user",
                        "ssh_key", "known_hosts"}
    assert cfg["cluster_name"] == "acme.example.com" and cfg["ssh_user"] == "tpdump"
    for key in ("identity", "tctl", "ssh_key", "known_hosts"):
        assert Path(cfg[key]).exists(), key
    kh = Path(cfg["known_hosts"]).read_text()
    assert kh.startswith("@cert-authority * ssh-ed25519 ")
    assert cfg["proxy"].startswith("127.") and not cfg["proxy"].startswith("127.0.0.")


def test_instances_json_matches_heartbeats(main_sim: Sim) -> None:
    """instances.json lists every instance with the fields of the contract."""
    need = {"uuid", "hostname", "group", "services", "fault", "addr", "version", "tunnel",
            "init"}
    assert all(need <= set(i) for i in main_sim.instances)
    assert len(main_sim.instances) == 18
    nodes = json.loads(main_sim.tctl("get", "node", "--format=json").stdout)
    assert {d["metadata"]["name"] for d in nodes} == {
        i["uuid"] for i in main_sim.instances if "node" in i["services"]}
    assert main_sim.inst("refused-1")["fault"] == "refused"


def test_canaries_are_distinct_and_planted_everywhere(main_sim: Sim) -> None:
    """canaries.txt lists distinct canaries of every planted kind."""
    canaries = (main_sim.state / "canaries.txt").read_text().split()
    assert len(canaries) == len(set(canaries))
    kinds = {c.split("-")[1] for c in canaries if c.startswith("CANARY-")}
    assert {"join_token", "cmdline_token", "bearer", "cookie", "token", "oidc_client_secret",
            "github_client_secret", "saml_signing_key", "trusted_cluster_token"} <= kinds
    assert any(c.startswith("CANARYcakeyhost") for c in canaries)


def test_sigterm_stops_cleanly_and_two_sims_coexist(tmp_path: Path, main_sim: Sim) -> None:
    """A second simulator runs beside the first on its own network and exits 0 on SIGTERM."""
    sim = start_sim(tmp_path, "groups: [{name: n, count: 2}]\n")
    try:
        assert sim.config["proxy"].split(".")[1] != main_sim.config["proxy"].split(".")[1]
        assert sim.tctl("get", "node").returncode == 0
    finally:
        code = stop_sim(sim)
    assert code == 0
    assert not (sim.state / "ready").exists()
