"""Fault soak (issue 9): many `tpdump cluster` runs in a row against one simulated cluster
that mixes every node fault. It proves no crash, no run past its deadlines, the same right
result every time (each healthy node's data, each failed node's reason), and no leaked
processes, file descriptors, threads, asyncio tasks or temporary files.

`make test` runs 20 dumps as subprocesses and 3 in this process. `make soak` runs a longer
one; the environment sets it, every value bounded:
  TPDUMP_SOAK_RUNS          dumps as subprocesses (20; at most 1000)
  TPDUMP_SOAK_IN_PROCESS    dumps in this process (3; at most 200)
  TPDUMP_SOAK_SCALE         multiplies every node group (1; at most 20); the connect and
                            item deadlines grow with it (+1 s a step: more nodes at once)
  TPDUMP_SOAK_NODE_TIMEOUT  --node-timeout of every run (8 s, + 2.5 s a scale step)
  TPDUMP_SOAK_MAX_SECONDS   time limit of the whole soak (240 s; at most 6 h); on an idle
                            2-core machine the default soak takes about 2 minutes
  TPDUMP_SOAK_REPORT        write the figures there as JSON too
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from tests.integration.helpers import (
    Dump,
    find_archive,
    instances,
    peak_rss_kb,
    read_archive,
    rss_kb,
    simulated,
    tpdump_cmd,
)
from tests.integration.test_cluster_sim import FAULT_CODES
from tpdump.config import load_file, resolve
from tpdump.logs import configure
from tpdump.runner import Outcome, run_cluster


def _env(name: str, default: float, low: float, high: float) -> float:
    return max(low, min(high, float(os.environ.get(name, default))))


RUNS = int(_env("TPDUMP_SOAK_RUNS", 20, 1, 1000))
IN_PROCESS = int(_env("TPDUMP_SOAK_IN_PROCESS", 3, 2, 200))
SCALE = int(_env("TPDUMP_SOAK_SCALE", 1, 1, 20))
NODE_TIMEOUT = _env("TPDUMP_SOAK_NODE_TIMEOUT", 8.0 + 2.5 * (SCALE - 1), 2.0, 300.0)
MAX_SECONDS = _env("TPDUMP_SOAK_MAX_SECONDS", 240.0, 30.0, 6 * 3600.0)
REPORT = os.environ.get("TPDUMP_SOAK_REPORT")

# A healthy node's dump ends long before the node deadline: that deadline and the connect
# one cost time only when a node is slow to answer (a busy machine makes healthy ones so).
# The item deadline is what a hanging node costs (about twice), and so each run.
CONNECT_TIMEOUT = 3.0 + (SCALE - 1)
ITEM_TIMEOUT = 1.5 + (SCALE - 1)
PREFLIGHT_TIMEOUT = 3.0
RUN_TIMEOUT = max(30.0, 3 * NODE_TIMEOUT)
MAX_OUTPUT = 256 * 1024
# Around the node deadline a run also starts Python, runs the preflight and discovery and
# finishes the archive; every node runs at once (concurrency >= nodes), so a run that
# takes longer than this has waited somewhere without a deadline.
MARGIN = 5.0
# A run still going this long after it started is hung: it is killed and reported.
KILL_AFTER = RUN_TIMEOUT + 15.0
# How long the simulator gets to close a finished run's connections before it is counted.
SETTLE = 3.0
LOG_LINES = 200

NODE_FAULTS = ("refused", "blackhole", "slow", "hang", "flood", "auth_denied", "drop_mid",
               "bad_hostkey", "garbage")
# Reachable nodes whose fault is in their data, not their connection: collected whole.
COLLECTED_FAULTS = ("none", "slow", "garbage")
assert set(NODE_FAULTS) == set(FAULT_CODES) | {"slow", "garbage"}

HEALTHY_FILES = ("node.json", "teleport.yaml", "cmdline", "version.txt", "host/hostname",
                 "host/os-release", "proc/sqlite.sql")
LOG_FILES = {"systemd": ("teleport.service/log.txt", "teleport.service/log.json",
                         "teleport.service/teleport.service"),
             "plain": ("logs/teleport.log",)}
INTERNAL_ERRORS = ("TPD212", "TPD502")  # a collector crashed instead of failing cleanly
MARK_VAR = "TPDUMP_SOAK_MARK"

pytestmark = [pytest.mark.soak, pytest.mark.timeout(MAX_SECONDS + 120)]


def soak_scenario() -> dict[str, Any]:
    """Healthy systemd and plain-init groups, SCALE nodes of every node fault, Kubernetes."""
    groups: list[dict[str, Any]] = [
        {"name": "auth", "count": 1, "services": ["auth"]},
        {"name": "proxy", "count": 1, "services": ["proxy"]},
        {"name": "web", "count": 6 * SCALE, "services": ["node"], "init": "systemd",
         "log_lines": LOG_LINES},
        {"name": "db", "count": 3 * SCALE, "services": ["node", "db"], "init": "plain",
         "log_lines": LOG_LINES},
    ]
    for fault in NODE_FAULTS:
        group: dict[str, Any] = {"name": fault.replace("_", ""), "count": SCALE,
                                 "services": ["node"], "fault": fault, "log_lines": LOG_LINES}
        if fault == "slow":
            group["delay_s"] = 0.05
        groups.append(group)
    return {"cluster_name": "soak.example.com", "teleport_version": "17.4.2", "seed": 9,
            "auth": {"fault": "none"}, "groups": groups, "secrets": {"plant": True},
            "kube": {"enabled": True, "namespaces": ["teleport-cluster"], "pods": 2}}


def concurrency() -> int:
    """Every reachable node at once, so that one run lasts one node deadline at most."""
    return 9 * SCALE + len(NODE_FAULTS) * SCALE


def deadline_flags() -> list[str]:
    return ["--connect-timeout", f"{CONNECT_TIMEOUT:g}", "--node-timeout", f"{NODE_TIMEOUT:g}",
            "--item-timeout", f"{ITEM_TIMEOUT:g}", "--preflight-timeout",
            f"{PREFLIGHT_TIMEOUT:g}", "--timeout", f"{RUN_TIMEOUT:g}", "--max-output",
            str(MAX_OUTPUT), "--concurrency", str(concurrency())]


def deadline_settings() -> dict[str, Any]:
    return {"connect_timeout": CONNECT_TIMEOUT, "node_timeout": NODE_TIMEOUT,
            "item_timeout": ITEM_TIMEOUT, "preflight_timeout": PREFLIGHT_TIMEOUT,
            "timeout": RUN_TIMEOUT, "max_output": MAX_OUTPUT, "concurrency": concurrency()}


# --- /proc -------------------------------------------------------------------------------
def process_table() -> dict[int, int]:
    """pid -> ppid of every process."""
    table: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:  # it ended while we looked
                continue
            table[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def descendants(root: int) -> set[int]:
    """Every process whose parent chain leads to `root`."""
    children: dict[int, list[int]] = {}
    for pid, ppid in process_table().items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def marked(mark: str) -> list[str]:
    """Live processes whose environment carries the soak's mark: anything a tpdump run
    started (tctl, its shell) and that outlived it, even after being re-parented."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                environ = Path(f"/proc/{name}/environ").read_bytes()
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{name}: {argv}")
    return found


