"""The `hostile` node fault: a node whose names and files try to make a collector escape
its archive, follow links to secrets, choke on bytes or run out of memory.

What it serves (docs/scenario.md, "Node faults"): a `--config ../../x` command line with
junk arguments; `/x` a symlink (odd instances: to a teleport.yaml whose log file is a
single 100 MiB line, generated piece by piece; even instances: to `/etc/shadow`);
`/etc/shadow` readable and holding a canary password hash and a canary in no format a
redactor knows (a bare token line: only refusing the link keeps it out); systemd units
named with `..`, absolute paths and NUL bytes whose files are links to the shadow file
and to a private key; a data_dir with entries named `../../..`, with NUL bytes and
invalid UTF-8, symlink loops and links to the secrets; invalid UTF-8 in /etc/hostname
and /etc/os-release.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tpdump.sim.systemd import UnitFile

HUGE_LINE_BYTES = 100 * 1024 * 1024
HUGE_LOG = "/var/log/teleport/teleport.log"
SHADOW = "/etc/shadow"
PRIVATE_KEY = "/root/.ssh/id_ed25519"
CONFIG_ARG = "../../x"
CONFIG_LINK = "/x"
REAL_CONFIG = "/etc/teleport.yaml"
# Unit names a hostile `systemctl list-units` prints: traversal, absolute, NUL, bytes
# that are not UTF-8.
UNIT_NAMES = ("teleport/../../../etc/evil.service", "/abs.service",
              "teleport-nul\x00name.service", "teleport-shadow.service",
              "teleport-../../x.service", "teleport-\udcff\udcfe-utf8.service")
_FILL = b"\xff\xfeHOSTILE\x00line\xc3(" + b"A" * 47 + b"\xe2\x82"  # 64 bytes, not UTF-8


@dataclass(frozen=True)
class Stream:
    """File content made on demand, piece by piece: a huge file is never held whole."""

    size: int
    read_at: Callable[[int, int], bytes]


def huge_line(stamp: str) -> Stream:
    """One log line of HUGE_LINE_BYTES bytes (a time stamp, then invalid UTF-8 and NUL
    bytes, then one newline at the very end)."""
    head = f"{stamp} INFO [NODE]      ".encode()
    size = HUGE_LINE_BYTES

    def read_at(offset: int, n: int) -> bytes:
        end = min(size, offset + max(0, n))
        if offset >= end:
            return b""
        out = bytearray()
        pos = offset
        if pos < len(head):
            out += head[pos:min(end, len(head))]
            pos = len(head)
        body_end = min(end, size - 1)
        if pos < body_end:
            start = (pos - len(head)) % len(_FILL)
            count = body_end - pos
            reps = (start + count) // len(_FILL) + 1
            out += (_FILL * reps)[start:start + count]
            pos = body_end
        if end == size and pos < end:
            out += b"\n"
        return bytes(out)

    return Stream(size, read_at)


def secrets_of(canary: Callable[[str], str]) -> dict[str, str]:
    """The hostile group's secrets (canaries): a password hash, a private key body, a join
    token and a secret in no recognisable format."""
    return {"shadow": canary("hostile_shadow"), "key": canary("hostile_key"),
            "token": canary("hostile_token"), "plain": canary("hostile_plain")}


def shadow_text(secrets: dict[str, str], *, plain: bool = False) -> bytes:
    """The shadow file; with `plain`, also a bare token line no redactor recognises."""
    return (f"root:$6$saltsalt${secrets['shadow']}:19700:0:99999:7:::\n"
            "daemon:*:19700:0:99999:7:::\n"
            + (f"{secrets['plain']}\n" if plain and "plain" in secrets else "")).encode()


def key_text(secrets: dict[str, str]) -> bytes:
    return ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
            f"b3BlbnNzaC1rZXktdjEAAAAA{secrets['key']}\n"
            "-----END OPENSSH PRIVATE KEY-----\n").encode()


def config_text(secrets: dict[str, str]) -> bytes:
    return (
        "version: v3\n"
        "teleport:\n"
        "  nodename: \"../../../etc/evil\"\n"
        "  data_dir: /var/lib/teleport\n"
        f"  auth_token: {secrets['token']}\n"
        "  diag_addr: \"../../..:3000\"\n"
        "  log:\n"
        f"    output: {HUGE_LOG}\n"
        "    severity: INFO\n"
        "ssh_service:\n"
        "  enabled: \"yes\"\n"
        "auth_service:\n"
        "  enabled: \"no\"\n"
        "proxy_service:\n"
        "  enabled: \"no\"\n"
    ).encode()


def argv(real: list[str]) -> list[str]:
    """The command line: a relative `--config` that climbs out, and junk arguments."""
    exe = real[0] if real else "/usr/local/bin/teleport"
    return [exe, "start", "--config", CONFIG_ARG, "--pid-file=/run/teleport.pid",
            "--\udcff\udcfe-junk", "../../../../etc/passwd"]


def units(secrets: dict[str, str]) -> dict[str, UnitFile]:
    """Units with hostile names; their files are the secrets (as `systemctl cat` of a
    unit file that is a symlink prints the target)."""
    out: dict[str, UnitFile] = {}
    for name in UNIT_NAMES:
        text = key_text(secrets) if "nul" in name else shadow_text(secrets)
        path = name if name.startswith("/") else f"/etc/systemd/system/{name}"
        out[name] = UnitFile(name, path, text)
    return out


def files(n: int, secrets: dict[str, str], stamp: str,
          data_dir: str) -> dict[str, tuple[bytes | Stream | str, int]]:
    """path -> (content | stream | symlink target, mode), on top of the node's normal
    files. Odd instances run a config with a 100 MiB log line; even ones a config that is
    a link to the shadow file."""
    out: dict[str, tuple[bytes | Stream | str, int]] = {
        SHADOW: (shadow_text(secrets, plain=True), 0o640),
        PRIVATE_KEY: (key_text(secrets), 0o600),
        REAL_CONFIG: (config_text(secrets), 0o600),
        CONFIG_LINK: (REAL_CONFIG if n % 2 else SHADOW, 0o777),
        "/etc/hostname": (b"hostile-" + str(n).encode() + b"\xff\xfe\x00../../etc\n", 0o644),
        "/etc/os-release": (b"PRETTY_NAME=\"\xff\xfe\x00Hostile\"\nID=../../..\n", 0o644),
        f"{data_dir}/proc/sqlite.db": (SHADOW, 0o777),
        f"{data_dir}/host_uuid": (PRIVATE_KEY, 0o777),
        f"{data_dir}/loop": (f"{data_dir}/loop", 0o777),
        f"{data_dir}/ping": ("pong", 0o777),
        f"{data_dir}/pong": ("ping", 0o777),
        f"{data_dir}/root": ("/", 0o777),
        "/etc/systemd/system/teleport-shadow.service": (SHADOW, 0o777),
    }
    if n % 2:
        out[HUGE_LOG] = (huge_line(stamp), 0o640)
    return out


def raw_entries(data_dir: str) -> list[tuple[str, str, bytes]]:
    """(directory, name, content) of files whose names no real file system allows (or
    that a careless join turns into a path elsewhere)."""
    return [(data_dir, "../../..", b"escape\n"),
            (data_dir, "/abs", b"absolute\n"),
            (data_dir, "nul\x00name", b"nul\n"),
            (data_dir, "bad-\udcff\udcfe-utf8", b"\xff\xfe\n"),
            (data_dir, "new\nline f 1 1.0 /etc/shadow", b"newline\n")]
