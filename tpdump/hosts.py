"""Where a node's data comes from: a remote host over one SSH connection (exec, SFTP,
port forwarding), or the local host / a mounted root file system (`tpdump node`). The
collectors see only this interface."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import posixpath
import secrets
import shlex
import stat as statmod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.abc
import asyncssh

from tpdump import batch
from tpdump.batch import Ran, Want
from tpdump.transport import Failure, classify, failure

# Where credentials live. tpdump never copies a file whose path, or whose real path (every
# symbolic link resolved), is one of these, whatever its content: content redaction
# recognises only the secret formats it knows. A pattern with a `/` matches the whole
# absolute path (`*` also matches `/`); one without matches the file's name. Nothing
# tpdump reads on purpose (teleport.yaml, the log file, unit files and drop-ins,
# <data_dir>/proc/sqlite.db, the probe's /proc and /etc files) is among them.
CREDENTIAL_STORES: tuple[str, ...] = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
    "/etc/security/opasswd", "/etc/sudoers", "/etc/sudoers.d/*",
    "/etc/ssh/ssh_host_*_key",  # private host keys (not the .pub)
    "*/.ssh/*",  # /root/.ssh, /home/*/.ssh, any user's keys and authorized_keys
    "*/.tsh/keys/*",  # tsh's keys and certificates
    "*/.gnupg/*", "*/.kube/config", "*/.aws/credentials", "*/.docker/config.json",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
    "*.key",  # private keys (Teleport's data_dir keys of older versions, TLS keys)
    "*token", "*token.txt", "*.token",  # join token files (auth_token: /path)
)


def credential_store(*paths: str) -> str | None:
    """The CREDENTIAL_STORES pattern one of `paths` falls in, else None."""
    for path in paths:
        norm = posixpath.normpath(path) if path.startswith("/") else path
        name = norm.rsplit("/", 1)[-1]
        for pattern in CREDENTIAL_STORES:
            if fnmatch.fnmatchcase(norm if "/" in pattern else name, pattern):
                return pattern
    return None


def shown_name(path: str) -> str:
    """A path as one line of text: control characters, backslashes and bytes that are
    not UTF-8 (surrogate-escaped) written as escapes (`\\n`, `\\x1b`, `\\xff`), so that a
    hostile name cannot start a line of its own or pass for another."""
    if path.isprintable() and "\\" not in path:
        return path
    out = []
    for ch in path:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def refuse_credentials(path: str, *reals: str) -> None:
    """Raise the item's TPD214 error when `path`, or where it resolves (`reals`), is in a
    credential store."""
    pattern = credential_store(path, *reals)
    if pattern is None:
        return
    real = next((r for r in reals if r != path), None)
    where = f" (resolves to {shown_name(real)})" if real else ""
    raise ItemError(Failure("TPD214", "credential store refused",
                            f"{shown_name(path)}{where}: in a credential store ({pattern}); "
                            "not copied"))


class ItemError(Exception):
    """An item could not be collected; carries the classified failure."""

    def __init__(self, why: Failure, *, missing: bool = False) -> None:
        super().__init__(why.detail)
        self.failure = why
        self.missing = missing


@dataclass(frozen=True)
class Exec:
    """A finished command: exit status, output, and whether it was cut."""

    stdout: bytes
    stderr: bytes
    exit_status: int | None
    truncated: bool


@dataclass(frozen=True)
class DirEntry:
    path: str
    kind: str  # file | dir | link | socket | other
    size: int
    mtime: float


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    truncated: bool


class Host(Protocol):
    """What a collector may ask of a host."""

    local: bool
    prefix: list[str]

    async def run_text(self, command: str, cap: int, *, keep_tail: bool = False) -> Exec: ...
    async def run(self, argv: list[str], cap: int, *, keep_tail: bool = False) -> Exec: ...
    async def read(self, path: str, cap: int, *, tail: bool = False) -> tuple[bytes, bool]: ...
    async def kind(self, path: str) -> str | None: ...
    async def known_real(self, path: str) -> list[str]: ...
    async def listdir(self, path: str, max_entries: int, max_depth: int) -> list[DirEntry]: ...
    async def http_get(self, target: tuple[str, int] | str, paths: list[str],
                       cap: int) -> list[HttpAnswer]:
        ...
    async def prefetch(self, wants: list[Want], budget: float) -> int: ...
    def close(self) -> None: ...


class _Buffer:
    """Output kept within a cap: the first `cap` bytes, or with keep_tail the last ones
    (logs: the newest lines matter)."""

    def __init__(self, cap: int, keep_tail: bool) -> None:
        self.cap = cap
        self.keep_tail = keep_tail
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.seen = 0

    def add(self, chunk: bytes) -> bool:
        """Take a chunk; False once no more is wanted (head mode, cap reached)."""
        self.seen += len(chunk)
        if not self.keep_tail:
            room = self.cap - self.size
            if room > 0:
                self.chunks.append(chunk[:room])
                self.size += min(room, len(chunk))
            return self.seen <= self.cap
        self.chunks.append(chunk)
        self.size += len(chunk)
        while self.size - len(self.chunks[0]) >= self.cap:
            self.size -= len(self.chunks.popleft())
        return True

    def value(self) -> tuple[bytes, bool]:
        data = b"".join(self.chunks)
        truncated = self.seen > self.cap
        if self.keep_tail and len(data) > self.cap:
            data = data[-self.cap:]
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1:
                data = data[cut + 1:]  # no half line at the top
        return data, truncated


def parse_http(raw: bytes) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.x response (chunked bodies are de-chunked)."""
    status, body, _ = _parse_one(raw)
    return status, body


