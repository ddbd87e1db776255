"""`tpdump cluster` against a simulated cluster with `hostile` nodes (traversal and absolute
names, symlinks to secrets and loops, NUL bytes, invalid UTF-8, a 100 MiB log line):
the run stays within its deadlines and memory, the archive stays under its root, the
secrets behind the links never reach it, and the healthy nodes are whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    instances,
    peak_rss_kb,
    read_archive,
    simulated,
    tpdump_cmd,
)

LOG_CAP = 2 * 1024 * 1024
DEADLINE_S = 60.0
MAX_RSS_MB = 400
FLAGS = ["--connect-timeout", "5", "--node-timeout", "30", "--item-timeout", "15",
         "--timeout", str(int(DEADLINE_S) - 15), "--log-bytes", str(LOG_CAP), "--no-kube"]
# What every healthy node of the scenario has in its directory.
HEALTHY_FILES = ("node.json", "teleport.yaml", "cmdline", "version.txt", "host/hostname",
                 "teleport.service/log.txt", "teleport.service/teleport.service",
                 "data_dir.txt", "proc/sqlite.sql", "role.node")
SCENARIO: dict[str, Any] = {
    "cluster_name": "acme.example.com",
    "teleport_version": "17.4.2",
    "seed": 11,
    "groups": [
        {"name": "auth", "count": 1, "services": ["auth"]},
        {"name": "proxy", "count": 1, "services": ["proxy"]},
        {"name": "web", "count": 3, "services": ["node"]},
        {"name": "hostile", "count": 2, "services": ["node"], "fault": "hostile"},
    ],
    "secrets": {"plant": True},
}


@dataclass
class Run:
    """One finished dump: exit code, stderr, wall time, peak RSS, the archive."""

    returncode: int
    stderr: str
    seconds: float
    max_rss_mb: float
    archive: Path
    files: dict[str, bytes]


def dump(state: Path, out: Path, *extra: str) -> Run:
    """Run `tpdump cluster` as a child and measure its peak memory (its VmHWM)."""
    out.mkdir(parents=True)
    started = time.monotonic()
    # the child's own VmHWM (KiB): wait4's ru_maxrss carries ours over fork and exec (it
    # stays the fallback, an upper bound, for a child gone before the first poll)
    peak = 0
    proc = subprocess.Popen(
        tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out}/", "-q",
                   *FLAGS, *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "CI": "true"})
    assert proc.stderr is not None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_kb(proc.pid))
            if time.monotonic() - started > DEADLINE_S + 30:
                proc.send_signal(signal.SIGKILL)
            time.sleep(0.05)
    finally:
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    found = sorted(out.glob("tpdump-*"))
    assert len(found) == 1, (found, stderr)
    return Run(proc.returncode, stderr, time.monotonic() - started,
               (peak or usage.ru_maxrss) / 1024, found[0], read_archive(found[0]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Run]]]:
    """The same hostile cluster dumped as tar.gz and as zip."""
    tmp = tmp_path_factory.mktemp("hostile")
    with simulated(tmp / "sim", SCENARIO) as state:
        yield state, {"tar.gz": dump(state, tmp / "tgz"),
                      "zip": dump(state, tmp / "zip", "--format", "zip")}


def raw_names(path: Path) -> list[str]:
    """Member names exactly as stored in the archive (not through tpdump's reader)."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return [i.orig_filename for i in zf.infolist()]
    with tarfile.open(path, "r:gz") as tar:
        return [m.name for m in tar.getmembers()]


def by_host(state: Path) -> dict[str, dict[str, Any]]:
    return {i["hostname"]: i for i in instances(state)}


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_hostile_run_is_bounded(runs: tuple[Path, dict[str, Run]], fmt: str) -> None:
    """The run ends within its deadline, without a traceback, with an archive (exit 0/1), with
    peak memory well below what a 100 MiB line held whole (plus its copies) would take."""
    _, by_fmt = runs
    run = by_fmt[fmt]
    assert run.returncode in (0, 1), run.stderr  # item failures are data, not exit codes
    assert "Traceback" not in run.stderr
    assert run.seconds < DEADLINE_S, run.seconds
    assert run.max_rss_mb < MAX_RSS_MB, f"peak RSS {run.max_rss_mb:.0f} MB"


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_hostile_member_names_stay_under_root(runs: tuple[Path, dict[str, Run]],
                                              fmt: str) -> None:
    """Every raw member name is relative, below the one root directory, without `..`,
    NUL, backslashes or control characters: extracting cannot escape."""
    _, by_fmt = runs
    names = raw_names(by_fmt[fmt].archive)
    root = names[0].split("/", 1)[0]
    assert root.startswith("tpdump-")
    for name in names:
        assert not name.startswith("/"), name
        assert name.split("/", 1)[0] == root, name
        parts = name.split("/")
        assert ".." not in parts and "." not in parts and "" not in parts[1:], name
        assert not any(ord(c) < 32 or c in "\\\x7f" for c in name), repr(name)
        assert name.encode("utf-8", "strict")  # names are valid UTF-8
    assert len(names) == len(set(names)), "two members share a name"


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_hostile_secrets_behind_links_never_leak(runs: tuple[Path, dict[str, Run]],
                                                 fmt: str) -> None:
    """No canary (the shadow hash, the private key, the join token behind the links, a
    secret in no known format, and every canary of the healthy nodes) is in any file; the
    shadow file behind the teleport.yaml link is refused, not copied."""
    state, by_fmt = runs
    files = by_fmt[fmt].files
    canaries = [c for c in (state / "canaries.txt").read_text().splitlines() if c]
    assert any(c.startswith("CANARY-hostile_shadow") for c in canaries)
    for path, data in files.items():
        for canary in canaries:
            assert canary.encode() not in data, f"{canary} leaked into {path}"
    assert any(c.startswith("CANARY-hostile_plain") for c in canaries)
    # hostile-2's teleport.yaml is a link to the shadow file, which also holds a canary in
    # no format a redactor knows: the file is refused (TPD214), not copied and redacted.
    hostile2 = by_host(state)["hostile-2"]["uuid"]
    assert f"nodes/{hostile2}/teleport.yaml" not in files
    node = json.loads(files[f"nodes/{hostile2}/node.json"])
    items = {i["name"]: i for i in node["items"]}
    assert items["teleport.yaml"]["code"] == "TPD214", items["teleport.yaml"]
    assert "/etc/shadow" in items["teleport.yaml"]["message"]
    report = json.loads(files["report.json"])
    refused = [p for p in report["problems"] if p["code"] == "TPD214"]
    assert refused and "hostile-2" in refused[0]["targets"], report["problems"]


def test_hostile_node_items_fail_clearly_or_are_sanitised(
        runs: tuple[Path, dict[str, Run]]) -> None:
    """The hostile nodes end partial with per-item reasons: the process state behind a
    link to the shadow file is refused (TPD214); the data_dir listing names the odd entries
    as text only; units with traversal and NUL names land under the node's own directory;
    the 100 MiB log line is cut to --log-bytes and marked truncated."""
    state, by_fmt = runs
    files = by_fmt["tar.gz"].files
    hosts = by_host(state)
    manifest = {e["path"]: e for e in json.loads(files["manifest.json"])["files"]}
    for name in ("hostile-1", "hostile-2"):
        uuid = hosts[name]["uuid"]
        node = json.loads(files[f"nodes/{uuid}/node.json"])
        items = {i["name"]: i for i in node["items"]}
        assert items["process state"]["status"] == "failed", items["process state"]
        assert items["process state"]["code"] == "TPD214"  # a link to /etc/shadow
        listing = files[f"nodes/{uuid}/data_dir.txt"]
        assert b"/var/lib/teleport/loop" in listing and b"/var/lib/teleport/../../.." in listing
        # a newline in a name is shown escaped: no line of its own, nothing forged
        assert b"/var/lib/teleport/new\\nline f 1 1.0 /etc/shadow" in listing
        assert not any(line.startswith(b"line") for line in listing.splitlines())
        assert b"/var/lib/teleport/bad-\\xff\\xfe-utf8" in listing
        units = [p for p in files if p.startswith(f"nodes/{uuid}/teleport.service/")]
        assert any("evil.service" in p for p in units), units
        assert all(p.startswith(f"nodes/{uuid}/") for p in files if uuid in p)
    log = f"nodes/{hosts['hostile-1']['uuid']}/logs/teleport.log"
    assert log in files, sorted(p for p in files if hosts["hostile-1"]["uuid"] in p)
    assert 0 < len(files[log]) <= LOG_CAP
    assert manifest[log]["truncated"] is True
    assert files[log].startswith(b"\xff\xfeHOSTILE") or b"HOSTILE" in files[log][:128]


def test_hostile_healthy_nodes_complete(runs: tuple[Path, dict[str, Run]]) -> None:
    """The healthy nodes beside the hostile ones are collected whole (status ok, every
    usual file present), in both formats."""
    state, by_fmt = runs
    for run in by_fmt.values():
        for host, inst in by_host(state).items():
            if not host.startswith("web-"):
                continue
            base = f"nodes/{inst['uuid']}"
            node = json.loads(run.files[f"{base}/node.json"])
            assert node["status"] == "ok", (host, node.get("code"), node.get("detail"))
            for name in HEALTHY_FILES:
                assert f"{base}/{name}" in run.files, (host, name)
