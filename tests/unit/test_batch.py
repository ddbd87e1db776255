"""The batch (one exec for many requests): run by the real /bin/sh it gives every request
exactly what a separate read or command would; the simulator's emulation prints the same
bytes as dash; hostile output cannot forge an answer."""

import os
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

from tpdump import batch
from tpdump.batch import Ran, Want
from tpdump.sim.shell import (
    ExecResult,
    batch_end,
    batch_frame,
    batch_step,
    parse_batch,
)
from tpdump.sim.vfs import Entry, NodeFS

B = "c0ffee" * 5 + "ab"


def run_sh(script: str) -> bytes:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, timeout=30,
                          check=True).stdout


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "small.txt": b"one\ntwo\nthree\n",
        "big.log": b"".join(f"line {i:05d} of the log\n".encode() for i in range(4000)),
        "noeol": b"no newline at the end",
        "binary.db": bytes(range(256)) * 8,
        "hostile": f"x\n--{B} 0\nforged\n--{B} rc 0 0\n".encode(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "dir").mkdir()
    os.symlink("small.txt", root / "link")
    return files


def test_reads_match_what_sftp_gives(tmp_path: Path) -> None:
    """head and tail reads: the same bytes, the same truncation flag, a tail cut at a line
    start, as SSHHost.read gives by SFTP; a missing file or a directory is left to SFTP."""
    files = make_tree(tmp_path)
    big = files["big.log"]
    wants = [
        Want("head", (str(tmp_path / "small.txt"),), 1024),
        Want("head", (str(tmp_path / "big.log"),), 100),
        Want("tail", (str(tmp_path / "big.log"),), 1000),
        Want("tail", (str(tmp_path / "small.txt"),), 1000),
        Want("head", (str(tmp_path / "noeol"),), 1000),
        Want("head", (str(tmp_path / "binary.db"),), 4096),
        Want("head", (str(tmp_path / "missing"),), 10),
        Want("head", (str(tmp_path / "dir"),), 10),
        Want("head", (str(tmp_path / "link"),), 1024),
    ]
    got = batch.parse(run_sh(batch.script(B, wants, 10)), B, wants)
    assert got[wants[0]] == (files["small.txt"], False)
    assert got[wants[1]] == (big[:100], True)
    tail = big[-1000:]
    assert got[wants[2]] == (tail[tail.find(b"\n") + 1:], True)
    assert got[wants[3]] == (files["small.txt"], False)
    assert got[wants[4]] == (files["noeol"], False)
    assert got[wants[5]] == (files["binary.db"], False)
    assert wants[6] not in got and wants[7] not in got
    assert got[wants[8]] == (files["small.txt"], False)


def test_commands_kinds_and_statuses(tmp_path: Path) -> None:
    """Commands: output, status 0, a cut at the cap; a failing command is left to its own
    exec (its stderr says why); kinds as lstat tells them."""
    make_tree(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "debug.sock"))
    try:
        wants = [
            Want("run", ("echo", "hello world"), 100),
            Want("run", ("seq", "1", "100000"), 50),
            Want("run", ("sh", "-c", "echo oops >&2; exit 3"), 100),
            Want("run", ("cat", str(tmp_path / "small.txt")), 100),
            Want("run", ("sh", "-c", "echo inactive; exit 3"), 100, (0, 3)),
            Want("kind", (str(tmp_path / "debug.sock"),)),
            Want("kind", (str(tmp_path / "dir"),)),
            Want("kind", (str(tmp_path / "small.txt"),)),
            Want("kind", (str(tmp_path / "link"),)),
            Want("kind", (str(tmp_path / "missing"),)),
        ]
        got = batch.parse(run_sh(batch.script(B, wants, 10)), B, wants)
    finally:
        sock.close()
    assert got[wants[0]] == Ran(b"hello world\n", 0, False)
    seq = b"".join(f"{i}\n".encode() for i in range(1, 100))
    assert got[wants[1]] == Ran(seq[:50], None, True)
    assert wants[2] not in got
    assert got[wants[3]] == Ran(b"one\ntwo\nthree\n", 0, False)
    assert got[wants[4]] == Ran(b"inactive\n", 3, False)  # an answer, not a failure
    assert [got[w] for w in wants[5:]] == ["socket", "dir", "file", "link", None]


def test_a_hanging_command_is_stopped_and_not_asked_again(tmp_path: Path) -> None:
    """Each command runs under `timeout`: a hanging one ends with a TPD202 answer (asking
    again would hang again) and the requests after it are still answered."""
    wants = [Want("run", ("sleep", "30"), 10), Want("run", ("echo", "after"), 10)]
    out = subprocess.run(["/bin/sh", "-c", batch.script(B, wants, 1)], capture_output=True,
                         timeout=20).stdout
    got = batch.parse(out, B, wants)
    assert getattr(got[wants[0]], "code", None) == "TPD202"
    assert got[wants[1]] == Ran(b"after\n", 0, False)


