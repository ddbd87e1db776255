"""The tctl stand-in: real output formats, real error texts and exit codes, auth faults."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from simharness import Sim, start_sim, stop_sim

ERROR = "\x1b[31mERROR: \x1b[0m"
HEARTBEATS = ["node", "proxy", "auth_server", "kube_server", "app_server", "db_server",
              "windows_desktop_service"]


def test_get_node_yaml_is_multi_document(main_sim: Sim) -> None:
    """`tctl get node` prints one YAML document per node, separated by `---`."""
    r = main_sim.tctl("--auth-server", main_sim.config["auth_server"], "-i",
                      main_sim.config["identity"], "get", "node")
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    ssh_nodes = [i for i in main_sim.instances if "node" in i["services"]]
    assert len(docs) == len(ssh_nodes)
    assert "\n---\n" in r.stdout
    by_name = {d["metadata"]["name"]: d for d in docs}
    web = main_sim.inst("web-1")
    doc = by_name[web["uuid"]]
    assert doc["kind"] == "node" and doc["version"] == "v2"
    assert doc["spec"]["hostname"] == "web-1" and doc["spec"]["addr"] == web["addr"]
    assert doc["spec"]["version"] == "17.4.2" and "expires" in doc["metadata"]
    edge = by_name[main_sim.inst("edge-1")["uuid"]]
    assert edge["spec"]["addr"] == "" and edge["spec"]["use_tunnel"] is True


@pytest.mark.parametrize("kind", HEARTBEATS)
def test_get_heartbeats_as_json(main_sim: Sim, kind: str) -> None:
    """Every heartbeat kind is a JSON array whose documents have that kind."""
    r = main_sim.tctl("get", kind, "--format=json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert isinstance(docs, list)
    assert all(d["kind"] == kind for d in docs)
    if kind in ("node", "auth_server", "kube_server", "app_server", "db_server"):
        assert docs


def test_json_format_with_separate_flag_value(main_sim: Sim) -> None:
    """`--format json` (two words) works like `--format=json`."""
    assert json.loads(main_sim.tctl("get", "role", "--format", "json").stdout)


@pytest.mark.parametrize("kind", ["cluster_auth_preference", "connectors", "github", "oidc",
                                  "saml", "namespace", "remote_cluster", "role", "semaphore",
                                  "trusted_cluster", "tunnel", "user", "cert_authority",
                                  "cluster_networking_config", "token", "ui_config"])
def test_configuration_kinds_parse(main_sim: Sim, kind: str) -> None:
    """Each configuration kind prints parseable YAML documents of its kind."""
    r = main_sim.tctl("get", kind)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert docs
    if kind == "connectors":
        assert {d["kind"] for d in docs} == {"github", "oidc", "saml"}
    else:
        assert all(d["kind"] == kind for d in docs)


def test_auth_objects_are_served_by_kind(main_sim: Sim) -> None:
    """Resources of `auth.objects` files come back with their kind."""
    roles = {d["metadata"]["name"] for d in yaml.safe_load_all(main_sim.tctl("get", "role").stdout)}
    assert "extra-role" in roles
    gh = {d["metadata"]["name"] for d in yaml.safe_load_all(main_sim.tctl("get", "github").stdout)}
    assert gh == {"github", "extra-github"}


def test_planted_secrets_appear_in_objects(main_sim: Sim) -> None:
    """Planted canaries are in tokens, connectors, users and listed in canaries.txt."""
    canaries = (main_sim.state / "canaries.txt").read_text().split()
    out = "".join(main_sim.tctl("get", k).stdout for k in ("token", "oidc", "saml", "user",
                                                         "trusted_cluster"))
    found = [c for c in canaries if c in out]
    assert any(c.startswith("CANARY-token-") for c in found)
    assert any(c.startswith("CANARY-oidc_client_secret") for c in found)
    assert any(c.startswith("CANARY-saml_signing_key") for c in found)
    assert any(c.startswith("CANARY-trusted_cluster_token") for c in found)
    # password hashes are []byte: base64 in the output, the canary's base64 form is recorded
    assert sum(1 for c in canaries if c in out and not c.startswith("CANARY")) >= 2


def test_get_all_and_with_secrets_return_secrets(old_sim: Sim, main_sim: Sim) -> None:
    """`get all` and `--with-secrets` behave as real tctl: they return secrets."""
    r = old_sim.tctl("get", "all")
    assert r.returncode == 0
    docs = list(yaml.safe_load_all(r.stdout))
    cas = [d for d in docs if d["kind"] == "cert_authority"]
    assert cas and "private_key" in cas[0]["spec"]["active_keys"]["ssh"][0]
    assert "local_auth" not in old_sim.tctl("get", "user").stdout
    assert "local_auth" in old_sim.tctl("get", "user", "--with-secrets").stdout
    assert main_sim.tctl("get", "all").returncode == 1  # session_recording_config is denied


def test_call_log_records_every_invocation(main_sim: Sim) -> None:
    """Each stand-in call appends its argv (global flags included) to tctl_calls.jsonl."""
    marker = "--format=json"
    main_sim.tctl("-d", "get", "lock", marker, "--insecure")
    last = main_sim.calls()[-1]
    assert last["argv"] == ["-d", "get", "lock", marker, "--insecure"]
    assert abs(last["t"] - time.time()) < 60


def test_denied_kind_is_access_denied(main_sim: Sim) -> None:
    """A kind in `denied_kinds` fails like RBAC does: red ERROR, the real text, exit 1."""
    r = main_sim.tctl("get", "locks")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ERROR + 'access denied to perform action "list" on "lock"\n\n'
    r = main_sim.tctl("get", "session_recording_config", "--format=json")
    assert r.returncode == 1
    assert 'access denied to perform action "read" on "session_recording_config"' in r.stderr


def test_status_when_cert_authorities_are_denied(tmp_path: Path) -> None:
    """Denied cert_authority: v16 shows the error per CA; v17 lists no authority and no pin."""
    from tpdump.sim.cluster import SimCluster
    from tpdump.sim.objects import Objects
    from tpdump.sim.scenario import parse_scenario

    for version in ("16.4.9", "17.4.2"):
        scen = parse_scenario({"teleport_version": version,
                               "auth": {"denied_kinds": ["cert_authority"]},
                               "groups": [{"name": "n"}]}, base_dir=tmp_path)
        out = Objects(SimCluster(scen, net=251)).status(time.time())
        if version.startswith("16"):
            assert re.search(r'^host CA +access denied to perform action "list" on '
                             r'"cert_authority" *$', out, re.MULTILINE)
            assert out.splitlines()[-1].startswith("CA pin")
        else:
            assert "CA pins:" not in out and "host " not in out
            assert out.splitlines()[-1].startswith("----")


def test_unknown_and_too_new_kinds_are_unsupported(main_sim: Sim, old_sim: Sim) -> None:
    """Unknown kinds, and kinds newer than the cluster's tctl, get the unsupported error."""
    r = main_sim.tctl("get", "bogus")
    assert r.returncode == 1
    assert r.stderr.startswith(ERROR + 'unsupported resource: "bogus" - resources should be')
    assert old_sim.tctl("get", "autoupdate_config").returncode == 1
    assert main_sim.tctl("get", "autoupdate_config").returncode == 0


