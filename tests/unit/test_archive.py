"""The archive writer: streamed tar.gz, manifest checksums, sanitised paths, atomic name."""

import hashlib
import json
import tarfile
from pathlib import Path

import anyio
import pytest

from tpdump.archive import ArchiveWriter, safe_component, safe_path
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