def fd_count(pid: int | str) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads: line for {pid}")


def settle(pid: int, fds: int, threads: int, seconds: float) -> tuple[int, int, int]:
    """(fds, threads, child processes) of the simulator once at most (fds, threads, 0), or
    whatever they are after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        now = (fd_count(pid), thread_count(pid), len(descendants(pid)))
        if (now[0] <= fds and now[1] <= threads and not now[2]) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


# --- the soak ------------------------------------------------------------------------------
@dataclass
class Record:
    """One dump of the soak and what was measured around it."""

    index: int
    mode: str  # subprocess | in-process
    seconds: float
    exit_code: int
    killed: bool = False
    peak_rss_kb: int | None = None
    sim_fds: int = 0
    sim_threads: int = 0
    sim_children: int = 0
    sim_rss_kb: int = 0  # the simulator's resident set (figures only)
    rss_kb: int = 0  # this test process's resident set after an in-process run (figures)
    fds: int = 0  # of this test process
    threads: int = 0


@dataclass
class Soak:
    """The shared simulator, the soak's time limit, and every finding by kind."""

    state: Path
    tmp: Path
    sim_pid: int
    insts: list[dict[str, Any]]
    limit: float  # monotonic clock value the soak must end by
    baseline_children: set[int]
    sim_before: tuple[int, int]  # fds, threads
    records: list[Record] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # a result not as the faults say
    slow: list[str] = field(default_factory=list)  # a run past its deadlines, or killed
    leaks: list[str] = field(default_factory=list)  # processes, temporary or partial files
    sim_leaks: list[str] = field(default_factory=list)  # the simulator's fds and threads
    inproc_leaks: list[str] = field(default_factory=list)  # fds, threads, tasks in-process
    # exceptions of tasks nobody awaited (asyncssh's SFTP block readers when a read is cut
    # short): noted, not failed on; they end with the node's connection
    unretrieved: list[str] = field(default_factory=list)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)  # first run, per fault
    sim_after: tuple[int, int, int] = (0, 0, 0)
    inproc_baseline: tuple[int, int] = (0, 0)

    def has_time_for_a_run(self) -> bool:
        return time.monotonic() + NODE_TIMEOUT + MARGIN < self.limit


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    """One simulated cluster for the whole soak; the soak's clock starts with it."""
    tmp = tmp_path_factory.mktemp("soak")
    started = time.monotonic()
    with simulated(tmp / "sim", soak_scenario()) as state:
        pid = int((state / "sim.pid").read_text())
        sim_before = (fd_count(pid), thread_count(pid))
        soak = Soak(state=state, tmp=tmp, sim_pid=pid, insts=instances(state),
                    limit=started + MAX_SECONDS, baseline_children=descendants(os.getpid()),
                    sim_before=sim_before)
        yield soak
        figures = report_figures(soak)
        print("\n" + figures)
        if REPORT:
            Path(REPORT).write_text(json.dumps(figures_json(soak), indent=1) + "\n")


