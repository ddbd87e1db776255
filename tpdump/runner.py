"""`tpdump cluster`: preflight, discovery, the bounded fan-out to nodes, cluster objects,
and the archive with its report. Deadlines nest run ⊃ node ⊃ item; Ctrl-C and SIGTERM
mean "deadline now", after which the archive is finished within seconds."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import math
import signal
import sys
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import structlog

from tpdump.analyze import DumpTimeFiles
from tpdump.analyze import at_dump_time as analyze_at_dump_time
from tpdump.archive import ArchiveWriter, archive_suffix, safe_component
from tpdump.collectors.cluster import write_cluster, write_objects, write_preflight
from tpdump.collectors.kube import KubeApi, KubeSummary, collect_kube
from tpdump.collectors.node import NodeCollector, node_json
from tpdump.config import Settings
from tpdump.discovery import (
    Discovery,
    Instance,
    assign_target,
    discover,
    fetch_kinds,
    select,
)
from tpdump.errors import ArchiveError, ExitCode, Problem
from tpdump.hosts import SSHHost
from tpdump.logs import RunLog
from tpdump.obfuscate import Obfuscator
from tpdump.progress import Counters, Progress
from tpdump.redact import Redactor, dump_yaml
from tpdump.report import RunFacts, build, render_html, render_json, render_text
from tpdump.results import NodeResult, NodeStatus
from tpdump.status import ClusterStatus, parse_status
from tpdump.tctl import Tctl, TctlFailure, TctlResult
from tpdump.transport import ProxyError, Transport, classify, failure, first_leaf

log = structlog.get_logger("tpdump.runner")

# Finishing the archive after an interrupt must take at most this long (SPEC §7: 2 s).
FINISH_BUDGET_INTERRUPTED = 1.5
FINISH_BUDGET = 60.0


@dataclass
class Outcome:
    """How a run ended."""

    exit_code: ExitCode
    archive: Path | None
    report: dict[str, Any]
    parts: list[Path] = field(default_factory=list)
    join_command: str | None = None


def output_path(settings: Settings, cluster: str, started: float) -> Path:
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"tpdump-{safe_component(cluster)}-{stamp}{archive_suffix(settings.format)}"
    if settings.output is None:
        return Path.cwd() / name
    out = Path(settings.output)
    if settings.output.endswith("/") or out.is_dir():
        return out / name
    return out


class Run(ABC):
    """The frame every run shares: signals, progress, the deadline, the archive, and the
    report at the end. Subclasses say how to preflight and what to collect."""

    def __init__(self, settings: Settings, run_log: RunLog, command: str) -> None:
        self.settings = settings
        self.run_log = run_log
        self.command = command
        self.started = time.time()
        self.redactor = Redactor()
        self.counters = Counters()
        self.results: list[NodeResult] = []
        self.problems: list[Problem] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.fatal: str | None = None
        self.interrupted = False
        self.cluster = settings.cluster_name or "cluster"
        self.archive: ArchiveWriter | None = None
        self.report: dict[str, Any] = {}
        self.kube: KubeSummary | None = None
        self.obfuscator = make_obfuscator(settings)
        self.seen = DumpTimeFiles()  # what the analyzers read, kept as it is written
        self.estimate: dict[str, Any] | None = None

    @property
    def tctl_calls(self) -> int:
        return 0

    async def preflight(self) -> None:  # noqa: B027 - an optional hook
        """Checks before the archive is opened (may set self.fatal)."""

    async def opened(self, archive: ArchiveWriter) -> None:  # noqa: B027 - optional hook
        """The archive is open: write what the preflight learnt."""

    @abstractmethod
    async def collect(self) -> None:
        """Gather everything into self.archive and self.results."""

    def _archive_facts(self) -> dict[str, Any]:
        """Format, parts and what --max-size cut (the report's `archive` section)."""
        assert self.archive is not None
        a = self.archive
        cuts = [{"path": c.path, "priority": c.priority, "original_bytes": c.original_bytes,
                 "kept_bytes": c.kept_bytes, "reason": c.reason} for c in a.cuts]
        return {"format": self.settings.format, "max_size": self.settings.max_size,
                "estimate": self.estimate,
                "split_size": self.settings.split_size, "join_command": a.join_command(),
                "cuts": cuts, "cut_bytes": sum(c.original_bytes - c.kept_bytes
                                               for c in a.cuts)}

    def _obfuscation_facts(self) -> dict[str, Any] | None:
        obf = self.obfuscator
        if obf is None:
            return None
        return {"key_id": obf.key_id,
                "key": "from --obfuscation-key" if self.settings.obfuscation_key
                else "random, this dump only",
                "uuids": obf.uuids,
                "distinct": dict(sorted(obf.distinct().items())),
                "replacements": dict(sorted(obf.counts.items())),
                "mapping_kept_by_user": self.settings.obfuscation_map is not None}

    def learn(self, category: str, *values: str) -> None:
        """Identifiers that --obfuscate replaces wherever they occur."""
        if self.obfuscator is not None:
            for value in values:
                if value:
                    self.obfuscator.learn(category, value)

    async def salvage(self) -> None:  # noqa: B027 - an optional hook
        """What can still be collected after a fatal preflight."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook
        """Release connections."""

    async def collect_kube(self, api: KubeApi | None = None) -> None:
        """The Kubernetes part into kube/; it never ends the run."""
        assert self.archive is not None
        self.kube = self.kube or KubeSummary()
        try:
            self.problems.extend(await collect_kube(self.settings, self.archive,
                                                    self.redactor, self.kube, api))
        except Exception as exc:  # the task boundary: a bug must not cost the node dumps
            log.exception("kubernetes collector crashed")
            self.problems.append(Problem("TPD502", "kube", f"internal error: "
                                         f"{type(exc).__name__}: {exc}"))

    # --- the run --------------------------------------------------------------
    async def run(self) -> Outcome:
        progress = Progress(self.counters, self._written, quiet=self.settings.quiet)
        deadline = anyio.current_time() + self.settings.timeout
        async with anyio.create_task_group() as outer:
            collect_scope = anyio.CancelScope(deadline=deadline)
            watcher = anyio.CancelScope()
            outer.start_soon(self._watch_signals, collect_scope, watcher)
            archive_watch = anyio.CancelScope()
            outer.start_soon(self._watch_archive, collect_scope, archive_watch)
            progress_scope = anyio.CancelScope()
            outer.start_soon(_run_in, progress_scope, progress.run)
            with collect_scope:
                await self.preflight()
                archive = self._open_archive()
                outer.start_soon(archive.run)
                await self.opened(archive)
                if self.fatal is None:
                    await self.collect()
                else:
                    await self.salvage()
            if self.archive is None:  # interrupted during the preflight
                archive = self._open_archive()
                outer.start_soon(archive.run)
            deadline_reached = collect_scope.cancelled_caught and not self.interrupted
            budget = FINISH_BUDGET_INTERRUPTED if self.interrupted else FINISH_BUDGET
            with anyio.CancelScope(shield=True), anyio.move_on_after(budget):
                await self.finish(deadline_reached)
            archive.end_input()  # in case the budget cut finish() short
            watcher.cancel()
            archive_watch.cancel()
            progress_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.aclose()
        progress.draw(final=True)
        try:
            await anyio.to_thread.run_sync(archive.close)
        except ArchiveError as exc:
            log.error("archive failed", error=str(exc))
            raise
        if self.obfuscator is not None and self.settings.obfuscation_map:
            try:
                self.obfuscator.write_mapping(self.settings.obfuscation_map)
            except OSError as exc:
                log.error("obfuscation map not written", path=self.settings.obfuscation_map,
                          error=exc.strerror)
        report = self.report
        return Outcome(ExitCode(report.get("exit_code", ExitCode.FATAL)), archive.path,
                       report, archive.parts, archive.join_command())

    async def _watch_signals(self, collect: anyio.CancelScope, watcher: anyio.CancelScope) -> None:
        with watcher, anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.warning("interrupted", signal=signal.Signals(signum).name)
                self.interrupted = True
                collect.cancel()

    async def _watch_archive(self, collect: anyio.CancelScope,
                             watcher: anyio.CancelScope) -> None:
        """A failed archive (a full disk) ends the collection at once: nothing more could
        be kept, and close() reports the error (TPD400)."""
        with watcher:
            while self.archive is None or self.archive.failed is None:  # noqa: ASYNC110 - set by the writer task
                await anyio.sleep(0.2)
            log.error("archive failed; collection stopped", error=str(self.archive.failed))
            collect.cancel()

    def _written(self) -> int:
        return self.archive.bytes_written if self.archive else 0

    def _open_archive(self) -> ArchiveWriter:
        name = self.cluster
        obf = self.obfuscator
        if obf is not None:
            obf.learn("cluster", self.cluster)
            name = obf.token("cluster", self.cluster)
        path = output_path(self.settings, name, self.started)
        stamp = datetime.fromtimestamp(self.started, UTC).strftime("%Y%m%dT%H%M%SZ")
        self.archive = ArchiveWriter(
            path, f"tpdump-{name}-{stamp}",
            fmt=self.settings.format, split_size=self.settings.split_size,
            max_size=self.settings.max_size, level=self.settings.compress_level,
            transform=None if obf is None else (lambda _path, data: obf.data(data)),
            path_transform=None if obf is None else obf.path, on_emit=self.seen)
        self.archive.open()
        log.info("archive", path=str(self.archive.partial))
        return self.archive

    async def finish(self, deadline_reached: bool) -> None:
        """The report first (it is what matters most if time runs out), then node.json and
        error.txt for every instance, then the log."""
        assert self.archive is not None
        self.counters.phase = "finishing"
        # Everything queued is written (or cut to fit --max-size) first, so that the report
        # tells the cuts and the obfuscation counts as they are.
        with anyio.move_on_after(FINISH_BUDGET_INTERRUPTED / 2 if self.interrupted
                                 else FINISH_BUDGET / 2):
            await self.archive.settle()
        if deadline_reached:
            self.problems.append(Problem("TPD301", "run",
                                         f"--timeout {self.settings.timeout:g} s reached"))
        if self.interrupted:
            self.problems.append(Problem("TPD300", "run", "interrupted by signal"))
        for r in self.results:
            if r.status is NodeStatus.INTERRUPTED and r.code is None:
                r.fail("TPD300" if self.interrupted else "TPD301", "not finished",
                       "the run was interrupted" if self.interrupted else "run deadline")
            elif r.status is NodeStatus.NOT_STARTED:
                r.fail("TPD300" if self.interrupted else "TPD301", "not started",
                       "the run ended before this node's turn")
        findings = [] if self.interrupted or self.archive.failed else await analyze_at_dump_time(
            self.seen, self._node_files(), self.started, FINISH_BUDGET / 3,
            stop=lambda: self.interrupted)
        facts = RunFacts(
            cluster=self.cluster, started=self.started, finished=time.time(),
            command=self.command, settings=self.settings.as_dict(),
            interrupted=self.interrupted, deadline_reached=deadline_reached, fatal=self.fatal,
            problems=self.problems, objects=self.objects, redactions=self.redactor.counts,
            truncated_files=self.archive.truncated,
            archive_bytes=self.archive.bytes_written, tctl_calls=self.tctl_calls,
            kube=self.kube.as_dict() if self.kube is not None else None,
            obfuscation=self._obfuscation_facts(),
            archive=self._archive_facts(), findings=findings,
        )
        self.report = report = build(facts, self.results)
        add = self.archive.add
        await add("report.json", render_json(report), source="tpdump", priority="report")
        await add("report.txt", render_text(report), source="tpdump", priority="report")
        await add("readme.html", render_html(report), source="tpdump", priority="report")
        for r in self.results:
            text = zlib.decompress(r.rendered) if r.rendered else node_json(r).encode()
            await add(f"{r.dir}/node.json", text, source="tpdump", priority="report")
            if r.status is not NodeStatus.OK and r.code:
                await add(f"{r.dir}/error.txt", f"{r.code} {r.reason}\n{r.detail}\n"
                          f"See: tpdump explain {r.code}\n", source="tpdump",
                          priority="report")
        await add("tpdump.log", self.run_log.text(), source="tpdump", priority="report")
        await self.archive.finish_input()

    def _node_files(self) -> dict[str, bytes]:
        """Each node's node.json and error.txt as finish() writes them, for the analyzers."""
        obf = self.obfuscator
        out: dict[str, bytes] = {}
        for r in self.results:
            files = {f"{r.dir}/node.json": node_json(r, brief=True).encode()}
            if r.status is not NodeStatus.OK and r.code:
                files[f"{r.dir}/error.txt"] = f"{r.code} {r.reason}\n".encode()
            for path, data in files.items():
                out[obf.path(path) if obf else path] = obf.data(data) if obf else data
        return out


# The fan-out makes hundreds of thousands of short-lived objects (SSH packets, channels,
# tasks) beside tens of thousands of long-lived ones (imports, the nodes' records). The
# collector's default first threshold (700 allocations) scans them ≈ 7,000 times at 10,000
# nodes, promoting what is merely in flight; and every full collection walks the imports.
_FANOUT_GEN0 = 20_000
_FANOUT_FULL_EVERY = 500  # nodes done between full collections (their SSH connections'
# objects are reference cycles: they would wait for one)
_fanout_runs = 0  # runs of this process in their fan-out (they overlap under serve)
_fanout_saved = (700, 10, 10)  # the thresholds to put back when the last one leaves


def _malloc_trim() -> Callable[[], bool]:
    """glibc's malloc_trim(0), from the symbols already loaded, or a no-op where there
    is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


_trim = _malloc_trim()


def release_memory() -> bool:
    """A full collection, then the C heap's free pages handed back to the system. Freed
    memory between live blocks stays with the process otherwise: the nodes' small records
    interleave with the fan-out's short-lived buffers, and at 10,000 nodes the fan-out
    ended 17 MB higher without it (196 MB against 179). True when pages were released."""
    gc.collect()
    return _trim()


@contextlib.contextmanager
def fanout_gc() -> Iterator[None]:
    """During the fan-out: what exists before it is frozen (left out of collections) and
    the first generation is collected every 20,000 allocations instead of 700. Both are
    undone when the last run of the process that is in its fan-out leaves it (runs may
    overlap under `tpdump serve`)."""
    global _fanout_runs, _fanout_saved
    if _fanout_runs == 0:
        gc.collect()
        gc.freeze()
        _fanout_saved = gc.get_threshold()
        gc.set_threshold(max(_fanout_saved[0], _FANOUT_GEN0), *_fanout_saved[1:])
    _fanout_runs += 1
    try:
        yield
    finally:
        _fanout_runs -= 1
        if _fanout_runs == 0:
            gc.set_threshold(*_fanout_saved)
            gc.unfreeze()


async def _run_in(scope: anyio.CancelScope, func: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await func()


class ClusterRun(Run):
    """One `tpdump cluster` run."""

    def __init__(self, settings: Settings, run_log: RunLog, command: str) -> None:
        super().__init__(settings, run_log, command)
        self.tctl = Tctl(settings.tctl, auth_server=settings.auth_server,
                         identity=settings.identity, concurrency=settings.tctl_concurrency,
                         timeout=settings.tctl_timeout)
        self.transport = Transport(settings)
        self.extra: dict[str, TctlResult] = {}
        self.discovery: Discovery | None = None
        self.status: ClusterStatus | None = None
        self._done = 0  # nodes whose dump ended

    async def opened(self, archive: ArchiveWriter) -> None:
        await write_preflight(archive, self.extra, self.status, self.redactor)

    @property
    def tctl_calls(self) -> int:
        return self.tctl.calls

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def preflight(self) -> None:
        """tctl status and version, and the proxy, in a few seconds; stop early when the
        auth API cannot be reached at all."""
        self.counters.phase = "preflight"
        budget = self.settings.preflight_timeout
        proxy_failure = []

        async def status() -> None:
            self.extra["status"] = await self.tctl.run("status", budget=budget)

        async def version() -> None:
            self.extra["version"] = await self.tctl.run("version", budget=budget)

        async def proxy() -> None:
            with anyio.move_on_after(budget + self.settings.connect_timeout):
                why = await self.transport.preflight()
                if why is not None:
                    proxy_failure.append(why)

        async with anyio.create_task_group() as tg:
            tg.start_soon(status)
            tg.start_soon(version)
            tg.start_soon(proxy)
        st = self.extra.get("status")
        if st is None:  # interrupted before tctl answered
            return
        if st.ok:
            parsed = parse_status(st.stdout.decode("utf-8", "replace"))
            if parsed is None:
                self.problems.append(Problem("TPD107", "tctl status",
                                             "neither known layout of `tctl status`"))
            else:
                self.status = parsed
                if parsed.cluster and not self.settings.cluster_name:
                    self.cluster = parsed.cluster
        elif st.failure in (TctlFailure.CANNOT_CONNECT, TctlFailure.TIMEOUT,
                            TctlFailure.NOT_FOUND):
            code = st.failure.code if st.failure is not TctlFailure.TIMEOUT else "TPD100"
            self.fatal = f"{code}: the auth API cannot be reached: {st.message}"
            self.problems.append(Problem(code, "auth server", st.message))
            log.error("auth unreachable", message=st.message)
        else:
            assert st.failure is not None
            self.problems.append(Problem(st.failure.code, "tctl status", st.message))
        for why in proxy_failure:
            self.problems.append(Problem(why.code, "proxy", why.detail))
            log.error("proxy unreachable", detail=why.detail)

    async def salvage(self) -> None:
        """The auth API is unreachable; Kubernetes may still show why (the auth pod's log)."""
        if self.settings.kube_enabled():
            await self.collect_kube()

    async def collect(self) -> None:
        """Discovery, cluster files and the node fan-out."""
        assert self.archive is not None
        self.counters.phase = "discovery"
        kinds = self.settings.kinds()
        discovery = await discover(self.tctl)
        chosen, dropped = select(discovery.instances, self.settings.nodes,
                                 self.settings.exclude_nodes)
        discovery.instances = chosen
        discovery.excluded = dropped
        self.discovery = discovery
        self.problems.extend(discovery.problems)
        if self.obfuscator is not None:
            await self.learn_identifiers(discovery, chosen)
        for inst in chosen:
            assign_target(inst, self.settings.targets)
            self.results.append(NodeResult(inst))
        reachable = [r for r in self.results if r.instance.target is not None]
        for r in self.results:
            if r.instance.target is None:
                r.status = NodeStatus.SKIPPED
                r.fail("TPD207", "unreachable (no SSH service)",
                       f"services {', '.join(sorted(r.instance.services)) or 'unknown'}: "
                       "run `tpdump node` there or map it in `targets:`")
        self.counters.phase = "nodes"
        self.counters.total = len(reachable)
        self.archive.expect_nodes(len(reachable) + int(self.settings.kube_enabled()))
        self.estimate = estimate(self.settings, len(reachable))
        if self.estimate["notable"] and not self.settings.quiet:
            print(self.estimate["line"], file=sys.stderr, flush=True)
        log.info("estimate", seconds=self.estimate["seconds"], bytes=self.estimate["bytes"])
        queue = iter(reachable)
        workers = max(1, min(self.settings.concurrency, len(reachable)))
        with fanout_gc():
            await self._fan_out(discovery, kinds, queue, workers)

    async def _fan_out(self, discovery: Discovery, kinds: tuple[str, ...],
                       queue: Iterator[NodeResult], workers: int) -> None:
        async with anyio.create_task_group() as tg:
            # Cluster files are written while the first nodes connect (waiting on the
            # network), not before.
            tg.start_soon(self.write_cluster_files, discovery, kinds)
            if self.settings.kube_enabled():
                tg.start_soon(self.collect_kube)
            for _ in range(workers):
                tg.start_soon(self._worker, queue)

    async def learn_identifiers(self, discovery: Discovery, chosen: list[Instance]) -> None:
        """Before any node file is written: node names, UUIDs, the SSH login, the auth and
        proxy host names, and the cluster's users (their kind is fetched first for this)."""
        if "user" in self.settings.kinds() and "user" not in discovery.kind_results:
            results, docs, problems = await fetch_kinds(self.tctl, ["user"])
            discovery.kind_results.update(results)
            discovery.kind_docs.update(docs)
            self.problems.extend(problems)
        for inst in chosen:
            self.learn("host", inst.hostname)
            self.learn("uuid", inst.uuid)
            host = inst.addr.rsplit(":", 1)[0].strip("[]") if inst.addr else ""
            if host and not host[-1:].isdigit() and ":" not in host:
                self.learn("host", host)
        for addr in (self.settings.auth_server, self.settings.proxy):
            host = (addr or "").rsplit(":", 1)[0].strip("[]")
            if host and not host[-1:].isdigit() and ":" not in host:
                self.learn("host", host)
        self.learn("user", self.settings.ssh_user)
        for doc in discovery.kind_docs.get("user", []):
            name = (doc.get("metadata") or {}).get("name")
            if isinstance(name, str):
                self.learn("email" if "@" in name else "user", name)

    async def write_cluster_files(self, discovery: Discovery, kinds: tuple[str, ...]) -> None:
        """The other object kinds (fetched while nodes are collected), then cluster/,
        objects/ and every instance's role files."""
        assert self.archive is not None
        rest = [k for k in kinds if k not in discovery.kind_results]
        results, docs, problems = await fetch_kinds(self.tctl, rest)
        discovery.kind_results.update(results)
        discovery.kind_docs.update(docs)
        self.problems.extend(problems)
        await write_cluster(self.archive, discovery, self.extra, self.redactor)
        self.objects = await write_objects(self.archive, discovery, kinds, self.redactor)
        await self.write_roles()
        # Written: memory stays flat in the number of nodes (ten thousand node objects and
        # their heartbeats are tens of MB as Python objects).
        for inst in discovery.instances:
            inst.records.clear()
        discovery.kind_docs.clear()
        discovery.kind_results = {k: dataclasses.replace(r, stdout=b"")
                                  for k, r in discovery.kind_results.items()}
        release_memory()

    async def write_roles(self) -> None:
        """`role.<service>`: the service's heartbeat/inventory records, redacted."""
        assert self.archive is not None
        for r in self.results:
            inst = r.instance
            for service in sorted(inst.services):
                records = inst.records.get(service) or inst.records.get("inventory") or []
                docs = [self.redactor.document(d) for d in records]
                await self.archive.add(f"{r.dir}/role.{service}", dump_yaml(docs),
                                       source="auth API: heartbeat/inventory record")

    async def _worker(self, queue: Iterator[NodeResult]) -> None:
        for result in queue:
            await self.dump_node(result)
            self.counters.done += 1
            if result.status is not NodeStatus.OK:
                self.counters.failed += 1

    async def dump_node(self, result: NodeResult) -> None:
        """One node under its own deadline; every failure becomes data in `result`."""
        assert self.archive is not None and result.instance.target is not None
        settings = self.settings
        started = time.monotonic()
        result.started_at = time.time()
        result.status = NodeStatus.INTERRUPTED  # until it ends on its own
        bound = structlog.contextvars.bound_contextvars(node=result.instance.name)
        with bound:
            try:
                with anyio.move_on_after(settings.node_timeout) as node_scope:
                    await self._connect_and_collect(result, started)
                if node_scope.cancelled_caught:
                    result.fail("TPD202", "collection timed out",
                                f"the node did not finish within {settings.node_timeout:g} s")
            except Exception as exc:  # the task boundary: a bug in one node's data
                log.exception("node collector crashed")
                leaf = first_leaf(exc) if isinstance(exc, ExceptionGroup) else exc
                result.fail("TPD212", "SSH error", f"internal error: {type(leaf).__name__}: "
                            f"{leaf}")
            else:
                result.status = node_result_status(result)
            finally:
                result.seconds = time.monotonic() - started
            log.info("node done", status=result.status.value, code=result.code,
                     seconds=round(result.seconds, 3))
            if result.status is not NodeStatus.INTERRUPTED:
                # Its node.json is final now: kept compressed (≈ 1 KB) instead of its facts
                # and items (≈ 10 KB of objects), so memory stays flat in N.
                result.rendered = zlib.compress(node_json(result).encode(), 1)
                result.facts = {}
                result.items = []
            self._done += 1
            if self._done % _FANOUT_FULL_EVERY == 0:
                release_memory()

    async def _connect_and_collect(self, result: NodeResult, started: float) -> None:
        assert self.archive is not None and result.instance.target is not None
        settings = self.settings
        conn = None
        jump = None
        with anyio.move_on_after(settings.connect_timeout) as connect_scope:
            try:
                conn, jump = await self.transport.connect(result.instance.target)
            except ProxyError as exc:
                result.fail(exc.failure.code, exc.failure.reason, exc.failure.detail)
                return
            except (asyncssh.Error, OSError) as exc:
                why = classify(exc)
                result.fail(why.code, why.reason, why.detail)
                return
        if connect_scope.cancelled_caught or conn is None:
            why = failure("TPD201", f"no SSH session within {settings.connect_timeout:g} s")
            result.fail(why.code, why.reason, why.detail)
            return
        result.connect_seconds = time.monotonic() - started
        host = SSHHost(conn, settings.sessions_per_node)
        try:
            collector = NodeCollector(host, result, self.archive, self.redactor, settings)
            await collector.collect()
        except (asyncssh.Error, OSError) as exc:
            why = classify(exc)
            result.fail(why.code, why.reason, why.detail)
        except ExceptionGroup as group:
            # A node's parallel items failed together; the first SSH error tells why.
            leaf = first_leaf(group)
            if not isinstance(leaf, asyncssh.Error | OSError):
                raise
            why = classify(leaf)
            result.fail(why.code, why.reason, why.detail)
        finally:
            result.requests = host.requests
            if host.direct:  # asked for on their own: the batch did not answer them
                result.facts["requests_direct"] = host.direct
            host.close()
            conn.close()
            self.transport.release(jump)

# Rough per-node figures for the preflight estimate: seconds of one node's dump (at a
# low round-trip time), and bytes of a node's files before compression besides its logs.
_NODE_SECONDS = {"standard": 1.5, "speed": 0.8, "complete": 3.0, "small": 1.2}
_NODE_FIXED_BYTES = 60_000
_LOG_LINE_BYTES = 180
_COMPRESSION = 0.12
_NOTABLE_SECONDS = 120.0
_NOTABLE_BYTES = 200_000_000


def estimate(settings: Settings, nodes: int) -> dict[str, Any]:
    """How long the run and how big the archive will roughly be, from the profile's
    numbers: said on screen in the first seconds when it is long or big."""
    waves = math.ceil(nodes / max(1, settings.concurrency)) if nodes else 0
    seconds = min(settings.timeout, waves * _NODE_SECONDS.get(settings.profile, 1.5) + 3)
    log_bytes = min(settings.log_bytes, settings.log_lines * _LOG_LINE_BYTES)
    per_node = _NODE_FIXED_BYTES + log_bytes * (2 if settings.journal_json else 1) \
        + (150_000 if settings.metrics else 0)
    size = int(nodes * per_node * _COMPRESSION)
    if settings.max_size:
        size = min(size, settings.max_size)
    notable = seconds > _NOTABLE_SECONDS or size > _NOTABLE_BYTES
    hint = " (--profile speed or small, --nodes, or --max-size make it shorter or smaller)" \
        if notable else ""
    line = (f"estimate: {nodes} nodes at concurrency {settings.concurrency} · about "
            f"{seconds:.0f} s · archive about {size / 1e6:.0f} MB · profile "
            f"{settings.profile}{hint}")
    return {"nodes": nodes, "seconds": round(seconds, 1), "bytes": size, "notable": notable,
            "line": line}


def make_obfuscator(settings: Settings) -> Obfuscator | None:
    """The run's obfuscator (--obfuscate): a key from --obfuscation-key, or a fresh one."""
    if not settings.obfuscate:
        return None
    if settings.obfuscation_key:
        return Obfuscator.from_key_file(settings.obfuscation_key,
                                        uuids=settings.obfuscate_uuids)
    return Obfuscator.random(uuids=settings.obfuscate_uuids)


def node_result_status(result: NodeResult) -> NodeStatus:
    if result.code is None:
        return NodeStatus.OK
    if any(i.status in ("ok", "truncated") for i in result.items):
        return NodeStatus.PARTIAL
    return NodeStatus.FAILED


async def run_cluster(settings: Settings, run_log: RunLog, command: str) -> Outcome:
    return await ClusterRun(settings, run_log, command).run()
