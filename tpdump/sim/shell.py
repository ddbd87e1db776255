"""Exec on a simulated node: the tpdump probe emulated byte-for-byte as dash runs it, and a few
plain commands (`teleport version`, `cat`, `echo`, `hostname`, `uname`, `true`).

Anything else answers like a shell that lacks the command: `sh: 1: <cmd>: not found`, 127.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from tpdump.sim.cluster import SimNode
from tpdump.sim.vfs import TELEPORT_BIN, FSError, NodeFS, parse_teleport_script

PROBE_MARK = "# tpdump-probe v1"
UNAME_SRVMO = ("Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) "
               "x86_64 GNU/Linux")
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "dash",
          "/bin/dash"}


@dataclass(frozen=True)
class ExecResult:
    """What a command printed and its exit status."""

    stdout: bytes = b""
    stderr: bytes = b""
    code: int = 0


def is_probe(command: str) -> bool:
    return PROBE_MARK in command


def _fast_sh_c(command: str) -> str | None:
    """The script of `/bin/sh -c <shlex.quote(script)>` without a full shlex pass (hot path)."""
    head = "/bin/sh -c '"
    if not (command.startswith(head) and command.endswith("'")):
        return None
    script = command[len(head):-1].replace("'\"'\"'", "'")
    return script if shlex.quote(script) == command[len("/bin/sh -c "):] else None


def run_command(command: str, fs: NodeFS, node: SimNode, now: float) -> ExecResult:
    """Run one exec request `command` (as the login shell would be given it)."""
    fast = _fast_sh_c(command)
    if fast is not None and PROBE_MARK in fast:
        return ExecResult(stdout=run_probe(fast, fs, node, now))
    try:
        argv = shlex.split(command)
    except ValueError:
        return ExecResult(stderr=b"sh: 1: Syntax error: Unterminated quoted string\n", code=2)
    if not argv:
        return ExecResult()
    if argv[0] in SHELLS and len(argv) >= 3 and argv[1] == "-c":
        script = argv[2]
        if PROBE_MARK in script:
            return ExecResult(stdout=run_probe(script, fs, node, now))
        return run_command(script, fs, node, now)
    return _simple(argv, fs, node, now)


def _simple(argv: list[str], fs: NodeFS, node: SimNode, now: float) -> ExecResult:
    cmd = argv[0]
    base = posixpath.basename(cmd)
    if base == "teleport" and (cmd == "teleport" or fs.exists(cmd) is not None):
        path = cmd if cmd.startswith("/") else (_which("teleport", fs) or TELEPORT_BIN)
        if argv[1:2] == ["version"]:
            line = _teleport_version(fs, path)
            if line is not None:
                return ExecResult(stdout=line.encode())
        return ExecResult(stderr=b"teleport: simulated binary: only 'version' is supported\n",
                          code=1)
    if cmd == "true":
        return ExecResult()
    if cmd == "echo":
        return ExecResult(stdout=(" ".join(argv[1:]) + "\n").encode())
    if cmd == "hostname":
        return ExecResult(stdout=(node.hostname + "\n").encode())
    if cmd == "uname":
        return ExecResult(stdout=(UNAME_SRVMO + "\n").encode())
    if cmd == "cat":
        out = bytearray()
        err = bytearray()
        for path in argv[1:]:
            try:
                out += fs.read(path)
            except FSError as exc:
                err += f"cat: {path}: {exc.strerror}\n".encode()
        return ExecResult(stdout=bytes(out), stderr=bytes(err), code=1 if err else 0)
    return ExecResult(stderr=f"sh: 1: {cmd}: not found\n".encode(), code=127)


def _which(name: str, fs: NodeFS) -> str | None:
    for d in PATH_DIRS:
        path = posixpath.join(d, name)
        ent = fs.exists(path)
        if ent is not None and ent.kind == "file" and ent.mode & 0o111:
            return path
    return None


def _teleport_version(fs: NodeFS, path: str) -> str | None:
    try:
        return parse_teleport_script(fs.read(path))
    except FSError:
        return None


def parse_probe_header(script: str) -> tuple[str, str, int]:
    """The B, R and CAP values set before the probe text."""
    values = {"B": "", "R": "", "CAP": "0"}
    for line in script.split("\n", 8):
        if line.startswith(PROBE_MARK):
            break
        name, eq, rest = line.partition("=")
        if eq and name in values:
            if rest.replace("_", "").replace("-", "").replace("/", "").replace(".", "").isalnum():
                values[name] = rest
            else:
                words = shlex.split(rest) if rest.strip() else []
                values[name] = words[0] if words else ""
    try:
        cap = int(values["CAP"])
    except ValueError:
        cap = 0
    return values["B"], values["R"], cap


def _readable(fs: NodeFS, path: str) -> bool:
    ent = fs.exists(path)
    return ent is not None and ent.readable


def _read(fs: NodeFS, path: str) -> bytes:
    """What `< path` feeds a command: the bytes, or nothing for a directory/unreadable file."""
    try:
        return fs.read(path)
    except FSError:
        return b""


def _cmdsubst(data: bytes) -> bytes:
    """dash's `$(...)`: NUL bytes dropped, trailing newlines removed."""
    return data.replace(b"\0", b"").rstrip(b"\n")