def _parse_one(raw: bytes) -> tuple[int, bytes, bytes]:
    """(status, body, what follows this response) for pipelined answers: the body ends at
    Content-Length, at the last chunk, or at the end of the data."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}") from exc
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        out = bytearray()
        rest = body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                break
            if size == 0:
                _, _, rest = rest.partition(b"\r\n")  # the empty trailer
                break
            out += rest[:size]
            rest = rest[size + 2:]
        return status, bytes(out), rest
    length = headers.get(b"content-length")
    if length is not None and length.isdigit():
        n = int(length)
        return status, body[:n], body[n:]
    return status, body, b""


def _answers(buf: _Buffer, count: int, cap: int) -> list[HttpAnswer]:
    """Up to `count` pipelined responses from one connection's bytes (a server that
    closes after one answer gives fewer; none at all is an error)."""
    raw, truncated = buf.value()
    out: list[HttpAnswer] = []
    rest = raw
    for _ in range(count):
        if not rest:
            if out:
                break
            raise ItemError(failure("TPD209", "no HTTP answer"))
        try:
            status, body, rest = _parse_one(rest)
        except ValueError as exc:
            raise ItemError(failure("TPD209", str(exc))) from exc
        out.append(HttpAnswer(status, body[:cap], len(body) > cap or (truncated and not rest)))
    return out


def _requests(host: str, paths: list[str]) -> bytes:
    """Pipelined GETs on one connection; the last asks the server to close."""
    return b"".join(
        (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tpdump\r\nAccept: */*\r\n"
         + ("Connection: close\r\n" if i == len(paths) - 1 else "") + "\r\n").encode()
        for i, path in enumerate(paths))


class SSHHost:
    """A node reached over one asyncssh connection."""

    local = False

    def __init__(self, conn: asyncssh.SSHClientConnection, sessions: int,
                 prefix: list[str] | None = None) -> None:
        self.conn = conn
        self.sessions = anyio.CapacityLimiter(sessions)
        self.prefix: list[str] = prefix or []
        self.sftp: asyncssh.SFTPClient | None = None
        self.ready: dict[Want, batch.Answer] = {}
        self.resolved: dict[str, str | None] = {}  # path -> real path, from a batch
        self.requests = 0
        self.direct: list[str] = []  # what was asked for on its own, not in a batch

    async def prefetch(self, wants: list[Want], budget: float) -> int:
        """Run `wants` as one batch (one exec) within `budget` seconds; later run(),
        read() and kind() calls for them are answered from it. Returns how many answers
        it holds: what the batch could not answer (cut off, failed) is asked for again
        on its own."""
        if not wants:
            return 0
        # Each file read comes with where the file really is (`readlink -f`), so that a
        # read through a link into a credential store is refused without another request.
        asked = set(wants)
        with_real: list[Want] = []
        for want in wants:
            real = Want("real", want.args[:1])
            if want.op in ("head", "tail") and real not in asked:
                asked.add(real)
                with_real.append(real)
            with_real.append(want)
        wants = with_real
        boundary = secrets.token_hex(16)
        out = bytearray()
        cap = sum(w.cap + 256 for w in wants) + 4096
        with anyio.move_on_after(budget):
            async with self.sessions:
                self.requests += 1
                try:
                    async with self.conn.create_process(
                            batch.command(boundary, wants, budget), encoding=None,
                            stdin=asyncssh.DEVNULL, stderr=asyncssh.DEVNULL) as proc:
                        head = f"\n--{boundary} ".encode()
                        while len(out) <= cap:
                            chunk = await proc.stdout.read(65536)
                            if not chunk:
                                break
                            out += chunk
                            if len(out) >= len(head) and not out.startswith(head):
                                break  # not the batch talking (a hostile or broken shell)
                except (asyncssh.Error, OSError):
                    pass  # what arrived before is still good
        got = batch.parse(bytes(out), boundary, wants)
        for want in [w for w in got if w.op == "real"]:
            where = got.pop(want)
            self.resolved[want.args[0]] = where if isinstance(where, str) else None
        self.ready.update(got)
        return len(got)

    def _note(self, what: str) -> None:
        if len(self.direct) < 20 and not what.startswith("/bin/sh -c "):
            self.direct.append(what[:200])

    def _ready(self, want: Want) -> batch.Answer | bool:
        """The batch's answer for `want` (once), or False."""
        if want not in self.ready:
            return False
        answer = self.ready.pop(want)
        if isinstance(answer, Failure):
            raise ItemError(answer)
        return answer

    async def run_text(self, command: str, cap: int, *, keep_tail: bool = False) -> Exec:
        """Run a command line as given (the probe)."""
        self.requests += 1
        self._note(command)
        async with self.sessions:
            try:
                return await _run_ssh(self.conn, command, cap, keep_tail)
            except (asyncssh.Error, OSError) as exc:
                raise ItemError(classify(exc)) from exc

    async def run(self, argv: list[str], cap: int, *, keep_tail: bool = False) -> Exec:
        if not keep_tail:
            got = self._ready(Want("run", tuple(argv), cap))
            if isinstance(got, Ran):
                return Exec(got.stdout, b"", got.exit_status, got.truncated)
        return await self.run_text(shlex.join([*self.prefix, *argv]), cap, keep_tail=keep_tail)

    async def _sftp(self) -> asyncssh.SFTPClient:
        if self.sftp is None:
            try:
                # Names that are not UTF-8 come back surrogate-escaped (and go out as the
                # same bytes), not as an error that loses a whole directory.
                self.sftp = await self.conn.start_sftp_client(path_errors="surrogateescape")
            except (asyncssh.Error, OSError) as exc:
                raise ItemError(classify(exc)) from exc
        return self.sftp

    async def read(self, path: str, cap: int, *, tail: bool = False) -> tuple[bytes, bool]:
        """The file's head (or tail) within `cap`: from the batch, else by SFTP. A file in
        a credential store, or reached through a link into one, is refused (TPD214)."""
        real = self.resolved.get(path)
        got = self._ready(Want("tail" if tail else "head", (path,), cap))
        if isinstance(got, tuple) and real is not None:
            refuse_credentials(path, real)
            return got
        # Not in the batch, or the batch could not tell where the file is (no readlink):
        # SFTP asks the server's realpath beside the open (no extra round trip).
        sftp = await self._sftp()
        self.requests += 1
        self._note(f"sftp read {path}")
        where = asyncio.ensure_future(_realpath(sftp, path))
        try:
            async with sftp.open(path, "rb") as f:
                resolved = await where
                refuse_credentials(path, *([resolved] if resolved else []))
                # Ask for what the file holds, not for the cap: asyncssh splits a read into
                # parallel block requests, so read(8 MiB) of a 2 KiB file costs hundreds of
                # requests. Files that report size 0 (/proc) are read until EOF.
                size = (await f.stat()).size or 0
                offset = 0
                truncated = False
                if tail and size > cap:
                    offset, truncated = size - cap, True
                data: bytes
                if size:
                    got = await f.read(min(size - offset, cap) + 1, offset)
                    assert isinstance(got, bytes)  # opened in binary mode
                    data = got
                else:
                    data = await _read_to_eof(f, cap + 1)
        except asyncssh.SFTPNoSuchFile as exc:
            raise ItemError(failure("TPD209", f"{path}: no such file"), missing=True) from exc
        except asyncssh.SFTPPermissionDenied as exc:
            raise ItemError(failure("TPD209", f"{path}: permission denied")) from exc
        except (asyncssh.Error, OSError) as exc:
            why = classify(exc)
            raise ItemError(why) from exc
        finally:
            where.cancel()
        if tail and truncated:
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1:
                data = data[cut + 1:]
            return data, True
        return data[:cap], len(data) > cap

    async def known_real(self, path: str) -> list[str]:
        """Where `path` really is, when a batch asked (`Want("real", ...)`); [] otherwise."""
        real = self.resolved.get(path)
        return [real] if real else []

    async def kind(self, path: str) -> str | None:
        want = Want("kind", (path,))
        if want in self.ready:
            got = self._ready(want)
            return got if isinstance(got, str) else None
        sftp = await self._sftp()
        self.requests += 1
        self._note(f"sftp lstat {path}")
        try:
            attrs = await sftp.lstat(path)
        except asyncssh.SFTPNoSuchFile:
            return None
        except (asyncssh.Error, OSError) as exc:
            raise ItemError(classify(exc)) from exc
        return _kind(attrs.permissions or 0)

    async def listdir(self, path: str, max_entries: int, max_depth: int) -> list[DirEntry]:
        """A bounded recursive listing, one level at a time, the directories of a level
        read in parallel (a round trip per level, not per directory)."""
        sftp = await self._sftp()
        root = path.rstrip("/") or "/"
        out: list[DirEntry] = []
        level = [root]
        for depth in range(max_depth):
            found: dict[str, list[DirEntry]] = {}

            async def scan(directory: str, found: dict[str, list[DirEntry]] = found) -> None:
                self.requests += 1
                try:
                    entries = [e async for e in sftp.scandir(directory)]
                except asyncssh.SFTPNoSuchFile as exc:
                    if directory == root:
                        raise ItemError(failure("TPD209", f"{path}: no such directory"),
                                        missing=True) from exc
                    return
                except (asyncssh.SFTPError, OSError):
                    return
                rows = []
                for e in sorted(entries, key=lambda e: str(e.filename)):
                    name = e.filename if isinstance(e.filename, str) else \
                        e.filename.decode("utf-8", "surrogateescape")
                    if name in (".", ".."):
                        continue
                    full = f"{directory}/{name}" if directory != "/" else f"/{name}"
                    rows.append(DirEntry(full, _kind(e.attrs.permissions or 0),
                                         e.attrs.size or 0, float(e.attrs.mtime or 0)))
                found[directory] = rows

            async with anyio.create_task_group() as tg:
                for directory in level[:256]:
                    tg.start_soon(scan, directory)
            level = []
            for directory in sorted(found):
                for entry in found[directory]:
                    if len(out) >= max_entries:
                        return out
                    out.append(entry)
                    if entry.kind == "dir" and depth + 1 < max_depth:
                        level.append(entry.path)
            if not level:
                break
        return out

    async def http_get(self, target: tuple[str, int] | str, paths: list[str],
                       cap: int) -> list[HttpAnswer]:
        self.requests += 1
        try:
            if isinstance(target, str):
                reader, writer = await self.conn.open_unix_connection(target)
                host = "localhost"
            else:
                reader, writer = await self.conn.open_connection(*target)
                host = f"{target[0]}:{target[1]}"
        except (asyncssh.Error, OSError) as exc:
            raise ItemError(classify(exc)) from exc
        try:
            writer.write(_requests(host, paths))
            buf = _Buffer(len(paths) * (cap + 64 * 1024), keep_tail=False)
            while True:
                chunk = await reader.read(65536)
                if not chunk or not buf.add(chunk):
                    break
        except (asyncssh.Error, OSError) as exc:
            raise ItemError(classify(exc)) from exc
        finally:
            writer.close()
        return _answers(buf, len(paths), cap)

    def close(self) -> None:
        if self.sftp is not None:
            self.sftp.exit()
            self.sftp = None


