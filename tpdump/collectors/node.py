"""Per-node collection over one SSH connection: the probe (one exec that reports the
teleport processes, version and host facts), then files by SFTP. Each item has its own
deadline and byte cap; one failing item never stops the others."""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import asyncssh
import structlog
import yaml

from tpdump.archive import ArchiveWriter
from tpdump.config import Settings
from tpdump.redact import Loader, Redactor
from tpdump.results import ItemResult, NodeResult
from tpdump.transport import classify

log = structlog.get_logger("tpdump.node")

PROBE_SCRIPT = resources.files("tpdump.collectors").joinpath("probe.sh").read_text("utf-8")
DEFAULT_CONFIG = "/etc/teleport.yaml"


@dataclass(frozen=True)
class Exec:
    """A finished remote command: exit status, output, and whether it was cut."""

    stdout: bytes
    stderr: bytes
    exit_status: int | None
    truncated: bool


def probe_command(boundary: str, root: str, cap: int) -> str:
    """The exact command line that runs the probe (see docs/contracts.md)."""
    text = f"B={boundary}\nR={shlex.quote(root)}\nCAP={cap}\n{PROBE_SCRIPT}"
    return "/bin/sh -c " + shlex.quote(text)


def parse_probe(output: bytes, boundary: str) -> dict[str, bytes]:
    """Sections of the probe's output by name; content without the framing newline."""
    marker = f"\n--{boundary} ".encode()
    sections: dict[str, bytes] = {}
    chunks = output.split(marker)
    for chunk in chunks[1:]:
        name, _, body = chunk.partition(b"\n")
        sections[name.decode("utf-8", "replace").strip()] = body
    return sections


def split_cmdline(raw: bytes) -> list[str]:
    """`/proc/<pid>/cmdline` (NUL-separated) as arguments."""
    return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0")]


