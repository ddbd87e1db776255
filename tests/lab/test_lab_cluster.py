"""`tpdump cluster` against real OpenSSH: a real sshd jump host and real sshd nodes, each
in its own namespaces, found through the tctl stand-in (heartbeats point at them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import dump_lab

from .sshd import Lab

pytestmark = pytest.mark.lab


def test_cluster_dump_of_real_sshd_nodes(sshd_lab: Lab, tmp_path: Path) -> None:
    """Every real node is dumped through the real jump host with certificates: its own
    teleport.yaml (token stripped), the real cmdline and version, exit 0."""
    lab = sshd_lab
    dump = dump_lab(lab, tmp_path, "--connect-timeout", "5", "--node-timeout", "20")
    assert dump.returncode == 0, dump.stdout + dump.stderr
    results = dump.report["node_results"]
    assert len(results) == len(lab.nodes)
    by_addr = {n.addr: n for n in lab.nodes}
    seen = set()
    for res in results:
        meta = json.loads(dump.files[f"{res['dir']}/node.json"])
        node = by_addr[meta["target"]]
        seen.add(node.hostname)
        conf = dump.files[f"{res['dir']}/teleport.yaml"].decode()
        assert f"nodename: {node.hostname}" in conf
        assert node.canary not in conf and "<redacted by tpdump: join token>" in conf
        assert dump.files[f"{res['dir']}/cmdline"] == node.expected_cmdline
        assert dump.files[f"{res['dir']}/version.txt"].startswith(b"Teleport v17.4.2")
        assert dump.files[f"{res['dir']}/host/hostname"].strip() == node.hostname.encode()
        assert abs(meta["clock_offset_s"]) < 2
    assert seen == {n.hostname for n in lab.nodes}
