"""SPEC §10 end to end: --max-size is a hard cap decided while streaming (logs cut last,
newest lines kept, every node keeps its config, command line and node.json), and
--split-size parts join into a whole archive whose manifest verifies."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import instances, simulated, tpdump_cmd
from tpdump.archive import archive_parts, read_archive, verify

SCENARIO: dict[str, Any] = {
    "cluster_name": "big.example.com", "seed": 31,
    "groups": [{"name": "web", "count": 300, "services": ["node"], "init": "plain",
                "log_lines": 3000, "diag": False}],
}


def run(state: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out}/", "-q",
                   "--concurrency", "100", "--connect-timeout", "20", "--node-timeout", "90",
                   *extra),
        capture_output=True, text=True, timeout=400, env={**os.environ, "CI": "true"})
    names = sorted(p for p in out.iterdir())
    assert names, done.stderr
    return done, names[0]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("big")
    with simulated(tmp, SCENARIO) as state:
        yield state, tmp


def test_max_size_is_a_hard_cap_and_keeps_what_matters(big: Any) -> None:
    state, tmp = big
    cap = 5_000_000
    done, archive = run(state, tmp / "capped", "--max-size", "5MB")
    assert done.returncode in (0, 1), done.stderr
    size = archive.stat().st_size
    print(f"300 nodes, --max-size 5MB: archive {size} bytes")
    assert size <= cap
    files = read_archive(archive)
    assert verify(files) == []
    report = __import__("json").loads(files["report.json"])
    cuts = report["archive"]["cuts"]
    assert cuts and report["archive"]["cut_bytes"] > 0
    assert "size cap:" in done.stdout
    # Every node keeps its config, command line and node.json; its log, if cut, is the
    # newest part of what the node has.
    by_uuid = {n["uuid"]: n for n in report["node_results"]}
    assert len(by_uuid) == 300 and all(n["status"] == "ok" for n in by_uuid.values())
    cut_paths = {c["path"] for c in cuts}
    logs_kept = 0
    for inst in instances(state):
        base = by_uuid[inst["uuid"]]["dir"]
        for name in ("teleport.yaml", "cmdline", "node.json"):
            assert f"{base}/{name}" in files, (inst["hostname"], name)
        log = f"{base}/logs/teleport.log"
        assert log in files or log in cut_paths
        if log in files:
            logs_kept += 1
            lines = files[log].decode().splitlines()
            # the sim's log ends just before it started: the last line is the newest
            assert lines and re.match(r"^\d{4}-\d\d-\d\d", lines[0])
            assert lines == sorted(lines, key=lambda x: x[:24])
    assert logs_kept > 200  # spread across nodes, not spent on the first few
    assert any(c["path"].endswith("teleport.log") and c["kept_bytes"] > 0 for c in cuts)


def test_newest_lines_are_the_ones_kept(big: Any) -> None:
    state, tmp = big
    full_done, full = run(state, tmp / "full", "--nodes", "web-1*")
    capped_done, capped = run(state, tmp / "capped1", "--nodes", "web-1*", "--max-size", "1MB")
    assert full_done.returncode == 0 and capped_done.returncode in (0, 1)
    assert capped.stat().st_size <= 1_000_000 < full.stat().st_size
    a, b = read_archive(full), read_archive(capped)
    logs = [p for p in a if p.endswith("logs/teleport.log")]
    assert len(logs) == 111
    cut = 0
    for path in logs:
        if path in b:
            assert a[path].endswith(b[path]), path  # the newest lines, whole lines
            assert b[path][:4].isdigit()
            cut += len(b[path]) < len(a[path])
    assert cut > 50


def test_split_parts_join_into_a_verified_archive(big: Any) -> None:
    state, tmp = big
    out = tmp / "split"
    done, _ = run(state, out, "--nodes", "web-1*", "--split-size", "1MB")
    assert done.returncode == 0, done.stderr
    parts = sorted(out.iterdir())
    assert len(parts) >= 2 and all(p.stat().st_size <= 1_000_000 for p in parts)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("join them with: "))
    subprocess.run(line.removeprefix("join them with: "), shell=True, check=True, timeout=60)
    joined = [p for p in out.iterdir() if p.name.endswith(".tar.gz")]
    assert len(joined) == 1
    files = read_archive(joined[0])
    assert verify(files) == [] and len(files) > 50
    assert read_archive(parts[0]) == files  # the reader takes the parts as they are
    assert archive_parts(joined[0])

    # `tpdump inspect` reads the parts as they are, verifies them, and finds damage.
    shown = subprocess.run(tpdump_cmd("inspect", str(parts[0]), "--list"), capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "checksums: every file matches manifest.json" in shown.stdout
    assert f"{len(parts)} parts" in shown.stdout and "report.json" in shown.stdout
    joined[0].unlink()
    data = bytearray(parts[-1].read_bytes())
    parts[-1].write_bytes(bytes(data[: len(data) // 2]))
    broken = subprocess.run(tpdump_cmd("inspect", str(parts[0])), capture_output=True,
                            text=True, timeout=60)
    assert broken.returncode != 0 and "TPD401" in broken.stdout + broken.stderr
