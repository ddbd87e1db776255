"""--max-size: a hard cap on the archive, decided while streaming, by priority class."""

import json
import random
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpdump.archive import (
    FORMATS,
    MIN_SPLIT_SIZE,
    PRIORITIES,
    RESERVE_MIN,
    ArchiveWriter,
    Entry,
    _bound,
    archive_suffix,
    read_archive,
    verify,
)
from tpdump.errors import UsageError

ROOT = "tpdump-acme-20260101T000000Z"
MiB = 1024 * 1024


@dataclass
class Added:
    path: str  # as returned by add()
    data: bytes
    priority: str
    node: str | None


def text_log(lines: int, tag: str = "x") -> bytes:
    return b"".join(b"2026-01-01T00:00:%02d INFO [PROXY] %s request %d served in 3ms\n"
                    % (i % 60, tag.encode(), i) for i in range(lines))


def random_log(seed: int, size: int) -> bytes:
    """Incompressible bytes; newlines occur naturally (~1 in 256) so it has lines."""
    data = random.Random(seed).randbytes(size - 1) + b"\n"
    return data


def metrics(lines: int) -> bytes:
    return b"".join(b'teleport_metric_total{node="n",kind="%d"} %d\n' % (i % 97, i)
                    for i in range(lines))


Batch = Sequence[tuple[str, bytes, str, str | None]]
Report = Sequence[tuple[str, bytes, str | None]]


async def write_all(writer: ArchiveWriter, batches: Sequence[Batch], report: Report, *,
                    expect: int = 0,
                    settle: bool = True) -> list[Added]:
    """Open, write every batch (collection), settle, write the report class, close."""
    added: list[Added] = []
    writer.open()
    if expect:
        writer.expect_nodes(expect)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for batch in batches:
            for path, data, prio, node in batch:
                rel = await writer.add(path, data, source="test", priority=prio, node=node)
                added.append(Added(rel, data, prio, node))
        if settle:
            await writer.settle()
        for path, data, node in report:
            rel = await writer.add(path, data, source="tpdump", priority="report", node=node)
            added.append(Added(rel, data, "report", node))
        await writer.finish_input()
    writer.close()
    return added


def on_disk(writer: ArchiveWriter) -> int:
    return sum(p.stat().st_size for p in writer.parts)


def check_consistent(writer: ArchiveWriter, added: list[Added]) -> dict[str, bytes]:
    """The archive verifies; every file is whole, a line-aligned tail (logs) or head
    (others) marked truncated, or absent; and `cuts` lists exactly the ones not whole."""
    files = read_archive(writer.path)
    assert verify(files) == []
    manifest = {e["path"]: e for e in json.loads(files["manifest.json"])["files"]}
    cuts = {c.path: c for c in writer.cuts}
    assert len(cuts) == len(writer.cuts)
    for item in added:
        cut = cuts.get(item.path)
        if cut is None:
            assert files.get(item.path) == item.data, item.path
            assert not manifest[item.path]["truncated"]
            continue
        assert cut.priority == item.priority and cut.original_bytes == len(item.data)
        if cut.kept_bytes == 0:  # dropped (even an empty file costs a header and an entry)
            assert item.path not in files and item.path not in manifest
            continue
        kept = files[item.path]
        assert cut.kept_bytes < len(item.data)
        assert len(kept) == cut.kept_bytes and manifest[item.path]["truncated"]
        if item.priority == "log":  # the newest lines: a tail starting at a line start
            assert item.data.endswith(kept)
            assert item.data[len(item.data) - len(kept) - 1] == ord("\n")
        else:  # the head, ending at a line end when there is one
            assert item.data.startswith(kept)
            assert kept.endswith(b"\n") or b"\n" not in item.data[:len(kept) + 1]
    assert set(files) - {"manifest.json"} <= {a.path for a in added}
    return files