def check_dump(soak: Soak, exit_code: int, files: dict[str, bytes],
               record_faults: bool = False) -> None:
    """Raise AssertionError naming the first way this dump is not what its faults say."""
    assert exit_code == 1, f"exit code {exit_code}, expected 1 (incomplete)"
    report = json.loads(files["report.json"])
    assert report["verdict"] == "INCOMPLETE"
    assert not report["interrupted"] and not report["deadline_reached"] and not report["fatal"]
    by_uuid = {n["uuid"]: n for n in report["node_results"]}
    assert set(by_uuid) == {i["uuid"] for i in soak.insts}, "instances missing from report"
    problems = {p["code"]: p for p in report["problems"]}
    expected_codes = {*FAULT_CODES.values(), "TPD207"}
    assert set(problems) == expected_codes, f"problems {sorted(problems)}"
    for inst in soak.insts:
        node = by_uuid[inst["uuid"]]
        name, base, fault = inst["hostname"], node["dir"], inst["fault"]
        items = json.loads(files[f"{base}/node.json"]).get("items", [])
        not_ok = [(i["name"], i["status"], i.get("message")) for i in items
                  if i["status"] != "ok"]
        seen = f"{name} ({fault}): {node['status']} {node['code']} {node['reason']}; {not_ok}"
        assert f"{base}/node.json" in files, name
        for service in inst["services"]:
            assert f"{base}/role.{service}" in files, (name, service)
        kept = sorted(p[len(base) + 1:] for p in files if p.startswith(base + "/"))
        if record_faults and fault != "none" and fault not in soak.faults:
            meta = json.loads(files[f"{base}/node.json"])
            soak.faults[fault] = {"status": node["status"], "code": node["code"],
                                  "reason": node["reason"], "kept": kept,
                                  "seconds": node["seconds"],
                                  "config_error": (meta.get("facts") or {}).get("config_error")}
        if "node" not in inst["services"]:
            assert node["status"] == "skipped" and node["code"] == "TPD207", seen
        elif fault in FAULT_CODES:
            code = FAULT_CODES[fault]
            assert node["code"] == code, seen
            assert node["status"] in ("failed", "partial"), seen
            assert code.encode() in files[f"{base}/error.txt"], name
            assert name in problems[code]["targets"] or \
                len(problems[code]["targets"]) < problems[code]["count"], (name, code)
            if fault == "bad_hostkey":  # an untrusted host gives nothing at all
                assert "teleport.yaml" not in kept and "cmdline" not in kept, (name, kept)
        else:
            assert fault in COLLECTED_FAULTS, fault
            assert node["status"] == "ok", seen
            missing = [f for f in (*HEALTHY_FILES, *LOG_FILES[inst["init"]])
                       if f"{base}/{f}" not in files]
            assert not missing, (name, fault, missing)
            assert files[f"{base}/version.txt"].startswith(b"Teleport v17.4.2"), name
            assert files[f"{base}/cmdline"].split(b"\0")[1] == b"start", name
            if fault == "garbage":  # malformed config kept as it is, and said so
                meta = json.loads(files[f"{base}/node.json"])
                assert meta["facts"].get("config_error"), (name, meta["facts"])
    for code, count in ((c, sum(i["fault"] == f for i in soak.insts))
                        for f, c in FAULT_CODES.items()):
        assert problems[code]["count"] == count, (code, problems[code]["count"], count)
    assert not set(INTERNAL_ERRORS) & set(problems), "a collector crashed"
    assert report["kube"] and report["kube"]["error"] is None, report["kube"]
    assert report["kube"]["logs"] >= 1 and "kube/kubectl_get_pods.yaml" in files
    assert "objects/tctl_get_role.yaml" in files and "cluster/status.json" in files
    text = files["report.txt"].decode()
    assert "INCOMPLETE" in text and all(code in text for code in expected_codes)


