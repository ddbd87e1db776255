"""The archive: one writer task owns a streamed tar.gz; producers hand it files through a
bounded stream. Written to `NAME.partial`, renamed when whole. Paths are sanitised."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tpdump.errors import ArchiveError

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=,-]")
_MAX_COMPONENT = 120
_BATCH_BYTES = 4 * 1024 * 1024


def safe_component(name: str) -> str:
    """One path component that cannot escape its directory or hide: no separators, no
    `.`/`..`, no control characters, bounded length."""
    cleaned = _UNSAFE.sub("_", name)[:_MAX_COMPONENT].lstrip(".")
    return cleaned or "_"


def safe_path(path: str) -> str:
    """A relative archive path made of safe components (absolute paths become relative)."""
    parts = [safe_component(p) for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts) or "_"


@dataclass(frozen=True)
class Entry:
    """One file of the archive as the manifest records it."""

    path: str
    bytes: int
    sha256: str
    source: str
    truncated: bool = False


@dataclass(frozen=True)
class _Item:
    path: str
    data: bytes
    source: str
    truncated: bool


class ArchiveWriter:
    """Streams files into `<path>.partial` and renames it to `<path>` when finished."""

    def __init__(self, path: Path, root: str, *, buffer: int = 256) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.root = safe_component(root)
        self.entries: list[Entry] = []
        self._paths: set[str] = set()
        self._send: MemoryObjectSendStream[_Item]
        self._recv: MemoryObjectReceiveStream[_Item]
        self._send, self._recv = anyio.create_memory_object_stream[_Item](buffer)
        self._raw: BinaryIO | None = None
        self._gzip: gzip.GzipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self.failed: ArchiveError | None = None
        self.closed = False

    @property
    def bytes_written(self) -> int:
        """Compressed bytes on disk so far."""
        raw = self._raw
        try:
            return raw.tell() if raw is not None and not raw.closed else 0
        except (OSError, ValueError):
            return 0

    def open(self) -> None:
        """Create the partial file (synchronously, so a bad --output fails at once)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._raw = open(self.partial, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ArchiveError(f"cannot create {self.partial}: {exc.strerror}") from exc
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=6,
                                   mtime=int(time.time()))
        self._tar = tarfile.open(  # noqa: SIM115 - closed in close()
            fileobj=self._gzip, mode="w|", format=tarfile.PAX_FORMAT)

    def reserve(self, path: str) -> str:
        """The sanitised, unique archive path a file will get."""
        rel = safe_path(path)
        if rel in self._paths:
            stem, n = rel, 1
            while f"{stem}.{n}" in self._paths:
                n += 1
            rel = f"{stem}.{n}"
        self._paths.add(rel)
        return rel

    async def add(self, path: str, data: bytes | str, *, source: str,
                  truncated: bool = False) -> str:
        """Queue one file; waits when the writer is behind (back-pressure)."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        rel = self.reserve(path)
        if self.failed is None:
            await self._send.send(_Item(rel, data, source, truncated))
        return rel

    async def run(self) -> None:
        """The writer task: drain the stream in batches, compressing off the event loop."""
        async with self._recv:
            async for first in self._recv:
                batch = [first]
                size = len(first.data)
                while size < _BATCH_BYTES:
                    try:
                        item = self._recv.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    batch.append(item)
                    size += len(item.data)
                if self.failed is None:
                    try:
                        await anyio.to_thread.run_sync(self._write_batch, batch)
                    except ArchiveError as exc:
                        self.failed = exc

    def _write_batch(self, batch: list[_Item]) -> None:
        assert self._tar is not None
        now = time.time()
        for item in batch:
            info = tarfile.TarInfo(f"{self.root}/{item.path}")
            info.size = len(item.data)
            info.mtime = int(now)
            info.mode = 0o644
            try:
                self._tar.addfile(info, io.BytesIO(item.data))
            except OSError as exc:
                raise ArchiveError(f"cannot write {self.partial}: {exc.strerror}") from exc
            self.entries.append(Entry(item.path, len(item.data),
                                      hashlib.sha256(item.data).hexdigest(), item.source,
                                      item.truncated))

    async def finish_input(self) -> None:
        """No more files from producers."""
        await self._send.aclose()

    def end_input(self) -> None:
        """The same, from synchronous code (idempotent)."""
        self._send.close()

    def manifest(self) -> bytes:
        data: dict[str, Any] = {
            "schema": 1,
            "root": self.root,
            "files": [asdict(e) for e in sorted(self.entries, key=lambda e: e.path)],
        }
        return json.dumps(data, indent=1).encode()

    def close(self) -> None:
        """Write the manifest, close the streams, fsync, and rename to the final name."""
        if self.closed:
            return
        self.closed = True
        if self._tar is None or self._gzip is None or self._raw is None:
            return
        if self.failed is not None:
            self._abandon()
            raise self.failed
        try:
            manifest = self.manifest()
            info = tarfile.TarInfo(f"{self.root}/manifest.json")
            info.size = len(manifest)
            info.mtime = int(time.time())
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(manifest))
            self._tar.close()
            self._gzip.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            self._abandon()
            raise ArchiveError(f"cannot finish {self.path}: {exc.strerror}") from exc

    def _abandon(self) -> None:
        for closing in (self._tar, self._gzip, self._raw):
            try:
                if closing is not None:
                    closing.close()
            except OSError:
                pass