def fifty_nodes(nodes: int = 50) -> tuple[list[Batch], Report]:
    batches: list[Batch] = []
    for n in range(nodes):
        node = f"6204f089-7da7-4381-b28b-{n:012d}"
        base = f"nodes/{node}"
        batches.append([
            (f"{base}/teleport.yaml", b"teleport:\n  nodename: n%d\n" % n * 20, "normal", node),
            (f"{base}/cmdline", b"teleport\0start\0--config\0/etc/teleport.yaml\0", "normal",
             node),
            (f"{base}/diag/metrics.txt", metrics(3000), "bulk", node),
            (f"{base}/teleport.service/log.txt", text_log(3000, f"n{n}"), "log", node),
            (f"{base}/logs/teleport.log", random_log(n, 2 * MiB), "log", node),
            (f"{base}/host/listing.txt", random_log(10_000 + n, 100_000), "bulk", node),
        ])
    report: list[tuple[str, bytes, str | None]] = [
        ("report.json", json.dumps({"nodes": list(range(2000))}).encode(), None),
        ("report.txt", b"INCOMPLETE\n" * 500, None),
        ("readme.html", b"<html>" + b"<p>node ok</p>\n" * 2000 + b"</html>", None)]
    report += [(f"nodes/6204f089-7da7-4381-b28b-{n:012d}/node.json",
                json.dumps({"status": "ok", "n": n, "items": ["x"] * 50}).encode(), None)
               for n in range(nodes)]
    report.append(("tpdump.log", text_log(2000, "tpdump"), None))
    return batches, report


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("split", [None, 256 * 1024])
async def test_fifty_nodes_with_random_logs_stay_under_the_cap(tmp_path: Path, fmt: str,
                                                              split: int | None) -> None:
    """50 nodes, each with 2 MB of incompressible log, compressible logs, bulk and normal
    files, then the report: the whole archive (all parts) is at most max_size; every normal
    and report file is there whole; each node keeps the newest tail of its big log, fairly;
    bulk is what gives way; `cuts` says what was cut."""
    cap = 6_000_000
    writer = ArchiveWriter(tmp_path / f"d{archive_suffix(fmt)}", ROOT, fmt=fmt,
                           split_size=split, max_size=cap, buffer=4)
    batches, report = fifty_nodes()
    added = await write_all(writer, batches, report, expect=50)
    assert on_disk(writer) <= cap
    assert on_disk(writer) >= cap * 0.8  # and the budget is actually used
    if split:
        assert all(p.stat().st_size <= split for p in writer.parts) and len(writer.parts) > 10
    files = check_consistent(writer, added)
    for item in added:
        if item.priority in ("normal", "report"):
            assert files[item.path] == item.data
    big = [len(files.get(a.path, b"")) for a in added if a.path.endswith("logs/teleport.log")]
    assert len(big) == 50 and min(big) > 0
    assert max(big) <= 2 * min(big), big
    small = [a for a in added if a.path.endswith("log.txt")]
    assert all(files[a.path] == a.data for a in small)  # they fit in every node's share
    cut_paths = {c.path for c in writer.cuts}
    assert {a.path for a in added if a.path.endswith("logs/teleport.log")} <= cut_paths
    assert all(c.reason for c in writer.cuts)
    listings = [a for a in added if a.path.endswith("listing.txt")]
    assert all(a.path in cut_paths for a in listings)  # incompressible bulk gives way


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_generous_cap_cuts_nothing(tmp_path: Path, fmt: str) -> None:
    """When everything fits, nothing is cut, whatever the order (bulk before any log)."""
    batches, report = fifty_nodes(5)
    writer = ArchiveWriter(tmp_path / f"d{archive_suffix(fmt)}", ROOT, fmt=fmt,
                           max_size=40 * MiB, buffer=4)
    added = await write_all(writer, batches, report, expect=5)
    assert writer.cuts == []
    files = check_consistent(writer, added)
    assert len(files) == len(added) + 1
    assert on_disk(writer) <= 40 * MiB


