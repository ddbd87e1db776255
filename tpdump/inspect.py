"""`tpdump inspect ARCHIVE`: the report of a dump, its checksums verified, its files listed,
printed or extracted. Reads tar.gz, zip, and split archives (`NAME.001`, … or `NAME`)."""

from __future__ import annotations

import json
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, TextIO

from tpdump.archive import UnsafeArchive, archive_parts, read_archive, safe_path, verify
from tpdump.errors import UsageError


def load(path: str) -> dict[str, bytes]:
    """Every file of the archive at `path` (any format, split or not)."""
    p = Path(path)
    try:
        parts = archive_parts(p)
    except OSError:
        parts = []
    if not parts or not all(part.is_file() for part in parts):
        raise UsageError(f"{path}: no such archive (nor numbered parts {p.name}.001, …)",
                         code="TPD401")
    try:
        return read_archive(p)
    except UnsafeArchive as exc:
        raise UsageError(f"refused: {exc}", code="TPD402") from exc
    except (OSError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: unreadable archive: {exc}", code="TPD401") from exc


def _manifest_entries(raw: bytes) -> dict[str, dict[str, Any]]:
    """The manifest's entries by path; whatever is not a valid entry is left out (the
    checksum verification reports it)."""
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    return {str(e["path"]): e for e in listed or () if isinstance(e, dict) and "path" in e} \
        if isinstance(listed, list) else {}


def inspect(path: str, *, list_files: bool = False, cat: str | None = None,
            extract: str | None = None, out: TextIO = sys.stdout) -> int:
    """0 when the archive is whole and its checksums verify, 1 otherwise."""
    files = load(path)
    if cat is not None:
        if cat not in files:
            raise UsageError(f"{cat}: not in the archive (--list shows its files)",
                             code="TPD401")
        out.buffer.write(files[cat]) if hasattr(out, "buffer") else out.write(
            files[cat].decode("utf-8", "replace"))
        return 0
    problems = verify(files)
    parts = archive_parts(Path(path))
    report = files.get("report.txt")
    if report is not None:
        head = report.decode("utf-8", "replace").split("\n\n", 1)[0]
        out.write(head + "\n\n")
    else:
        out.write("no report.txt in this archive\n\n")
    where = f"{len(parts)} parts" if len(parts) > 1 else "one file"
    total = sum(len(v) for v in files.values())
    out.write(f"{len(files)} files, {total} bytes unpacked, {where}\n")
    if problems:
        out.write(f"checksums: {len(problems)} problems (TPD401):\n")
        for p in problems[:100]:
            out.write(f"  {p}\n")
    else:
        out.write("checksums: every file matches manifest.json\n")
    if list_files:
        flags = _manifest_entries(files.get("manifest.json", b"{}"))
        for name in sorted(files):
            e = flags.get(name, {})
            cut = " (truncated)" if e.get("truncated") else ""
            out.write(f"{len(files[name]):>12}  {name}{cut}\n")
    if extract is not None:
        root = Path(extract)
        for name, data in files.items():
            target = root / safe_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out.write(f"extracted to {root}\n")
    return 1 if problems else 0
