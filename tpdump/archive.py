"""The archive: one writer task owns a streamed tar.gz or zip; producers hand it files through
a bounded stream. Written to `NAME.partial` (or `NAME.001.partial`, … when split), renamed
when whole. Paths are sanitised.

Layers, top to bottom, all driven from the writer thread:

    items ─▶ budget (--max-size) ─▶ tar+gzip | zip (streaming) ─▶ _PartWriter ─▶ file(s)

Size cap (`max_size`) design
----------------------------
The cap is a hard bound on the finished archive (every part, the manifest, and the gzip or
zip trailers). It is enforced while streaming with upper bounds that can only overestimate:

* Accounting is in *bound bytes*: ``_now()`` is an upper bound of the final size if the
  archive were closed right now: compressed bytes already on disk, plus
  ``_bound(n) = n + n/1024 + 64`` for the ``n`` uncompressed bytes the deflate stream still
  holds since its last Z_SYNC_FLUSH (zlib's own deflateBound for the default window and
  memLevel is ``n + n/4096 + n/16384 + 13``, so this has a 3× margin), plus the closing cost:
  the manifest (every entry's JSON length counted uncompressed, then bounded), the tar end
  blocks and record padding, the gzip trailer, or the zip central directory and end records.
* An item is written whole at once when its *worst-case* cost fits. Otherwise the stream is
  sync-flushed (so what is on disk is exact) and the candidate is compressed for real on a
  copy of the compressor (tar.gz) or a fresh one (zip, where every member is its own deflate
  stream): its exact cost decides, and for tar.gz the copy's output is what gets written.
  The first guess of how much of a long item fits uses the running compression ratio of
  what was written so far (1.0 before anything was measured), later guesses the candidate's
  own measured ratio; at most a few trials per item.
* A reserve is held back from every class but ``"report"``: ``max(64 KiB, 5% of max_size)``
  plus 4 KiB per expected node (``expect_nodes``) for node.json and error.txt. Report items
  spend the reserve first and then whatever else is left. The manifest is not part of the
  reserve: each written entry's manifest line is charged to the item itself.
* ``"normal"`` items are written whole when they fit in (cap − reserve); else dropped.
* ``"log"`` items: the pool is (free − reserve − a hold-back for the normal items of nodes not
  seen yet, estimated from the mean of the nodes seen). Node X may use at most
  ``(pool + used_X) / (pending + 1) − used_X`` where ``pending`` counts the expected nodes
  that have no log yet (for X's first log item, ``pool / pending`` with X counted pending).
  Whatever a node does not use stays in the pool for the others. The newest lines are kept:
  the tail, cut at a line start.
* ``"bulk"`` items only get what is left after the log shares still to come, estimated as
  ``(pending + 1) × the largest per-node log demand seen`` (the + 1: the node whose logs are
  being written may send more), and all of the pool while no node has logged yet.
  A bulk item that does not fit at once is held back (bounded, 16 MiB) and written when room
  is known: after later logs, at ``settle()`` (end of collection: no more shares are held
  back) or at ``close()``. Cut bulk keeps the head, at a line boundary.
* Every cut is recorded in ``cuts``; a partly kept file is ``truncated`` in the manifest, a
  dropped one is not in the archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tpdump.errors import ArchiveError, UsageError

log = structlog.get_logger("tpdump.archive")

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=,-]")
_MAX_COMPONENT = 120
_BATCH_BYTES = 4 * 1024 * 1024

FORMATS = ("tar.gz", "zip")
PRIORITIES = ("report", "normal", "log", "bulk")
MIN_SPLIT_SIZE = 64 * 1024
RESERVE_MIN = 64 * 1024  # the report class's reserve: at least this,
RESERVE_SHARE = 20  # or 1/20 of --max-size,
RESERVE_PER_NODE = 2 * 1024  # plus this per expected node (node.json, error.txt)
_DEFER_BYTES = 16 * 1024 * 1024  # bulk items held back waiting for room (uncompressed)
_LEVEL = 6
_SLACK = 256  # rounding and sync-flush bytes, on top of the bounds
# manifest.json compresses to about 0.13 of its size (entries are repetitive JSON around a
# 64-digit hex checksum, whose 4 bits per character are its floor at 0.16 of an entry's
# text at most): its share of the closing cost is counted at 0.35 plus a margin, not at
# the deflate bound of incompressible data, which would waste a third of a small cap.
_MANIFEST_RATIO = 0.35
_MANIFEST_MARGIN = 4096


def _manifest_bound(n: int) -> int:
    """What `n` bytes of manifest.json cost once compressed (a safe estimate)."""
    return min(_bound(n), int(n * _MANIFEST_RATIO) + _MANIFEST_MARGIN)
_TRIALS = 6
_PART = re.compile(r"(.+)\.(\d{3,})")
_DROPPED = {"report": "dropped: no room left in max size",
            "normal": "dropped: does not fit in max size",
            "log": "dropped: the node's log share is used up",
            "bulk": "dropped: no room left after the logs"}
_CUT = {"report": "cut to the room left (head kept)",
        "log": "cut to the node's log share (newest lines kept)",
        "bulk": "cut to the room left after the logs (head kept)"}


def safe_component(name: str) -> str:
    """One path component that cannot escape its directory or hide: no separators, no
    `.`/`..`, no control characters, bounded length."""
    cleaned = _UNSAFE.sub("_", name)[:_MAX_COMPONENT].lstrip(".")
    return cleaned or "_"


def safe_path(path: str) -> str:
    """A relative archive path made of safe components (absolute paths become relative)."""
    parts = [safe_component(p) for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts) or "_"


def archive_suffix(fmt: str) -> str:
    """The file name suffix of an archive format: ``.tar.gz`` or ``.zip``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown archive format {fmt!r} (use tar.gz or zip)")
    return "." + fmt


