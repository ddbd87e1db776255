"""`tpdump snapshot`: runs into a directory with an index, and retention that deletes only
what the index lists."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import FAST
from tpdump.archive import read_archive, verify
from tpdump.errors import UsageError
from tpdump.snapshot import load_index, parse_age, retention, write_index


def snapshot(state: Path, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpdump", "snapshot", "--config", str(state / "tpdump.yaml"),
         "--dir", str(directory), "--profile", "speed", *FAST, *extra],
        capture_output=True, text=True, timeout=90, env={**os.environ, "CI": "true"})


def test_five_snapshots_keep_three(sim_state: Path, tmp_path: Path) -> None:
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    foreign = snaps / "tpdump-mine-not-yours.tar.gz"
    foreign.write_bytes(b"a file tpdump did not write")
    names = []
    for _ in range(5):
        done = snapshot(sim_state, snaps, "--keep", "3")
        assert done.returncode == 0, done.stderr
        entries = load_index(snaps)
        names.append(entries[0]["name"])
    assert len(set(names)) == 5, "every snapshot gets its own name"
    index = json.loads((snaps / "index.json").read_text())
    entries = index["entries"]
    assert [e["name"] for e in entries] == names[::-1][:3], "the 3 newest, newest first"
    on_disk = sorted(p.name for p in snaps.iterdir() if not p.name.startswith("."))
    assert on_disk == sorted([*names[2:], foreign.name, "index.json"])
    assert foreign.read_bytes() == b"a file tpdump did not write", "not in the index: kept"
    for e in entries:
        data = (snaps / e["name"]).read_bytes()
        assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
        assert e["files"] == [{"name": e["name"], "bytes": len(data), "sha256": e["sha256"]}]
        assert e["verdict"] == "complete" and e["exit_code"] == 0
        assert e["kind"] == "snapshot" and e["scope"] == "cluster"
        assert e["started"] <= e["finished"]
        assert e["nodes"] == {"total": 5, "done": 5, "failed": 0}
    assert verify(read_archive(snaps / entries[0]["name"])) == []
    assert not [p for p in snaps.iterdir() if p.name.startswith(".run-")], "scratch left"


def test_snapshot_rejects_output_and_bad_budgets(sim_state: Path, tmp_path: Path) -> None:
    for extra in (["-o", str(tmp_path)], ["--keep", "0"], ["--max-age", "soon"],
                  ["--max-total-size", "lots"]):
        done = snapshot(sim_state, tmp_path / "x", *extra)
        assert done.returncode == 2, (extra, done.stderr)


def _fake(directory: Path, names_ages_sizes: list[tuple[str, float, int]],
          kind: str = "snapshot") -> list[dict[str, Any]]:
    now = time.time()
    entries = []
    for name, age, size in names_ages_sizes:
        (directory / name).write_bytes(b"x" * size)
        entries.append({"name": name, "kind": kind, "started": now - age,
                        "finished": now - age + 1, "verdict": "complete", "exit_code": 0,
                        "bytes": size, "sha256": "0" * 64,
                        "files": [{"name": name, "bytes": size, "sha256": "0" * 64}]})
    return entries


def test_retention_by_age_and_size(tmp_path: Path) -> None:
    entries = _fake(tmp_path, [("a.tar.gz", 10, 100), ("b.tar.gz", 3600, 100),
                               ("c.tar.gz", 7200, 100), ("d.tar.gz", 90000, 100)])
    entries += _fake(tmp_path, [("web.tar.gz", 10**6, 100)], kind="dump")
    write_index(tmp_path, entries)
    assert retention(tmp_path, keep=None, max_age=parse_age("1d"), max_total_size=None) \
        == ["d.tar.gz"]
    assert retention(tmp_path, keep=None, max_age=None, max_total_size=250) == ["c.tar.gz"]
    assert [e["name"] for e in load_index(tmp_path)] == ["a.tar.gz", "b.tar.gz", "web.tar.gz"]
    # The newest snapshot stays even when it alone is over every budget.
    assert retention(tmp_path, keep=1, max_age=1, max_total_size=1) == ["b.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gz") == \
        ["a.tar.gz", "web.tar.gz"], "dumps of the web UI are not snapshots: kept"


def test_retention_never_leaves_the_directory(tmp_path: Path) -> None:
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    entries = _fake(snaps, [("new.tar.gz", 1, 10), ("old.tar.gz", 100, 10)])
    hostile = {"name": "../precious.txt", "kind": "snapshot", "started": 0, "bytes": 1,
               "files": [{"name": "../precious.txt"}]}
    absolute = {"name": str(outside), "kind": "snapshot", "started": 1, "bytes": 1,
                "files": [{"name": str(outside)}]}
    write_index(snaps, [*entries, hostile, absolute])
    assert retention(snaps, keep=1, max_age=None, max_total_size=None) == ["old.tar.gz"]
    assert outside.read_text() == "keep me"
    assert [e["name"] for e in load_index(snaps)] == ["new.tar.gz"]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30m", 1800), ("12h", 43200),
                                               ("7d", 604800), ("2w", 1209600)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


def test_parse_age_rejects() -> None:
    for bad in ("", "-1d", "0", "soon", "1y"):
        with pytest.raises(UsageError):
            parse_age(bad)
