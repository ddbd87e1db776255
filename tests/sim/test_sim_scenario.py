"""Scenario parsing: defaults, deterministic expansion, and errors that name the field."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
import yaml

from tpdump.sim.cli import main
from tpdump.sim.scenario import ScenarioError, instance_uuid, load_scenario, parse_scenario


def parse(text: str, base: Path = Path("/")) -> object:
    return parse_scenario(yaml.safe_load(text), base_dir=base)


def test_defaults_fill_every_field() -> None:
    """A minimal scenario gets the documented defaults for the cluster, auth and groups."""
    s = parse_scenario({"groups": [{"name": "web", "count": 2}]}, base_dir=Path("/"))
    assert s.teleport_version == "17.4.2" and s.seed == 0
    assert s.auth.fault == "none" and s.auth.inventory and s.auth.ca_rotation == "standby"
    g = s.groups[0]
    assert g.services == ("node",) and g.version == "17.4.2" and g.init == "systemd"
    assert g.fault == "none" and g.log_format == "text" and g.readyz == "ok"
    assert not s.secrets.plant and not s.kube.enabled


def test_instances_are_named_and_uuids_derive_from_seed() -> None:
    """Instances are `<group>-<n>` with UUIDs from sha256(seed:group:n); same seed, same ids."""
    doc = {"seed": 7, "groups": [{"name": "web", "count": 3}, {"name": "db", "count": 1}]}
    a = parse_scenario(doc, base_dir=Path("/")).instances()
    b = parse_scenario(doc, base_dir=Path("/")).instances()
    assert [i.hostname for i in a] == ["web-1", "web-2", "web-3", "db-1"]
    assert [i.uuid for i in a] == [i.uuid for i in b]
    expected = uuid.UUID(bytes=hashlib.sha256(b"7:web:2").digest()[:16], version=4)
    assert a[1].uuid == str(expected) == instance_uuid(7, "web", 2)
    other = parse_scenario({**doc, "seed": 8}, base_dir=Path("/")).instances()
    assert other[0].uuid != a[0].uuid


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("groups: [{name: a}, {name: b}, {name: c, fault: bogus}]",
         "groups[2].fault: 'bogus' is not one of none, refused"),
        ("groups: [{name: a, colour: red}]", "groups[0].colour: unknown field"),
        ("auth: {ca_rotation: sideways}", "auth.ca_rotation: 'sideways' is not one of"),
        ("auth: {fault: 3}", "auth.fault: 3 is not one of"),
        ("groups: [{name: a, count: two}]", "groups[0].count: 'two' is not an integer"),
        ("groups: [{name: a, services: [node, ftp]}]", "groups[0].services[1]: 'ftp'"),
        ("groups: [{name: a, count: 2, external_addrs: ['127.0.0.1:22']}]",
         "groups[0].external_addrs: 1 addresses for count 2"),
        ("groups: [{name: a}, {name: a}]", "groups[1].name: 'a' is used by another group"),
        ("groups: [{name: A_1}]", "groups[0].name: 'A_1'"),
        ("groups: [{name: a, log_error_rate: 2}]", "groups[0].log_error_rate"),
        ("secrets: {plant: maybe}", "secrets.plant: 'maybe' is not true or false"),
        ("kube: {pods: -1}", "kube.pods: -1 is negative"),
        ("teleport_version: banana", "teleport_version: 'banana' is not a version"),
        ("bogus_top: 1", "bogus_top: unknown field"),
        ("groups: {name: a}", "groups: expected a list"),
        ("groups: [{name: a, readyz: maybe}]", "groups[0].readyz: 'maybe' is not one of ok"),
    ],
)
def test_bad_values_name_the_field(text: str, path: str) -> None:
    """Every invalid value raises ScenarioError whose message starts with the field path."""
    with pytest.raises(ScenarioError) as info:
        parse(text)
    assert path in str(info.value)


def test_files_resolve_beside_the_scenario_and_missing_ones_are_named(tmp_path: Path) -> None:
    """`files:` paths are relative to the scenario file; a missing file is named in the error."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "teleport.yaml").write_text("teleport: {}\n")
    good = tmp_path / "good.yaml"
    good.write_text("groups: [{name: a, files: {/etc/teleport.yaml: real/teleport.yaml}}]\n")
    s = load_scenario(good)
    assert s.groups[0].files == (("/etc/teleport.yaml", tmp_path / "real" / "teleport.yaml"),)
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [{name: a, files: {/etc/x: real/missing.yaml}}]\n")
    with pytest.raises(ScenarioError, match=r"groups\[0\]\.files\['/etc/x'\]: file "
                                            r"'real/missing.yaml' not found"):
        load_scenario(bad)
    objs = tmp_path / "objs.yaml"
    objs.write_text("auth: {objects: [nope.yaml]}\n")
    with pytest.raises(ScenarioError, match=r"auth\.objects\[0\]: file 'nope.yaml' not found"):
        load_scenario(objs)


def test_teleport_yaml_in_files_sets_the_services(tmp_path: Path) -> None:
    """A real teleport.yaml given in `files:` decides the services (absent sections default)."""
    from tpdump.sim.cluster import SimCluster

    (tmp_path / "t.yaml").write_text(
        "teleport:\n  data_dir: /srv/tp\n  log: {output: /var/log/tp.log, format: {output: json}}\n"
        "auth_service: {enabled: no}\nproxy_service: {enabled: 'no'}\n"
        "db_service: {enabled: yes}\n")
    scen = tmp_path / "s.yaml"
    scen.write_text("groups: [{name: a, files: {/etc/teleport.yaml: t.yaml}}]\n")
    cluster = SimCluster(load_scenario(scen), net=250)
    node = cluster.nodes[0]
    assert node.services == ("node", "db")
    assert node.config.data_dir == "/srv/tp"
    assert node.config.log_output == "/var/log/tp.log" and node.config.log_format == "json"


def test_cli_rejects_a_bad_scenario_with_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`tpdump sim` prints the field path on stderr and exits 2 for an invalid scenario."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [{name: a}, {name: b}, {name: c, fault: bogus}]\n")
    code = main(["--scenario", str(bad), "--state-dir", str(tmp_path / "state")])
    assert code == 2
    assert "groups[2].fault: 'bogus' is not one of" in capsys.readouterr().err