def _bound(n: int) -> int:
    """Upper bound of the deflate output for `n` input bytes up to a sync or final flush."""
    return n + (n >> 10) + 64


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the archive as the manifest records it."""

    path: str
    bytes: int
    sha256: str
    source: str
    truncated: bool = False


# An empty entry's length in manifest.json, less its two empty strings ("") and its size (0).
_ENTRY_FIXED = len(json.dumps(asdict(Entry("", 0, "0" * 64, "", False)), indent=1)) - 5

_OPEN_NODES = 1024  # nodes whose manifest entries are kept as objects (the rest packed)
_MANIFEST_CHUNK = 64 * 1024


def _node_dir(path: str) -> str | None:
    """The node directory (``nodes/NAME/``) an archive path lies in, or None."""
    if not path.startswith("nodes/"):
        return None
    end = path.find("/", 6)
    return path[:end + 1] if end > 6 else None


class _Ledger:
    """The manifest's entries in little memory: a node's entries (≈ 20 files) are packed
    into one zlib block of JSON (≈ 1.5 KB instead of ≈ 5 KB of objects) once files of
    ``_OPEN_NODES`` other nodes have been written since its last one. Iterating gives every
    entry sorted by path (a node directory's paths sort as one block, after its prefix)."""

    def __init__(self) -> None:
        self._loose: list[Entry] = []
        self._open: OrderedDict[str, list[Entry]] = OrderedDict()
        self._packed: dict[str, list[bytes]] = {}
        self.truncated: list[str] = []
        self.count = 0

    def add(self, entry: Entry) -> None:
        self.count += 1
        if entry.truncated:
            self.truncated.append(entry.path)
        node = _node_dir(entry.path)
        if node is None:
            self._loose.append(entry)
            return
        entries = self._open.get(node)
        if entries is None:
            entries = self._open[node] = []
            if len(self._open) > _OPEN_NODES:
                old, done = self._open.popitem(last=False)
                self._packed.setdefault(old, []).append(zlib.compress(
                    json.dumps([(e.path, e.bytes, e.sha256, e.source, e.truncated)
                               for e in done]).encode()))
        else:
            self._open.move_to_end(node)
        entries.append(entry)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Entry]:
        keys: list[tuple[str, Entry | None]] = [(e.path, e) for e in self._loose]
        keys += [(node, None) for node in self._open.keys() | self._packed.keys()]
        keys.sort(key=lambda k: k[0])
        for key, entry in keys:
            if entry is not None:
                yield entry
                continue
            group = list(self._open.get(key, ()))
            for block in self._packed.get(key, ()):
                group += [Entry(*fields) for fields in json.loads(zlib.decompress(block))]
            group.sort(key=lambda e: e.path)
            yield from group


def _manifest_chunks(root: str, entries: Iterable[Entry]) -> Iterator[bytes]:
    """manifest.json in pieces of about 64 KiB, byte for byte what json.dumps(indent=1)
    writes of the entries (given sorted by path), built with the C encoder: a hundred
    thousand entries are neither turned into dicts nor joined into one buffer."""
    dumps = json.dumps
    out = bytearray(b'{\n "schema": 1,\n "root": ' + dumps(root).encode() + b',\n "files": [')
    first = True
    for e in entries:
        out += b"\n  {" if first else b",\n  {"
        first = False
        out += (f'\n   "path": {dumps(e.path)},\n   "bytes": {e.bytes},'
                f'\n   "sha256": {dumps(e.sha256)},\n   "source": {dumps(e.source)},'
                f'\n   "truncated": {"true" if e.truncated else "false"}\n  }}').encode()
        if len(out) >= _MANIFEST_CHUNK:
            yield bytes(out)
            out.clear()
    out += b"]\n}" if first else b"\n ]\n}"
    yield bytes(out)


@dataclass(frozen=True)
class Cut:
    """A file cut or dropped to keep the archive within max_size (sizes uncompressed, after
    the transform)."""

    path: str
    priority: str
    original_bytes: int
    kept_bytes: int
    reason: str


@dataclass(frozen=True)
class _Item:
    path: str
    data: bytes
    source: str
    truncated: bool
    priority: str = "normal"
    node: str | None = None


@dataclass
class _Settle:
    """A marker in the stream: everything before it is decided when the writer reaches it."""

    done: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class _Deferred:
    item: _Item
    data: bytes
    need: int = 0  # the cost last measured for the whole item (0: not measured)


# --- the byte sink: one file or numbered parts ---------------------------------------------