def test_hostile_content_cannot_forge_an_answer(tmp_path: Path) -> None:
    """A file printing lines shaped like the framing (with a guessed boundary) stays data:
    the real boundary is random per batch."""
    make_tree(tmp_path)
    boundary = os.urandom(16).hex()
    wants = [Want("head", (str(tmp_path / "hostile"),), 1024),
             Want("run", ("echo", "real"), 100)]
    got = batch.parse(run_sh(batch.script(boundary, wants, 10)), boundary, wants)
    assert got[wants[0]] == ((tmp_path / "hostile").read_bytes(), False)
    assert got[wants[1]] == Ran(b"real\n", 0, False)


def test_a_cut_batch_keeps_the_complete_answers() -> None:
    """Output cut in the middle (a timeout, a dropped connection): the answers before the
    cut are used, the one cut is not."""
    wants = [Want("run", ("echo", "a"), 10), Want("run", ("echo", "b"), 10)]
    full = run_sh(batch.script(B, wants, 10))
    cut = full[:full.index(b"rc 1")]
    got = batch.parse(cut, B, wants)
    assert got == {wants[0]: Ran(b"a\n", 0, False)}


def _fs_of(root: Path) -> NodeFS:
    """The simulator's file system holding the same tree at the same absolute paths."""
    entries: dict[str, Entry] = {"/": Entry("dir", 0o755, 0.0)}
    for path in sorted(root.rglob("*")):
        parts = path.parts
        for i in range(2, len(parts)):
            d = "/" + "/".join(parts[1:i])
            if d not in entries:
                entries[d] = Entry("dir", 0o755, 0.0)
                parent = os.path.dirname(d)
                entries[parent].children.append(os.path.basename(d))
        if path.is_symlink():
            ent = Entry("link", 0o777, 0.0, target=os.readlink(path))
        elif path.is_dir():
            ent = Entry("dir", 0o755, 0.0)
        else:
            ent = Entry("file", 0o644, 0.0, data=path.read_bytes())
        entries.setdefault(str(path), ent)
        entries[str(path.parent)].children.append(path.name)
    return NodeFS(entries)


def test_the_simulator_prints_what_dash_prints(tmp_path: Path) -> None:
    """The simulator's emulation of a batch (reads, kinds, cat/echo, caps, statuses) is
    byte-for-byte the output of the real /bin/sh running the same script."""
    make_tree(tmp_path)
    wants = [
        Want("head", (str(tmp_path / "small.txt"),), 1024),
        Want("head", (str(tmp_path / "big.log"),), 100),
        Want("tail", (str(tmp_path / "big.log"),), 1000),
        Want("tail", (str(tmp_path / "noeol"),), 5),
        Want("head", (str(tmp_path / "binary.db"),), 4096),
        Want("head", (str(tmp_path / "missing"),), 10),
        Want("head", (str(tmp_path / "link"),), 1024),
        Want("kind", (str(tmp_path / "dir"),)),
        Want("kind", (str(tmp_path / "link"),)),
        Want("kind", (str(tmp_path / "missing"),)),
        Want("run", ("echo", "hello", "world"), 100),
        Want("run", ("cat", str(tmp_path / "big.log")), 64),
        Want("real", (str(tmp_path / "small.txt"),)),
        Want("real", (str(tmp_path / "link"),)),
        Want("real", (str(tmp_path / "dir") + "/../link",)),
        Want("real", (str(tmp_path / "missing"),)),
    ]
    script = batch.script(B, wants, 10)
    real = run_sh(script)
    boundary, steps = parse_batch(script)
    assert boundary == B and len(steps) == len(wants)
    fs = _fs_of(tmp_path)
    node = SimpleNamespace(fault="none", hostname="web-1")
    emulated = bytearray()
    for step in steps:
        answer = batch_step(step, fs, node, 0.0, None)  # type: ignore[arg-type]
        assert isinstance(answer, ExecResult)
        emulated += batch_frame(boundary, step, answer.stdout, answer.code)
    emulated += batch_end(boundary)
    assert bytes(emulated) == real


def test_real_paths_resolve_every_link(tmp_path: Path) -> None:
    """`real` gives where a path really is (`readlink -f`: a final link, a link in the
    middle, `..`), nothing for a missing path or a dangling link."""
    make_tree(tmp_path)
    (tmp_path / "dir" / "inner").write_bytes(b"x")
    os.symlink(tmp_path / "dir", tmp_path / "dirlink")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    wants = [Want("real", (str(tmp_path / "link"),)),
             Want("real", (str(tmp_path / "dirlink" / "inner"),)),
             Want("real", (str(tmp_path / "dir") + "/../small.txt",)),
             Want("real", (str(tmp_path / "missing"),)),
             Want("real", (str(tmp_path / "dangling"),))]
    got = batch.parse(run_sh(batch.script(B, wants, 10)), B, wants)
    real = os.path.realpath
    assert got[wants[0]] == real(tmp_path / "small.txt")
    assert got[wants[1]] == real(tmp_path / "dir" / "inner")
    assert got[wants[2]] == real(tmp_path / "small.txt")
    assert got[wants[3]] is None and got[wants[4]] is None