async def _realpath(sftp: asyncssh.SFTPClient, path: str) -> str | None:
    """Where `path` really is on the server (SFTP realpath resolves every link), None
    when the server does not say."""
    try:
        real = await sftp.realpath(path)
    except (asyncssh.Error, OSError, UnicodeError):
        return None
    return real if isinstance(real, str) and real.startswith("/") else None


async def _read_to_eof(f: asyncssh.SFTPClientFile, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit:
        chunk = await f.read(min(65536, limit - len(out)), len(out))
        if not chunk:
            break
        assert isinstance(chunk, bytes)
        out += chunk
    return bytes(out)


async def _run_ssh(conn: asyncssh.SSHClientConnection, command: str, cap: int,
                   keep_tail: bool) -> Exec:
    """Run one command; keep at most `cap` bytes of stdout (its head, or its tail for
    logs), close the channel when the head is full."""
    out = _Buffer(cap, keep_tail)
    err = bytearray()
    async with conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL) as proc:

        async def read_err() -> None:
            # stderr only explains a failure; a broken connection is reported by the
            # stdout read below.
            with contextlib.suppress(asyncssh.Error, OSError):
                while len(err) < 65536:
                    chunk = await proc.stderr.read(65536)
                    if not chunk:
                        return
                    err.extend(chunk)

        cut = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_err)
            while True:
                chunk = await proc.stdout.read(65536)
                if not chunk:
                    break
                if not out.add(chunk) or (keep_tail and out.seen > 8 * cap):
                    cut = True
                    break
            if cut:
                tg.cancel_scope.cancel()
        data, truncated = out.value()
        if cut:
            proc.close()
            return Exec(data, bytes(err), None, True)
        await proc.wait_closed()
        return Exec(data, bytes(err), proc.exit_status, truncated)