class _PartWriter:
    """Write-only, non-seekable sink under the gzip or zip layer. Without `split_size`
    everything goes to `NAME.partial`; with it, the stream is cut into `NAME.001.partial`,
    `NAME.002.partial`, … of at most `split_size` bytes each. `commit()` renames them all."""

    def __init__(self, path: Path, split_size: int | None) -> None:
        self.path = path
        self.split_size = split_size
        self.count = 0
        self.closed = False
        self._fh: BinaryIO | None = None
        self._pos = 0
        self._in_part = 0

    def partial_name(self, index: int) -> Path:
        if self.split_size is None:
            return self.path.with_name(self.path.name + ".partial")
        return self.path.with_name(f"{self.path.name}.{index:03d}.partial")

    def final_names(self) -> list[Path]:
        if self.split_size is None:
            return [self.path]
        width = max(3, len(str(self.count)))
        return [self.path.with_name(f"{self.path.name}.{i:0{width}d}")
                for i in range(1, self.count + 1)]

    def open(self) -> None:
        self._next()

    def _next(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        self.count += 1
        self._fh = open(self.partial_name(self.count), "wb")  # noqa: SIM115 - closed later
        self._in_part = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            if self.split_size is not None and self._in_part >= self.split_size:
                self._next()
            room = len(view) if self.split_size is None else self.split_size - self._in_part
            chunk = view[:room]
            assert self._fh is not None
            self._fh.write(chunk)
            self._in_part += len(chunk)
            self._pos += len(chunk)
            view = view[room:]
        return size

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("the archive is written as a stream")

    def flush(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.flush()

    def close(self) -> None:
        """Flush, fsync and close the current part (the files keep their partial names)."""
        if self.closed:
            return
        self.closed = True
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def abandon(self) -> None:
        """Close and remove the partial file(s): a failed archive (a full disk) cannot be
        read, and it would keep holding the space the user now needs."""
        self.closed = True
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
        for index in range(1, self.count + 1):
            with contextlib.suppress(OSError):
                self.partial_name(index).unlink()

    def commit(self) -> None:
        """Rename the partial files to their final names, the first part last (so a
        visible `NAME.001` means the whole set is there), and remove parts of an older set
        of the same name numbered beyond ours (the join command would pick them up too)."""
        finals = self.final_names()
        for index in range(self.count, 0, -1):
            os.replace(self.partial_name(index), finals[index - 1])
        if self.split_size is not None:
            width = max(3, len(str(self.count)))
            ours = re.compile(re.escape(self.path.name) + r"\.(\d{" + str(width) + "})")
            for stale in self.path.parent.iterdir():
                match = ours.fullmatch(stale.name)
                if match and int(match.group(1)) > self.count and stale.is_file():
                    stale.unlink()
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


# --- the two container formats -------------------------------------------------------------


class _TarGz:
    """A tar stream (PAX) compressed by a raw deflate stream inside a gzip frame that we
    write ourselves, so that the compressor can be sync-flushed and copied for trials."""

    def __init__(self, out: _PartWriter, mtime: int, level: int = _LEVEL) -> None:
        self.out = out
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", mtime & 0xFFFFFFFF) + b"\x00\xff")
        self.z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
        self.crc = 0
        self.size = 0  # uncompressed tar bytes
        self.pending = 0  # uncompressed bytes since the last sync flush
        self.synced_in = 0  # uncompressed and compressed totals at the last sync point
        self.synced_out = out.tell()

    @staticmethod
    def header(name: str, size: int, mtime: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = mtime
        info.mode = 0o644
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    @staticmethod
    def member(header: bytes, data: bytes) -> tuple[bytes, ...]:
        """A tar member as pieces (the data is not copied)."""
        return header, data, tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE)

    def _account(self, raw: tuple[bytes, ...]) -> None:
        for piece in raw:
            self.crc = zlib.crc32(piece, self.crc)
            self.size += len(piece)

    def write(self, raw: tuple[bytes, ...]) -> None:
        for piece in raw:
            self.out.write(self.z.compress(piece))
            self.pending += len(piece)
        self._account(raw)

    def sync(self) -> None:
        if self.pending:
            self.out.write(self.z.flush(zlib.Z_SYNC_FLUSH))
            self._synced()

    def _synced(self) -> None:
        self.pending = 0
        self.synced_in = self.size
        self.synced_out = self.out.tell()

    def trial(self, raw: tuple[bytes, ...]) -> tuple[Any, bytes]:
        """Compress `raw` and sync-flush on a copy of the compressor (call after sync())."""
        z = self.z.copy()
        return z, b"".join([*(z.compress(piece) for piece in raw), z.flush(zlib.Z_SYNC_FLUSH)])

    def commit(self, z: Any, compressed: bytes, raw: tuple[bytes, ...]) -> None:
        self.z = z
        self.out.write(compressed)
        self._account(raw)
        self._synced()

    def finish(self) -> None:
        end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
        end += tarfile.NUL * (-(self.size + len(end)) % tarfile.RECORDSIZE)
        self.out.write(self.z.compress(end))
        self._account((end,))
        self.out.write(self.z.flush(zlib.Z_FINISH))
        self.out.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF))


def _zip_local(name_len: int) -> int:
    return 30 + name_len + 20  # header, name, zip64 extra when needed


def _zip_central(name_len: int) -> int:
    return 46 + name_len + 28  # header, name, zip64 extra when needed


_ZIP_DESCRIPTOR = 24
_ZIP_END = 22 + 56 + 20  # end record, zip64 end record and locator


# --- the writer -------------------------------------------------------------------------


