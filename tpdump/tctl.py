"""Runs tctl, the official auth API client: bounded concurrency, a deadline per call,
output caps, and classification of its error messages."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import Enum

import anyio
import anyio.abc
import structlog

log = structlog.get_logger("tpdump.tctl")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tctl prints `ERROR: <message>` (red on a terminal and, in many versions, also when not).
_ERROR_PREFIX = re.compile(r"^\s*ERROR:\s*", re.MULTILINE)
_MAX_TCTL_OUTPUT = 512 * 1024 * 1024


class TctlFailure(Enum):
    """Why a tctl call failed, as far as its message tells."""

    ACCESS_DENIED = "access denied"
    CANNOT_CONNECT = "cannot connect"
    UNSUPPORTED = "unsupported"
    TIMEOUT = "timed out"
    NOT_FOUND = "tctl not found"
    BAD_OUTPUT = "unreadable output"
    OTHER = "failed"

    @property
    def code(self) -> str:
        return {
            TctlFailure.ACCESS_DENIED: "TPD101",
            TctlFailure.CANNOT_CONNECT: "TPD100",
            TctlFailure.UNSUPPORTED: "TPD102",
            TctlFailure.TIMEOUT: "TPD103",
            TctlFailure.NOT_FOUND: "TPD106",
            TctlFailure.BAD_OUTPUT: "TPD107",
            TctlFailure.OTHER: "TPD104",
        }[self]


@dataclass(frozen=True)
class TctlResult:
    """A finished tctl call: what ran, how it ended, and its output."""

    args: tuple[str, ...]
    returncode: int | None
    stdout: bytes
    stderr: str
    duration: float
    failure: TctlFailure | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def command(self) -> str:
        return "tctl " + " ".join(self.args)


def clean_message(stderr: str) -> str:
    """tctl's error text without colour escapes and without the `ERROR:` prefix."""
    text = _ANSI.sub("", stderr).strip()
    return _ERROR_PREFIX.sub("", text).strip()


def classify(message: str) -> TctlFailure:
    """Map a cleaned tctl error message to a failure class."""
    low = message.lower()
    if "access denied" in low or "permission denied" in low or "not authorized" in low:
        return TctlFailure.ACCESS_DENIED
    if (
        "cannot connect to the auth server" in low
        or "connection refused" in low
        or "no such host" in low
        or "i/o timeout" in low
        or "failed to connect" in low
        or "connection reset" in low
    ):
        return TctlFailure.CANNOT_CONNECT
    if (
        "unsupported resource" in low
        or "not supported" in low
        or "unknown resource" in low
        or "unknown method" in low
        or "not implemented" in low
        or "expected command but got" in low
        or "unimplemented" in low
    ):
        return TctlFailure.UNSUPPORTED
    return TctlFailure.OTHER


class Tctl:
    """A tctl client for one run; every call shares one concurrency bound."""

    def __init__(
        self,
        path: str,
        *,
        auth_server: str | None,
        identity: str | None,
        concurrency: int,
        timeout: float,
    ) -> None:
        self._path = path
        self._globals: list[str] = []
        if auth_server:
            self._globals.append(f"--auth-server={auth_server}")
        if identity:
            self._globals += ["-i", identity]
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._timeout = timeout
        self.calls = 0

    async def run(self, *args: str, budget: float | None = None) -> TctlResult:
        """Run `tctl <args>`; never raises for tctl's own failures, only for cancellation."""
        if "--with-secrets" in args or (len(args) > 1 and args[0] == "get" and args[1] == "all"):
            raise ValueError("tpdump never runs `tctl get all` or --with-secrets")
        budget = self._timeout if budget is None else budget
        async with self._limiter:
            self.calls += 1
            started = time.monotonic()
            result = await self._run_once(args, budget, started)
        log.debug("tctl", command=result.command, rc=result.returncode,
                  seconds=round(result.duration, 3),
                  failure=result.failure.value if result.failure else None)
        return result

    async def _run_once(self, args: tuple[str, ...], budget: float, started: float) -> TctlResult:
        argv = [self._path, *self._globals, *args]
        out = bytearray()
        err = bytearray()
        rc: int | None = None
        try:
            process = await anyio.open_process(argv, stdin=None)
        except OSError as exc:
            return TctlResult(args, None, b"", "", time.monotonic() - started,
                              TctlFailure.NOT_FOUND, f"cannot run {self._path}: {exc.strerror}")
        async with process:
            with anyio.move_on_after(budget) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, process.stdout, out, _MAX_TCTL_OUTPUT)
                    tg.start_soon(_drain, process.stderr, err, 1024 * 1024)
                    rc = await process.wait()
            if scope.cancelled_caught:
                process.kill()
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await process.wait()
                return TctlResult(args, None, bytes(out), err.decode("utf-8", "replace"),
                                  time.monotonic() - started, TctlFailure.TIMEOUT,
                                  f"no answer within {budget:g} s; stopped")
        stderr = err.decode("utf-8", "replace")
        duration = time.monotonic() - started
        if rc == 0:
            return TctlResult(args, rc, bytes(out), stderr, duration)
        message = clean_message(stderr) or clean_message(out.decode("utf-8", "replace"))
        message = message or f"exit status {rc}"
        return TctlResult(args, rc, bytes(out), stderr, duration, classify(message), message)


async def _drain(stream: anyio.abc.ByteReceiveStream | None, sink: bytearray, cap: int) -> None:
    if stream is None:
        return
    async for chunk in stream:
        if len(sink) < cap:
            sink += chunk[: cap - len(sink)]
