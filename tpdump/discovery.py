"""Enumerates the cluster's instances through the auth API: `tctl inventory ls` merged with
the heartbeats of every service kind, by host UUID."""

from __future__ import annotations

import fnmatch
import json
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from tpdump.errors import Problem
from tpdump.tctl import Tctl, TctlFailure, TctlResult

log = structlog.get_logger("tpdump.discovery")

# Heartbeat kind -> the service it stands for.
HEARTBEAT_KINDS: dict[str, str] = {
    "node": "node",
    "proxy": "proxy",
    "auth_server": "auth",
    "kube_server": "kube",
    "app_server": "app",
    "db_server": "db",
    "windows_desktop_service": "windows_desktop",
}
# types.SystemRole names as `tctl inventory ls --format=json` prints them.
_INVENTORY_SERVICES: dict[str, str] = {
    "auth": "auth", "node": "node", "proxy": "proxy", "kube": "kube", "app": "app",
    "db": "db", "windowsdesktop": "windows_desktop", "discovery": "discovery",
    "okta": "okta", "mdm": "mdm", "bot": "bot", "databaseservice": "db",
}
DEFAULT_SSH_PORT = 3022


@dataclass(frozen=True)
class Target:
    """Where a node's SSH service is reached through the proxy."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Instance:
    """One Teleport process of the cluster, merged from inventory and heartbeats."""

    uuid: str
    hostname: str = ""
    version: str = ""
    services: set[str] = field(default_factory=set)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)
    addr: str = ""
    tunnel: bool = False
    target: Target | None = None

    @property
    def name(self) -> str:
        return self.hostname or self.uuid

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "hostname": self.hostname,
            "version": self.version,
            "services": sorted(self.services),
            "sources": sorted(self.sources),
            "addr": self.addr,
            "tunnel": self.tunnel,
            "target": str(self.target) if self.target else None,
        }


@dataclass
class Discovery:
    """What the auth API told about the cluster."""

    instances: list[Instance]
    kind_results: dict[str, TctlResult]
    kind_docs: dict[str, list[dict[str, Any]]]
    problems: list[Problem]
    inventory_supported: bool
    excluded: int = 0


def parse_json_docs(raw: bytes) -> list[dict[str, Any]]:
    """A tctl `--format=json` answer: a JSON array of resources (or one object, or empty)."""
    text = raw.decode("utf-8").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError("expected a JSON array of objects")
    return data


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _record_host(kind: str, doc: Mapping[str, Any]) -> tuple[str, str]:
    """(host UUID, hostname) of a heartbeat record."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
    # app/db/kube servers name the app, database or cluster in metadata.name; their host
    # is spec.host_id. Older records lack host_id: metadata.name is then the best key.
    host_id = _str(spec.get("host_id")) or _str(meta.get("name"))
    return host_id, _str(spec.get("hostname"))