class ArchiveWriter:
    """Streams files into `<path>.partial` (or numbered parts) and renames when finished.

    `fmt` is "tar.gz" or "zip"; `split_size` cuts the compressed stream into parts of at
    most that many bytes; `max_size` is a hard cap on all of it (see the module docstring);
    `transform(path, data)` rewrites each file's bytes in the writer thread before size
    decisions and checksums; `path_transform(path)` rewrites each path in add() before it is
    sanitised (the root is passed already transformed); `on_emit(path, data)` is told of
    each file as written (in the writer thread: after the transform and any cut)."""

    def __init__(self, path: Path, root: str, *, buffer: int = 256, fmt: str = "tar.gz",
                 split_size: int | None = None, max_size: int | None = None,
                 transform: Callable[[str, bytes], bytes] | None = None,
                 path_transform: Callable[[str], str] | None = None,
                 level: int = _LEVEL,
                 on_emit: Callable[[str, bytes], None] | None = None) -> None:
        archive_suffix(fmt)  # validates
        if not 1 <= level <= 9:
            raise UsageError(f"compression level {level} is not between 1 and 9")
        self.level = level
        if split_size is not None and split_size < MIN_SPLIT_SIZE:
            raise UsageError(f"split size {split_size} bytes is too small: the minimum is "
                             f"{MIN_SPLIT_SIZE} bytes (64 KiB)")
        self.path = path
        self.fmt = fmt
        self.split_size = split_size
        self.max_size = max_size
        self.transform = transform
        self.path_transform = path_transform
        self.on_emit = on_emit
        self.root = safe_component(root)
        self._out = _PartWriter(path, split_size)
        self.partial = self._out.partial_name(1)
        self._ledger = _Ledger()
        self.cuts: list[Cut] = []
        self._paths: set[int] = set()
        self._send: MemoryObjectSendStream[_Item | _Settle]
        self._recv: MemoryObjectReceiveStream[_Item | _Settle]
        self._send, self._recv = anyio.create_memory_object_stream[_Item | _Settle](buffer)
        self._tgz: _TarGz | None = None
        self._zip: zipfile.ZipFile | None = None
        self._opened = False
        self.failed: ArchiveError | None = None
        self.closed = False
        # budget state (writer thread)
        self._expected = 0
        self._collecting = True
        self._manifest_len = 0  # bound of the manifest's file entries, uncompressed
        self._central_len = 0  # bound of the zip central directory
        self._in = 0  # zip: bytes in and out so far, for the running ratio
        self._ratio_out = 0
        self._report_used = 0
        self._known: set[str] = set()
        self._normal_used: dict[str, int] = {}
        self._log_used: dict[str | None, int] = {}
        self._log_demand: dict[str | None, int] = {}
        self._deferred: list[_Deferred] = []
        self._deferred_bytes = 0
        mname = f"{self.root}/manifest.json"
        self._mname_len = len(mname.encode())
        self._mhdr = len(_TarGz.header(mname, 1 << 32, 0)) + tarfile.BLOCKSIZE
        self._mhead = len(self._manifest_text([])) + 16
        if max_size is not None:
            minimum = self.min_max_size
            if max_size < minimum:
                raise UsageError(f"max size {max_size} bytes is too small: the report and "
                                 f"manifest need at least {minimum} bytes "
                                 f"({-(-minimum // 1024)} KiB)")

    # --- public state ----------------------------------------------------------------
    @property
    def bytes_written(self) -> int:
        """Compressed bytes on disk so far (all parts)."""
        return self._out.tell()

    @property
    def min_max_size(self) -> int:
        """The smallest max_size this archive accepts: the report class's minimum reserve
        plus the bound of the manifest, the tar end and the gzip (or zip) trailers."""
        return self._initial() + RESERVE_MIN

    @property
    def parts(self) -> list[Path]:
        """The archive's final files: `[path]` when not split (names as of now before
        close())."""
        return self._out.final_names() if self.split_size is not None else [self.path]

    def join_command(self) -> str | None:
        """The shell command that joins the parts (run in their directory); None when not
        split."""
        if self.split_size is None:
            return None
        width = max(3, len(str(self._out.count)))
        name = shlex.quote(self.path.name)
        return f"cat {name}.{'[0-9]' * width} > {name}"

    def expect_nodes(self, n: int) -> None:
        """How many nodes the run will have: spreads the log budget and sizes the reserve."""
        self._expected = max(0, n)

    # --- producer side ---------------------------------------------------------------
    def open(self) -> None:
        """Create the (first) partial file synchronously, so a bad --output fails at once."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out.open()
        except OSError as exc:
            raise ArchiveError(f"cannot create {self.partial}: {exc.strerror}") from exc
        self._opened = True
        try:
            if self.fmt == "zip":
                self._zip = zipfile.ZipFile(cast(IO[bytes], self._out), "w",
                                            compression=zipfile.ZIP_DEFLATED,
                                            allowZip64=True, compresslevel=self.level)
            else:
                self._tgz = _TarGz(self._out, int(time.time()), self.level)
        except OSError as exc:
            self._out.abandon()
            raise ArchiveError(f"cannot write {self.partial}: {exc.strerror}") from exc

    def reserve(self, path: str) -> str:
        """The sanitised, unique archive path a file will get."""
        rel = safe_path(path)
        # The paths taken are kept as their 64-bit hashes (not a string each): a collision,
        # about 1 in 10^9 for 200,000 files, only gives a file a ".1" suffix it need not have.
        if hash(rel) in self._paths:
            stem, n = rel, 1
            while hash(f"{stem}.{n}") in self._paths:
                n += 1
            rel = f"{stem}.{n}"
        self._paths.add(hash(rel))
        return rel

    async def add(self, path: str, data: bytes | str, *, source: str,
                  truncated: bool = False, priority: str = "normal",
                  node: str | None = None) -> str:
        """Queue one file; waits when the writer is behind (back-pressure). Returns its
        archive path (also when max_size later drops it: see `cuts`)."""
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if self.path_transform is not None:
            path = self.path_transform(path)
        rel = self.reserve(path)
        if self.failed is None:
            await self._send.send(_Item(rel, data, source, truncated, priority, node))
        return rel

    async def settle(self) -> None:
        """Wait until every file queued so far is written or cut, and end the collection
        phase: held-back bulk files are placed now and no space stays reserved for logs of
        nodes that never sent any. Call before rendering the report, so that `cuts` and
        `entries` are final. Needs run()."""
        marker = _Settle()
        try:
            await self._send.send(marker)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        await marker.done.wait()

    async def run(self) -> None:
        """The writer task: drain the stream in batches, compressing off the event loop."""
        async with self._recv:
            async for first in self._recv:
                batch = [first]
                size = len(first.data) if isinstance(first, _Item) else 0
                while size < _BATCH_BYTES:
                    try:
                        item = self._recv.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    batch.append(item)
                    size += len(item.data) if isinstance(item, _Item) else 0
                if self.failed is None:
                    try:
                        await anyio.to_thread.run_sync(self._write_batch, batch)
                    except ArchiveError as exc:
                        self.failed = exc
                for marker in batch:
                    if isinstance(marker, _Settle):
                        marker.done.set()

    async def finish_input(self) -> None:
        """No more files from producers."""
        await self._send.aclose()

    def end_input(self) -> None:
        """The same, from synchronous code (idempotent)."""
        self._send.close()

    # --- the writer thread -----------------------------------------------------------
    def _write_batch(self, batch: list[_Item | _Settle]) -> None:
        try:
            for item in batch:
                if isinstance(item, _Settle):
                    self._end_collection()
                else:
                    self._place(item)
        except OSError as exc:
            part = self._out.partial_name(max(1, self._out.count))
            raise ArchiveError(f"cannot write {part}: {exc.strerror}") from exc

    def _place(self, item: _Item) -> None:
        data = item.data
        if self.transform is not None:
            try:
                data = self.transform(item.path, data)
            except Exception as exc:  # never write what was not transformed
                self._cut(item, len(item.data), 0,
                          f"dropped: transform failed ({type(exc).__name__})")
                return
        if self.max_size is None:
            self._emit(item, data, item.truncated)
            return
        if item.node is not None:
            self._known.add(item.node)
        if item.priority == "bulk" and self._collecting:
            held = _Deferred(item, data)
            if not self._try_deferred(held):
                self._deferred.append(held)
                self._deferred_bytes += len(data)
                while self._deferred_bytes > _DEFER_BYTES:
                    self._decide_deferred(0)
            return
        self._decide(item, data)
        if item.priority == "log" and self._deferred:
            self._retry_deferred()

    def _end_collection(self) -> None:
        self._collecting = False
        while self._deferred:
            self._decide_deferred(0)

    def _decide_deferred(self, index: int) -> None:
        held = self._deferred.pop(index)
        self._deferred_bytes -= len(held.data)
        self._decide(held.item, held.data)

    def _retry_deferred(self) -> None:
        self._sync()
        if self._allowance(self._deferred[0].item) <= 0:  # the same for every bulk item
            return
        index = 0
        while index < len(self._deferred):
            if self._try_deferred(self._deferred[index]):
                held = self._deferred.pop(index)
                self._deferred_bytes -= len(held.data)
            else:
                index += 1

    def _try_deferred(self, held: _Deferred) -> bool:
        """Write a bulk item whole if it fits now (never cut it yet)."""
        item, data = held.item, held.data
        self._sync()
        allowance = self._allowance(item)
        if self._cost_bound(item.path, len(data), item.source) <= allowance:
            self._write_whole(item, data)
            return True
        estimate = self._overhead(item.path, item.source) + int(len(data) * self._ratio())
        if max(held.need, estimate) > allowance:
            return False
        found = self._trial(item.path, data, item.source)
        if found.cost <= allowance:
            self._commit(item, found, item.truncated)
            return True
        held.need = found.cost
        return False

    # --- sizes ---------------------------------------------------------------------
    def _closing(self, manifest_len: int) -> int:
        """Bound of what close() still writes, given the manifest entries' length."""
        body = _manifest_bound(self._mhead + manifest_len)
        if self.fmt == "zip":
            return (_zip_local(self._mname_len) + body + _ZIP_DESCRIPTOR
                    + _zip_central(self._mname_len) + _ZIP_END + _SLACK)
        tail = self._mhdr + tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE
        return _bound(tail) + body + 8 + _SLACK

    def _initial(self) -> int:
        head = 0 if self.fmt == "zip" else 10
        return head + self._closing(0)

    def _now(self) -> int:
        """Upper bound of the final size if the archive were closed now."""
        stream = self._out.tell()
        if self._tgz is not None and self._tgz.pending:
            stream += _bound(self._tgz.pending)
        return stream + self._central_len + self._closing(self._manifest_len)

    @staticmethod
    def _entry_len(path: str, size: int, source: str) -> int:
        """Upper bound of the bytes a file's entry adds to manifest.json: the entry as
        json.dumps(indent=1) writes it, counted without writing it (once per file)."""
        return (_ENTRY_FIXED + len(json.dumps(path)) + len(json.dumps(source))
                + len(str(size)) + 24)  # deeper indentation and the separator

    def _entry_closing(self, path: str, size: int, source: str) -> int:
        """What a file's manifest entry adds to the closing cost."""
        entry = self._entry_len(path, size, source)
        return self._closing(self._manifest_len + entry) - self._closing(self._manifest_len)

    def _name(self, path: str) -> str:
        return f"{self.root}/{path}"

    def _cost_bound(self, path: str, size: int, source: str) -> int:
        """Worst-case cost of writing `size` bytes at `path` now."""
        closing = self._entry_closing(path, size, source)
        if self._tgz is not None:
            raw = len(_TarGz.header(self._name(path), size, 0)) + size + (-size % 512)
            pending = self._tgz.pending
            return _bound(pending + raw) - (_bound(pending) if pending else 0) + closing
        name_len = len(self._name(path).encode())
        return (_zip_local(name_len) + _bound(size) + _ZIP_DESCRIPTOR + _zip_central(name_len)
                + closing)

    def _overhead(self, path: str, source: str) -> int:
        """The worst-case cost of an empty file at `path`: header and manifest entry."""
        return self._cost_bound(path, 0, source)

    def _ratio(self) -> float:
        """The running compression ratio of what was written so far, measured at the last
        sync point for tar.gz (1.0 before anything was measured)."""
        if self._tgz is not None:
            raw, compressed = self._tgz.synced_in, self._tgz.synced_out - 10
        else:
            raw, compressed = self._in, self._ratio_out
        if raw <= 0:
            return 1.0
        return min(1.0, max(0.05, compressed / raw))

    def _sync(self) -> None:
        if self._tgz is not None:
            self._tgz.sync()

    def _measure(self, raw: int, compressed: int) -> None:
        self._in += raw
        self._ratio_out += compressed

    # --- the budget ----------------------------------------------------------------
    def _reserve_left(self) -> int:
        assert self.max_size is not None
        if self.closed:
            return 0  # close() places held-back files after the report: nothing to keep
        total = (max(RESERVE_MIN, self.max_size // RESERVE_SHARE)
                 + RESERVE_PER_NODE * self._expected)
        return max(0, total - self._report_used)

    def _normal_holdback(self) -> int:
        if not self._collecting or not self._normal_used:
            return 0
        unseen = max(0, self._expected - len(self._known))
        # What a node's normal files cost is charged as the worst case of data not yet
        # flushed; what they really take is near the running compression ratio. Twice
        # that is held back for each node not seen yet (never more than the worst case).
        average = sum(self._normal_used.values()) / len(self._normal_used)
        return int(unseen * average * min(1.0, 2 * self._ratio()))

    def _pending_nodes(self) -> int:
        """Nodes (expected or seen) that have not had a log item yet."""
        total = max(self._expected, len(self._known)) if self._collecting else len(self._known)
        logged = sum(1 for node in self._log_used if node is not None)
        return max(0, total - logged)

    def _allowance(self, item: _Item) -> int:
        """How many bound bytes this item may use now."""
        assert self.max_size is not None
        free = self.max_size - self._now()
        if item.priority == "report":
            return free
        free -= self._reserve_left()
        if item.priority == "normal":
            return free
        pool = free - self._normal_holdback()
        pending = self._pending_nodes()
        if item.priority == "log":
            node = item.node
            if node not in self._log_used:
                share = pool // max(1, pending + (1 if node is None else 0))
            else:
                used = self._log_used[node]
                share = (pool + used) // (pending + 1) - used
            return min(share, pool)
        if not self._collecting:
            return pool
        if not self._log_demand:
            return 0
        # one more share than pending: the node whose logs are being written may send more
        return max(0, pool - (pending + 1) * max(self._log_demand.values()))

    def _decide(self, item: _Item, data: bytes) -> None:
        """Write `item` whole, in part, or not at all, within its allowance."""
        prio = item.priority
        if prio in ("log", "bulk"):
            self._sync()
        allowance = self._allowance(item)
        whole = self._cost_bound(item.path, len(data), item.source)
        if whole > allowance and self._tgz is not None and self._tgz.pending:
            self._sync()
            allowance = self._allowance(item)
            whole = self._cost_bound(item.path, len(data), item.source)
        if whole <= allowance:
            self._write_whole(item, data)
            return
        overhead = self._overhead(item.path, item.source)
        ratio = self._ratio()
        found: _Trial | None = None
        if prio == "normal" or overhead + len(data) * ratio <= allowance * 1.05:
            trial = self._trial(item.path, data, item.source)
            if trial.cost <= allowance:
                found = trial
            elif data:
                ratio = max(0.01, (trial.cost - overhead) / len(data))
        if found is None and prio != "normal":
            found = self._search(item, data, "tail" if prio == "log" else "head", allowance,
                                 ratio)
        if found is None:
            self._cut(item, len(data), 0, _DROPPED[prio])
            self._note_log(item, overhead + int(len(data) * ratio))
            return
        partial = len(found.data) < len(data)
        cost = self._commit(item, found, item.truncated or partial)
        if partial:
            self._cut(item, len(data), len(found.data), _CUT[prio])
            ratio = max(0.01, (found.cost - overhead) / len(found.data))
            self._note_log(item, overhead + int(len(data) * ratio))
        else:
            self._note_log(item, cost)

    def _search(self, item: _Item, data: bytes, mode: str, allowance: int,
                ratio: float) -> _Trial | None:
        """The largest line-aligned part of `data` whose exact cost fits the allowance: the
        first guess from `ratio`, later ones from the last candidate's own ratio."""
        overhead = self._overhead(item.path, item.source)
        best: _Trial | None = None
        too_big = len(data) + 1
        margin = 0.97  # the first guess is rougher than later ones
        for _ in range(_TRIALS):
            want = min(len(data), int((allowance - overhead) / ratio * margin), too_big - 1)
            part = _cut(data, want, mode)
            if not part or (best is not None and len(part) <= len(best.data)):
                break
            found = self._trial(item.path, part, item.source)
            ratio = max(0.01, (found.cost - overhead) / len(part))
            margin = 0.995
            if found.cost <= allowance:
                best = found
                if len(part) == len(data) or found.cost >= allowance * 0.99:
                    break
            else:
                too_big = len(part)
        return best

    def _trial(self, path: str, data: bytes, source: str) -> _Trial:
        """The exact cost of writing `data` at `path` now (the stream is synced first)."""
        closing = self._entry_closing(path, len(data), source)
        if self._tgz is not None:
            self._sync()
            raw = _TarGz.member(_TarGz.header(self._name(path), len(data), int(time.time())),
                                data)
            z, compressed = self._tgz.trial(raw)
            return _Trial(data, len(compressed) + closing, z, compressed, raw)
        z = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        size = len(z.compress(data)) + len(z.flush())
        name_len = len(self._name(path).encode())
        cost = (_zip_local(name_len) + size + _ZIP_DESCRIPTOR + _zip_central(name_len)
                + closing)
        return _Trial(data, cost, None, b"", ())

    def _commit(self, item: _Item, found: _Trial, truncated: bool) -> int:
        """Write a tried candidate; returns its cost."""
        before = self._now()
        if self._tgz is not None:
            self._tgz.commit(found.z, found.compressed, found.raw)
            self._record(item, found.data, truncated)
        else:
            self._emit(item, found.data, truncated)
        cost = self._now() - before
        self._charge(item, cost)
        return cost

    def _write_whole(self, item: _Item, data: bytes) -> None:
        before = self._now()
        self._emit(item, data, item.truncated)
        if item.priority in ("log", "bulk"):
            self._sync()
        cost = self._now() - before
        self._charge(item, cost)
        self._note_log(item, cost)

    def _charge(self, item: _Item, cost: int) -> None:
        if item.priority == "report":
            self._report_used += cost
        elif item.priority == "normal" and item.node is not None:
            self._normal_used[item.node] = self._normal_used.get(item.node, 0) + cost
        elif item.priority == "log":
            self._log_used[item.node] = self._log_used.get(item.node, 0) + cost

    def _note_log(self, item: _Item, demand: int) -> None:
        """A log item had its turn: its node is no longer pending, and `demand` (what the
        whole item costs, estimated when it was cut) sizes the shares held for others."""
        if item.priority != "log":
            return
        self._log_used.setdefault(item.node, 0)
        self._log_demand[item.node] = self._log_demand.get(item.node, 0) + demand

    def _cut(self, item: _Item, original: int, kept: int, reason: str) -> None:
        self.cuts.append(Cut(item.path, item.priority, original, kept, reason))

    # --- writing -------------------------------------------------------------------
    def _emit(self, item: _Item, data: bytes, truncated: bool) -> None:
        name = self._name(item.path)
        if self._tgz is not None:
            raw = _TarGz.member(_TarGz.header(name, len(data), int(time.time())), data)
            self._tgz.write(raw)
        else:
            self._zip_write(name, data)
        self._record(item, data, truncated)
        if self.on_emit is not None:
            try:
                self.on_emit(item.path, data)
            except Exception:  # the file is written: a failing observer costs it nothing
                log.exception("archive observer failed", path=item.path)

    def _zip_write(self, name: str, data: bytes) -> None:
        assert self._zip is not None
        info = zipfile.ZipInfo(name, time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        before = self._out.tell()
        self._zip.writestr(info, data, compresslevel=self.level)
        self._measure(len(data), self._out.tell() - before)
        self._central_len += _zip_central(len(name.encode()))

    def _record(self, item: _Item, data: bytes, truncated: bool) -> None:
        entry = Entry(item.path, len(data), hashlib.sha256(data).hexdigest(), item.source,
                      truncated)
        self._ledger.add(entry)
        self._manifest_len += self._entry_len(item.path, len(data), item.source)

    # --- the end -------------------------------------------------------------------
    def _manifest_text(self, entries: list[Entry]) -> bytes:
        """manifest.json of `entries`, whole (the writer streams it: `_manifest_chunks`)."""
        return b"".join(_manifest_chunks(self.root, sorted(entries, key=lambda e: e.path)))

    def manifest(self) -> bytes:
        return b"".join(_manifest_chunks(self.root, self._ledger))

    @property
    def entries(self) -> list[Entry]:
        """Every file written so far, sorted by path (unpacked: for tests and tools)."""
        return list(self._ledger)

    @property
    def truncated(self) -> list[str]:
        """The paths of the files written cut (truncated in the manifest)."""
        return list(self._ledger.truncated)

    def _write_manifest(self, name: str) -> None:
        """manifest.json as the last member, streamed: its size first (one pass over the
        entries), then its pieces (a second pass), never held whole. Zip: whole."""
        if self._tgz is None:
            assert self._zip is not None
            self._zip_write(name, self.manifest())
            return
        size = sum(len(piece) for piece in _manifest_chunks(self.root, self._ledger))
        self._tgz.write((_TarGz.header(name, size, int(time.time())),))
        for piece in _manifest_chunks(self.root, self._ledger):
            self._tgz.write((piece,))
        self._tgz.write((tarfile.NUL * (-size % tarfile.BLOCKSIZE),))

    def close(self) -> None:
        """Place held-back files, write the manifest, close the streams, fsync, and rename
        to the final name(s)."""
        if self.closed:
            return
        self.closed = True
        if not self._opened:
            return
        if self.failed is not None:
            self._abandon()
            raise self.failed
        try:
            self._end_collection()
            self._write_manifest(self._name("manifest.json"))
            if self._tgz is not None:
                self._tgz.finish()
            else:
                assert self._zip is not None
                self._zip.close()
            self._out.close()
            self._out.commit()
        except OSError as exc:
            self._abandon()
            raise ArchiveError(f"cannot finish {self.path}: {exc.strerror}") from exc

    def _abandon(self) -> None:
        if self._zip is not None:
            # Closing it (also from its __del__) would write the central directory to a
            # dead file: without its file object it has nothing to close.
            self._zip.fp = None
            self._zip = None
        self._out.abandon()


@dataclass
class _Trial:
    data: bytes
    cost: int
    z: Any
    compressed: bytes
    raw: tuple[bytes, ...]


def _cut(data: bytes, size: int, mode: str) -> bytes:
    """At most `size` bytes of `data`: the tail starting at a line start ("tail"), or the
    head ending after a newline ("head"; a head without any newline is cut anywhere)."""
    if size >= len(data):
        return data
    if size <= 0:
        return b""
    if mode == "tail":
        start = len(data) - size
        if data[start - 1:start] == b"\n":
            return data[start:]
        newline = data.find(b"\n", start)
        return b"" if newline < 0 else data[newline + 1:]
    newline = data.rfind(b"\n", 0, size)
    return data[:size] if newline < 0 else data[:newline + 1]


# --- reading ------------------------------------------------------------------------------


class _Joined(io.RawIOBase):
    """The parts of a split archive read as one seekable file."""

    def __init__(self, files: list[Path]) -> None:
        super().__init__()
        self._files = files
        self._sizes = [f.stat().st_size for f in files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(files))]
        self._total = sum(self._sizes)
        self._pos = 0
        self._index = -1
        self._fh: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._total}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._total or not len(view):
            return 0
        index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
        while self._sizes[index] == 0:
            index += 1
        if index != self._index:
            if self._fh is not None:
                self._fh.close()
            self._fh = open(self._files[index], "rb")  # noqa: SIM115 - closed in close()
            self._index = index
        assert self._fh is not None
        offset = self._pos - self._starts[index]
        self._fh.seek(offset)
        got = self._fh.readinto(view[:self._sizes[index] - offset])
        self._pos += got
        return got

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def archive_parts(path: Path) -> list[Path]:
    """The file(s) of an archive: `path` itself, or the numbered parts `NAME.001`, … when
    given `NAME` (and it does not exist) or any one of the parts."""
    match = _PART.fullmatch(path.name)
    if match and path.is_file():
        base, width = path.with_name(match.group(1)), len(match.group(2))
    elif path.is_file():
        return [path]
    else:
        base, width = path, 0
        for w in range(3, 8):
            if path.with_name(f"{path.name}.{1:0{w}d}").is_file():
                width = w
                break
        if not width:
            raise FileNotFoundError(f"no archive at {path} nor parts {path}.001, …")
    found: list[Path] = []
    while (part := base.with_name(f"{base.name}.{len(found) + 1:0{width}d}")).is_file():
        found.append(part)
    if not found:
        raise FileNotFoundError(f"no first part {base.name}.{1:0{width}d}")
    return found


