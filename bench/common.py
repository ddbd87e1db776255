"""What the benchmarks share: running tpdump as a measured process and reading the report
of the archive it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tpdump.archive import read_archive  # noqa: E402


def run(cmd: list[str]) -> tuple[int, float, float, int]:
    """Run a command; returns (exit, wall s, CPU s of the process, peak RSS bytes)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    return (os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss * 1024)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report_of(out: Path) -> dict[str, Any]:
    """report.json of the newest archive in `out`."""
    archive = sorted(p for p in out.iterdir() if not p.name.endswith(".partial"))[-1]
    report: dict[str, Any] = json.loads(read_archive(archive)["report.json"])
    return report


def start_cluster(tmp: Path, scenario: dict[str, Any],
                  timeout: float = 300) -> tuple[subprocess.Popen[bytes], float]:
    """A simulated cluster from a scenario dict, in its own process, state in tmp/state:
    (the process, seconds it took to be ready)."""
    import yaml

    from tpdump.sim.cli import start_in_subprocess

    (tmp / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    started = time.monotonic()
    sim = start_in_subprocess(str(tmp / "scenario.yaml"), str(tmp / "state"), timeout=timeout)
    return sim, time.monotonic() - started

