"""Parsers of node outputs: connections, limits, meminfo, process state."""

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpdump.collectors.node import (
    diag_addr_from,
    parse_connections,
    parse_limits,
    parse_meminfo,
    split_hostport,
)
from tpdump.collectors.sqlite import dump_process_state
from tpdump.redact import Redactor

SS = """0      0      10.0.0.5:41234   10.0.0.2:3025  users:(("teleport",pid=4242,fd=9))
0      0      10.0.0.5:41240   10.0.0.3:3024  users:(("teleport",pid=4242,fd=12))
0      0      10.0.0.5:22      10.9.9.9:5555  users:(("sshd",pid=77,fd=3))
"""


def test_connections_only_teleport_and_roles() -> None:
    """Only the teleport process's connections, each named by the port it goes to."""
    conns = parse_connections(SS, {"4242"})
    assert [c["peer"] for c in conns] == ["10.0.0.2:3025", "10.0.0.3:3024"]
    assert [c["role"] for c in conns] == ["auth", "proxy tunnel"]


def test_limits_meminfo_addresses() -> None:
    """Open-files limit, memory, diag address and host:port forms."""
    limits = "Limit Soft Limit Hard Limit Units\nMax open files 524288 524288 files\n"
    assert parse_limits(limits) == {"open_files_soft": "524288", "open_files_hard": "524288"}
    assert parse_meminfo("MemTotal: 100 kB\nMemAvailable: 40 kB\n") == {
        "memtotal_kb": 100, "memavailable_kb": 40}
    assert diag_addr_from(["teleport", "start", "--diag-addr=127.0.0.1:3434"]) == \
        "127.0.0.1:3434"
    assert split_hostport("[::1]:3000") == ("::1", 3000)
    assert split_hostport("nonsense") is None


def test_process_state_without_secrets(tmp_path: Path) -> None:
    """Identities lose their values, state keeps them, the schema is there."""
    path = tmp_path / "sqlite.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, modified INTEGER, expires DATETIME, "
               "value BLOB, revision TEXT)")
    db.execute("INSERT INTO kv VALUES ('/ids/node/current', 1, NULL, ?, 'a')",
               (b"-----BEGIN RSA PRIVATE KEY-----\nSECRETBODY\n-----END RSA PRIVATE KEY-----",))
    db.execute("INSERT INTO kv VALUES ('/states/node', 2, NULL, ?, 'b')",
               (json.dumps({"spec": {"rotation": {"phase": "standby"}}, "token": "T0K"}),))
    db.commit()
    db.close()
    r = Redactor()
    sql = dump_process_state(path.read_bytes(), r)
    assert "CREATE TABLE kv" in sql and "-- table kv: 2 rows" in sql
    assert "SECRETBODY" not in sql and "T0K" not in sql
    assert "standby" in sql and "/ids/node/current" in sql
    assert r.counts["process state value"] == 1


def test_process_state_rejects_garbage() -> None:
    """A file that is not SQLite is an error, not a crash."""
    with pytest.raises(ValueError):
        dump_process_state(b"\x00garbage" * 100, Redactor())


def test_newest_last_restores_time_order() -> None:
    """A newest-first journal listing comes back oldest first; a cut line is dropped."""
    from tpdump.collectors.node import newest_last

    assert newest_last(b"c\nb\na\n", False) == b"a\nb\nc\n"
    assert newest_last(b"c\nb\na-cut", True) == b"b\nc\n"
    # A multi-line message keeps its own line order (a PEM block stays BEGIN..END).
    listing = (b"t3 newest\nt2 key:\n    -----BEGIN X-----\n    body\n    -----END X-----\n"
               b"t1 oldest\n")
    assert newest_last(listing, False) == (
        b"t1 oldest\nt2 key:\n    -----BEGIN X-----\n    body\n    -----END X-----\n"
        b"t3 newest\n")


def test_log_window_and_line_bound() -> None:
    """File logs keep the newest lines within the window (text and JSON stamps); a
    continuation line goes with its entry; at most max_lines lines, starting at an entry."""
    from tpdump.collectors.node import line_time, within_window

    base = line_time(b"2026-11-26T10:00:00.000Z INFO x")
    assert base is not None
    assert line_time(b'{"timestamp":"2026-11-26T10:00:00Z","level":"info"}') == base
    assert line_time(b"  continuation") is None
    log = (b"2026-11-26T08:00:00.000Z INFO old\n"
           b"  old continuation\n"
           b"2026-11-26T09:30:00.000Z INFO new-1\n"
           b"  new continuation\n"
           b"2026-11-26T09:59:00.000Z INFO new-2\n")
    kept, cut = within_window(log, base - 3600, 100)
    assert cut and kept.startswith(b"2026-11-26T09:30") and b"new continuation" in kept
    kept, cut = within_window(log, base - 10 * 3600, 2)  # starts at an entry, not mid-way
    assert cut and kept == b"2026-11-26T09:59:00.000Z INFO new-2\n"
    assert within_window(log, 0, 100) == (log, False)



@given(st.tuples(st.sampled_from(["0000", "0001", "1970", "2024", "2026", "9999"]),
                 st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
                 st.integers(0, 61), st.integers(0, 62)),
       st.sampled_from(["Z INFO x", ".5Z", "", '"}']), st.booleans())
@settings(max_examples=500, deadline=None)
def test_line_time_reads_what_strptime_reads(fields: tuple[str, int, int, int, int, int],
                                              rest: str, as_json: bool) -> None:
    """A log line's time: the stamps strptime takes (and those it refuses, like February
    30th or second 60), the same with the faster parser."""
    from datetime import UTC, datetime

    from tpdump.collectors.node import line_time

    year, month, day, hour, minute, second = fields
    stamp = f"{year}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    line = (f'{{"level":"info","timestamp":"{stamp}{rest}' if as_json else stamp + rest)
    try:
        expected: float | None = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=UTC).timestamp()
    except ValueError:
        expected = None
    assert line_time(line.encode()) == expected