@dataclass(frozen=True)
class ReadLimits:
    """Bounds for reading an archive that anyone may have made (tar and zip bombs): how
    many members, how big one member and all of them may be unpacked, and how much bigger
    than its packed bytes the unpacked stream may grow (checked once past `ratio_after`
    bytes; tpdump's own archives stay far below: text compresses about 10:1)."""

    max_members: int = 1_000_000
    max_member_bytes: int = 1 << 30
    max_total_bytes: int = 4 << 30
    max_ratio: int = 100
    ratio_after: int = 16 << 20


class UnsafeArchive(ValueError):
    """An archive the reader refuses: a member name that escapes the root (absolute,
    `..`, NUL), a link or device member, or more than ReadLimits allow (a bomb)."""


class DamagedArchive(ValueError):
    """An archive that cannot be read: truncated, corrupt, or not a tar.gz/zip."""


_READ_CHUNK = 1 << 20


def _unsafe_name(name: str) -> str | None:
    """Why a member name is refused (None: safe). Backslashes count as separators."""
    if "\0" in name:
        return "a NUL byte in its name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "an absolute path"
    if ".." in norm.split("/"):
        return "a `..` component"
    return None


class _Budget:
    """Running totals of one read, checked against ReadLimits."""

    def __init__(self, path: Path, limits: ReadLimits, packed: Callable[[], int]) -> None:
        self.path = path
        self.limits = limits
        self.packed = packed
        self.members = 0
        self.total = 0

    def member(self, name: str, size: int, kind: str) -> None:
        why = _unsafe_name(name)
        if why is not None:
            raise UnsafeArchive(f"{self.path}: member {name!r} has {why}")
        if kind != "file" and kind != "dir":
            raise UnsafeArchive(f"{self.path}: member {name!r} is a {kind} (tpdump archives "
                                f"hold only files)")
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchive(f"{self.path}: more than {self.limits.max_members} members")
        if size > self.limits.max_member_bytes:
            raise UnsafeArchive(f"{self.path}: member {name!r} unpacks to {size} bytes, more "
                                f"than the {self.limits.max_member_bytes} allowed")

    def unpacked(self, n: int, position: int) -> None:
        """`n` more bytes kept; `position` is how far the unpacked stream has got."""
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchive(f"{self.path}: unpacks to more than "
                                f"{self.limits.max_total_bytes} bytes")
        packed = max(1, self.packed())
        if position > self.limits.ratio_after and position > self.limits.max_ratio * packed:
            raise UnsafeArchive(f"{self.path}: {packed} packed bytes unpack to more than "
                                f"{position} (over {self.limits.max_ratio}:1: an archive "
                                f"bomb)")


