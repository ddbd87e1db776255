"""`tpdump diff` on hand-made dumps: what counts as a change and what does not."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tpdump.cli import main
from tpdump.diff import diff, empty, render


def dump(roles: list[dict[str, object]], insts: list[tuple[str, str, str]],
         problems: tuple[str, ...] = (), nodes_yaml: str = "") -> dict[str, bytes]:
    disc = {"instances_list": [{"uuid": u, "hostname": h, "version": v} for u, h, v in insts]}
    report = {"problems": [{"code": c} for c in problems], "findings": []}
    files = {"cluster/discovery.json": json.dumps(disc).encode(),
             "objects/tctl_get_role.yaml": yaml.safe_dump_all(roles).encode(),
             "report.json": json.dumps(report).encode()}
    if nodes_yaml:
        files["objects/tctl_get_node.yaml"] = nodes_yaml.encode()
    return files


def role(name: str, login: str, revision: str, created: str) -> dict[str, object]:
    return {"kind": "role", "metadata": {"name": name, "revision": revision},
            "spec": {"allow": {"logins": [login]}, "created": created}}


def test_volatile_values_are_no_change_and_real_ones_are() -> None:
    old = dump([role("a", "x", "r1", "2026-01-01T00:00:00Z"),
                role("b", "x", "r1", "2026-01-01T00:00:00Z")],
               [("u1", "n1", "v17.4.2"), ("u2", "n2", "v17.4.2")], ("TPD200",),
               "kind: node\nmetadata: {name: u1}\n")
    new = dump([role("a", "x", "r2", "2026-02-02T00:00:00.5Z"),
                role("b", "y", "r1", "2026-01-01T00:00:00Z"),
                role("c", "z", "r1", "2026-01-01T00:00:00Z")],
               [("u1", "n1", "v17.5.0"), ("u3", "n3", "v17.4.2")], ("TPD200", "TPD203"),
               "kind: node\nmetadata: {name: u3}\n")
    d = diff(old, new)
    assert d["instances"] == {"added": ["n3 (u3)"], "removed": ["n2 (u2)"],
                              "version_changed": [{"instance": "n1 (u1)", "old": "v17.4.2",
                                                   "new": "v17.5.0"}]}
    # heartbeat kinds are instances, not objects
    assert d["objects"] == {"role": {"added": ["c"], "removed": [], "changed": ["b"]}}
    assert d["problems"] == {"new": ["TPD203"], "gone": []}
    assert not empty(d)
    text = render(d)
    assert "+ role/c" in text and "~ role/b" in text and "n1 (u1): v17.4.2 -> v17.5.0" in text
    assert empty(diff(old, old))


def test_missing_archive_is_a_usage_error(tmp_path: Path) -> None:
    """inspect, analyze and diff: exit 2 with one line, no traceback."""
    missing = str(tmp_path / "nope.tar.gz")
    for argv in (["inspect", missing], ["analyze", missing], ["diff", missing, missing]):
        assert main(argv) == 2
