"""Helpers for end-to-end tests: a simulated cluster in its own process, tpdump run as a
real subprocess, and reading the archive back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tpdump import archive
from tpdump.sim.cli import start_in_subprocess


@contextmanager
def simulated(tmp: Path, scenario: dict[str, Any]) -> Iterator[Path]:
    """Start a simulated cluster from a scenario dict; yield its state dir."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    state = tmp / "state"
    proc = start_in_subprocess(str(path), str(state))
    try:
        yield state
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Dump:
    """A finished tpdump run: exit code, output, and the archive's files by path."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    archive: Path | None
    files: dict[str, bytes]
    # Peak resident set of the tpdump process in KiB, when the runner measured it
    # (tests/soak polls /proc/PID/status VmHWM; run_dump does not).
    peak_rss_kb: int | None = None

    def json(self, path: str) -> Any:
        return json.loads(self.files[path])

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = self.json("report.json")
        return data


def tpdump_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tpdump", *args]


def read_archive(path: Path) -> dict[str, bytes]:
    """Every file of an archive (tar.gz, zip or split), keyed by path below the root."""
    return archive.read_archive(path)


def find_archive(out_dir: Path) -> Path | None:
    found = sorted(out_dir.glob("*.tar.gz"))
    return found[-1] if found else None


def run_dump(state: Path, out_dir: Path, *extra: str, timeout: float = 120) -> Dump:
    """`tpdump cluster --config STATE/tpdump.yaml -o OUT/ ...` as a subprocess."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out_dir}/",
                   "-q", *extra),
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "CI": "true"},
    )
    seconds = time.monotonic() - started
    archive = find_archive(out_dir)
    files = read_archive(archive) if archive else {}
    return Dump(done.returncode, done.stdout, done.stderr, seconds, archive, files)


def instances(state: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((state / "instances.json").read_text())
    return data


def dump_lab(lab: Any, tmp: Path, *extra: str) -> Dump:
    """`tpdump cluster` against a lab's real nodes: the simulator serves only tctl, with
    heartbeats that point at the lab's addresses; SSH goes through the lab's jump host."""
    scenario = {
        "cluster_name": lab.cluster_name, "teleport_version": "17.4.2", "seed": 3,
        "groups": [{"name": "lab", "count": len(lab.nodes), "services": ["node"],
                    "external_addrs": [n.addr for n in lab.nodes]}],
    }
    with simulated(tmp / "sim", scenario) as state:
        return run_dump(state, tmp / "out", "--proxy", lab.proxy, "--ssh-user", lab.login,
                        "--ssh-key", str(lab.key_path), "--known-hosts",
                        str(lab.known_hosts), *extra)


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kb(pid: int) -> int:
    """VmHWM of a live process in KiB (0 once it has exited). os.wait4's ru_maxrss would not
    do: Linux carries the parent's peak over fork and exec into the child's."""
    return _status_kb(pid, "VmHWM")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")
