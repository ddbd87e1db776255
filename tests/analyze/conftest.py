"""Shared dumps for the analyzer, diff, inspect and readme tests: each simulated cluster is
started once per session (three in all)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import Dump, run_dump, simulated
from tpdump.archive import read_archive

FAST = ["--connect-timeout", "3", "--node-timeout", "20", "--item-timeout", "8",
        "--max-output", "256KiB"]

RBAC_OBJECTS = [
    {"kind": "role", "version": "v7", "metadata": {"name": "wildcard"},
     "spec": {"allow": {"rules": [{"resources": ["*"], "verbs": ["*"]}]}, "deny": {}}},
    {"kind": "role", "version": "v7", "metadata": {"name": "unused-role"},
     "spec": {"allow": {"logins": ["nobody"]}, "deny": {}}},
    {"kind": "user", "version": "v2", "metadata": {"name": "dave"},
     "spec": {"roles": ["wildcard"]}},
    {"kind": "user", "version": "v2", "metadata": {"name": "erin"}, "spec": {"roles": []}},
    # A heartbeat that expired an hour before the dump (its agent is gone).
    {"kind": "node", "sub_kind": "teleport", "version": "v2",
     "metadata": {"name": "0badc0de-0000-4000-8000-000000000001",
                  "expires": "2020-01-01T00:00:00Z"},
     "spec": {"addr": "127.0.0.1:9", "hostname": "ghost-1", "version": "17.4.2"}},
]
EXTRA_ROLE = [{"kind": "role", "version": "v7", "metadata": {"name": "contractor"},
               "spec": {"allow": {"logins": ["contractor"]}, "deny": {}}}]


def base(groups: list[dict[str, Any]], **auth: Any) -> dict[str, Any]:
    return {"cluster_name": "acme.example.com", "teleport_version": "17.4.2", "seed": 11,
            "auth": {"fault": "none", **auth}, "groups": groups}


def healthy_groups(web: int = 1) -> list[dict[str, Any]]:
    return [
        {"name": "auth", "count": 1, "services": ["auth", "node"], "diag": True,
         "log_lines": 300},
        {"name": "web", "count": web, "services": ["node"], "diag": True, "log_lines": 300},
        {"name": "edge", "count": 1, "services": ["node"], "tunnel": True, "diag": True,
         "log_lines": 300},
        {"name": "db", "count": 1, "services": ["node", "db"], "init": "plain",
         "log_format": "json", "log_lines": 300},
    ]


def _write_objects(tmp: Path, name: str, docs: list[dict[str, Any]]) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def _reread(dump: Dump, out_dir: Path, pattern: str) -> Dump:
    """run_dump reads single tar.gz archives; this reads split and zip ones."""
    (path,) = sorted(out_dir.glob(pattern))
    return dataclasses.replace(dump, archive=path, files=read_archive(path))


def _dump(tmp: Path, scenario: dict[str, Any]) -> Dump:
    with simulated(tmp / "sim", scenario) as state:
        return run_dump(state, tmp / "out", *FAST)


@pytest.fixture(scope="session")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dump]:
    """A small cluster with nothing wrong: every analyzer stays silent on it."""
    yield _dump(tmp_path_factory.mktemp("healthy"), base(healthy_groups()))


@pytest.fixture(scope="session")
def sick(sick_dumps: tuple[Dump, ...]) -> Dump:
    return sick_dumps[0]


@pytest.fixture(scope="session")
def sick_obfuscated(sick_dumps: tuple[Dump, ...]) -> Dump:
    return sick_dumps[1]


@pytest.fixture(scope="session")
def sick_split(sick_dumps: tuple[Dump, ...]) -> Dump:
    return sick_dumps[2]


@pytest.fixture(scope="session")
def sick_zip(sick_dumps: tuple[Dump, ...]) -> Dump:
    return sick_dumps[3]


@pytest.fixture(scope="session")
def sick_dumps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dump, ...]]:
    """One group per condition, so each finding names exactly its group's instance; dumped
    from the same simulator plainly, with --obfuscate --obfuscate-uuids, split in parts,
    and as zip."""
    tmp = tmp_path_factory.mktemp("sick")
    objects = _write_objects(tmp, "rbac.yaml", RBAC_OBJECTS)
    groups = [
        {"name": "auth", "count": 1, "services": ["auth", "node"], "log_lines": 300},
        {"name": "old", "count": 1, "services": ["node"], "version": "15.4.0",
         "log_lines": 300},
        {"name": "skewed", "count": 1, "services": ["node"], "clock_offset_s": 120,
         "log_lines": 300},
        {"name": "sick", "count": 1, "services": ["node"], "diag": True, "readyz": "degraded",
         "log_error_rate": 0.3, "log_lines": 300},
        {"name": "edge", "count": 1, "services": ["node"], "tunnel": True,
         "log_error_rate": 1.0, "log_lines": 300},
        {"name": "down", "count": 1, "services": ["node"], "fault": "refused"},
    ]
    scenario = base(groups, ca_expiry_days=3, ca_rotation="update_clients",
                    objects=[objects])
    key = tmp / "key"
    key.write_text("analyze-test-key-0123456789abcdef\n")
    with simulated(tmp / "sim", scenario) as state:
        plain = run_dump(state, tmp / "out", *FAST)
        obf = run_dump(state, tmp / "out-obf", *FAST, "--obfuscate", "--obfuscate-uuids",
                       "--obfuscation-key", str(key))
        split = _reread(run_dump(state, tmp / "out-split", *FAST, "--split-size", "200KB"),
                        tmp / "out-split", "*.001")
        zipped = _reread(run_dump(state, tmp / "out-zip", *FAST, "--format", "zip"),
                         tmp / "out-zip", "*.zip")
    yield plain, obf, split, zipped


@pytest.fixture(scope="session")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dump]:
    """The healthy cluster with known changes: web +2, edge on another version, an extra
    role, db faulty."""
    tmp = tmp_path_factory.mktemp("changed")
    objects = _write_objects(tmp, "extra.yaml", EXTRA_ROLE)
    groups = healthy_groups(web=3)
    groups[2]["version"] = "17.3.0"
    groups[3]["fault"] = "refused"
    yield _dump(tmp, base(groups, objects=[objects]))
