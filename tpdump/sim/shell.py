"""Exec on a simulated node: the tpdump probe emulated byte-for-byte as dash runs it, and the
commands tpdump runs on a node (docs/contracts.md): `systemctl`, `journalctl`, `ss`, `df`,
`teleport version`, plus `cat`, `echo`, `hostname`, `uname`, `true`.

A `nice -n N` / `ionice -c N` prefix is unwrapped as the real wrappers would run the command.
Commands are looked up on the node's PATH (the stand-ins under /usr/bin); anything missing
fails as the shell (`sh: 1: X: not found`) or the wrapper would say, exit 127.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from tpdump.sim.cluster import SimCluster, SimNode
from tpdump.sim.diag import garble
from tpdump.sim.hostcmds import connections, df_output, df_row, ss_output
from tpdump.sim.systemctl import Systemctl
from tpdump.sim.vfs import Entry, FSError, NodeFS, parse_teleport_script

PROBE_MARK = "# tpdump-probe v2"
PROBE_TOOLS = ("journalctl", "systemctl", "ss", "df", "nice", "ionice")
UNAME_SRVMO = ("Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) "
               "x86_64 GNU/Linux")
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "dash",
          "/bin/dash"}
# Commands every host has (coreutils and friends are not in the simulated /usr/bin).
ALWAYS = {"cat", "echo", "hostname", "uname", "true", "false"}


@dataclass(frozen=True)
class ExecResult:
    """What a command printed and its exit status."""

    stdout: bytes = b""
    stderr: bytes = b""
    code: int = 0


@dataclass(frozen=True)
class JournalRequest:
    """`journalctl ARGS`: answered asynchronously by the real journalctl (journal.py)."""

    args: tuple[str, ...]


def is_probe(command: str) -> bool:
    return PROBE_MARK in command


def fast_sh_c(command: str) -> str | None:
    """The script of `/bin/sh -c <shlex.quote(script)>` without a full shlex pass (hot path)."""
    head = "/bin/sh -c '"
    if not (command.startswith(head) and command.endswith("'")):
        return None
    script = command[len(head):-1].replace("'\"'\"'", "'")
    return script if shlex.quote(script) == command[len("/bin/sh -c "):] else None


# What makes shlex.split differ from splitting at spaces: quotes, backslashes and any
# whitespace but the space itself.
_NEEDS_SHLEX = re.compile(r"['\"\\]|[^\S ]")


def split_words(line: str) -> list[str]:
    """shlex.split(line); words without quotes, escapes or tabs are split without shlex."""
    if _NEEDS_SHLEX.search(line) is None:
        return [w for w in line.split(" ") if w]
    return shlex.split(line)


def run_command(command: str, fs: NodeFS, node: SimNode, now: float,
                cluster: SimCluster | None = None) -> ExecResult | JournalRequest:
    """Run one exec request `command` (as the login shell would be given it)."""
    fast = fast_sh_c(command)
    if fast is not None and is_probe(fast):
        return ExecResult(stdout=run_probe(fast, fs, node, now))
    try:
        argv = split_words(command)
    except ValueError:
        return ExecResult(stderr=b"sh: 1: Syntax error: Unterminated quoted string\n", code=2)
    return run_argv(argv, fs, node, now, cluster)


def run_argv(argv: list[str], fs: NodeFS, node: SimNode, now: float,
             cluster: SimCluster | None = None) -> ExecResult | JournalRequest:
    """Run a command given as words (what `run_command` runs once it has split them)."""
    if not argv:
        return ExecResult()
    if argv[0] in SHELLS and len(argv) >= 3 and argv[1] == "-c":
        script = argv[2]
        if is_probe(script):
            return ExecResult(stdout=run_probe(script, fs, node, now))
        return run_command(script, fs, node, now, cluster)
    return _run_argv(argv, fs, node, now, cluster)


def _find(cmd: str, fs: NodeFS) -> str | None:
    """The path `cmd` runs (PATH lookup on the node), None when it does not exist."""
    if "/" in cmd:
        ent = fs.exists(cmd)
        if ent is not None and ent.kind == "file" and ent.mode & 0o111:
            return cmd
        return cmd if posixpath.basename(cmd) in ALWAYS else None
    if cmd in ALWAYS:
        return f"/usr/bin/{cmd}"
    return _which(cmd, fs)


def _missing(cmd: str, wrapper: str) -> ExecResult:
    if wrapper == "nice":
        return ExecResult(stderr=f"nice: ‘{cmd}’: No such file or directory\n".encode(),
                          code=127)
    if wrapper == "ionice":
        return ExecResult(stderr=f"ionice: failed to execute {cmd}: No such file or "
                                 f"directory\n".encode(), code=127)
    return ExecResult(stderr=f"sh: 1: {cmd}: not found\n".encode(), code=127)


def _skip_options(argv: list[str], valued: set[str]) -> list[str] | None:
    """argv after the wrapper's options (None: a usage the simulator does not run)."""
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        a = argv[i]
        if a == "--":
            return argv[i + 1:]
        name = a.split("=", 1)[0]
        if name in valued and "=" not in a:
            i += 2
        elif a[:2] in valued or name in valued or a[1:].isdigit():
            i += 1  # -n10, --adjustment=10, -10
        else:
            return None
    return argv[i:]


