"""What the benchmarks share: running tpdump as a measured process and reading the report
of the archive it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.helpers import peak_rss_kb  # noqa: E402


def wait_measured(proc: subprocess.Popen[bytes]) -> tuple[float, int]:
    """Wait for a child: (its CPU seconds, its peak RSS in bytes). The peak is the child's
    own VmHWM, polled every 20 ms: wait4's ru_maxrss would not do, Linux carries the
    parent's peak over fork (or vfork) and exec into the child's, so a benchmark that has
    read a big archive would measure itself."""
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_kb(proc.pid) * 1024)
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, peak


def run(cmd: list[str]) -> tuple[int, float, float, int]:
    """Run a command; returns (exit, wall s, CPU s of the process, peak RSS bytes)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu, peak = wait_measured(proc)
    return proc.returncode, time.monotonic() - started, cpu, peak


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report_of(out: Path) -> dict[str, Any]:
    """report.json of the newest archive in `out` (read alone: the benchmark's own memory
    stays small)."""
    archive = sorted(p for p in out.iterdir() if not p.name.endswith(".partial"))[-1]
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.name.endswith("/report.json") and member.name.count("/") == 1:
                f = tar.extractfile(member)
                if f is not None:
                    report: dict[str, Any] = json.loads(f.read())
                    return report
    raise RuntimeError(f"no report.json in {archive}")


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

