"""Dumps kept in a directory with an index (`tpdump snapshot`, and the dumps `tpdump serve`
starts): one run into DIR, DIR/index.json updated atomically, then retention.

The index is the only source of truth for what tpdump wrote: retention deletes only files
it lists, and `tpdump serve` offers only files it lists for download.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from tpdump.config import Settings
from tpdump.errors import UsageError
from tpdump.logs import RunLog
from tpdump.runner import ClusterRun, Outcome, Run

INDEX = "index.json"
LOCK = ".index.lock"
SCHEMA = 1
SCOPES = ("cluster", "node", "kube")
# A name tpdump itself writes into DIR: no separators, no leading dot.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}$")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds from `90`, `30m`, `12h`, `7d`, `2w`."""
    match = _AGE.match(text)
    if not match or not 0 < float(match.group(1)) < 1e12:
        raise UsageError(f"--max-age: expected an age like 12h or 7d, got {text!r}")
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name)) and name not in (INDEX, LOCK)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on DIR's index (a snapshot and a served dump may end together)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_index(directory: Path) -> list[dict[str, Any]]:
    """The entries of DIR/index.json, newest first (empty when there is none or it is
    unreadable)."""
    try:
        data = json.loads((directory / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return []
    good = [e for e in entries if isinstance(e, dict) and isinstance(e.get("files"), list)
            and all(isinstance(f, dict) and safe_name(str(f.get("name", "")))
                    for f in e["files"])
            and _number(e.get("started"), float) and _number(e.get("bytes"), int)]
    return sorted(good, key=lambda e: float(e.get("started") or 0), reverse=True)


def _number(value: Any, kind: type[float] | type[int]) -> bool:
    """Whether an index field that is sorted or summed on reads as a finite number of
    `kind` (or is absent): an entry damaged there is left out rather than stopping
    retention and the web page."""
    try:
        return math.isfinite(kind(value or 0))
    except (TypeError, ValueError, OverflowError):
        return False


def write_index(directory: Path, entries: list[dict[str, Any]]) -> None:
    """Replace DIR/index.json atomically (a temporary file, fsync, rename)."""
    doc = {"schema": SCHEMA, "updated": time.time(),
           "entries": sorted(entries, key=lambda e: float(e.get("started") or 0),
                             reverse=True)}
    fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / INDEX)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def indexed_files(directory: Path) -> dict[str, dict[str, Any]]:
    """Every file name the index lists -> its entry."""
    return {str(f["name"]): e for e in load_index(directory) for f in e["files"]}


# --- one run ------------------------------------------------------------------------
def make_run(scope: str, settings: Settings, run_log: RunLog, command: str) -> Run:
    from tpdump.kuberun import KubeRun
    from tpdump.local import NodeRun

    classes: dict[str, type[Run]] = {"cluster": ClusterRun, "node": NodeRun, "kube": KubeRun}
    if scope not in classes:
        raise UsageError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    return classes[scope](settings, run_log, command)


def _hash_files(paths: list[Path]) -> tuple[list[dict[str, Any]], str]:
    """(files with name, bytes, sha256; sha256 of the whole archive, parts joined)."""
    whole = hashlib.sha256()
    out = []
    for path in paths:
        one = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                one.update(chunk)
                whole.update(chunk)
                size += len(chunk)
        out.append({"name": path.name, "bytes": size, "sha256": one.hexdigest()})
    return out, whole.hexdigest()


def _unique(directory: Path, paths: list[Path]) -> list[Path]:
    """Destinations in DIR for the archive's files; `-2`, `-3`… before the suffix when a
    name is taken (two runs in the same second)."""
    for n in range(1, 1000):
        dest = []
        for p in paths:
            name = p.name
            if n > 1:
                stem, dot, rest = name.partition(".")
                name = f"{stem}-{n}{dot}{rest}"
            dest.append(directory / name)
        if not any(d.exists() for d in dest):
            return dest
    raise OSError(f"{directory}: no free name for {paths[0].name}")


def store(directory: Path, run: Run, outcome: Outcome, tmp: Path, *, kind: str, scope: str
          ) -> dict[str, Any]:
    """Move a finished run's archive from its scratch dir into DIR and index it."""
    paths = list(outcome.parts) or ([outcome.archive] if outcome.archive else [])
    paths = [p for p in paths if p.is_file() and p.parent.resolve() == tmp.resolve()]
    report = outcome.report or {}
    entry: dict[str, Any] = {
        "kind": kind, "scope": scope, "profile": run.settings.profile,
        "cluster": run.cluster,
        "started": run.started, "finished": time.time(),
        "started_utc": datetime.fromtimestamp(run.started, UTC).isoformat(),
        "verdict": str(report.get("verdict") or _verdict(int(outcome.exit_code))).lower(),
        "exit_code": int(outcome.exit_code),
        "nodes": {"total": run.counters.total, "done": run.counters.done,
                  "failed": run.counters.failed},
        "join_command": outcome.join_command,
    }
    with locked(directory):
        dest = _unique(directory, paths)
        for src, dst in zip(paths, dest, strict=True):
            os.replace(src, dst)
        files, whole = _hash_files(dest)
        entry.update(name=dest[0].name if dest else "", files=files,
                     bytes=sum(f["bytes"] for f in files), sha256=whole if files else None)
        entries = load_index(directory)
        entries.append(entry)
        write_index(directory, entries)
    return entry


def _verdict(code: int) -> str:
    return {0: "complete", 1: "incomplete", 2: "usage", 3: "failed",
            130: "interrupted"}.get(code, "failed")


def _scratch(directory: Path) -> Path:
    """A private directory inside DIR for the run's archive (same file system: the final
    move is a rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".run-", dir=directory))


async def run_into(directory: Path, settings: Settings, scope: str, run_log: RunLog,
                   command: str, *, kind: str,
                   make: Callable[[str, Settings, RunLog, str], Run] = make_run,
                   started: Callable[[Run], None] | None = None) -> dict[str, Any]:
    """One run whose archive ends up in DIR, indexed; returns its index entry."""
    tmp = await anyio.to_thread.run_sync(_scratch, directory)
    try:
        run = make(scope, dataclasses.replace(settings, output=f"{tmp}/"), run_log, command)
        if started is not None:
            started(run)
        outcome = await run.run()
        return await anyio.to_thread.run_sync(
            lambda: store(directory, run, outcome, tmp, kind=kind, scope=scope))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- retention ----------------------------------------------------------------------
def retention(directory: Path, *, keep: int | None, max_age: float | None,
              max_total_size: int | None, kind: str = "snapshot",
              now: float | None = None) -> list[str]:
    """Delete the oldest entries of `kind` beyond `keep`, older than `max_age` seconds, or
    beyond `max_total_size` bytes (newest first); the newest one always stays. Only files
    the index lists are deleted. Returns the names of the removed entries."""
    now = time.time() if now is None else now
    removed: list[str] = []
    with locked(directory):
        entries = load_index(directory)
        mine = [e for e in entries if e.get("kind") == kind]  # newest first
        drop: list[dict[str, Any]] = []
        total = 0
        for i, e in enumerate(mine):
            total += int(e.get("bytes") or 0)
            if i == 0:
                continue
            if ((keep is not None and i >= keep)
                    or (max_age is not None and now - float(e.get("started") or 0) > max_age)
                    or (max_total_size is not None and total > max_total_size)):
                drop.append(e)
        if not drop:
            return removed
        for e in drop:
            for f in e["files"]:
                name = str(f["name"])
                path = directory / name
                if safe_name(name) and path.parent == directory and not path.is_symlink():
                    path.unlink(missing_ok=True)
            removed.append(str(e.get("name")))
        gone = {id(e) for e in drop}
        write_index(directory, [e for e in entries if id(e) not in gone])
    return removed
