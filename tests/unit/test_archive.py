"""The archive writer: streamed tar.gz or zip, manifest checksums, sanitised paths, atomic
name, numbered parts, and the reader."""

import hashlib
import json
import os
import random
import subprocess
import tarfile
import zipfile
from pathlib import Path

import anyio
import pytest

from tpdump.archive import (
    MIN_SPLIT_SIZE,
    ArchiveWriter,
    archive_parts,
    archive_suffix,
    read_archive,
    safe_component,
    safe_path,
    verify,
)
from tpdump.errors import UsageError
from tpdump.results import node_dir


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/etc/shadow", "a/../../b", "..",
                                     "x\x00y", "node\nname"])
def test_safe_path_never_escapes(hostile: str) -> None:
    """No sanitised path is absolute or climbs out of the archive root."""
    out = safe_path(hostile)
    assert not out.startswith("/")
    assert ".." not in out.split("/")
    assert "\x00" not in out and "\n" not in out


def test_node_dirs_of_hostile_ids_never_collide() -> None:
    """Two hostile host IDs that sanitise alike still get distinct directories."""
    assert node_dir("a/b") != node_dir("a_b")
    assert node_dir("../x").startswith("nodes/")
    uid = "6204f089-7da7-4381-b28b-d247d5122a2e"
    assert node_dir(uid) == f"nodes/{uid}"
    assert safe_component("...") == "_"


@pytest.mark.anyio
async def test_written_archive_matches_manifest(tmp_path: Path) -> None:
    """Every file is in the tar.gz under the root, with the manifest's size and sha256."""
    out = tmp_path / "dump.tar.gz"
    writer = ArchiveWriter(out, "tpdump-acme-20260101T000000Z")
    writer.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await writer.add("report.txt", "hello\n", source="test")
        await writer.add("nodes/x/cmdline", b"a\0b\0", source="test")
        await writer.add("nodes/x/cmdline", b"dup", source="test")
        await writer.add("../../escape", b"no", source="test")
        await writer.finish_input()
    assert writer.partial.exists() and not out.exists()
    writer.close()
    assert out.exists() and not writer.partial.exists()
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(f"{writer.root}/manifest.json").read())
        for entry in manifest["files"]:
            data = tar.extractfile(f"{writer.root}/{entry['path']}").read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["bytes"]
    assert all(n.startswith(writer.root + "/") for n in names)
    assert f"{writer.root}/nodes/x/cmdline.1" in names
    assert f"{writer.root}/_/_/escape" in names  # `..` became `_`, still inside the root


def test_unwritable_output_fails_at_once(tmp_path: Path) -> None:
    """A path that cannot be created is an ArchiveError before anything is collected."""
    from tpdump.errors import ArchiveError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveError):
        ArchiveWriter(tmp_path / "file" / "sub" / "d.tar.gz", "r").open()


# --- formats, parts, reader ---------------------------------------------------------------

ROOT = "tpdump-acme-20260101T000000Z"


def _contents(seed: int = 7) -> list[tuple[str, bytes]]:
    """A mix of compressible text, incompressible bytes and odd names."""
    rnd = random.Random(seed)
    text = b"".join(b"2026-01-01T00:00:%02d INFO [AUTH] line %d\n" % (i % 60, i)
                    for i in range(20000))
    return [("report.txt", b"complete\n"), ("nodes/a/teleport.yaml", b"teleport:\n  x: 1\n"),
            ("nodes/a/logs/teleport.log", text), ("nodes/a/blob.bin", rnd.randbytes(300_000)),
            ("empty", b""), ("nodes/b/" + "x" * 110, b"long name\n")]


async def _write(writer: ArchiveWriter, items: list[tuple[str, bytes]]) -> None:
    await _write_unclosed(writer, items)
    writer.close()


@pytest.mark.anyio
async def test_zip_and_tar_gz_hold_the_same_files_and_manifest(tmp_path: Path) -> None:
    """Both formats: same root, same files, manifests with the same checksums; zip members
    are deflated and streamed (data descriptors: the sink is not seekable)."""
    found = {}
    for fmt in ("tar.gz", "zip"):
        writer = ArchiveWriter(tmp_path / f"d{archive_suffix(fmt)}", ROOT, fmt=fmt)
        await _write(writer, _contents())
        files = read_archive(writer.path)
        assert verify(files) == []
        found[fmt] = (files, json.loads(files["manifest.json"]))
    tar_files, tar_manifest = found["tar.gz"]
    zip_files, zip_manifest = found["zip"]
    assert {k: v for k, v in tar_files.items() if k != "manifest.json"} == \
        {k: v for k, v in zip_files.items() if k != "manifest.json"}
    assert tar_manifest == zip_manifest
    assert {e["path"] for e in zip_manifest["files"]} == {p for p, _ in _contents()}
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        infos = zf.infolist()
    assert all(i.filename.startswith(ROOT + "/") for i in infos)
    assert all(i.compress_type == zipfile.ZIP_DEFLATED and i.flag_bits & 0x08 for i in infos)
    with tarfile.open(tmp_path / "d.tar.gz", "r:gz") as tar:
        assert all(n.startswith(ROOT + "/") for n in tar.getnames())


def test_archive_suffix_and_unknown_format() -> None:
    assert archive_suffix("tar.gz") == ".tar.gz"
    assert archive_suffix("zip") == ".zip"
    with pytest.raises(UsageError):
        archive_suffix("rar")
    with pytest.raises(UsageError):
        ArchiveWriter(Path("x.rar"), "r", fmt="rar")


