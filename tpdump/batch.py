"""One round trip for many requests: the commands and file reads a node's items will ask
for, run by one POSIX shell script on the node (`tpdump-batch v1`, see docs/contracts.md).

Each request's answer comes back framed by a random boundary with its exit status, so
that every item still gets exactly what a separate exec or SFTP read would have given it
(the same head or tail, the same cap). Answers a batch cannot give faithfully (a command
that failed: its stderr explains why) are left out, and the item asks again on its own."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from tpdump.transport import Failure, failure

MARK = "# tpdump-batch v1"

# The shell functions the requests call. dash, bash and busybox sh all run this.
#   r NAME CAP CMD...  run CMD (under `timeout` when there is one), stdout's first CAP bytes
#   f NAME CAP PATH    the file's first CAP bytes
#   t NAME CAP PATH    the file's last CAP bytes
#   k NAME PATH        what PATH is: link, socket, dir, file, other or nothing
#   p NAME PATH        where PATH really is (`readlink -f`), nothing when it does not exist
# Every request prints "--$B NAME", its output, then "--$B rc NAME STATUS".
_FUNCTIONS = r"""sec() { printf '\n--%s %s\n' "$B" "$1"; }
command -v renice >/dev/null 2>&1 && renice -n 10 -p $$ >/dev/null 2>&1
command -v ionice >/dev/null 2>&1 && ionice -c 3 -p $$ >/dev/null 2>&1
T=""
command -v timeout >/dev/null 2>&1 && T="timeout -k 1 $TS"
r() {
  n=$1; c=$2; shift 2; sec "$n"
  { s=$( { { $T "$@" 2>/dev/null; echo $? >&3; } | head -c "$c" >&4; } 3>&1 ); } 4>&1
  sec "rc $n $s"
}
f() { sec "$1"; head -c "$2" < "$3" 2>/dev/null; sec "rc $1 $?"; }
t() { sec "$1"; tail -c "$2" < "$3" 2>/dev/null; sec "rc $1 $?"; }
k() {
  sec "$1"
  if [ -L "$2" ]; then echo link; elif [ -S "$2" ]; then echo socket
  elif [ -d "$2" ]; then echo dir; elif [ -f "$2" ]; then echo file
  elif [ -e "$2" ]; then echo other; fi
  sec "rc $1 0"
}
p() { sec "$1"; [ -e "$2" ] && readlink -f -- "$2" 2>/dev/null; sec "rc $1 0"; }
"""


@dataclass(frozen=True)
class Want:
    """One request: `run` a command (args = argv), read a file's `head` or `tail`
    (args = (path,)), the `kind` of a path or its `real` path (every symbolic link
    resolved); cap in bytes."""

    op: str
    args: tuple[str, ...]
    cap: int = 0
    # Exit statuses that are answers, not failures (`systemctl status`: 3 = not running).
    ok: tuple[int, ...] = field(default=(0,), compare=False)


@dataclass(frozen=True)
class Ran:
    """A finished command as the batch saw it (no stderr)."""

    stdout: bytes
    exit_status: int | None
    truncated: bool


Answer = Ran | tuple[bytes, bool] | str | None | Failure


def script(boundary: str, wants: list[Want], timeout_s: float) -> str:
    """The batch as a shell script."""
    lines = [MARK, f"B={boundary}", f"TS={max(1, int(timeout_s))}", _FUNCTIONS.rstrip("\n")]
    for i, want in enumerate(wants):
        if want.op == "run":
            lines.append(shlex.join(["r", str(i), str(want.cap + 1), *want.args]))
        elif want.op in ("head", "tail"):
            lines.append(shlex.join(["f" if want.op == "head" else "t", str(i),
                                     str(want.cap + 1), want.args[0]]))
        elif want.op in ("kind", "real"):
            lines.append(shlex.join(["k" if want.op == "kind" else "p", str(i),
                                     want.args[0]]))
        else:
            raise ValueError(f"unknown batch request {want.op!r}")
    lines.append('sec end')
    return "\n".join(lines) + "\n"


def command(boundary: str, wants: list[Want], timeout_s: float) -> str:
    """The exec request that runs the batch."""
    return "/bin/sh -c " + shlex.quote(script(boundary, wants, timeout_s))


def parse(output: bytes, boundary: str, wants: list[Want]) -> dict[Want, Answer]:
    """The answers the output holds completely (a request whose status line is missing,
    because the batch was cut or timed out there, is left out)."""
    marker = f"\n--{boundary} ".encode()
    answers: dict[Want, Answer] = {}
    body: dict[int, bytes] = {}
    for chunk in output.split(marker)[1:]:
        head, _, content = chunk.partition(b"\n")
        words = head.split()
        try:
            if len(words) == 1 and words[0] != b"end":
                body[int(words[0])] = content
            elif len(words) == 3 and words[0] == b"rc":
                i, status = int(words[1]), int(words[2])
                if 0 <= i < len(wants) and i in body:
                    answer = _answer(wants[i], body[i], status)
                    if answer is not _ASK_AGAIN:
                        answers[wants[i]] = answer  # type: ignore[assignment]
        except ValueError:
            continue
    return answers


_ASK_AGAIN = object()


def _answer(want: Want, data: bytes, status: int) -> object:
    if want.op == "kind":
        kind = data.strip().decode("ascii", "replace")
        return kind or None
    if want.op == "real":  # the path and a newline; nothing: missing, or no readlink
        real = data[:-1] if data.endswith(b"\n") else b""
        return real.decode("utf-8", "surrogateescape") if real.startswith(b"/") else None
    cut = len(data) > want.cap
    if want.op == "run":
        if cut:
            return Ran(data[:want.cap], None, True)
        if status in (124, 137):  # killed by `timeout`: asking again would hang again
            return failure("TPD202", f"{want.args[0]} did not finish in time")
        if status not in want.ok:
            return _ASK_AGAIN  # its stderr (not kept here) says why
        return Ran(data, status, False)
    if status != 0:
        return _ASK_AGAIN  # missing or unreadable: the SFTP read says which
    if want.op == "tail" and cut:
        data = data[-want.cap:] if want.cap else b""
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            data = data[nl + 1:]  # no half line at the top
        return data, True
    return data[:want.cap], cut
