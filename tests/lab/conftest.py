"""Fixtures for the real-OpenSSH lab (sshd.py) and the real-systemd lab (nspawn.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .nspawn import NspawnLab, require_nspawn_lab, start_nspawn_lab
from .sshd import Lab, require_lab, start_lab

LAB_NODES = 5
NSPAWN_LAB_NODES = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sshd_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A jump host and 5 nodes running real sshd, for the whole session."""
    require_lab()
    t0 = time.monotonic()
    lab = start_lab(tmp_path_factory.mktemp("sshd-lab"), LAB_NODES)
    lab.timings["fixture_start"] = time.monotonic() - t0
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def nspawn_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NspawnLab]:
    """5 systemd-nspawn nodes (real systemd, journald, sshd, the Teleport stand-in
    service) behind a real sshd jump host, for the whole session (tests/lab/nspawn.py)."""
    require_nspawn_lab()
    t0 = time.monotonic()
    lab = start_nspawn_lab(tmp_path_factory.mktemp("nspawn-lab"), NSPAWN_LAB_NODES)
    lab.timings["fixture_start"] = time.monotonic() - t0
    try:
        yield lab
    finally:
        lab.stop()