def test_alerts_go_to_stderr_with_exit_0(main_sim: Sim) -> None:
    """Cluster alerts are printed on stderr (red) while the command succeeds."""
    r = main_sim.tctl("get", "node")
    assert r.returncode == 0
    assert "\x1b[31mYour license expires in 3 days\x1b[0m\n\n" in r.stderr
    assert "ERROR" not in r.stderr


def test_inventory_json(main_sim: Sim) -> None:
    """`tctl inventory ls --format=json` is an array of InstanceV1 with SystemRole services."""
    r = main_sim.tctl("inventory", "ls", "--format=json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert len(docs) == len(main_sim.instances)
    auth = next(d for d in docs if d["spec"]["hostname"] == "auth-1")
    assert auth["kind"] == "instance" and auth["version"] == "v1"
    assert auth["metadata"]["name"] == main_sim.inst("auth-1")["uuid"]
    assert auth["spec"]["services"] == ["Auth", "Node"]
    assert auth["spec"]["version"] == "v17.4.2" and "last_seen" in auth["spec"]
    kube = next(d for d in docs if d["spec"]["hostname"] == "kube-1")
    assert kube["spec"]["services"] == ["Kube"]
    text = main_sim.tctl("inventory", "ls").stdout
    assert text.splitlines()[0].split()[:3] == ["Server", "ID", "Hostname"]


def test_inventory_unsupported_on_old_cluster(old_sim: Sim) -> None:
    """With `inventory: false` the call fails like a cluster without the inventory API."""
    r = old_sim.tctl("inventory", "ls", "--format=json")
    assert r.returncode == 1
    assert r.stderr == ERROR + "unknown method GetInstances for service proto.AuthService\n\n"


def test_status_v17_per_authority_table(main_sim: Sim) -> None:
    """v17 status: Cluster/Version/CA pins, then a table per authority with rotation state."""
    r = main_sim.tctl("status")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["Cluster:", "acme.example.com"]
    assert lines[1].split() == ["Version:", "17.4.2"]
    assert re.fullmatch(r"CA pins: +sha256:[0-9a-f]{64} *", lines[2])
    assert lines[4].split() == ["authority", "rotation", "protocol", "status", "algorithm",
                                "storage"]
    host = next(line for line in lines if line.startswith("host "))
    assert "rotating clients (mode: manual, started:" in host
    assert "SSH" in host and "active" in host


def test_status_v16_two_columns(old_sim: Sim) -> None:
    """v16 status is a headless two-column table ending with the CA pin."""
    out = old_sim.tctl("status").stdout.splitlines()
    assert out[0].split() == ["Cluster", "old.example.com"]
    assert out[1].split() == ["Version", "16.4.9"]
    assert out[2].split() == ["host", "CA", "never", "updated"]
    assert out[-1].split()[0:2] == ["CA", "pin"]


def test_version_is_local_and_real_shaped(old_sim: Sim) -> None:
    """`tctl version` prints `Teleport vX git:vX-0-g<hex> goY` without asking auth."""
    start = time.monotonic()
    r = old_sim.tctl("version")
    assert re.fullmatch(r"Teleport v16\.4\.9 git:v16\.4\.9-0-g[0-9a-f]+ go1\.\d+\.\d+\n",
                        r.stdout)
    assert time.monotonic() - start < 0.3 + 1.0  # no 0.3 s auth delay on top of start-up


def test_slow_auth_delays_answers(old_sim: Sim) -> None:
    """`fault: slow` delays every answer by `delay_s`."""
    start = time.monotonic()
    assert old_sim.tctl("get", "node").returncode == 0
    assert time.monotonic() - start >= 0.3


def test_cert_authority_expiry_follows_the_scenario(old_sim: Sim) -> None:
    """The CA TLS certificates are real X.509 expiring `ca_expiry_days` from now (here -5)."""
    import base64
    import datetime as dt

    from cryptography import x509

    r = old_sim.tctl("get", "cert_authority", "--format=json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    host = next(d for d in docs if d["spec"]["type"] == "host")
    pem = base64.b64decode(host["spec"]["active_keys"]["tls"][0]["cert"])
    cert = x509.load_pem_x509_certificate(pem)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=-6) < left < dt.timedelta(days=-4)


def test_auth_down_fails_promptly(tmp_path: Path) -> None:
    """`fault: down`: nothing listens; tctl prints the cannot-connect error at once, exit 1."""
    sim = start_sim(tmp_path, "auth: {fault: down}\ngroups: [{name: n, count: 1}]\n")
    try:
        start = time.monotonic()
        addr = sim.config["auth_server"]
        r = sim.tctl("--auth-server", addr, "-i", sim.config["identity"], "get", "node")
        assert time.monotonic() - start < 3
        assert r.returncode == 1
        assert r.stderr == ("ERROR: Cannot connect to the auth server. Is the auth server "
                            f'running on "{addr}"?\n')
    finally:
        assert stop_sim(sim) == 0


def test_auth_hang_blocks_until_killed(tmp_path: Path) -> None:
    """`fault: hang`: tctl never gets an answer; only the caller's deadline ends it."""
    sim = start_sim(tmp_path, "auth: {fault: hang}\ngroups: [{name: n, count: 1}]\n")
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            sim.tctl("get", "node", timeout=1.5)
        assert sim.tctl("version").returncode == 0  # local command, no auth needed
    finally:
        stop_sim(sim)
