"""`tpdump inspect`, `analyze` and `diff` given hostile archives (tar and zip bombs, member
names that escape, link members, truncated and corrupt files): a clear TPD402 or TPD401,
exit 2, no traceback, nothing written anywhere, bounded memory and time."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import peak_rss_kb, tpdump_cmd
from tpdump.archive import DamagedArchive, ReadLimits, UnsafeArchive, read_archive

ROOT = "tpdump-acme-20260101T000000Z"
MAX_RSS_MB = 400
MAX_SECONDS = 20.0
CHUNK = 64 << 20  # zeros per repeated compressed block


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


def run(*args: str, cwd: Path) -> Ran:
    """Run tpdump as a child and wait for it, polling its own peak RSS (VmHWM)."""
    started = time.monotonic()
    # the child's own VmHWM (KiB): wait4's ru_maxrss carries ours over fork and exec (it
    # stays the fallback, an upper bound, for a child gone before the first poll)
    peak = 0
    proc = subprocess.Popen(tpdump_cmd(*args), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = b"", b""
    try:
        out_fd, err_fd = proc.stdout, proc.stderr
        os.set_blocking(out_fd.fileno(), False)
        os.set_blocking(err_fd.fileno(), False)
        while True:
            for fd, sink in ((out_fd, "out"), (err_fd, "err")):
                chunk = fd.read()
                if chunk:
                    if sink == "out":
                        out += chunk
                    else:
                        err += chunk
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_kb(proc.pid))
            if time.monotonic() - started > 60:
                proc.kill()
            time.sleep(0.02)
        out += out_fd.read() or b""
        err += err_fd.read() or b""
    finally:
        proc.stdout.close()
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Ran(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
               time.monotonic() - started, (peak or usage.ru_maxrss) / 1024)


# --- building hostile archives (streamed: nothing big is ever in memory) ------------------


def _tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE,
                link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _zeros_member() -> bytes:
    """One gzip member of CHUNK zero bytes (gzip files may hold many members)."""
    return gzip.compress(b"\0" * CHUNK, compresslevel=9)


def tar_bomb(path: Path, total: int) -> None:
    """A tar.gz with one member of `total` zero bytes, a few MB on disk."""
    assert total % CHUNK == 0
    block = _zeros_member()
    with path.open("wb") as fh:
        fh.write(gzip.compress(_tar_header(f"{ROOT}/zeros.log", total)))
        for _ in range(total // CHUNK):
            fh.write(block)
        fh.write(gzip.compress(tarfile.NUL * 1024))


def tar_many(path: Path, count: int, size: int) -> None:
    """A tar.gz of `count` members of `size` zero bytes each (size a multiple of 512)."""
    data = gzip.compress(b"\0" * size, compresslevel=9)
    with path.open("wb") as fh:
        for i in range(count):
            fh.write(gzip.compress(_tar_header(f"{ROOT}/nodes/{i}.log", size)))
            fh.write(data)
        fh.write(gzip.compress(tarfile.NUL * 1024))


def tar_of(path: Path, members: list[tuple[str, bytes, bytes, str]]) -> None:
    """A tar.gz from (name, data, type, link target) written raw (no name cleaning)."""
    raw = io.BytesIO()
    for name, data, kind, link in members:
        raw.write(_tar_header(name, len(data), kind, link))
        raw.write(data + tarfile.NUL * (-len(data) % 512))
    raw.write(tarfile.NUL * 1024)
    path.write_bytes(gzip.compress(raw.getvalue()))


def zip_raw(path: Path, entries: list[tuple[str, int, int]], data: bytes,
            extra_members: int = 0) -> None:
    """A zip whose central directory lists `entries` (name, declared size, external
    attributes), each pointing at the same local header and deflated `data`: sizes and
    overlap are whatever the entries say (zip bombs lie)."""
    name0 = entries[0][0].encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, 0, len(data),
                        entries[0][1] & 0xFFFFFFFF, len(name0), 0) + name0
    central = b""
    for name, size, attrs in entries:
        raw = name.encode("utf-8", "surrogateescape")
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 20, 0, 8, 0, 0x21,
                               0, len(data), size & 0xFFFFFFFF, len(raw), 0, 0, 0, 0, attrs,
                               0) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                      len(central), len(local) + len(data), 0)
    with path.open("wb") as fh:
        fh.write(local)
        fh.write(data)
        fh.write(central)
        fh.write(end)


def deflated_zeros(total: int) -> bytes:
    """A raw deflate stream of `total` zero bytes, built from one fully-flushed block."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(b"\0" * CHUNK) + z.flush(zlib.Z_FULL_FLUSH)
    return block * (total // CHUNK) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every hostile archive, built once."""
    d = tmp_path_factory.mktemp("archives")
    out: dict[str, Path] = {}

    def p(name: str) -> Path:
        out[name] = d / name
        return d / name

    tar_bomb(p("bomb-10g.tar.gz"), 160 * CHUNK)  # 10 GiB of zeros in one member
    tar_bomb(p("bomb-512m.tar.gz"), 8 * CHUNK)  # under the member cap: the ratio stops it
    tar_many(p("bomb-many.tar.gz"), 400, 1 << 20)  # 400 MiB in 1 MiB members
    good = (f"{ROOT}/report.txt", b"ok\n", tarfile.REGTYPE, "")
    tar_of(p("dotdot.tar.gz"), [good, (f"{ROOT}/../../evil.txt", b"x", tarfile.REGTYPE, "")])
    tar_of(p("absolute.tar.gz"), [good, ("/tmp/tpdump-evil-abs.txt", b"x", tarfile.REGTYPE,
                                         "")])
    tar_of(p("symlink.tar.gz"), [good, (f"{ROOT}/nodes", b"", tarfile.SYMTYPE, "/etc"),
                                 (f"{ROOT}/nodes/passwd", b"x", tarfile.REGTYPE, "")])
    tar_of(p("hardlink.tar.gz"), [good, (f"{ROOT}/shadow", b"", tarfile.LNKTYPE,
                                         "/etc/shadow")])
    tar_of(p("device.tar.gz"), [good, (f"{ROOT}/null", b"", tarfile.CHRTYPE, "")])
    zip_raw(p("bomb-zip.zip"), [(f"{ROOT}/zeros.log", 60 * CHUNK, 0o644 << 16)],
            deflated_zeros(60 * CHUNK))
    zip_raw(p("overlap.zip"), [(f"{ROOT}/o{i}.log", 8 * CHUNK, 0o644 << 16)
                               for i in range(64)], deflated_zeros(8 * CHUNK))
    zip_raw(p("lying.zip"), [(f"{ROOT}/small.log", 1024, 0o644 << 16)],
            deflated_zeros(8 * CHUNK))
    zip_raw(p("dotdot.zip"), [("..\\..\\evil.txt", 3, 0)], zlib.compress(b"abc")[2:-4])
    zip_raw(p("symlink.zip"), [(f"{ROOT}/link", 11, 0o120777 << 16)],
            zlib.compress(b"/etc/passwd")[2:-4])
    legit = io.BytesIO()
    with tarfile.open(fileobj=legit, mode="w:gz") as tar:
        for i in range(20):
            data = os.urandom(20000)
            info = tarfile.TarInfo(f"{ROOT}/nodes/n{i}/logs/a.log")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    whole = legit.getvalue()
    p("truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    corrupt = bytearray(whole)
    corrupt[len(whole) // 3: len(whole) // 3 + 64] = b"\xa5" * 64
    p("corrupt.tar.gz").write_bytes(bytes(corrupt))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{ROOT}/report.txt", os.urandom(50000))
    p("truncated.zip").write_bytes(zbuf.getvalue()[:30000])
    p("notanarchive.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(5000))
    return out


REFUSED = ["bomb-10g.tar.gz", "bomb-512m.tar.gz", "bomb-many.tar.gz", "dotdot.tar.gz",
           "absolute.tar.gz", "symlink.tar.gz", "hardlink.tar.gz", "device.tar.gz",
           "bomb-zip.zip", "overlap.zip", "dotdot.zip", "symlink.zip"]
DAMAGED = ["truncated.tar.gz", "corrupt.tar.gz", "truncated.zip", "notanarchive.tar.gz",
           "lying.zip"]


def _nothing_escaped(tmp: Path) -> None:
    assert not (tmp.parent / "evil.txt").exists()
    assert not (tmp.parent.parent / "evil.txt").exists()
    assert not Path("/tmp/tpdump-evil-abs.txt").exists()


@pytest.mark.parametrize("name", REFUSED)
def test_hostile_archive_refused_by_inspect(hostile: dict[str, Path], tmp_path: Path,
                                            name: str) -> None:
    """`inspect --extract` refuses a bomb, an escaping name or a link member with TPD402,
    exit 2, no traceback, quickly and in bounded memory; nothing is written."""
    out = tmp_path / "out"
    ran = run("inspect", str(hostile[name]), "--extract", str(out), cwd=tmp_path)
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "TPD402" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    assert ran.seconds < MAX_SECONDS and ran.max_rss_mb < MAX_RSS_MB, ran
    assert not out.exists()
    _nothing_escaped(tmp_path)


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_archive_is_a_clear_error(hostile: dict[str, Path], tmp_path: Path,
                                          name: str) -> None:
    """A truncated, corrupt or lying archive gives TPD401 and exit 2, no traceback."""
    ran = run("inspect", str(hostile[name]), cwd=tmp_path)
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "TPD401" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    assert ran.max_rss_mb < MAX_RSS_MB, ran


@pytest.mark.parametrize("command", ["analyze", "diff"])
@pytest.mark.parametrize("name", ["bomb-10g.tar.gz", "bomb-many.tar.gz", "overlap.zip",
                                  "dotdot.tar.gz"])
def test_analyze_and_diff_refuse_hostile_archives(hostile: dict[str, Path], tmp_path: Path,
                                                  command: str, name: str) -> None:
    """`analyze` and `diff` read through the same guarded reader: TPD402, exit 2, bounded."""
    args = [str(hostile[name])] * (2 if command == "diff" else 1)
    ran = run(command, *args, cwd=tmp_path)
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "TPD402" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    assert ran.seconds < MAX_SECONDS and ran.max_rss_mb < MAX_RSS_MB, ran


def test_reader_limits_members_and_total(tmp_path: Path) -> None:
    """The member count and total size caps hold (small limits, small archives); a read
    within them returns the files."""
    path = tmp_path / "many.tar.gz"
    tar_of(path, [(f"{ROOT}/f{i}", b"x" * 100, tarfile.REGTYPE, "") for i in range(50)])
    assert len(read_archive(path)) == 50
    with pytest.raises(UnsafeArchive, match="more than 49 members"):
        read_archive(path, ReadLimits(max_members=49))
    with pytest.raises(UnsafeArchive, match="unpacks to more than 4000 bytes"):
        read_archive(path, ReadLimits(max_total_bytes=4000))
    with pytest.raises(DamagedArchive):
        read_archive(_write(tmp_path / "t.tar.gz", path.read_bytes()[:-30]))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