def _run_argv(argv: list[str], fs: NodeFS, node: SimNode, now: float,
              cluster: SimCluster | None) -> ExecResult | JournalRequest:
    wrapper = ""
    for _ in range(4):
        base = posixpath.basename(argv[0])
        if base not in ("nice", "ionice"):
            break
        if _find(argv[0], fs) is None:
            return _missing(argv[0], wrapper)
        rest = _skip_options(argv, {"-n", "--adjustment"} if base == "nice" else
                             {"-c", "--class", "-n", "--classdata"})
        if rest is None:
            return ExecResult(stderr=f"{base}: tpdump sim: only `{base} OPTIONS COMMAND` is "
                                     f"simulated\n".encode(), code=1)
        if not rest:
            return ExecResult(stdout=b"0\n" if base == "nice" else b"none: prio 0\n")
        wrapper, argv = base, rest
    cmd = argv[0]
    path = _find(cmd, fs)
    if path is None:
        return _missing(cmd, wrapper)
    return _simple(argv, posixpath.basename(path), path, fs, node, now, cluster)


def _simple(argv: list[str], base: str, path: str, fs: NodeFS, node: SimNode, now: float,
            cluster: SimCluster | None) -> ExecResult | JournalRequest:
    garbage = node.fault == "garbage"
    if base == "teleport":
        if argv[1:2] == ["version"]:
            line = _teleport_version(fs, path)
            if line is not None:
                return ExecResult(stdout=line.encode())
        return ExecResult(stderr=b"teleport: simulated binary: only 'version' is supported\n",
                          code=1)
    if base == "systemctl" and cluster is not None and node.model is not None:
        out, err, code = Systemctl(node, cluster, now).run(argv[1:])
        if garbage and argv[1:2] == ["status"]:
            out = garble(out)
        return ExecResult(out, err, code)
    if base == "journalctl":
        return JournalRequest(tuple(argv[1:]))
    if base == "ss" and cluster is not None:
        return _ss(argv[1:], node, cluster)
    if base == "df":
        return _df(argv[1:], fs, node)
    if base == "find":
        return _find_cmd(argv[1:], fs)
    if base == "true":
        return ExecResult()
    if base == "false":
        return ExecResult(code=1)
    if base == "echo":
        return ExecResult(stdout=(" ".join(argv[1:]) + "\n").encode())
    if base == "hostname":
        return ExecResult(stdout=(node.hostname + "\n").encode())
    if base == "uname":
        return ExecResult(stdout=(UNAME_SRVMO + "\n").encode())
    if base == "cat":
        buf = bytearray()
        errs = bytearray()
        for p in argv[1:]:
            try:
                buf += fs.read(p)
            except FSError as exc:
                errs += f"cat: {p}: {exc.strerror}\n".encode()
        return ExecResult(stdout=bytes(buf), stderr=bytes(errs), code=1 if errs else 0)
    return ExecResult(stderr=f"{base}: tpdump sim: this command is not simulated\n".encode(),
                      code=1)


def _ss(args: list[str], node: SimNode, cluster: SimCluster) -> ExecResult:
    flags: set[str] = set()
    rest: list[str] = []
    for a in args:
        if a.startswith("-") and not a.startswith("--"):
            flags.update(a[1:])
        else:
            rest.append(a)
    if not flags <= set("Htnp") or "t" not in flags or rest not in ([], ["state", "established"]):
        return ExecResult(stderr=b"ss: tpdump sim: only `ss -H -t -n -p state established` is "
                                 b"simulated\n", code=1)
    out = ss_output(connections(node, cluster), node.pid, header="H" not in flags,
                    process="p" in flags)
    return ExecResult(garble(out) if node.fault == "garbage" else out)


