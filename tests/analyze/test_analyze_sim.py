"""The analyzers at dump time and with `tpdump analyze`, against simulated clusters: one
healthy cluster on which every analyzer stays silent, one sick cluster with one group per
condition, each finding naming exactly its instance with evidence from the archive."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.integration.helpers import Dump, tpdump_cmd
from tpdump.analyze import ANALYZERS, analyze


def by_id(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in findings}


def check_evidence(dump: Dump, finding: dict[str, Any]) -> None:
    """Every evidence names a file of the archive, a real line number, and that line."""
    assert finding["evidence"], finding
    for ev in finding["evidence"]:
        assert ev["path"] in dump.files, ev
        lines = dump.files[ev["path"]].decode("utf-8", "replace").splitlines()
        assert 1 <= ev["line"] <= len(lines), ev
        assert ev["text"] and ev["text"] in lines[ev["line"] - 1], ev


def test_healthy_cluster_all_silent(healthy: Dump) -> None:
    """At dump time and from the archive: no finding at all, and every analyzer ran."""
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.report["findings"] == []
    assert [f.as_dict() for f in analyze(healthy.files)] == []
    assert "Findings (tpdump analyze):\n  none" in healthy.files["report.txt"].decode()
    assert len(ANALYZERS) >= 9


# finding id -> the targets it must name in the sick cluster
EXPECTED = {
    "version_skew_behind": ["old-1"],
    "clock_offset": ["skewed-1"],
    "readyz_degraded": ["sick-1"],
    "tunnel_down": ["edge-1"],
    "heartbeat_expired": ["ghost-1"],
    "unreachable_TPD200": ["down-1"],
    "rbac_allow_all": ["wildcard"],
    "rbac_user_no_role": ["erin"],
    "rbac_role_unused": ["unused-role"],
}


@pytest.mark.parametrize("fid", sorted(EXPECTED))
def test_sick_cluster_finding(sick: Dump, fid: str) -> None:
    found = by_id(sick.report["findings"])
    assert fid in found, sorted(found)
    assert found[fid]["targets"] == EXPECTED[fid]
    assert found[fid]["severity"] in ("critical", "warning", "info")
    check_evidence(sick, found[fid])


def test_sick_cluster_certificate_authorities(sick: Dump) -> None:
    """ca_expiry_days: 3 and ca_rotation: update_clients."""
    found = by_id(sick.report["findings"])
    assert found["ca_expiring"]["severity"] == "critical"
    assert "host CA" in found["ca_expiring"]["targets"]
    assert found["ca_rotating"]["details"]["phases"] == ["update_clients"]
    assert "host CA" in found["ca_rotating"]["targets"]
    check_evidence(sick, found["ca_expiring"])
    check_evidence(sick, found["ca_rotating"])


def test_sick_cluster_error_bursts(sick: Dump) -> None:
    """log_error_rate 0.3 and 1.0: top messages with counts, first and last time."""
    bursts = [f for f in sick.report["findings"] if f["id"] == "log_error_burst"]
    assert sorted(t for f in bursts for t in f["targets"]) == ["edge-1", "sick-1"]
    for f in bursts:
        d = f["details"]
        assert d["errors"] >= 20 and d["top"][0]["count"] > 0 and d["first"] <= d["last"]
        check_evidence(sick, f)
        assert " ERROR " in f["evidence"][0]["text"]


def test_findings_in_every_rendering(sick: Dump) -> None:
    text = sick.files["report.txt"].decode()
    assert "Findings (tpdump analyze):" in text and "[critical] clock_offset" in text
    page = sick.files["readme.html"].decode()
    assert "version_skew_behind" in page and "readyz_degraded" in page


def test_analyze_command_matches_dump_time(sick: Dump) -> None:
    """`tpdump analyze ARCHIVE` finds what the run found (exit 1: critical findings)."""
    assert sick.archive is not None
    done = subprocess.run(tpdump_cmd("analyze", "--json", str(sick.archive)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    ids = {f["id"] for f in json.loads(done.stdout)}
    assert ids == {f["id"] for f in sick.report["findings"]}
    plain = subprocess.run(tpdump_cmd("analyze", str(sick.archive)),
                           capture_output=True, text=True, timeout=60)
    assert "[critical] tunnel_down" in plain.stdout and "tunnel.json:" in plain.stdout


def test_obfuscated_dump_has_the_same_findings(sick: Dump, sick_obfuscated: Dump) -> None:
    """At dump time the analyzers see the archive as written (tokens, not names): the same
    findings, the same number of targets, and no real host or user name in them."""
    plain = {f["id"]: len(f["targets"]) for f in sick.report["findings"]}
    obf = {f["id"]: len(f["targets"]) for f in sick_obfuscated.report["findings"]}
    assert obf == plain
    text = json.dumps(sick_obfuscated.report["findings"])
    for name in ("old-1", "skewed-1", "sick-1", "edge-1", "down-1", "erin"):
        assert name not in text
    for f in sick_obfuscated.report["findings"]:
        check_evidence(sick_obfuscated, f)


def test_split_archive_has_the_same_findings(sick: Dump, sick_split: Dump) -> None:
    """At dump time the parts of a split archive are read in order."""
    assert sick_split.archive is not None and sick_split.archive.name.endswith(".001")
    assert len(list(sick_split.archive.parent.glob("*.tar.gz.0*"))) > 1
    ids = sorted(f["id"] for f in sick.report["findings"])
    assert sorted(f["id"] for f in sick_split.report["findings"]) == ids


def test_zip_archive_findings(sick: Dump, sick_zip: Dump) -> None:
    """A zip being written is not read back: at dump time only the node facts are
    analyzed; `tpdump analyze` on the finished zip finds everything."""
    at_dump = {f["id"] for f in sick_zip.report["findings"]}
    assert {"clock_offset", "unreachable_TPD200"} <= at_dump
    later = sorted(f.id for f in analyze(sick_zip.files))
    assert later == sorted(f["id"] for f in sick.report["findings"])
