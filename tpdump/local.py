"""`tpdump node`: dump this host (no SSH, no auth API), or a root file system mounted at
`--sysroot` (a stopped host's disk, a container image)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import structlog

from tpdump.collectors.node import NodeCollector
from tpdump.config import Settings
from tpdump.discovery import Instance
from tpdump.errors import Problem
from tpdump.hosts import ItemError, LocalHost, credential_store
from tpdump.logs import RunLog
from tpdump.results import NodeResult, NodeStatus
from tpdump.runner import Outcome, Run, node_result_status

log = structlog.get_logger("tpdump.local")


class NodeRun(Run):
    """One `tpdump node` run."""

    def __init__(self, settings: Settings, run_log: RunLog, command: str) -> None:
        super().__init__(settings, run_log, command)
        self.host = LocalHost(settings.sysroot)
        hostname = self._hostname()
        self.cluster = settings.cluster_name or f"node-{hostname}"
        self.instance = Instance(uuid=hostname, hostname=hostname)
        self.learn("host", hostname)

    def _hostname(self) -> str:
        if self.settings.sysroot:
            try:
                path = f"{self.settings.sysroot.rstrip('/')}/etc/hostname"
                with open(path) as f:
                    if credential_store("/etc/hostname",
                                        *self.host.real_paths(f.fileno(), Path(path))):
                        return "sysroot"  # a link into a credential store: not read
                    return f.read().strip() or "sysroot"
            except OSError:
                return "sysroot"
        return socket.gethostname()

    async def collect(self) -> None:
        assert self.archive is not None
        result = NodeResult(self.instance)
        self.results.append(result)
        self.counters.phase = "nodes"
        self.counters.total = 1
        self.archive.expect_nodes(1)
        started = time.monotonic()
        result.started_at = time.time()
        result.status = NodeStatus.INTERRUPTED
        collector = NodeCollector(self.host, result, self.archive, self.redactor,
                                  self.settings, root=self.settings.sysroot or "")
        await collector.discover()
        await self._identify(collector)
        if not collector.argv and not isinstance(collector.config_data, tuple):
            where = f"under {self.settings.sysroot}" if self.settings.sysroot else "here"
            self.problems.append(Problem(
                "TPD213", self.instance.name,
                f"no Teleport {where}: no teleport process and no readable "
                f"{collector.config}; the archive holds host facts only"))
            log.warning("no teleport", where=where)
        await collector.collect_rest()
        result.seconds = time.monotonic() - started
        result.status = node_result_status(result)
        self.counters.done = 1
        self.counters.failed = int(result.status is not NodeStatus.OK)

    async def _identify(self, collector: NodeCollector) -> None:
        """The host UUID from `<data_dir>/host_uuid`, so the node's directory is named as
        in a cluster dump."""
        try:
            data, _ = await self.host.read(f"{collector.data_dir}/host_uuid", 256)
        except ItemError:
            return
        text = data.decode("utf-8", "replace").strip()
        if text:
            self.instance.uuid = text.splitlines()[0].strip()
            self.learn("uuid", self.instance.uuid)
        services = collector.facts.get("configured_services")
        if isinstance(services, list):
            self.instance.services = set(services)


async def run_node(settings: Settings, run_log: RunLog, command: str) -> Outcome:
    return await NodeRun(settings, run_log, command).run()
