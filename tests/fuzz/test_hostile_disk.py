"""`tpdump cluster -o` onto a file system that fills up while the archive is written (a
2 MiB tmpfs, mostly full): TPD400 on stderr, exit 3, no traceback, a prompt exit, and
nothing left that looks like an archive (the `.partial` is removed too)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import simulated, tpdump_cmd

FREE_KIB = 120  # room left on the 2 MiB tmpfs: less than one dump of the cluster below
SCENARIO: dict[str, Any] = {
    "cluster_name": "acme.example.com",
    "seed": 5,
    "groups": [{"name": "web", "count": 6, "services": ["node"], "log_lines": 3000}],
}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("fulldisk")
    with simulated(tmp / "sim", SCENARIO) as state_dir:
        yield state_dir


def _cannot(why: str) -> None:
    """Skip where a tmpfs cannot be mounted (not root); CI runs as root, so there the full
    disk must really be tried."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why} (CI=true: the full-disk check must run)")
    pytest.skip(why)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs with FREE_KIB left (root only; skipped where mount is refused)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                              capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _cannot(f"cannot run mount here: {exc}")
    if done.returncode != 0:
        _cannot(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        stat = os.statvfs(mnt)
        free = stat.f_bavail * stat.f_frsize
        (mnt / "filler").write_bytes(b"\0" * (free - FREE_KIB * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=10)


@pytest.mark.parametrize("extra", [[], ["--format", "zip"], ["--split-size", "64KiB"]],
                         ids=["tar.gz", "zip", "split"])
def test_full_disk_fails_cleanly(state: Path, tiny_fs: Path, extra: list[str]) -> None:
    """The write hits ENOSPC: TPD400 with the reason, exit 3 (fatal), no traceback, the
    run stops within seconds, and only the filler is left on the file system."""
    started = time.monotonic()
    done = subprocess.run(
        tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{tiny_fs}/",
                   "-q", *extra),
        capture_output=True, text=True, timeout=60, env={**os.environ, "CI": "true"})
    seconds = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert "TPD400" in done.stderr and "No space left on device" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert seconds < 20, seconds
    assert sorted(os.listdir(tiny_fs)) == ["filler"]