def run_probe(script: str, fs: NodeFS, node: SimNode, now: float) -> bytes:
    """Emulate probe.sh on the node file system exactly as dash prints it (stdout)."""
    b, r, cap = parse_probe_header(script)
    out = bytearray()

    def sec(name: bytes) -> None:
        out.extend(b"\n--" + b.encode() + b" " + name + b"\n")

    pids: list[bytes] = []
    for f in (r + "/run/teleport.pid", r + "/var/run/teleport.pid"):
        if _readable(fs, f):
            p = bytes(c for c in _read(fs, f)[:32] if 0x30 <= c <= 0x39)
            if p:
                pids.append(p)
    proc = fs.exists(r + "/proc")
    if proc is not None and proc.kind == "dir":
        resolved, ent = fs.lookup(r + "/proc")
        for name in sorted(n.encode() for n in ent.children if n[:1].isdigit()):
            d = posixpath.join(resolved, name.decode())
            if not _readable(fs, d + "/comm"):
                continue
            if _cmdsubst(_read(fs, d + "/comm")[:64]) == b"teleport":
                pids.append(name)
    seen: set[bytes] = set()
    exe = b""
    for p in b" ".join(pids).split():
        if p in seen:
            continue
        path = f"{r}/proc/{p.decode()}/cmdline"
        if not _readable(fs, path):
            continue
        seen.add(p)
        sec(b"cmdline " + p)
        data = _read(fs, path)
        out.extend(data[:cap])
        if not exe:
            exe = _cmdsubst(data.replace(b"\0", b"\n").split(b"\n", 1)[0])
    if not exe:
        exe = (_which("teleport", fs) or "").encode()
    sec(b"version")
    if exe:
        target = r + exe.decode("utf-8", "surrogateescape")
        exe_ent = fs.exists(target)
        if exe_ent is not None and exe_ent.kind == "file" and exe_ent.mode & 0o111:
            line = _teleport_version(fs, target)
            if line is not None:
                out.extend(line.encode()[:cap])
    sec(b"hostname")
    if _readable(fs, r + "/etc/hostname"):
        out.extend(_read(fs, r + "/etc/hostname")[:cap])
    else:
        out.extend(node.hostname.encode() + b"\n")
    sec(b"os-release")
    if _readable(fs, r + "/etc/os-release"):
        out.extend(_read(fs, r + "/etc/os-release")[:cap])
    elif _readable(fs, r + "/usr/lib/os-release"):
        out.extend(_read(fs, r + "/usr/lib/os-release")[:cap])
    sec(b"uname")
    out.extend(UNAME_SRVMO.encode() + b"\n")
    sec(b"date")
    t = now + node.inst.group.clock_offset_s
    secs = int(t // 1)
    out.extend(f"{secs}.{int((t - secs) * 1e9):09d}\n".encode())
    sec(b"end")
    return bytes(out)