def _kind(mode: int) -> str:
    if statmod.S_ISDIR(mode):
        return "dir"
    if statmod.S_ISREG(mode):
        return "file"
    if statmod.S_ISLNK(mode):
        return "link"
    if statmod.S_ISSOCK(mode):
        return "socket"
    return "other"


class LocalHost:
    """This machine, or a root file system mounted at `sysroot` (`tpdump node`)."""

    local = True

    def __init__(self, sysroot: str | None, prefix: list[str] | None = None) -> None:
        self.sysroot = sysroot.rstrip("/") if sysroot else ""
        self.prefix = prefix or []

    async def prefetch(self, wants: list[Want], budget: float) -> int:
        """Nothing to save here: local reads and commands cost no round trip."""
        return 0

    def path(self, path: str) -> Path:
        return Path(self.sysroot + path) if self.sysroot else Path(path)

    def real_paths(self, fd: int | None, opened: Path) -> list[str]:
        """Where a file really is: this machine's path and, below --sysroot, the node's
        own path (for an open descriptor the kernel's answer, no race)."""
        try:
            if fd is None:
                raise OSError
            here = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            here = os.path.realpath(opened)
        out = [here]
        if self.sysroot:
            root = os.path.realpath(self.sysroot)
            if here == root or here.startswith(root + "/"):
                out.append(here[len(root):] or "/")
        return out

    async def run_text(self, command: str, cap: int, *, keep_tail: bool = False) -> Exec:
        return await self._run(["/bin/sh", "-c", command], cap, keep_tail)

    async def run(self, argv: list[str], cap: int, *, keep_tail: bool = False) -> Exec:
        return await self._run([*self.prefix, *argv], cap, keep_tail)

    async def _run(self, argv: list[str], cap: int, keep_tail: bool) -> Exec:
        out = _Buffer(cap, keep_tail)
        err = bytearray()
        try:
            process = await anyio.open_process(argv, stdin=None)
        except OSError as exc:
            raise ItemError(failure("TPD209", f"cannot run {argv[0]}: {exc.strerror}"),
                            missing=True) from exc
        cut = False
        async with process:
            assert process.stdout is not None and process.stderr is not None
            stderr = process.stderr

            async def read_err() -> None:
                async for chunk in stderr:
                    if len(err) < 65536:
                        err.extend(chunk)

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_err)
                    async for chunk in process.stdout:
                        if not out.add(chunk) or (keep_tail and out.seen > 8 * cap):
                            cut = True
                            break
                    if cut:
                        process.kill()
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await process.wait()
        data, truncated = out.value()
        return Exec(data, bytes(err), None if cut else process.returncode, truncated or cut)

    async def read(self, path: str, cap: int, *, tail: bool = False) -> tuple[bytes, bool]:
        real = self.path(path)

        def read_sync() -> tuple[bytes, bool]:
            with open(real, "rb") as f:
                refuse_credentials(path, *self.real_paths(f.fileno(), real))
                size = os.fstat(f.fileno()).st_size
                if tail and size > cap:
                    f.seek(size - cap)
                    data = f.read(cap)
                    cut = data.find(b"\n")
                    return (data[cut + 1:] if 0 <= cut < len(data) - 1 else data), True
                data = f.read(cap + 1)
                return data[:cap], len(data) > cap

        try:
            return await anyio.to_thread.run_sync(read_sync)
        except FileNotFoundError as exc:
            raise ItemError(failure("TPD209", f"{path}: no such file"), missing=True) from exc
        except OSError as exc:
            raise ItemError(failure("TPD209", f"{path}: {exc.strerror}")) from exc

    async def known_real(self, path: str) -> list[str]:
        return self.real_paths(None, self.path(path))

    async def kind(self, path: str) -> str | None:
        try:
            st = await anyio.to_thread.run_sync(os.lstat, self.path(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ItemError(failure("TPD209", f"{path}: {exc.strerror}")) from exc
        return _kind(st.st_mode)

    async def listdir(self, path: str, max_entries: int, max_depth: int) -> list[DirEntry]:
        root = self.path(path)

        def walk() -> list[DirEntry]:
            out: list[DirEntry] = []
            queue: deque[tuple[Path, int]] = deque([(root, 0)])
            while queue and len(out) < max_entries:
                current, depth = queue.popleft()
                try:
                    names = sorted(os.listdir(current))
                except FileNotFoundError:
                    if current == root:
                        raise
                    continue
                except OSError:
                    continue
                for name in names:
                    full = current / name
                    try:
                        st = os.lstat(full)
                    except OSError:
                        continue
                    kind = _kind(st.st_mode)
                    shown = "/" + str(full.relative_to(self.sysroot)) if self.sysroot \
                        else str(full)
                    out.append(DirEntry(shown, kind, st.st_size, st.st_mtime))
                    if kind == "dir" and depth + 1 < max_depth:
                        queue.append((full, depth + 1))
                    if len(out) >= max_entries:
                        break
            return out

        try:
            return await anyio.to_thread.run_sync(walk)
        except FileNotFoundError as exc:
            raise ItemError(failure("TPD209", f"{path}: no such directory"),
                            missing=True) from exc

    async def http_get(self, target: tuple[str, int] | str, paths: list[str],
                       cap: int) -> list[HttpAnswer]:
        try:
            if isinstance(target, str):
                stream: anyio.abc.ByteStream = await anyio.connect_unix(self.path(target))
                host = "localhost"
            else:
                stream = await anyio.connect_tcp(*target)
                host = f"{target[0]}:{target[1]}"
        except OSError as exc:
            raise ItemError(classify(exc)) from exc
        buf = _Buffer(len(paths) * (cap + 64 * 1024), keep_tail=False)
        async with stream:
            await stream.send(_requests(host, paths))
            try:
                while True:
                    chunk = await stream.receive(65536)
                    if not buf.add(chunk):
                        break
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        return _answers(buf, len(paths), cap)

    def close(self) -> None:
        return None
