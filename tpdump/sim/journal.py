"""The journal of each simulated systemd node, made and read by the real systemd tools.

A node's teleport log lines become Journal Export Format entries, piped through
`systemd-journal-remote --output=<dir>/<uuid>.journal -` the first time the node's journal is
asked for; `journalctl ...` on the node is answered by the real
`journalctl --file=<that file> ...` with the same arguments (read-only options only).
Built files are kept in a bounded LRU (deleted on eviction, rebuilt identically later: the
end time of each node's log is remembered).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

from tpdump.sim.cluster import SimCluster, SimNode
from tpdump.sim.logs import log_rows
from tpdump.sim.systemctl import boot_time, process_start

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
MAX_FILES = 64  # journald preallocates 8 MiB per file: at most 512 MiB on disk
BUILDS_AT_ONCE = 4
READS_AT_ONCE = 8
READ_TIMEOUT_S = 30.0
BUILD_TIMEOUT_S = 60.0
MSG_UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"  # SD_MESSAGE_UNIT_STARTED
SYSLOG_PRIORITY = {"error": 3, "warn": 4, "info": 6, "debug": 7}

# journalctl options that only read (value-taking ones need their value).
_FLAGS = {"--no-pager", "-q", "--quiet", "-r", "--reverse", "-a", "--all", "--utc",
          "--no-hostname", "-x", "--catalog", "--no-full", "--full", "-l", "-e",
          "--pager-end", "--no-tail", "--show-cursor", "-m", "--merge", "-k", "--dmesg",
          "--case-sensitive"}
_VALUED = {"-u", "--unit", "--user-unit", "-t", "--identifier", "-p", "--priority", "-o",
           "--output", "-S", "--since", "-U", "--until", "-g", "--grep", "--output-fields",
           "-c", "--cursor", "--after-cursor", "--facility"}
_OPTIONAL = {"-n", "--lines", "-b", "--boot"}


def _exists(path: Path) -> bool:
    return path.exists()


class JournalError(Exception):
    """A journal could not be made (tool missing, failed or too slow)."""


def _hex(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _field(name: str, value: bytes) -> bytes:
    """One field in Journal Export Format (binary form when the text form cannot hold it)."""
    text_ok = _CONTROL.search(value) is None
    if text_ok and not value.isascii():
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            text_ok = False
    if text_ok:
        return name.encode() + b"=" + value + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


def check_args(args: list[str]) -> str | None:
    """Why these journalctl arguments are refused (None: they only read)."""
    i = 0
    while i < len(args):
        a = args[i]
        name = a.split("=", 1)[0] if a.startswith("--") else a
        if name in _FLAGS or name in _OPTIONAL:
            i += 1
            continue
        if name in _VALUED:
            i += 1 if "=" in a else 2
            continue
        if a.startswith("-") and len(a) > 2 and not a.startswith("--") and a[:2] in _VALUED:
            i += 1  # -uVALUE
            continue
        if not a.startswith("-") and "=" in a:
            i += 1  # FIELD=VALUE match
            continue
        if not a.startswith("-") and a.isdigit():
            i += 1  # the value of `-n N`
            continue
        return f"option {a!r} is not simulated (read-only options only)"
    return None


class JournalStore:
    """Journal files of the cluster's systemd nodes, built on demand."""

    def __init__(self, cluster: SimCluster, directory: Path, max_files: int = MAX_FILES) -> None:
        self.cluster = cluster
        self.dir = directory
        self.max_files = max_files
        self.built: collections.OrderedDict[int, Path] = collections.OrderedDict()
        self.ends: dict[int, float] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.in_use: collections.Counter[int] = collections.Counter()
        self._builds: asyncio.Semaphore | None = None
        self._reads: asyncio.Semaphore | None = None
        self.tool = JOURNAL_REMOTE if os.path.exists(JOURNAL_REMOTE) else (
            shutil.which("systemd-journal-remote") or JOURNAL_REMOTE)
        if directory.is_dir():  # journals of an earlier run with this state directory
            for old in directory.glob("*.journal"):
                old.unlink(missing_ok=True)

    # --- content -----------------------------------------------------------------

    def entries(self, node: SimNode, end: float) -> bytes:
        """The node's journal in Journal Export Format (teleport lines ending at `end`)."""
        assert node.model is not None
        unit = node.model.main_unit or "teleport.service"
        boot_id = _hex("boot", self.cluster.scenario.seed, node.uuid)
        invocation = _hex("invocation", node.uuid)
        boot_us = int(boot_time(node, self.cluster) * 1_000_000)
        tss, levels, raws = log_rows(node, end, self.cluster.scenario.seed,
                                     self.cluster.scenario.cluster_name,
                                     self.cluster.proxy_addr[0])
        syslog = node.config.log_output == "syslog"
        common = [("_BOOT_ID", boot_id), ("_MACHINE_ID", _hex("machine", node.uuid)),
                  ("_HOSTNAME", node.hostname)]
        out = bytearray()

        def stamps(ts: float) -> bytes:
            usec = int(ts * 1_000_000)
            return b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n" % (
                usec, max(1, usec - boot_us))

        def block(fields: list[tuple[str, str]]) -> bytes:
            return b"".join(_field(k, v.encode("utf-8", "surrogateescape"))
                            for k, v in fields)

        started = process_start(node, self.cluster)
        if tss:
            started = min(started, tss[0] - 1.0)
        out += stamps(started) + block([
            *common, ("_TRANSPORT", "journal"), ("PRIORITY", "6"), ("SYSLOG_FACILITY", "3"),
            ("SYSLOG_IDENTIFIER", "systemd"), ("_PID", "1"), ("_UID", "0"), ("_GID", "0"),
            ("_COMM", "systemd"), ("_EXE", "/usr/lib/systemd/systemd"),
            ("_CMDLINE", "/sbin/init"), ("_SYSTEMD_CGROUP", "/init.scope"),
            ("_SYSTEMD_UNIT", "init.scope"), ("_SYSTEMD_SLICE", "-.slice"),
            ("MESSAGE_ID", MSG_UNIT_STARTED), ("UNIT", unit), ("INVOCATION_ID", invocation),
            ("JOB_TYPE", "start"), ("JOB_RESULT", "done"),
            ("MESSAGE", f"Started {unit} - {self._description(node, unit)}.")]) + b"\n"
        # the fields every teleport line shares, encoded once
        const = block([
            *common, ("_TRANSPORT", "syslog" if syslog else "stdout"), ("SYSLOG_FACILITY", "3"),
            ("SYSLOG_IDENTIFIER", "teleport"), ("_PID", str(node.pid)), ("_UID", "0"),
            ("_GID", "0"), ("_COMM", "teleport"), ("_EXE", node.argv[0]),
            ("_CMDLINE", " ".join(node.argv)), ("_CAP_EFFECTIVE", "1ffffffffff"),
            ("_SYSTEMD_CGROUP", f"/system.slice/{unit}"), ("_SYSTEMD_UNIT", unit),
            ("_SYSTEMD_SLICE", "system.slice"), ("_SYSTEMD_INVOCATION_ID", invocation),
            *([] if syslog else [("_STREAM_ID", _hex("stream", node.uuid))])])
        prio = {level: b"PRIORITY=%d\n" % (p if syslog else 6)
                for level, p in SYSLOG_PRIORITY.items()}
        control = _CONTROL.search
        mids = {level: const + p for level, p in prio.items()}
        default_mid = const + b"PRIORITY=6\n"
        for ts, level, raw in zip(tss, levels, raws, strict=True):
            # stamps() and _field() inline: this runs for every line of every journal
            usec = int((ts + 0.0003) * 1_000_000)
            msg = raw.rstrip(b"\n")
            if control(msg) is None and msg.isascii():
                field = b"MESSAGE=" + msg + b"\n"
            else:
                field = _field("MESSAGE", msg)
            out += b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n%b%b\n" % (
                usec, max(1, usec - boot_us), mids.get(level, default_mid), field)
        return bytes(out)

    @staticmethod
    def _description(node: SimNode, unit: str) -> str:
        assert node.model is not None
        u = node.model.units.get(unit)
        return u.description if u is not None else "Teleport Service"

    # --- files ---------------------------------------------------------------------

    async def path(self, node: SimNode, now: float) -> Path:
        """The node's journal file, built on first use (end of the log = that moment)."""
        idx = node.inst.index
        if self._builds is None:
            self._builds = asyncio.Semaphore(BUILDS_AT_ONCE)
        lock = self.locks.setdefault(idx, asyncio.Lock())
        async with lock:
            if idx in self.built:
                self.built.move_to_end(idx)
                return self.built[idx]
            end = self.ends.setdefault(idx, now)
            # tens of ms of pure Python for long logs: off the event loop, and into a file
            # that journal-remote reads as its stdin (a pipe costs the event loop a
            # write and a copy of the rest per 64 KiB)
            self.dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.dir) as export:
                await asyncio.to_thread(self._write_entries, export, node, end)
                target = self._fresh_target(node)
                async with self._builds:
                    await self._run_remote(export, target)
            self.built[idx] = target
            self._evict()
            return target

    def _write_entries(self, f: BinaryIO, node: SimNode, end: float) -> None:
        """The node's entries into `f`, left at its start."""
        f.write(self.entries(node, end))
        f.flush()
        f.seek(0)

    def _fresh_target(self, node: SimNode) -> Path:
        """Where the node's journal goes (journal-remote appends to an existing file)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / f"{node.uuid}.journal"
        target.unlink(missing_ok=True)
        return target

    async def _run_remote(self, export: BinaryIO, target: Path) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.tool, f"--output={target}", "-", stdin=export,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise JournalError(f"cannot run {self.tool}: {exc.strerror}") from exc
        try:
            _, err = await asyncio.wait_for(proc.communicate(), BUILD_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise JournalError(f"{self.tool} did not finish in {BUILD_TIMEOUT_S:g} s") from None
        if proc.returncode != 0 or not _exists(target):
            raise JournalError(f"{self.tool} failed ({proc.returncode}): "
                               f"{err.decode('utf-8', 'replace').strip()[-300:]}")

    def _evict(self) -> None:
        for idx in list(self.built):
            if len(self.built) <= self.max_files:
                break
            if self.in_use[idx]:
                continue
            path = self.built.pop(idx)
            path.unlink(missing_ok=True)

    # --- journalctl ------------------------------------------------------------------

    async def journalctl(self, node: SimNode, args: list[str],
                         now: float) -> tuple[bytes, bytes, int]:
        """Run the real journalctl on the node's journal: (stdout, stderr, exit status)."""
        why = check_args(args)
        if why is not None:
            return b"", f"journalctl: {why} (tpdump sim)\n".encode(), 1
        try:
            path = await self.path(node, now)
        except JournalError as exc:
            return b"", f"journalctl: tpdump sim: {exc}\n".encode(), 1
        if self._reads is None:
            self._reads = asyncio.Semaphore(READS_AT_ONCE)
        idx = node.inst.index
        self.in_use[idx] += 1
        try:
            async with self._reads:
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC",
                       "LC_ALL": "C.UTF-8", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat",
                       "PAGER": "cat"}
                # stdout into an unnamed file read once at the end: a pipe is read 64 KiB
                # at a time, each read a fresh 256 KiB buffer (asyncio's max_size)
                with tempfile.TemporaryFile(dir=self.dir) as stdout:
                    proc = await asyncio.create_subprocess_exec(
                        "journalctl", f"--file={path}", *args,
                        stdin=asyncio.subprocess.DEVNULL, stdout=stdout,
                        stderr=asyncio.subprocess.PIPE, env=env)
                    try:
                        _, err = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT_S)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
                        return b"", b"journalctl: timed out (tpdump sim)\n", 1
                    stdout.seek(0)
                    out = stdout.read()
                return out, err, proc.returncode or 0
        finally:
            self.in_use[idx] -= 1