def merge(
    inventory: Sequence[Mapping[str, Any]] | None,
    heartbeats: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[Instance]:
    """Merge inventory instances and heartbeat records by host UUID."""
    by_id: dict[str, Instance] = {}

    def get(host_id: str) -> Instance:
        inst = by_id.get(host_id)
        if inst is None:
            inst = by_id[host_id] = Instance(uuid=host_id)
        return inst

    for doc in inventory or ():
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
        spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
        assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
        host_id = _str(meta.get("name"))
        if not host_id:
            continue
        inst = get(host_id)
        inst.sources.add("inventory")
        inst.hostname = inst.hostname or _str(spec.get("hostname"))
        inst.version = _str(spec.get("version")) or inst.version
        services = spec.get("services")
        for svc in services if isinstance(services, list) else ():
            key = _str(svc).lower().replace("_", "")
            inst.services.add(_INVENTORY_SERVICES.get(key, key))
        inst.records.setdefault("inventory", []).append(dict(doc))
    for kind, docs in heartbeats.items():
        service = HEARTBEAT_KINDS[kind]
        for doc in docs:
            host_id, hostname = _record_host(kind, doc)
            if not host_id:
                continue
            inst = get(host_id)
            inst.sources.add(kind)
            inst.services.add(service)
            inst.records.setdefault(service, []).append(dict(doc))
            inst.hostname = inst.hostname or hostname
            spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
            assert isinstance(spec, Mapping)
            inst.version = inst.version or _str(spec.get("version"))
            if kind == "node":
                inst.addr = _str(spec.get("addr"))
                inst.tunnel = bool(spec.get("use_tunnel")) or not inst.addr
    return sorted(by_id.values(), key=lambda i: (i.hostname, i.uuid))


def _split_addr(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, DEFAULT_SSH_PORT
    host = host.strip("[]")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    return host, int(port)


def assign_target(inst: Instance, targets: Mapping[str, str]) -> None:
    """Decide how the instance's SSH service is reached, if at all."""
    explicit = targets.get(inst.uuid) or (targets.get(inst.hostname) if inst.hostname else None)
    if explicit:
        parsed = _split_addr(explicit)
        if parsed:
            inst.target = Target(*parsed)
            return
    if "node" not in inst.services:
        return
    parsed = _split_addr(inst.addr) if inst.addr else None
    if parsed and not inst.tunnel and parsed[0] not in ("", "0.0.0.0", "::"):
        inst.target = Target(*parsed)
    else:
        # Reverse-tunnel nodes are dialled by host UUID through the proxy.
        inst.target = Target(inst.uuid, DEFAULT_SSH_PORT)


def select(
    instances: Iterable[Instance], include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[Instance], int]:
    """Apply --nodes / --exclude-nodes (globs on hostname or UUID)."""

    def hit(inst: Instance, patterns: Sequence[str]) -> bool:
        return any(
            fnmatch.fnmatchcase(inst.hostname, p) or fnmatch.fnmatchcase(inst.uuid, p)
            for p in patterns
        )

    chosen: list[Instance] = []
    dropped = 0
    for inst in instances:
        if (include and not hit(inst, include)) or (exclude and hit(inst, exclude)):
            dropped += 1
        else:
            chosen.append(inst)
    return chosen, dropped


def is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


async def fetch_kinds(
    tctl: Tctl, kinds: Iterable[str]
) -> tuple[dict[str, TctlResult], dict[str, list[dict[str, Any]]], list[Problem]]:
    """`tctl get <kind> --format=json` for each kind (one kind per call), in parallel
    within tctl's own bound. Returns results, parsed documents and problems."""
    results: dict[str, TctlResult] = {}
    docs: dict[str, list[dict[str, Any]]] = {}
    problems: list[Problem] = []

    async def one(kind: str) -> None:
        result = await tctl.run("get", kind, "--format=json")
        if result.ok:
            try:
                docs[kind] = parse_json_docs(result.stdout)
            except (ValueError, UnicodeDecodeError) as exc:
                result = TctlResult(result.args, result.returncode, b"", result.stderr,
                                    result.duration, TctlFailure.BAD_OUTPUT,
                                    f"not the JSON tctl promised: {exc}")
        results[kind] = result
        if result.failure is not None:
            problems.append(Problem(result.failure.code, f"kind {kind}", result.message))

    async with anyio.create_task_group() as tg:
        for kind in dict.fromkeys(kinds):
            tg.start_soon(one, kind)
    return results, docs, problems


async def discover(tctl: Tctl) -> Discovery:
    """Inventory and the heartbeats of every service kind: what enumerating the cluster
    needs, and no more, so that the fan-out can start (other kinds come later)."""
    inventory_result: TctlResult | None = None
    fetched: list[Any] = []

    async def inventory() -> None:
        nonlocal inventory_result
        inventory_result = await tctl.run("inventory", "ls", "--format=json")

    async def heartbeats() -> None:
        fetched.append(await fetch_kinds(tctl, HEARTBEAT_KINDS))

    async with anyio.create_task_group() as tg:
        tg.start_soon(inventory)
        tg.start_soon(heartbeats)
    results, docs, problems = fetched[0]
    assert inventory_result is not None
    inv_docs: list[dict[str, Any]] | None = None
    supported = True
    if inventory_result.ok:
        try:
            inv_docs = parse_json_docs(inventory_result.stdout)
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(Problem("TPD107", "inventory", f"tctl inventory ls: {exc}"))
    elif inventory_result.failure is TctlFailure.UNSUPPORTED:
        supported = False
        problems.append(Problem("TPD105", "inventory", inventory_result.message))
    else:
        assert inventory_result.failure is not None
        problems.append(Problem(inventory_result.failure.code, "inventory",
                                inventory_result.message))
    results["inventory"] = inventory_result
    instances = merge(inv_docs, {k: docs[k] for k in HEARTBEAT_KINDS if k in docs})
    log.info("discovered", instances=len(instances), inventory=inv_docs is not None)
    return Discovery(instances, results, docs, problems, supported)
