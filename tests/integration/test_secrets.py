"""SPEC §8, proven by canaries: the simulator plants distinct canary secrets wherever real
secrets live (configs, tctl objects, logs, command lines, the process environment, the
process-state database, Kubernetes Secrets and pod logs). Every profile and format is
dumped, every file unpacked, and none may hold a canary; with --obfuscate, no original
host name, address, user or cluster name either."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import Dump, instances, simulated, tpdump_cmd
from tpdump.archive import read_archive
from tpdump.config import PROFILES as PROFILE_TABLE
from tpdump.obfuscate import GENERIC

SCENARIO: dict[str, Any] = {
    "cluster_name": "canary.example.com", "seed": 21,
    "groups": [
        {"name": "auth", "count": 1, "services": ["auth", "node"], "init": "systemd"},
        {"name": "proxy", "count": 1, "services": ["proxy", "node"], "init": "systemd"},
        {"name": "web", "count": 3, "services": ["node"], "init": "systemd",
         "log_lines": 400},
        {"name": "batch", "count": 2, "services": ["node"], "init": "plain",
         "log_format": "json", "log_lines": 400},
    ],
    "secrets": {"plant": True},
    "kube": {"enabled": True, "namespaces": ["teleport-cluster", "teleport-agent"],
             "pods": 2},
}
PROFILES = ("standard", "speed", "complete", "small")
FORMATS = ("tar.gz", "zip")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with simulated(tmp_path_factory.mktemp("canary"), SCENARIO) as st:
        yield st


def dump(state: Path, out: Path, *extra: str) -> Dump:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out}/", "-q",
                   "--connect-timeout", "10", "--node-timeout", "40", *extra),
        capture_output=True, text=True, timeout=180, env={**os.environ, "CI": "true"})
    found = sorted(p for p in out.iterdir() if not p.name.endswith(".json"))
    assert found, done.stderr
    files = read_archive(found[0])
    return Dump(done.returncode, done.stdout, done.stderr, 0.0, found[0], files)


def canaries(state: Path) -> list[str]:
    return [c for c in (state / "canaries.txt").read_text().splitlines() if c.strip()]


def kinds(planted: list[str]) -> set[str]:
    out = set()
    for c in planted:
        m = re.match(r"CANARY-([a-z_]+)-\d+-", c) or re.match(r"CANARY([a-zA-Z_]+?)\d+x", c)
        if m:
            out.add(m.group(1))
    return out


def test_at_least_30_kinds_of_canary_in_every_place(state: Path) -> None:
    planted = canaries(state)
    found = kinds(planted)
    print(f"canaries planted: {len(planted)} values of {len(found)} kinds")
    assert len(found) >= 30, sorted(found)
    places = {"config": "join_token", "tctl objects": "github_client_secret",
              "logs": "log_token", "command lines": "cmdline_token",
              "sqlite": "prockey", "kubernetes secrets": "kube_join_token",
              "environment": "env_token", "pod logs": "kube_bearer"}
    for place, kind in places.items():
        assert kind in found, place


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("profile", PROFILES)
def test_no_canary_in_any_file(state: Path, tmp_path: Path, profile: str, fmt: str) -> None:
    d = dump(state, tmp_path, "--profile", profile, "--format", fmt)
    # `small` caps outputs (TPD206, exit 1); nothing else may go wrong.
    assert d.returncode in (0, 1), (d.stdout, d.stderr)
    assert {g["code"] for g in d.json("report.json")["problems"]} <= {"TPD206"}
    assert d.archive is not None and d.archive.name.endswith(fmt)
    planted = canaries(state)
    leaks = [(c, p) for p, data in d.files.items() for c in planted if c.encode() in data]
    print(f"{profile}/{fmt}: {len(planted)} canaries searched in {len(d.files)} files, "
          f"{sum(map(len, d.files.values()))} bytes: {len(leaks)} found")
    assert not leaks
    # The places were really collected (a dump without them would prove nothing).
    paths = set(d.files)
    assert any(p.endswith("/environ") for p in paths)
    assert any(p.endswith("/cmdline") for p in paths)
    assert any(p.startswith("kube/kubectl_logs_") for p in paths)
    assert "objects/tctl_get_github.yaml" in paths
    if "process state" not in PROFILE_TABLE[profile]["skip_items"]:
        assert any(p.endswith("proc/sqlite.sql") for p in paths)
    report = d.json("report.json")
    assert report["redactions"]["environment secret"] >= 1
    assert report["redactions"]["Kubernetes Secret value"] >= 1


def identifiers(state: Path, plain: Dump) -> dict[str, set[str]]:
    """What --obfuscate must hide: the hosts and cluster the simulator made, the users of
    the cluster, and every non-loopback IPv4 address the plain dump holds."""
    hosts = {i["hostname"] for i in instances(state)}
    # Users of the cluster; names that identify nothing (root, admin, tpdump…) stay.
    docs = yaml.safe_load_all(plain.files["objects/tctl_get_user.yaml"])
    users = {d["metadata"]["name"] for d in docs if d} - GENERIC
    ips = set()
    for data in plain.files.values():
        for m in re.finditer(rb"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])", data):
            try:
                addr = ipaddress.IPv4Address(m.group(1).decode())
            except ValueError:
                continue
            if not (addr.is_loopback or addr.is_unspecified or str(addr).startswith("255.")):
                ips.add(str(addr))
    return {"host": hosts, "user": users, "ip": ips, "cluster": {"canary.example.com"}}


def test_obfuscate_hides_identifiers_consistently(state: Path, tmp_path: Path) -> None:
    plain = dump(state, tmp_path / "plain")
    ids = identifiers(state, plain)
    assert ids["ip"] and ids["user"] and len(ids["host"]) == 7
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    mapping = tmp_path / "map.json"
    obf = dump(state, tmp_path / "obf", "--obfuscate", "--obfuscation-key", str(key),
               "--obfuscation-map", str(mapping))
    assert obf.returncode == 0, obf.stderr
    assert obf.archive is not None and "canary.example.com" not in obf.archive.name
    blob = b"\0".join([*obf.files.values(), *(p.encode() for p in obf.files)])
    found = {cat: sorted(v for v in values if re.search(
        rb"(?<![\w-])" + re.escape(v.encode()) + rb"(?![\w-])", blob))
        for cat, values in ids.items()}
    print(f"identifiers searched: { {k: len(v) for k, v in ids.items()} } "
          f"in {len(obf.files)} files")
    assert not any(found.values()), found
    planted = canaries(state)
    assert not [c for c in planted if c.encode() in blob]
    # Tokens are consistent: a node's directory name and its role file agree, and the
    # mapping (kept outside the archive, mode 0600) undoes them.
    table = json.loads(mapping.read_text())
    assert (mapping.stat().st_mode & 0o777) == 0o600
    assert set(ids["host"]) <= set(table.values())
    assert not any(str(mapping) in p for p in obf.files)
    report = obf.json("report.json")
    assert report["obfuscation"]["distinct"]["host"] >= 7
    # readme.html and report.txt say what was stripped and obfuscated, by category.
    readme = obf.files["readme.html"].decode()
    text = obf.files["report.txt"].decode()
    assert f"host: {report['obfuscation']['distinct']['host']} distinct" in readme
    assert f"  host: {report['obfuscation']['distinct']['host']} (" in text
    for category, count in report["redactions"].items():
        assert f"{category}: {count}" in text
        assert f"<li>{category}: {count}</li>" in readme
    assert report["obfuscation"]["distinct"]["user"] >= len(ids["user"])
    # The same key gives the same tokens in another dump; another key does not.
    again = dump(state, tmp_path / "again", "--obfuscate", "--obfuscation-key", str(key))
    other_key = tmp_path / "key2"
    other_key.write_bytes(os.urandom(32))
    other = dump(state, tmp_path / "other", "--obfuscate", "--obfuscation-key",
                 str(other_key))
    token = next(t for t, v in table.items() if v == "web-1")
    assert any(token.encode() in data for data in again.files.values())
    assert not any(token.encode() in data for data in other.files.values())
    assert obf.archive.name.split("-")[2] == again.archive.name.split("-")[2]  # type: ignore[union-attr]


def test_obfuscate_uuids_hides_node_uuids_in_contents_and_paths(state: Path,
                                                                 tmp_path: Path) -> None:
    uuids = {i["uuid"] for i in instances(state)}
    plain = dump(state, tmp_path / "plain", "--no-kube")
    assert any(u in p for p in plain.files for u in uuids)
    obf = dump(state, tmp_path / "obf", "--no-kube", "--obfuscate", "--obfuscate-uuids")
    assert obf.returncode == 0, obf.stderr
    blob = b"\0".join([*obf.files.values(), *(p.encode() for p in obf.files)])
    assert not [u for u in uuids if u.encode() in blob]
    # still one directory per node, with its node.json
    assert sum(1 for p in obf.files if p.endswith("/node.json")) == len(uuids)