def run_measured(state: Path, out: Path, logs: Path, tmpdir: Path, mark: str) -> Dump:
    """`tpdump cluster` as a subprocess with TMPDIR and the mark set, its peak RSS polled
    every 20 ms, killed (and said so by returncode -9) after KILL_AFTER seconds."""
    out.mkdir(parents=True)
    env = {**os.environ, "CI": "true", "TMPDIR": str(tmpdir), MARK_VAR: mark}
    argv = tpdump_cmd("cluster", "--config", str(state / "tpdump.yaml"), "-o", f"{out}/", "-q",
                      *deadline_flags())
    with open(logs / "stdout", "w+b") as so, open(logs / "stderr", "w+b") as se:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=env)
        peak = 0
        while True:
            peak = max(peak, peak_rss_kb(proc.pid))
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > KILL_AFTER:
                proc.kill()
                pid, status = os.waitpid(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read().decode(errors="replace"), se.read().decode(errors="replace")
    archive = find_archive(out)
    return Dump(proc.returncode, stdout, stderr, seconds, archive,
                read_archive(archive) if archive else {}, peak_rss_kb=peak)


def kube_credential_cache() -> set[str]:
    """The files kubernetes_asyncio wrote the kubeconfig's *-data fields to: it keeps them,
    one per distinct content, until the process exits (an atexit hook removes them)."""
    from kubernetes_asyncio.config import kube_config

    return {Path(p).name for p in kube_config._temp_files.values()}


def leftovers(soak: Soak, out: Path, tmpdir: Path, mark: str | None) -> list[str]:
    """What a finished run left behind: processes, temporary files, partial archives. A
    subprocess must leave TMPDIR empty; in this process kubernetes_asyncio's credential
    cache (bounded, removed at exit) is allowed to stay, and nothing else."""
    found = []
    # The simulator's own children (journalctl, systemd-journal-remote) are its business:
    # they are counted against it, in sim_leftovers().
    extra = (descendants(os.getpid()) - soak.baseline_children - {soak.sim_pid}
             - descendants(soak.sim_pid))
    if extra:
        found.append(f"processes left below the test: {sorted(extra)}")
    if mark is not None and (stray := marked(mark)):
        found.append(f"processes a tpdump run started are alive: {stray}")
    allowed = kube_credential_cache() if mark is None else set()
    if left := sorted(p.name for p in tmpdir.iterdir() if p.name not in allowed):
        found.append(f"temporary files left in TMPDIR: {left}")
    if partial := sorted(p.name for p in out.glob("*.partial")):
        found.append(f".partial files left: {partial}")
    if len(list(out.glob("*.tar.gz"))) != 1:
        found.append(f"not exactly one archive: {sorted(p.name for p in out.iterdir())}")
    return found


@pytest.fixture(scope="module")
def soak(sim: Soak) -> Soak:
    """RUNS dumps as subprocesses in a row, each checked and measured as it ends."""
    mark = uuid.uuid4().hex
    tmpdir = sim.tmp / "tmpdir"
    tmpdir.mkdir()
    # The simulator answers some calls through asyncio's default thread pool, which grows
    # lazily up to its max_workers and then stays: threads up to that are not a leak.
    fd_base = sim.sim_before[0]
    thread_cap = sim.sim_before[1] + min(32, (os.cpu_count() or 1) + 4)
    for index in range(1, RUNS + 1):
        if not sim.has_time_for_a_run():
            sim.slow.append(f"time limit {MAX_SECONDS:g} s reached after {index - 1} of "
                            f"{RUNS} runs")
            break
        run_dir = sim.tmp / "runs" / f"{index:04d}"
        run_dir.mkdir(parents=True)
        dump = run_measured(sim.state, run_dir / "out", run_dir, tmpdir, mark)
        killed = dump.returncode == -9
        sim_now = settle(sim.sim_pid, fd_base, thread_cap, SETTLE)
        sim.records.append(Record(index, "subprocess", dump.seconds, dump.returncode, killed,
                                  dump.peak_rss_kb, *sim_now, fds=fd_count("self"),
                                  threads=threading.active_count(),
                                  sim_rss_kb=rss_kb(sim.sim_pid)))
        if killed:
            sim.slow.append(f"run {index}: killed after {KILL_AFTER:g} s (hung)")
        elif dump.seconds > NODE_TIMEOUT + MARGIN:
            sim.slow.append(f"run {index}: {dump.seconds:.1f} s > node deadline "
                            f"{NODE_TIMEOUT:g} s + {MARGIN:g} s")
        try:
            assert dump.files, f"no archive; stderr: {dump.stderr[-2000:]}"
            # -q: stderr stays empty; a traceback there is a crash even if the run went on
            assert "Traceback" not in dump.stderr, dump.stderr[-2000:]
            check_dump(sim, dump.returncode, dump.files, record_faults=index == 1)
        except AssertionError as exc:
            sim.wrong.append(f"run {index}: {exc}")
        sim.leaks.extend(f"run {index}: {what}"
                         for what in leftovers(sim, run_dir / "out", tmpdir, mark))
        if sim_now[0] > fd_base or sim_now[1] > thread_cap or sim_now[2]:
            sim.sim_leaks.append(f"run {index}: simulator fds/threads/children {sim_now} "
                                 f"after {SETTLE:g} s; at most ({fd_base}, {thread_cap}, 0)")
        if index < RUNS:  # bounded disk: only the last run's archive is kept
            shutil.rmtree(run_dir)
    sim.sim_after = settle(sim.sim_pid, fd_base, thread_cap, SETTLE)
    return sim


def dump_in_process(state: Path, out: Path,
                    unretrieved: list[str]) -> tuple[Outcome, list[str]]:
    """What `tpdump cluster` does, in this process; with the asyncio tasks still pending
    when run_cluster returned (there must be none). What the loop's exception handler is
    given (a task's exception nobody retrieved) is appended to `unretrieved`."""
    settings = resolve(load_file(str(state / "tpdump.yaml")),
                       {"output": f"{out}/", "quiet": True, **deadline_settings()})
    run_log = configure(verbose=False, quiet=True, fmt="json")

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unretrieved.append(f"{context.get('message')}: {context.get('future')!r:.200}")

    async def dump() -> tuple[Outcome, list[str]]:
        asyncio.get_running_loop().set_exception_handler(handler)
        outcome = await run_cluster(settings, run_log, "tpdump cluster (soak, in-process)")
        me = asyncio.current_task()
        pending = [repr(t) for t in asyncio.all_tasks() if t is not me and not t.done()]
        return outcome, pending

    return anyio.run(dump)


def in_process_counts(baseline: tuple[int, int]) -> tuple[int, int]:
    """(fds, threads) of this process once back at `baseline`, or after SETTLE seconds."""
    deadline = time.monotonic() + SETTLE
    while True:
        gc.collect()
        now = (fd_count("self"), threading.active_count())
        if (now[0] <= baseline[0] and now[1] <= baseline[1]) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


@pytest.fixture(scope="module")
def in_process(soak: Soak) -> Soak:
    """IN_PROCESS dumps in this process (the first one warms imports and caches up)."""
    out_root = soak.tmp / "inproc"
    tmpdir = soak.tmp / "inproc-tmp"
    tmpdir.mkdir()
    saved_log = structlog.get_config()
    saved_tmp = tempfile.tempdir
    tempfile.tempdir = str(tmpdir)  # what TMPDIR is for the subprocesses
    try:
        baseline = (fd_count("self"), threading.active_count())
        for index in range(1, IN_PROCESS + 1):
            if not soak.has_time_for_a_run():
                soak.slow.append(f"time limit {MAX_SECONDS:g} s reached after {index - 1} of "
                                 f"{IN_PROCESS} in-process runs")
                break
            out = out_root / f"{index:04d}"
            started = time.monotonic()
            outcome, pending = dump_in_process(soak.state, out, soak.unretrieved)
            seconds = time.monotonic() - started
            now = in_process_counts(baseline)
            if index == 1:
                baseline = now
                soak.inproc_baseline = now
            soak.records.append(Record(index, "in-process", seconds, int(outcome.exit_code),
                                       fds=now[0], threads=now[1],
                                       sim_fds=fd_count(soak.sim_pid),
                                       sim_threads=thread_count(soak.sim_pid),
                                       rss_kb=rss_kb(os.getpid())))
            if pending:
                soak.inproc_leaks.append(f"in-process run {index}: tasks still pending: "
                                         f"{pending}")
            gc.collect()  # an unclosed aiohttp session or transport says so when collected
            soak.inproc_leaks.extend(f"in-process run {index}: {note}"
                                     for note in soak.unretrieved if "nclosed" in note)
            soak.unretrieved[:] = [n for n in soak.unretrieved if "nclosed" not in n]
            if index > 1 and now != baseline:
                soak.inproc_leaks.append(f"in-process run {index}: fds/threads {now}, "
                                         f"baseline {baseline}")
            if seconds > NODE_TIMEOUT + MARGIN:
                soak.slow.append(f"in-process run {index}: {seconds:.1f} s")
            try:
                assert outcome.archive is not None and outcome.archive.exists()
                check_dump(soak, int(outcome.exit_code), read_archive(outcome.archive))
            except AssertionError as exc:
                soak.wrong.append(f"in-process run {index}: {exc}")
            soak.leaks.extend(f"in-process run {index}: {what}"
                              for what in leftovers(soak, out, tmpdir, None))
            shutil.rmtree(out)
    finally:
        tempfile.tempdir = saved_tmp
        structlog.configure(**saved_log)
    return soak


# --- the findings, one kind per test ---------------------------------------------------------
def test_every_dump_keeps_healthy_nodes_and_names_each_fault(soak: Soak) -> None:
    """Every run exits 1 with every healthy node ok and its files, and every faulty node
    failed with the code of its fault, listed in the report."""
    runs = [r for r in soak.records if r.mode == "subprocess"]
    assert len(runs) == RUNS, soak.slow
    assert not soak.wrong, "\n".join(soak.wrong[:10])
    assert set(soak.faults) == set(NODE_FAULTS)


def test_no_run_crashes_or_outlives_its_deadlines(in_process: Soak) -> None:
    """No run is killed, every run ends within the node deadline plus a fixed margin, and
    the soak ends within its time limit."""
    assert not in_process.slow, "\n".join(in_process.slow[:10])
    assert all(r.exit_code == 1 for r in in_process.records)


def test_no_leaked_processes_temporary_or_partial_files(in_process: Soak) -> None:
    """No process a run started outlives it, TMPDIR stays empty and no .partial remains."""
    assert not in_process.leaks, "\n".join(in_process.leaks[:10])


def test_simulator_fds_and_threads_return_to_baseline(soak: Soak) -> None:
    """The simulator's SSH, auth and Kubernetes servers close what each run opened."""
    assert not soak.sim_leaks, "\n".join(soak.sim_leaks[:10])


def test_in_process_runs_release_fds_threads_and_tasks(in_process: Soak) -> None:
    """Run in this process, every dump leaves the fd count and thread count where they
    were and no asyncio task pending."""
    runs = [r for r in in_process.records if r.mode == "in-process"]
    assert len(runs) == IN_PROCESS
    assert not in_process.inproc_leaks, "\n".join(in_process.inproc_leaks[:10])
    assert not in_process.wrong, "\n".join(in_process.wrong[:10])


def test_figures_are_recorded(in_process: Soak) -> None:
    """Every subprocess run has its wall time and peak RSS measured."""
    runs = [r for r in in_process.records if r.mode == "subprocess"]
    assert runs and all(r.peak_rss_kb and r.peak_rss_kb > 10_000 for r in runs)
    assert "wall" in report_figures(in_process)


# --- figures ---------------------------------------------------------------------------------
def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def figures_json(soak: Soak) -> dict[str, Any]:
    return {"runs": RUNS, "in_process": IN_PROCESS, "scale": SCALE,
            "instances": len(soak.insts), "node_timeout": NODE_TIMEOUT,
            "connect_timeout": CONNECT_TIMEOUT, "item_timeout": ITEM_TIMEOUT,
            "sim_before": soak.sim_before, "sim_after": soak.sim_after,
            "inproc_baseline": soak.inproc_baseline,
            "records": [asdict(r) for r in soak.records], "faults": soak.faults,
            "findings": {"wrong": soak.wrong, "slow": soak.slow, "leaks": soak.leaks,
                         "sim_leaks": soak.sim_leaks, "inproc_leaks": soak.inproc_leaks,
                         "unretrieved": soak.unretrieved}}


def report_figures(soak: Soak) -> str:
    """The soak's figures as a few lines of text."""
    sub = [r for r in soak.records if r.mode == "subprocess"]
    inp = [r for r in soak.records if r.mode == "in-process"]
    rss = [r.peak_rss_kb / 1024 for r in sub if r.peak_rss_kb]
    lines = [
        f"soak: {len(sub)} subprocess + {len(inp)} in-process dumps of {len(soak.insts)} "
        f"instances (scale {SCALE}; deadlines connect {CONNECT_TIMEOUT:g} s, item "
        f"{ITEM_TIMEOUT:g} s, node {NODE_TIMEOUT:g} s)",
        f"  wall s min/median/max: subprocess {_spread([r.seconds for r in sub])}, "
        f"in-process {_spread([r.seconds for r in inp])}",
        f"  tpdump peak RSS MiB min/median/max: {_spread(rss)}; simulator RSS MiB after run "
        f"1 / the last: " + (f"{sub[0].sim_rss_kb / 1024:.0f} / {sub[-1].sim_rss_kb / 1024:.0f}"
                             if sub else "-"),
        f"  simulator fds/threads: before {soak.sim_before}, after run 1 "
        f"{(sub[0].sim_fds, sub[0].sim_threads) if sub else '-'}, after the last (with "
        f"children) {soak.sim_after}; max {max((r.sim_fds for r in sub), default=0)} fds, "
        f"{max((r.sim_threads for r in sub), default=0)} threads",
        f"  in-process fds/threads after warm-up {soak.inproc_baseline}, after each: "
        f"{sorted({(r.fds, r.threads) for r in inp})}; RSS MiB after each: "
        f"{[round(r.rss_kb / 1024) for r in inp]}",
    ]
    for fault, seen in sorted(soak.faults.items()):
        lines.append(f"  {fault}: {seen['status']} {seen['code'] or ''} {seen['reason'] or ''}"
                     f" ({seen['seconds']} s) kept {', '.join(seen['kept'])}")
    for kind in ("wrong", "slow", "leaks", "sim_leaks", "inproc_leaks", "unretrieved"):
        found = getattr(soak, kind)
        lines.append(f"  {kind}: {len(found)}" + (f" — first: {found[0]}" if found else ""))
    return "\n".join(lines)
