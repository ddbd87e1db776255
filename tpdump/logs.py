"""structlog set-up: every event goes to the run's log (kept for `tpdump.log` in the
archive, bounded) and, filtered by -q/-v, to stderr as console lines or JSON."""

from __future__ import annotations

import json
import logging
import sys
from collections import deque
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class RunLog:
    """The final structlog processor: keeps JSON lines (bounded by bytes, newest kept)
    and echoes events at or above `echo_level` to a stream."""

    def __init__(self, *, echo_level: int, fmt: str, stream: TextIO | None = None,
                 keep_bytes: int = 32 * 1024 * 1024) -> None:
        self.lines: deque[str] = deque()
        self.size = 0
        self.dropped = 0
        self.keep_bytes = keep_bytes
        self.echo_level = echo_level
        self.fmt = fmt
        self.stream = stream
        self._console = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        line = json.dumps(event, default=str)
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > self.keep_bytes and self.lines:
            self.size -= len(self.lines.popleft()) + 1
            self.dropped += 1
        if _LEVELS.get(event.get("level", "info"), 20) >= self.echo_level:
            stream = self.stream or sys.stderr
            if self.fmt == "json":
                stream.write(line + "\n")
            else:
                stream.write(self._console(logger, method, dict(event)) + "\n")
            stream.flush()
        raise structlog.DropEvent

    def text(self) -> str:
        head = f'{{"event": "older lines dropped", "count": {self.dropped}}}\n' \
            if self.dropped else ""
        return head + "\n".join(self.lines) + "\n"


def configure(*, verbose: bool, quiet: bool, fmt: str) -> RunLog:
    """Configure structlog for one run and return the log it keeps."""
    echo = logging.DEBUG if verbose else (logging.CRITICAL if quiet else logging.WARNING)
    run_log = RunLog(echo_level=echo, fmt=fmt)
    # asyncssh logs every packet at debug level through stdlib logging; tpdump reports
    # SSH failures itself, so only asyncssh's warnings are of interest.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            run_log,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO),
        cache_logger_on_first_use=False,
    )
    return run_log