def _df(args: list[str], fs: NodeFS, node: SimNode) -> ExecResult:
    paths = [a for a in args if not a.startswith("-")]
    flags = "".join(a[1:] for a in args if a.startswith("-") and a != "-")
    if not set(flags) <= set("Pk") or not paths:
        return ExecResult(stderr=b"df: tpdump sim: only `df -Pk PATH...` is simulated\n",
                          code=1)
    rows = []
    err = bytearray()
    for p in paths:
        try:
            resolved, _ = fs.lookup(p)
        except FSError as exc:
            err += f"df: {p}: {exc.strerror}\n".encode()
            continue
        rows.append(df_row(node, resolved))
    out = df_output(rows) if rows else b""
    if node.fault == "garbage":
        out = garble(out)
    return ExecResult(out, bytes(err), 1 if err else 0)


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
            elif rest[:1] == "'" and rest.find("'", 1) == len(rest) - 1:
                values[name] = rest[1:-1]  # one single-quoted word (shlex.quote's form)
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
    all_pids = b" ".join(pids).split()
    seen: set[bytes] = set()
    exe = b""
    for p in all_pids:
        if p in seen:
            continue
        path = f"{r}/proc/{p.decode()}/cmdline"
        if not _readable(fs, path):
            continue
        seen.add(p)
        sec(b"cmdline " + p)
        data = _read(fs, path)
        out.extend(data[:cap])
        env_path = f"{r}/proc/{p.decode()}/environ"
        if _readable(fs, env_path):
            sec(b"environ " + p)
            out.extend(_read(fs, env_path)[:cap])
        if not exe:
            args = data.replace(b"\0", b"\n").split(b"\n")
            named = [a for a in args if a.endswith(b"/teleport")]
            exe = _cmdsubst(named[0]) if named else _cmdsubst(args[0])
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
    for p in all_pids:  # every listed pid, duplicates included, as the loop in probe.sh
        path = f"{r}/proc/{p.decode()}/limits"
        if p in seen and _readable(fs, path):
            sec(b"limits " + p)
            out.extend(_read(fs, path)[:cap])
    sec(b"init")
    out.extend(_read(fs, r + "/proc/1/comm")[:64])
    sec(b"tools")
    for t in PROBE_TOOLS:  # `command -v` looks on the node's PATH (not under $R)
        if _which(t, fs) is not None:
            out.extend(t.encode() + b"\n")
    sec(b"uptime")
    out.extend(_read(fs, r + "/proc/uptime")[:256])
    sec(b"meminfo")
    out.extend(_read(fs, r + "/proc/meminfo")[:4096])
    sec(b"uname")
    out.extend(UNAME_SRVMO.encode() + b"\n")
    sec(b"date")
    clock = now + node.inst.group.clock_offset_s
    secs = int(clock // 1)
    out.extend(f"{secs}.{int((clock - secs) * 1e9):09d}\n".encode())
    sec(b"end")
    return bytes(out)


def _find_cmd(args: list[str], fs: NodeFS) -> ExecResult:
    """GNU find for the one form tpdump uses: `find DIR -maxdepth N -printf FORMAT` with
    %y %s %T@ %p and \\n; depth-first, children in directory order."""
    if len(args) != 5 or args[1] != "-maxdepth" or args[3] != "-printf":
        return ExecResult(stderr=b"find: unsupported arguments in the simulator\n", code=1)
    root, fmt = args[0], args[4]
    try:
        maxdepth = int(args[2])
        start, entry = fs.lookup(root, follow=True)
    except ValueError:
        return ExecResult(stderr=f"find: invalid argument `{args[2]}'\n".encode(), code=1)
    except OSError:
        return ExecResult(stderr=f"find: '{root}': No such file or directory\n".encode(),
                          code=1)
    types = {"file": "f", "dir": "d", "link": "l", "sock": "s"}
    out: list[str] = []

    def emit(path: str, ent: Entry, shown: str, depth: int) -> None:
        attrs = ent.attrs()
        line = (fmt.replace("%y", types.get(ent.kind, "f")).replace("%s", str(attrs.size))
                .replace("%T@", f"{ent.mtime:.10f}").replace("%p", shown)
                .replace("\\n", "\n").replace("\\0", "\0"))
        out.append(line)
        if ent.kind == "dir" and depth < maxdepth:
            for child in ent.children:
                child_path = posixpath.join(path, child)
                child_ent = fs.entries.get(child_path)
                if child_ent is not None:
                    emit(child_path, child_ent, posixpath.join(shown, child), depth + 1)

    emit(start, entry, root.rstrip("/") or "/", 0)
    return ExecResult(stdout="".join(out).encode("utf-8", "surrogateescape"))


# --- the tpdump batch (tpdump/batch.py) ------------------------------------------------
BATCH_MARK = "# tpdump-batch v1"


@dataclass(frozen=True)
class BatchStep:
    """One request line of a batch: `r|f|t|k NAME [CAP] ARGS...`."""

    op: str
    name: str
    cap: int
    args: tuple[str, ...]


def is_batch(script: str) -> bool:
    return script.startswith(BATCH_MARK)


def parse_batch(script: str) -> tuple[str, list[BatchStep]]:
    """The boundary and the requests of a batch script (the lines calling r, f, t, k)."""
    boundary = ""
    steps: list[BatchStep] = []
    for line in script.split("\n"):
        if line.startswith("B="):
            boundary = line[2:].strip()
            continue
        if line[:2] not in ("r ", "f ", "t ", "k ", "p "):
            continue
        try:
            words = split_words(line)
        except ValueError:
            continue
        if words[0] in ("k", "p") and len(words) == 3:
            steps.append(BatchStep(words[0], words[1], 0, (words[2],)))
        elif len(words) >= 4:
            try:
                steps.append(BatchStep(words[0], words[1], int(words[2]), tuple(words[3:])))
            except ValueError:
                continue
    return boundary, steps


def batch_step(step: BatchStep, fs: NodeFS, node: SimNode, now: float,
               cluster: SimCluster | None) -> ExecResult | JournalRequest:
    """One request of a batch: its output (within the cap the script gives head/tail)
    and status; `journalctl` is left to the caller (answered by the real journalctl)."""
    if step.op == "r":  # as run_command(shlex.join(step.args)): the words are the args
        return run_argv(list(step.args), fs, node, now, cluster)
    if step.op in ("f", "t"):
        out, code = batch_file(step, fs)
        return ExecResult(stdout=out, code=code)
    if step.op == "p":
        return ExecResult(stdout=batch_real(step, fs))
    return ExecResult(stdout=batch_kind(step, fs))


def batch_frame(boundary: str, step: BatchStep, out: bytes, code: int) -> bytes:
    """A request's framed answer as the script prints it: `r` output beyond the cap is cut
    by head, which makes the command die of SIGPIPE (status 141)."""
    if step.op == "r" and len(out) > step.cap:
        out, code = out[:step.cap], 141
    head = b"\n--" + boundary.encode() + b" "
    name = step.name.encode()
    return head + name + b"\n" + out + head + b"rc " + name + b" " + str(code).encode() + b"\n"


def batch_end(boundary: str) -> bytes:
    return b"\n--" + boundary.encode() + b" end\n"


def batch_file(step: BatchStep, fs: NodeFS) -> tuple[bytes, int]:
    """`head -c CAP < PATH` (f) or `tail -c CAP < PATH` (t): output and status (dash
    exits 2 when the redirection fails)."""
    try:
        _, ent = fs.lookup(step.args[0])
        if ent.kind == "dir":
            return b"", 1  # head/tail: "Is a directory"
        if not ent.readable or ent.kind == "sock":
            return b"", 2
    except FSError:
        return b"", 2
    size = ent.size()
    if step.op == "f":
        return ent.read_at(0, step.cap), 0
    start = max(0, size - step.cap)
    return ent.read_at(start, size - start), 0


def batch_real(step: BatchStep, fs: NodeFS) -> bytes:
    """What `p` prints: `[ -e PATH ] && readlink -f -- PATH` (the resolved path)."""
    try:
        resolved, _ = fs.lookup(step.args[0])
    except FSError:
        return b""
    return resolved.encode("utf-8", "surrogateescape") + b"\n"


def batch_kind(step: BatchStep, fs: NodeFS) -> bytes:
    """What `k` prints: test -L, -S, -d, -f, -e in that order."""
    path = step.args[0]
    try:
        _, ent = fs.lookup(path, follow=False)
    except FSError:
        return b""
    if ent.kind == "link":
        return b"link\n"
    target = fs.exists(path)
    if target is None:
        return b""
    return {"sock": b"socket\n", "dir": b"dir\n", "file": b"file\n"}.get(target.kind,
                                                                     b"other\n")
