"""Shared fixtures of the simulator tests: running simulators (see simharness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simharness import (
    EXTRA_OBJECTS,
    MAIN_SCENARIO,
    NODE_SCENARIO,
    OVERRIDE,
    SYSLOG_YAML,
    Sim,
    start_sim,
    stop_sim,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def main_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    sim = start_sim(tmp_path_factory.mktemp("main"), MAIN_SCENARIO,
                    {"extra.yaml": EXTRA_OBJECTS})
    try:
        yield sim
    finally:
        stop_sim(sim)


@pytest.fixture(scope="session")
def old_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """A v16 cluster without inventory, with expired CAs, whose auth answers slowly."""
    sim = start_sim(tmp_path_factory.mktemp("old"), """
        cluster_name: old.example.com
        teleport_version: "16.4.9"
        auth: {inventory: false, fault: slow, delay_s: 0.3, ca_expiry_days: -5}
        groups: [{name: n, count: 2}]
    """)
    try:
        yield sim
    finally:
        stop_sim(sim)


@pytest.fixture(scope="session")
def node_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """Nodes with unit files, drop-ins, the updater timer, diag, debug sockets and faults."""
    sim = start_sim(tmp_path_factory.mktemp("nodes"), NODE_SCENARIO,
                    {"override.conf": OVERRIDE, "syslog.yaml": SYSLOG_YAML})
    try:
        yield sim
    finally:
        stop_sim(sim)