@pytest.mark.anyio
async def test_normal_files_are_whole_or_dropped_and_the_report_always_fits(
        tmp_path: Path) -> None:
    """Near the minimum cap: an incompressible normal file that does not fit is dropped (and
    in `cuts`, and add() still returned its path), small normal files are kept, the report
    class still fits in its reserve."""
    probe = ArchiveWriter(tmp_path / "p.tar.gz", ROOT)
    cap = probe.min_max_size + 40_000
    writer = ArchiveWriter(tmp_path / "d.tar.gz", ROOT, max_size=cap)
    batch: list[tuple[str, bytes, str, str | None]] = [
        ("objects/big.yaml", random_log(1, 60_000), "normal", None),
        ("objects/roles.yaml", b"kind: role\n" * 100, "normal", None),
        ("objects/users.yaml", b"kind: user\n" * 100, "normal", None),
        ("logs/x.log", random_log(2, 500_000), "log", None)]
    report: Report = [("report.json", b'{"ok": true}\n' * 2000, None),
                      ("tpdump.log", text_log(500), None)]
    added = await write_all(writer, [batch], report)
    assert on_disk(writer) <= cap
    files = check_consistent(writer, added)
    assert "objects/big.yaml" not in files
    assert next(c for c in writer.cuts if c.path == "objects/big.yaml").kept_bytes == 0
    assert files["objects/roles.yaml"] == batch[1][1]
    assert files["objects/users.yaml"] == batch[2][1]
    assert files["report.json"] == report[0][1] and files["tpdump.log"] == report[1][1]