def config_path(argv: list[str]) -> str:
    """The config file a `teleport start` command line names, else the default."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        for flag in ("--config=", "-c="):
            if arg.startswith(flag):
                return arg[len(flag):]
    return DEFAULT_CONFIG


def config_facts(text: str) -> dict[str, Any]:
    """What support needs at a glance from teleport.yaml (already redacted)."""
    try:
        doc = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:
        return {"config_error": f"not valid YAML: {str(exc).splitlines()[0]}"}
    if not isinstance(doc, dict):
        return {"config_error": "not a YAML mapping"}
    tp = doc.get("teleport") if isinstance(doc.get("teleport"), dict) else {}
    assert isinstance(tp, dict)
    facts: dict[str, Any] = {}
    for key in ("nodename", "data_dir", "diag_addr", "auth_server", "proxy_server", "ca_pin"):
        if tp.get(key) is not None:
            facts[key] = tp[key]
    if isinstance(tp.get("auth_servers"), list):
        facts["auth_servers"] = tp["auth_servers"]
    logcfg = tp.get("log")
    if isinstance(logcfg, dict):
        facts["log_output"] = logcfg.get("output")
        facts["log_format"] = (logcfg.get("format") or {}).get("output") \
            if isinstance(logcfg.get("format"), dict) else None
    services = []
    for section, name in (("auth_service", "auth"), ("ssh_service", "node"),
                          ("proxy_service", "proxy"), ("kubernetes_service", "kube"),
                          ("app_service", "app"), ("db_service", "db"),
                          ("windows_desktop_service", "windows_desktop"),
                          ("discovery_service", "discovery")):
        sec = doc.get(section)
        if isinstance(sec, dict) and str(sec.get("enabled")).lower() in ("true", "yes", "1"):
            services.append(name)
    facts["configured_services"] = services
    return facts


async def run_capped(conn: asyncssh.SSHClientConnection, command: str, cap: int) -> Exec:
    """Run a command; read at most `cap` bytes of stdout, then close the channel."""
    out = bytearray()
    err = bytearray()
    truncated = False
    async with conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL) as proc:

        async def read_err() -> None:
            # stderr is only for the message of a failure; a broken connection is
            # reported by the stdout read below.
            with contextlib.suppress(asyncssh.Error, OSError):
                while len(err) < 65536:
                    chunk = await proc.stderr.read(65536)
                    if not chunk:
                        return
                    err.extend(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_err)
            while True:
                chunk = await proc.stdout.read(65536)
                if not chunk:
                    break
                room = cap - len(out)
                out.extend(chunk[:room])
                if len(chunk) > room:
                    truncated = True
                    break
            if truncated:
                tg.cancel_scope.cancel()
        if truncated:
            proc.close()
            return Exec(bytes(out), bytes(err), None, True)
        await proc.wait_closed()
        return Exec(bytes(out), bytes(err), proc.exit_status, False)


class NodeCollector:
    """Collects one node over an open connection into the archive."""

    def __init__(self, conn: asyncssh.SSHClientConnection, result: NodeResult,
                 archive: ArchiveWriter, redactor: Redactor, settings: Settings) -> None:
        self.conn = conn
        self.result = result
        self.archive = archive
        self.redactor = redactor
        self.settings = settings
        self.base = result.dir

    async def write(self, name: str, path: str, data: bytes | str, *, source: str,
                    truncated: bool = False, started: float) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        rel = await self.archive.add(f"{self.base}/{path}", data, source=source,
                                     truncated=truncated)
        size = len(data)
        status = "truncated" if truncated else "ok"
        self.result.items.append(ItemResult(name, status, rel, size,
                                            round(time.monotonic() - started, 3)))
        if truncated:
            self.result.fail("TPD206", "output capped", f"{name}: cut at its byte cap")

    def item_failed(self, name: str, code: str, message: str, started: float,
                    status: str = "failed") -> None:
        self.result.items.append(ItemResult(name, status, None, 0,
                                            round(time.monotonic() - started, 3), code, message))

    async def collect(self) -> None:
        """Every item of this node; the node's own deadline is the caller's scope."""
        sftp: list[asyncssh.SFTPClient] = []

        async def open_sftp() -> None:
            started = time.monotonic()
            with anyio.move_on_after(self.settings.item_timeout) as scope:
                try:
                    sftp.append(await self.conn.start_sftp_client())
                except (asyncssh.Error, OSError) as exc:
                    why = classify(exc)
                    self.item_failed("sftp", why.code, f"SFTP unavailable: {why.detail}",
                                     started)
            if scope.cancelled_caught:
                self.item_failed("sftp", "TPD202", "SFTP did not start in time", started)

        # The default config path is read while the probe runs (most nodes use it), so
        # the usual node costs no extra round trips for it.
        early: dict[str, Fetched] = {}

        async def sftp_side() -> None:
            await open_sftp()
            if sftp:
                early[DEFAULT_CONFIG] = await self.fetch(sftp[0], DEFAULT_CONFIG)

        argv: list[list[str]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(sftp_side)
            argv = await self.probe()
        config = config_path(argv[0]) if argv else DEFAULT_CONFIG
        if sftp:
            try:
                fetched = early.get(config) or await self.fetch(sftp[0], config)
                await self.store_config(config, fetched)
            finally:
                sftp[0].exit()

    async def probe(self) -> list[list[str]]:
        """Run the probe; write cmdline, version and host facts. Returns the argv of each
        teleport process found."""
        started = time.monotonic()
        boundary = secrets.token_hex(16)
        cap = self.settings.max_output
        command = probe_command(boundary, "", cap)
        sent = time.time()
        ran: Exec | None = None
        with anyio.move_on_after(self.settings.item_timeout) as scope:
            try:
                ran = await run_capped(self.conn, command, cap)
            except (asyncssh.Error, OSError) as exc:
                why = classify(exc)
                self.item_failed("probe", why.code, why.detail, started)
                self.result.fail(why.code, why.reason, f"probe: {why.detail}")
                return []
        received = time.time()
        if scope.cancelled_caught or ran is None:
            self.item_failed("probe", "TPD202", "the probe did not finish in time", started)
            self.result.fail("TPD202", "collection timed out",
                             f"the probe command did not finish within "
                             f"{self.settings.item_timeout:g} s")
            return []
        source = "command: sh -c <probe>"
        if ran.truncated:
            await self.write("probe", "probe.out", self.redactor.data(ran.stdout),
                             source=source, truncated=True, started=started)
        sections = parse_probe(ran.stdout, boundary)
        if "end" not in sections and not ran.truncated:
            detail = ran.stderr.decode("utf-8", "replace").strip()[:500]
            self.item_failed("probe", "TPD209",
                             f"the probe ended early (exit {ran.exit_status}): {detail}",
                             started)
        found: list[list[str]] = []
        for name, body in sections.items():
            if name.startswith("cmdline "):
                pid = name.split(" ", 1)[1]
                args = self.redactor.cmdline(split_cmdline(body))
                found.append(args)
                await self.write(f"cmdline {pid}", "cmdline" if len(found) == 1 else
                                 f"cmdline.{pid}", "\0".join(args) + "\0",
                                 source=f"file: /proc/{pid}/cmdline", started=started)
        if not found:
            self.item_failed("cmdline", "TPD210", "no teleport process found", started,
                             status="missing")
        version = sections.get("version", b"").strip()
        if version:
            await self.write("version", "version.txt", self.redactor.data(version) + b"\n",
                             source="command: teleport version", started=started)
            self.result.facts["teleport_version"] = version.decode("utf-8", "replace")[:200]
        else:
            self.item_failed("version", "TPD209", "`teleport version` gave no output", started,
                             status="missing")
        host_files = {"hostname": "host/hostname", "os-release": "host/os-release",
                      "uname": "host/uname"}
        for name, path in host_files.items():
            content = sections.get(name)
            if content:
                await self.write(name, path, self.redactor.data(content),
                                 source=f"probe: {name}", started=started)
        date = sections.get("date", b"").strip()
        try:
            remote = float(date.decode())
            self.result.clock_offset_s = remote - (sent + received) / 2
        except (ValueError, UnicodeDecodeError):
            pass
        return found

    async def fetch(self, sftp: asyncssh.SFTPClient, path: str) -> Fetched:
        """One file by SFTP, at most max_output bytes (+1 to see that it was cut)."""
        started = time.monotonic()
        cap = self.settings.max_output
        with anyio.move_on_after(self.settings.item_timeout) as scope:
            try:
                async with sftp.open(path, "rb") as f:
                    data = await f.read(cap + 1)
                assert isinstance(data, bytes)  # opened in binary mode
                return Fetched(path, started, data[:cap], truncated=len(data) > cap)
            except asyncssh.SFTPNoSuchFile:
                return Fetched(path, started, None, code="TPD209", status="missing",
                               message=f"{path}: no such file")
            except (asyncssh.Error, OSError) as exc:
                why = classify(exc)
                return Fetched(path, started, None, code=why.code, message=f"{path}: "
                               f"{why.detail}", reason=why.reason)
        assert scope.cancelled_caught
        return Fetched(path, started, None, code="TPD202", message=f"{path}: not read in time",
                       reason="collection timed out")

    async def store_config(self, path: str, got: Fetched) -> None:
        """teleport.yaml, secrets stripped, facts parsed."""
        if got.data is None:
            self.item_failed("teleport.yaml", got.code or "TPD209", got.message, got.started,
                             status=got.status)
            if got.code in ("TPD202", "TPD205"):
                self.result.fail(got.code, got.reason, got.message)
            return
        text = got.data.decode("utf-8", "surrogateescape")
        cleaned, parsed = self.redactor.yaml_text(text)
        await self.write("teleport.yaml", "teleport.yaml", cleaned, source=f"sftp: {path}",
                         truncated=got.truncated, started=got.started)
        self.result.facts["config_path"] = path
        if parsed:
            self.result.facts.update(config_facts(cleaned))
        else:
            self.result.facts["config_error"] = "not valid YAML"


@dataclass(frozen=True)
class Fetched:
    """A file read from a node, or why it could not be."""

    path: str
    started: float
    data: bytes | None
    truncated: bool = False
    code: str | None = None
    message: str = ""
    status: str = "failed"
    reason: str = ""


def node_json(result: NodeResult) -> str:
    return json.dumps(result.to_json(), indent=1, default=str)
