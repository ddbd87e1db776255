"""`proc/sqlite.sql`: a dump of Teleport's process-state database (the lite backend in
`<data_dir>/proc/sqlite.db`) with every secret value removed: keys, sizes, times and
non-secret values only."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from tpdump.redact import Redactor

# Keys whose values are state, not credentials: kept (still redacted as documents).
_STATE_PREFIXES = ("/states/", "/usage/", "/reports/")
_MAX_ROWS = 20000


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _ident(name: str) -> str:
    """A table or column name as an SQL identifier (a hostile name stays one name)."""
    return '"' + name.replace('"', '""') + '"'


def _quote(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return "'" + str(value).replace("'", "''") + "'"


def _value(key: str, value: Any, redactor: Redactor) -> str:
    size = len(value) if isinstance(value, bytes | str) else 0
    if isinstance(value, bytes | str) and key.startswith(_STATE_PREFIXES):
        try:
            doc = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if doc is not None:
            return json.dumps(redactor.document(doc), sort_keys=True)
    return redactor.marker("process state value") + f" ({size} bytes)"


@contextlib.contextmanager
def _opened(data: bytes) -> Iterator[sqlite3.Connection]:
    """The database, opened in memory from its bytes (no temporary file)."""
    if data[18:20] == b"\x02\x02":
        # WAL mode (as Teleport runs it): an in-memory copy reads as a rollback-journal
        # database; the WAL file itself is not part of the copy.
        data = data[:18] + b"\x01\x01" + data[20:]
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        conn.execute("PRAGMA query_only = ON")
        # TEXT that is not UTF-8 (a damaged file) comes as bytes: _quote shows it escaped.
        conn.text_factory = bytes
        yield conn
    finally:
        conn.close()


def dump_process_state(data: bytes, redactor: Redactor) -> str:
    """SQL text: the schema, then every row of `kv` with its value replaced unless it is
    state (not a credential); other tables by row count only."""
    if not data.startswith(b"SQLite format 3\0"):
        raise ValueError("not an SQLite database")
    out = ["-- tpdump: Teleport process state (lite backend); secret values removed",
           "-- values of keys other than " + ", ".join(_STATE_PREFIXES) + " are replaced"]
    try:
        with _opened(data) as conn:
            tables = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ).fetchall()
            out.extend(f"{_text(sql)};" for _, sql in tables)
            for raw_name, _ in tables:
                name = _text(raw_name)
                columns = [_text(r[1]) for r in conn.execute(
                    f"PRAGMA table_info({_ident(name)})")]
                count = conn.execute(f"SELECT count(*) FROM {_ident(name)}").fetchone()[0]
                out.append(f"-- table {name}: {count} rows")
                if name != "kv" or "key" not in columns or "value" not in columns:
                    continue
                rows = conn.execute(f'SELECT * FROM "kv" ORDER BY key LIMIT {_MAX_ROWS}')
                for row in rows:
                    record = dict(zip(columns, row, strict=True))
                    key = record["key"]
                    key_text = key.decode("utf-8", "backslashreplace") \
                        if isinstance(key, bytes) else str(key)
                    record["value"] = _value(key_text, record["value"], redactor)
                    record["key"] = redactor.text(key_text)
                    values = ", ".join(_quote(record[c]) for c in columns)
                    names = ", ".join(c if c.isidentifier() else _ident(c) for c in columns)
                    out.append(f'INSERT INTO "kv" ({names}) VALUES ({values});')
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"unreadable SQLite database: {exc}") from exc
    return "\n".join(out) + "\n"