@pytest.mark.anyio
async def test_logs_cannot_eat_the_reserve_of_the_report(tmp_path: Path) -> None:
    """Huge incompressible logs of one node take at most what is left after the reserve:
    the report and every node.json written afterwards are whole."""
    cap = 2 * MiB
    writer = ArchiveWriter(tmp_path / "d.zip", ROOT, fmt="zip", max_size=cap)
    batch: list[tuple[str, bytes, str, str | None]] = [
        (f"nodes/n{i}/log", random_log(i, 3 * MiB), "log", f"n{i}") for i in range(3)]
    report: list[tuple[str, bytes, str | None]] = [
        ("report.json", random_log(9, RESERVE_MIN // 2), None)]
    report += [(f"nodes/n{i}/node.json", random_log(20 + i, 1500), None) for i in range(3)]
    added = await write_all(writer, [batch], report, expect=3, settle=False)
    assert on_disk(writer) <= cap
    files = check_consistent(writer, added)
    assert all(files[a.path] == a.data for a in added if a.priority == "report")
    kept = [len(files[f"nodes/n{i}/log"]) for i in range(3)]
    assert min(kept) > 0.5 * max(kept)


@pytest.mark.anyio
async def test_bulk_gets_what_the_logs_leave(tmp_path: Path) -> None:
    """A bulk file sent before any log waits; it is cut (head kept, at a line end) to the
    room the logs leave, and written whole when the logs leave room."""
    lines = metrics(40_000)
    scrambled = b"".join(line[::-1] + b"\n" for line in
                         random_log(5, 500_000).split(b"\n"))  # incompressible lines
    for logs, whole in ((random_log(3, 3 * MiB), False), (text_log(100), True)):
        writer = ArchiveWriter(tmp_path / f"d{whole}.tar.gz", ROOT, max_size=MiB + RESERVE_MIN)
        batch: list[tuple[str, bytes, str, str | None]] = [
            ("nodes/a/metrics.txt", lines, "bulk", "a"),
            ("nodes/a/listing.txt", scrambled, "bulk", "a"),
            ("nodes/a/log", logs, "log", "a"),
            ("nodes/b/log", logs, "log", "b")]
        added = await write_all(writer, [batch], [], expect=2)
        assert on_disk(writer) <= MiB + RESERVE_MIN
        files = check_consistent(writer, added)
        bulk_kept = len(files.get("nodes/a/listing.txt", b""))
        if whole:
            assert writer.cuts == []
        else:
            assert len(files["nodes/a/log"]) > 300_000 and len(files["nodes/b/log"]) > 300_000
            assert bulk_kept < 100_000  # the logs came first, although sent later


def test_the_deflate_bound_holds_for_incompressible_data() -> None:
    """The bound the budget relies on: random bytes do expand, but never past _bound(n),
    fed after a sync point with history (tar.gz) or to a fresh stream (zip)."""
    rnd = random.Random(0)
    for n in (0, 1, 100, 16_383, 16_384, 65_536, 300_000, 2 * MiB):
        data = rnd.randbytes(n)
        z = zlib.compressobj(6, zlib.DEFLATED, -15, 8, 0)
        z.compress(text_log(500) + rnd.randbytes(40_000))
        z.flush(zlib.Z_SYNC_FLUSH)
        synced = len(z.compress(data)) + len(z.flush(zlib.Z_SYNC_FLUSH))
        fresh = zlib.compressobj(6, zlib.DEFLATED, -15)
        whole = len(fresh.compress(data)) + len(fresh.flush())
        assert max(synced, whole) <= _bound(n)
        if n >= 16_384:
            assert synced > n and whole > n  # so a bound of n would not do


def test_a_cap_below_the_reserve_is_a_usage_error(tmp_path: Path) -> None:
    for fmt in FORMATS:
        minimum = ArchiveWriter(tmp_path / "d", ROOT, fmt=fmt).min_max_size
        assert RESERVE_MIN < minimum < RESERVE_MIN + 32 * 1024
        with pytest.raises(UsageError, match=f"at least {minimum} bytes"):
            ArchiveWriter(tmp_path / "d", ROOT, fmt=fmt, max_size=minimum - 1)
        ArchiveWriter(tmp_path / "d", ROOT, fmt=fmt, max_size=minimum)


@pytest.mark.anyio
async def test_the_minimum_cap_holds_with_only_adversarial_input(tmp_path: Path) -> None:
    """At exactly the minimum, with every class incompressible, the cap holds."""
    for fmt in FORMATS:
        cap = ArchiveWriter(tmp_path / "p", ROOT, fmt=fmt).min_max_size
        writer = ArchiveWriter(tmp_path / f"m{archive_suffix(fmt)}", ROOT, fmt=fmt,
                               max_size=cap)
        batch: list[tuple[str, bytes, str, str | None]] = [
            (f"f{i}", random_log(i, 30_000), prio, None)
            for i, prio in enumerate(PRIORITIES * 3)]
        report: Report = [(f"r{i}", random_log(50 + i, 30_000), None) for i in range(4)]
        added = await write_all(writer, [batch], report)
        assert on_disk(writer) <= cap
        check_consistent(writer, added)


# --- the property ------------------------------------------------------------------------

KINDS = ("random", "text", "zeros", "mixed", "one-line")


def make(kind: str, size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    if kind == "random":
        return rnd.randbytes(size)
    if kind == "zeros":
        return b"\0" * size
    if kind == "one-line":
        return rnd.randbytes(size).replace(b"\n", b" ")
    if kind == "text":
        return text_log(size // 60 + 1)[:size]
    out, total = [], 0
    while total < size:
        chunk = rnd.randbytes(rnd.randint(1, 5000)) if rnd.random() < 0.5 else \
            text_log(rnd.randint(1, 80))
        out.append(chunk)
        total += len(chunk)
    return b"".join(out)[:size]


item_strategy = st.tuples(st.sampled_from(PRIORITIES), st.integers(0, 150_000),
                          st.sampled_from(KINDS), st.integers(0, 6))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(item_strategy, max_size=30), extra=st.integers(0, 1_200_000),
       fmt=st.sampled_from(FORMATS), split=st.sampled_from([None, MIN_SPLIT_SIZE, 300_000]),
       expect=st.integers(0, 8), settle=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_cap_is_never_exceeded(items: list[tuple[str, int, str, int]], extra: int,
                                   fmt: str, split: int | None, expect: int, settle: bool,
                                   seed: int) -> None:
    """Random sizes, priorities, nodes and compressibility (incompressible included): the
    archive is never larger than max_size, and always whole and consistent."""
    with tempfile.TemporaryDirectory() as tmp:
        cap = ArchiveWriter(Path(tmp) / "p", ROOT, fmt=fmt).min_max_size + extra
        writer = ArchiveWriter(Path(tmp) / f"d{archive_suffix(fmt)}", ROOT, fmt=fmt,
                               split_size=split, max_size=cap, buffer=8)
        batch: list[tuple[str, bytes, str, str | None]] = []
        report: list[tuple[str, bytes, str | None]] = []
        for i, (prio, size, kind, node) in enumerate(items):
            data = make(kind, size, seed + i)
            owner = f"n{node}" if node else None
            if prio == "report":
                report.append((f"r/{i}", data, owner))
            else:
                batch.append((f"{owner or 'cluster'}/{i}", data, prio, owner))

        async def main() -> list[Added]:
            return await write_all(writer, [batch], report, expect=expect, settle=settle)

        added = anyio.run(main)
        assert on_disk(writer) <= cap
        if split:
            assert all(p.stat().st_size <= split for p in writer.parts)
        check_consistent(writer, added)


@given(st.text(max_size=80), st.integers(min_value=0, max_value=10**13), st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_manifest_entry_length_is_counted_exactly(path: str, size: int, source: str) -> None:
    """The budget's count of a manifest entry (without writing it) equals the entry as the
    manifest writes it: a short count would let the archive pass its cap."""
    written = json.dumps(asdict(Entry(path, size, "0" * 64, source, False)), indent=1)
    assert ArchiveWriter._entry_len(path, size, source) == len(written) + 24


@given(st.lists(st.builds(Entry, st.text(max_size=40), st.integers(0, 10**12),
                          st.text("0123456789abcdef", min_size=64, max_size=64),
                          st.text(max_size=40), st.booleans()), max_size=6),
       st.text(max_size=20))
@settings(max_examples=100, deadline=None)
def test_manifest_is_what_json_dumps_writes(entries: list[Entry], root: str) -> None:
    """manifest.json (built entry by entry) is exactly json.dumps(indent=1) of the
    manifest, so the budget's per-entry count and every reader agree with it."""
    writer = ArchiveWriter.__new__(ArchiveWriter)
    writer.root = root
    expected = json.dumps({"schema": 1, "root": root,
                           "files": [asdict(e) for e in sorted(entries, key=lambda e: e.path)]},
                          indent=1).encode()
    assert writer._manifest_text(entries) == expected


_NODE_PATHS = st.lists(st.tuples(
    st.sampled_from(["nodes/a/", "nodes/a-b/", "nodes/a.b/", "nodes/ab/", "nodes/b/", "nodes/",
                     "cluster/", "nodes/a/sub/", ""]),
    st.text("ab./-_x0", min_size=1, max_size=6)), min_size=0, max_size=60, unique=True)


@given(_NODE_PATHS, st.integers(1, 3), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_ledger_packs_nodes_and_still_gives_every_entry_sorted(
        paths: list[tuple[str, str]], open_nodes: int, rnd: random.Random) -> None:
    """The manifest's entries, packed per node once other nodes' files follow, come back
    whole, in path order, whatever the order they were written in (late files of a packed
    node, like node.json at the end, included); the streamed manifest equals the whole one."""
    import tpdump.archive as archive

    entries = [Entry(d + f, i, f"{i:064x}", rnd.choice(["a", "tpdump", "é"]), i % 3 == 0)
               for i, (d, f) in enumerate(paths)]
    rnd.shuffle(entries)
    ledger = archive._Ledger()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(archive, "_OPEN_NODES", open_nodes)
        for e in entries:
            ledger.add(e)
    assert list(ledger) == sorted(entries, key=lambda e: e.path)
    assert len(ledger) == len(entries)
    assert sorted(ledger.truncated) == sorted(e.path for e in entries if e.truncated)
    writer = ArchiveWriter.__new__(ArchiveWriter)
    writer.root = ROOT
    writer._ledger = ledger
    assert writer.manifest() == writer._manifest_text(entries)


def test_ledger_packs_a_node_once_others_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat in N: only the newest nodes' entries are kept as objects."""
    import tpdump.archive as archive

    monkeypatch.setattr(archive, "_OPEN_NODES", 4)
    ledger = archive._Ledger()
    for n in range(100):
        for f in ("node.json", "config/teleport.yaml", "logs/teleport.log"):
            ledger.add(Entry(f"nodes/web-{n}/{f}", 10, "0" * 64, "ssh", False))
    assert len(ledger._open) == 4
    assert sum(len(b) for b in ledger._packed.values()) == 96
    assert len(list(ledger)) == 300
