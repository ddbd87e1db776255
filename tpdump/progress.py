"""The progress line on stderr: one updating line on a terminal
(`nodes 812/1000 · 6 failed · 34 MB · 00:41`), periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import anyio


@dataclass
class Counters:
    """What the progress line shows; the runner updates it."""

    phase: str = "starting"
    total: int = 0
    done: int = 0
    failed: int = 0


def fmt_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]  # float from here on, only for display
    return f"{n} B"


def line(c: Counters, written: int, elapsed: float) -> str:
    mins, secs = divmod(int(elapsed), 60)
    if c.phase not in ("nodes", "finishing") or not c.total:
        return f"{c.phase} · {fmt_bytes(written)} · {mins:02d}:{secs:02d}"
    return (f"nodes {c.done}/{c.total} · {c.failed} failed · {fmt_bytes(written)} · "
            f"{mins:02d}:{secs:02d}")


class Progress:
    """Draws the line until stopped."""

    def __init__(self, counters: Counters, written: Callable[[], int], *, quiet: bool,
                 stream: TextIO | None = None) -> None:
        self.counters = counters
        self.written = written
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last = ""

    def draw(self, final: bool = False) -> None:
        if self.quiet:
            return
        text = line(self.counters, self.written(), time.monotonic() - self.started)
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif text != self._last or final:
            self.stream.write(text + "\n")
        self._last = text
        self.stream.flush()

    async def run(self) -> None:
        period = 0.5 if self.tty else 10.0
        while True:
            await anyio.sleep(period)
            self.draw()