async def _write_unclosed(writer: ArchiveWriter, items: list[tuple[str, bytes]]) -> None:
    writer.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for path, data in items:
            await writer.add(path, data, source="test")
        await writer.finish_input()


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_split_parts_are_bounded_and_join_back(tmp_path: Path, fmt: str) -> None:
    """Every part is at most split_size; parts are partial until close; read as a set or
    joined with join_command (run for real), the archive verifies."""
    split = MIN_SPLIT_SIZE
    out = tmp_path / f"dump{archive_suffix(fmt)}"
    writer = ArchiveWriter(out, ROOT, fmt=fmt, split_size=split)
    assert writer.partial == tmp_path / f"dump{archive_suffix(fmt)}.001.partial"
    anyio.run(_write_unclosed, writer, _contents())
    assert writer.partial.exists()
    assert not any(p.exists() for p in writer.parts)
    writer.close()
    parts = writer.parts
    assert len(parts) >= 4
    assert [p.name for p in parts] == [f"{out.name}.{i:03d}" for i in range(1, len(parts) + 1)]
    assert all(p.stat().st_size <= split for p in parts)
    assert sum(p.stat().st_size for p in parts) == writer.bytes_written
    assert sorted(tmp_path.iterdir()) == parts  # no partial files left, no unsplit file
    files = read_archive(out)
    assert verify(files) == []
    assert read_archive(parts[2]) == files  # any part names the set
    assert files["nodes/a/blob.bin"] == _contents()[3][1]
    command = writer.join_command()
    assert command == f"cat {out.name}.[0-9][0-9][0-9] > {out.name}"
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)
    assert out.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert read_archive(out) == files  # the joined file itself
    for part in parts:
        part.unlink()
    assert archive_parts(out) == [out]


@pytest.mark.anyio
async def test_unsplit_archive_has_one_part_and_no_join(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "d.tar.gz", ROOT)
    await _write(writer, _contents())
    assert writer.parts == [tmp_path / "d.tar.gz"]
    assert writer.join_command() is None
    assert writer.bytes_written == (tmp_path / "d.tar.gz").stat().st_size


def test_split_size_below_the_minimum_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="65536"):
        ArchiveWriter(tmp_path / "d.tar.gz", ROOT, split_size=MIN_SPLIT_SIZE - 1)


def test_stale_parts_of_an_older_set_are_not_joined(tmp_path: Path) -> None:
    """Parts of an older set of the same name numbered beyond ours would be joined too:
    they are removed; other files are left alone."""
    out = tmp_path / "d.tar.gz"
    for name in ("d.tar.gz.002", "d.tar.gz.099", "d.tar.gz.0001", "d.tar.gz.002.txt"):
        (tmp_path / name).write_bytes(b"old")
    writer = ArchiveWriter(out, ROOT, split_size=MIN_SPLIT_SIZE)
    anyio.run(_write, writer, [("a", b"x")])
    assert writer.parts == [tmp_path / "d.tar.gz.001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["d.tar.gz.0001", "d.tar.gz.001", "d.tar.gz.002.txt"]


@pytest.mark.anyio
async def test_verify_finds_changed_missing_and_unlisted_files(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "d.zip", ROOT, fmt="zip")
    await _write(writer, _contents())
    files = read_archive(writer.path)
    files["report.txt"] = b"tampered!\n"
    del files["nodes/a/teleport.yaml"]
    files["extra"] = b"?"
    problems = verify(files)
    assert any(p.startswith("report.txt:") and "sha256" in p for p in problems)
    assert any(p.startswith("report.txt:") and "bytes" in p for p in problems)
    assert any(p.startswith("nodes/a/teleport.yaml:") for p in problems)
    assert any(p.startswith("extra:") for p in problems)
    assert verify({}) == ["manifest.json is missing"]


@pytest.mark.anyio
async def test_transforms_apply_before_checksums(tmp_path: Path) -> None:
    """transform rewrites the bytes in the writer (the manifest describes what is stored);
    path_transform rewrites the path before it is sanitised; a failing transform drops the
    file (never written untransformed) and records the cut."""
    def transform(path: str, data: bytes) -> bytes:
        if path.endswith("boom"):
            raise RuntimeError("secret-host.example.com")
        return data.replace(b"acme", b"ORG1")

    writer = ArchiveWriter(tmp_path / "d.tar.gz", ROOT, transform=transform,
                           path_transform=lambda p: p.replace("node-a", "host-1/../x"))
    writer.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        rel = await writer.add("nodes/node-a/teleport.yaml", "cluster: acme\n", source="t")
        boom = await writer.add("nodes/node-a/boom", "acme", source="t")
        await writer.finish_input()
    writer.close()
    assert rel == "nodes/host-1/_/x/teleport.yaml"
    files = read_archive(writer.path)
    assert files[rel] == b"cluster: ORG1\n"
    assert verify(files) == []
    assert boom not in files
    assert [(c.path, c.kept_bytes) for c in writer.cuts] == [(boom, 0)]
    assert "secret" not in writer.cuts[0].reason


@pytest.mark.anyio
async def test_settle_waits_for_queued_files(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "d.tar.gz", ROOT, buffer=64)
    writer.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for i in range(20):
            await writer.add(f"f{i}", os.urandom(1000), source="t")
        await writer.settle()
        assert len(writer.entries) == 20
        await writer.finish_input()
        await writer.settle()  # after the input ended: returns at once
    writer.close()
