"""`tpdump kube`: the Kubernetes part only (SPEC §6), in an archive of its own."""

from __future__ import annotations

import structlog

from tpdump.collectors.kube import KubeApi, KubeCallError, KubeSummary
from tpdump.config import Settings
from tpdump.errors import Problem
from tpdump.logs import RunLog
from tpdump.runner import Outcome, Run

log = structlog.get_logger("tpdump.kuberun")


class KubeRun(Run):
    """One `tpdump kube` run."""

    def __init__(self, settings: Settings, run_log: RunLog, command: str) -> None:
        super().__init__(settings, run_log, command)
        self.api: KubeApi | None = None
        self.summary = self.kube = KubeSummary()

    async def preflight(self) -> None:
        """Load the configuration and ask the API server its version, in a few seconds."""
        self.counters.phase = "preflight"
        try:
            summary = self.summary
            self.api, summary.context, summary.server = await KubeApi.connect(self.settings)
            await self.api.get_json("/version")
        except KubeCallError as exc:
            self.summary.error = f"{exc.code} {exc.text()}"
            self.fatal = f"TPD500: the Kubernetes API cannot be used: {exc.text()}"
            self.problems.append(Problem("TPD500", "kube API", exc.text()))
            log.error("kubernetes unreachable", error=exc.text())
        self.learn("cluster", self.summary.context)
        if not self.settings.cluster_name:
            self.cluster = f"kube-{self.summary.context or 'cluster'}"

    async def collect(self) -> None:
        self.counters.phase = "kube"
        assert self.archive is not None
        self.archive.expect_nodes(1)
        await self.collect_kube(self.api)

    async def aclose(self) -> None:
        if self.api is not None:
            await self.api.aclose()


async def run_kube(settings: Settings, run_log: RunLog, command: str) -> Outcome:
    return await KubeRun(settings, run_log, command).run()