def _read_member(fh: IO[bytes], size: int, budget: _Budget, start: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = fh.read(min(_READ_CHUNK, size - len(out)))
        if not chunk:
            raise DamagedArchive(f"{budget.path}: a member ends early (truncated archive)")
        out += chunk
        budget.unpacked(len(chunk), start + len(out))
    return bytes(out)


def read_archive(path: Path, limits: ReadLimits | None = None) -> dict[str, bytes]:
    """Every file of a tar.gz or zip archive (or a split set of either), keyed by its path
    below the root directory. Refuses (UnsafeArchive) names that escape, links, devices
    and bombs (`limits`), before unpacking them; a damaged archive raises
    DamagedArchive. Nothing is written anywhere."""
    limits = limits or ReadLimits()
    files: dict[str, bytes] = {}
    joined = _Joined(archive_parts(path))
    try:
        with io.BufferedReader(joined) as fh:
            magic = fh.peek(4)[:4]
            if magic[:2] == b"\x1f\x8b":
                _read_tar(path, cast(IO[bytes], fh), limits, joined, files)
            elif magic[:2] == b"PK":
                _read_zip(path, cast(IO[bytes], fh), limits, files)
            else:
                raise DamagedArchive(f"{path}: neither a tar.gz nor a zip archive")
    except (EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, struct.error,
            NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted zip member; NotImplementedError: another compression
        raise DamagedArchive(f"{path}: damaged or truncated: {exc}") from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DamagedArchive(f"{path}: damaged or truncated: {exc}") from exc
    return files


def _read_tar(path: Path, fh: IO[bytes], limits: ReadLimits, joined: _Joined,
              files: dict[str, bytes]) -> None:
    budget = _Budget(path, limits, joined.tell)
    # "r:gz" (not "r|gz"): gzip files may hold several members, one after the other
    with tarfile.open(fileobj=fh, mode="r:gz") as tar:
        while (member := tar.next()) is not None:
            cast(Any, tar).members.clear()  # read once, in order: no TarInfo kept
            kind = ("file" if member.isfile() else "dir" if member.isdir() else
                    "symbolic link" if member.issym() else "hard link" if member.islnk()
                    else "device or FIFO")
            budget.member(member.name, member.size if member.isfile() else 0, kind)
            budget.unpacked(0, member.offset_data)
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[_below_root(member.name)] = _read_member(extracted, member.size,
                                                               budget, member.offset_data)
        # Read on to the gzip trailer (the tar end blocks, the record padding) so that the
        # stream's CRC and length are checked; a few MiB at most: more is not tpdump's.
        rest = cast(IO[bytes], tar.fileobj)
        for _ in range(4):
            if not rest.read(_READ_CHUNK):
                break


def _read_zip(path: Path, fh: IO[bytes], limits: ReadLimits,
              files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        packed = sum(i.compress_size for i in infos)
        declared = sum(i.file_size for i in infos)
        budget = _Budget(path, limits, lambda: packed)
        if declared > limits.max_total_bytes:
            raise UnsafeArchive(f"{path}: its members claim {declared} bytes unpacked, more "
                                f"than the {limits.max_total_bytes} allowed")
        if declared > limits.ratio_after and declared > limits.max_ratio * max(1, packed):
            raise UnsafeArchive(f"{path}: {packed} packed bytes claim {declared} unpacked "
                                f"(over {limits.max_ratio}:1: an archive bomb)")
        position = 0
        for info in infos:
            ftype = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded
            kind = ("dir" if info.is_dir() else "symbolic link" if ftype == stat.S_IFLNK else
                    "device or FIFO" if ftype not in (0, stat.S_IFREG, stat.S_IFDIR)
                    else "file")
            budget.member(info.orig_filename, info.file_size, kind)
            if kind == "file":
                with zf.open(info) as member:
                    files[_below_root(info.filename)] = _read_member(
                        member, info.file_size, budget, position)
                position += info.file_size


def _below_root(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def verify(files: dict[str, bytes]) -> list[str]:
    """Problems found checking the files against manifest.json (empty when all is well)."""
    raw = files.get("manifest.json")
    if raw is None:
        return ["manifest.json is missing"]
    try:
        manifest = json.loads(raw)
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return ["manifest.json is not a valid manifest"]
    if not isinstance(listed, list):
        return ["manifest.json is not a valid manifest"]
    problems: list[str] = []
    seen: set[str] = set()
    for entry in listed:
        if not isinstance(entry, dict):
            problems.append(f"manifest.json: an entry is not an object: {str(entry)[:80]}")
            continue
        path = str(entry.get("path"))
        seen.add(path)
        data = files.get(path)
        if data is None:
            problems.append(f"{path}: in the manifest but not in the archive")
            continue
        if len(data) != entry.get("bytes"):
            problems.append(f"{path}: {len(data)} bytes, the manifest says {entry.get('bytes')}")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest")
    for path in sorted(set(files) - seen - {"manifest.json"}):
        problems.append(f"{path}: not in the manifest")
    return problems
