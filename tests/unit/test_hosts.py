"""Host helpers: capped output (head or newest tail), HTTP answers, the local host."""

from pathlib import Path

import pytest

from tpdump.hosts import ItemError, LocalHost, _Buffer, parse_http


def test_buffer_keeps_head_and_says_cut() -> None:
    """Head mode keeps the first cap bytes and reports truncation."""
    buf = _Buffer(10, keep_tail=False)
    assert buf.add(b"12345")
    assert not buf.add(b"6789abcdef")
    data, cut = buf.value()
    assert data == b"123456789a" and cut


def test_buffer_tail_keeps_newest_whole_lines() -> None:
    """Tail mode keeps the newest bytes, starting at a line boundary."""
    buf = _Buffer(20, keep_tail=True)
    for i in range(100):
        buf.add(f"line {i:03d}\n".encode())
    data, cut = buf.value()
    assert cut and data.endswith(b"line 099\n")
    assert data.startswith(b"line ") and len(data) <= 20


def test_parse_http_plain_and_chunked() -> None:
    """Status and body, with chunked transfer decoded."""
    status, body = parse_http(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}")
    assert (status, body) == (503, b"{}")
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert parse_http(chunked) == (200, b"hello world")
    with pytest.raises(ValueError):
        parse_http(b"garbage")


@pytest.mark.anyio
async def test_local_host_reads_tail_and_lists(tmp_path: Path) -> None:
    """A sysroot's files are read under it, tails start on a line, listings are bounded."""
    (tmp_path / "var/log").mkdir(parents=True)
    (tmp_path / "var/log/t.log").write_text("".join(f"{i}\n" for i in range(1000)))
    host = LocalHost(str(tmp_path))
    data, cut = await host.read("/var/log/t.log", 50, tail=True)
    assert cut and data.endswith(b"999\n") and data.split(b"\n")[0].isdigit()
    entries = await host.listdir("/var", 10, 3)
    assert [e.path for e in entries] == ["/var/log", "/var/log/t.log"]
    with pytest.raises(ItemError) as err:
        await host.read("/nope", 10)
    assert err.value.missing
    assert await host.kind("/var/log") == "dir"


@pytest.mark.anyio
async def test_local_run_caps_output() -> None:
    """A local command's output is capped; the process is stopped."""
    ran = await LocalHost(None).run(["sh", "-c", "yes | head -c 100000"], 1000)
    assert len(ran.stdout) == 1000 and ran.truncated


def test_pipelined_answers_are_split() -> None:
    """Several responses on one connection (Content-Length, chunked, close-delimited)."""
    from tpdump.hosts import _answers, _requests

    raw = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
           b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
           b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n{\"x\":1}")
    buf = _Buffer(10_000, keep_tail=False)
    buf.add(raw)
    answers = _answers(buf, 3, 100)
    assert [(a.status, a.body) for a in answers] == [(200, b"hello"), (200, b"abc"),
                                                     (503, b'{"x":1}')]
    reqs = _requests("h:1", ["/a", "/b"]).split(b"\r\n\r\n")
    assert b"Connection: close" not in reqs[0] and b"Connection: close" in reqs[1]
    assert len(_answers(buf, 4, 100)) == 3  # fewer than asked: the caller asks again
    with pytest.raises(ItemError):
        _answers(_Buffer(10, keep_tail=False), 1, 100)
