"""The tctl stand-in: parses tctl's global flags, logs the call, asks the simulated auth server.

Standard library only and runnable as a plain file (`python -I -S .../tctl.py`), so it starts
fast and needs no PYTHONPATH; `DIR/bin/tctl` is a shell wrapper that sets
TPDUMP_SIM_STATE_DIR, TPDUMP_SIM_AUTH (the default auth address) and TPDUMP_SIM_VERSION.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time

RED = "\x1b[31m"
RESET = "\x1b[0m"
GO_VERSIONS = {12: "go1.19.13", 13: "go1.20.14", 14: "go1.21.10", 15: "go1.21.13",
               16: "go1.22.12", 17: "go1.23.7", 18: "go1.24.4"}
_VALUE_FLAGS = {"auth-server", "identity", "config", "config-string"}
_BOOL_FLAGS = {"debug", "insecure"}
_SHORT = {"i": "identity", "c": "config", "d": "debug"}


class UsageError(Exception):
    """A command line tctl's parser (kingpin) would reject."""


def version_line(version: str) -> str:
    """`Teleport v<ver> git:v<ver>-0-g<hex> <go>` as modules.PrintVersion prints it."""
    gitref = hashlib.sha1(f"v{version}".encode()).hexdigest()[:10]
    go = GO_VERSIONS.get(int(version.split(".")[0]), "go1.23.7")
    return f"Teleport v{version} git:v{version}-0-g{gitref} {go}\n"


def split_global_flags(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Remove tctl's global flags from anywhere in argv; returns (flags, the rest)."""
    flags: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name = ""
        value: str | None = None
        if a.startswith("--"):
            n, eq, v = a[2:].partition("=")
            if n in _VALUE_FLAGS or n in _BOOL_FLAGS:
                name, value = n, (v if eq else None)
        elif len(a) >= 2 and a[0] == "-" and a[1] in _SHORT:
            name = _SHORT[a[1]]
            value = a[2:] or None
        if not name:
            rest.append(a)
            i += 1
            continue
        if name in _BOOL_FLAGS:
            flags.setdefault(name, []).append("true")
        else:
            if value is None:
                if i + 1 >= len(argv):
                    raise UsageError(f"expected argument for flag '--{name}'")
                value = argv[i + 1]
                i += 1
            flags.setdefault(name, []).append(value)
        i += 1
    return flags, rest


def _error(message: str) -> None:
    sys.stderr.write(f"{RED}ERROR: {RESET}{message}\n\n")
    sys.stderr.flush()


def _parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, 3025
    return host.strip("[]"), int(port)


def _log_call(argv: list[str]) -> None:
    state = os.environ.get("TPDUMP_SIM_STATE_DIR", "")
    if not state:
        return
    line = json.dumps({"argv": argv, "t": time.time()}) + "\n"
    fd = os.open(os.path.join(state, "tctl_calls.jsonl"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _recv_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        chunks.append(data)
        if data.endswith(b"\n"):
            break
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    """Run one tctl invocation; returns the exit code."""
    _log_call(argv)
    try:
        flags, rest = split_global_flags(argv)
    except UsageError as exc:
        _error(str(exc))
        return 1
    if rest[:1] == ["version"]:
        sys.stdout.write(version_line(os.environ.get("TPDUMP_SIM_VERSION", "17.4.2")))
        return 0
    if "identity" in flags and "auth-server" not in flags:
        _error("tctl --identity also requires --auth-server")
        return 1
    addr = (flags.get("auth-server") or [os.environ.get("TPDUMP_SIM_AUTH", "127.0.0.1:3025")])[0]
    try:
        host, port = _parse_addr(addr)
    except ValueError:
        _error(f'address {addr}: invalid port')
        return 1
    request = json.dumps({"args": rest, "debug": "debug" in flags}).encode() + b"\n"
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError:
        # tctl prints this line itself (uncoloured) and exits 1 (tool/tctl/common/tctl.go).
        sys.stderr.write(
            f'ERROR: Cannot connect to the auth server. Is the auth server running on "{addr}"?\n'
        )
        return 1
    with sock:
        sock.settimeout(None)  # a hung auth server hangs tctl: the caller's deadline must act
        sock.sendall(request)
        raw = _recv_line(sock)
    try:
        reply = json.loads(raw)
    except ValueError:
        _error("connection closed by the auth server")
        return 1
    sys.stdout.write(reply.get("stdout", ""))
    sys.stdout.flush()
    sys.stderr.write(reply.get("stderr", ""))
    sys.stderr.flush()
    return int(reply.get("code", 1))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
