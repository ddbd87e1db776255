"""The progress line: its format, and plain lines when stderr is not a terminal."""

import io

from tpdump.progress import Counters, Progress, fmt_bytes, line


def test_line_format() -> None:
    """`nodes 812/1000 · 6 failed · 34.0 MB · 00:41` during the fan-out."""
    c = Counters(phase="nodes", total=1000, done=812, failed=6)
    assert line(c, 34_000_000, 41.2) == "nodes 812/1000 · 6 failed · 34.0 MB · 00:41"
    assert line(Counters(phase="discovery"), 0, 3) == "discovery · 0 B · 00:03"
    assert fmt_bytes(1500) == "1.5 kB"


def test_plain_stream_gets_whole_lines_and_quiet_nothing() -> None:
    """Off a terminal each draw is one plain line (no carriage return); -q draws nothing."""
    stream = io.StringIO()
    c = Counters(phase="nodes", total=2, done=1)
    p = Progress(c, lambda: 10, quiet=False, stream=stream)
    p.draw()
    c.done = 2
    p.draw(final=True)
    lines = stream.getvalue().splitlines()
    assert [x.split(" · ")[0] for x in lines] == ["nodes 1/2", "nodes 2/2"]
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    Progress(c, lambda: 0, quiet=True, stream=quiet).draw(final=True)
    assert quiet.getvalue() == ""
