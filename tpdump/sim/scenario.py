"""Scenario files of the simulated cluster: parse, validate and expand into instances.

The format is SPEC §14 plus the simulator extras `groups[].external_addrs` and
`auth.alerts`; `docs/scenario.md` documents every field.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICES = ("auth", "proxy", "node", "kube", "app", "db", "windows_desktop")
AUTH_FAULTS = ("none", "down", "hang", "slow")
NODE_FAULTS = (
    "none",
    "refused",
    "blackhole",
    "slow",
    "hang",
    "flood",
    "auth_denied",
    "drop_mid",
    "bad_hostkey",
    "garbage",
    "hostile",
)
CA_ROTATIONS = ("standby", "update_clients", "update_servers", "rollback")
INITS = ("systemd", "plain")
LOG_FORMATS = ("text", "json")
READYZ = ("ok", "degraded", "starting")
MAX_INSTANCES = 20_000

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_HOSTPORT_RE = re.compile(r"^(?P<host>[A-Za-z0-9.:\[\]-]+):(?P<port>\d{1,5})$")


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the field path."""


@dataclass(frozen=True)
class AuthSpec:
    """The auth server's behaviour and the extra objects it serves."""

    fault: str = "none"
    delay_s: float = 0.0
    denied_kinds: tuple[str, ...] = ()
    inventory: bool = True
    ca_expiry_days: int = 3650
    ca_rotation: str = "standby"
    objects: tuple[Path, ...] = ()
    alerts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """A group of identical instances (`count` of them)."""

    name: str
    count: int
    services: tuple[str, ...] = ("node",)
    version: str = ""
    init: str = "systemd"
    log_lines: int = 1000
    log_format: str = "text"
    diag: bool = False
    tunnel: bool = False
    fault: str = "none"
    delay_s: float = 0.0
    rtt_ms: float = 0.0
    clock_offset_s: float = 0.0
    readyz: str = "ok"
    log_error_rate: float = 0.01
    files: tuple[tuple[str, Path], ...] = ()
    external_addrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretsSpec:
    """Whether canary secrets are planted."""

    plant: bool = False


@dataclass(frozen=True)
class KubeSpec:
    """The Kubernetes API stand-in (parsed now, served by a later issue)."""

    enabled: bool = False
    namespaces: tuple[str, ...] = ("teleport-cluster",)
    pods: int = 3
    denied_resources: tuple[str, ...] = ()
    log_lines: int = 30  # lines of each current container log


@dataclass(frozen=True)
class Scenario:
    """A whole simulated cluster description."""

    cluster_name: str = "sim.example.com"
    teleport_version: str = "17.4.2"
    seed: int = 0
    auth: AuthSpec = field(default_factory=AuthSpec)
    groups: tuple[Group, ...] = ()
    secrets: SecretsSpec = field(default_factory=SecretsSpec)
    kube: KubeSpec = field(default_factory=KubeSpec)
    source: Path | None = None

    def instances(self) -> list[Instance]:
        """Expand the groups into instances named `<group>-<n>` (n from 1)."""
        out: list[Instance] = []
        for group in self.groups:
            for n in range(1, group.count + 1):
                ext = group.external_addrs[n - 1] if group.external_addrs else ""
                out.append(
                    Instance(
                        hostname=f"{group.name}-{n}",
                        uuid=instance_uuid(self.seed, group.name, n),
                        group=group,
                        index=len(out),
                        n=n,
                        external_addr=ext,
                    )
                )
        return out


@dataclass(frozen=True)
class Instance:
    """One simulated Teleport instance (a host running `teleport`)."""

    hostname: str
    uuid: str
    group: Group
    index: int
    n: int
    external_addr: str = ""

    @property
    def version(self) -> str:
        return self.group.version


def instance_uuid(seed: int, group: str, n: int) -> str:
    """The deterministic host UUID of instance `n` of `group`."""
    digest = hashlib.sha256(f"{seed}:{group}:{n}".encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; relative `files:`/`objects:` paths resolve beside it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {str(p)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{p}: not UTF-8 text: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: a value YAML cannot build (`2024-02-30`, `!!int abc`).
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from exc
    return parse_scenario(data, base_dir=p.resolve().parent, source=p.resolve())


def parse_scenario(data: object, base_dir: Path, source: Path | None = None) -> Scenario:
    """Validate a decoded scenario document into a `Scenario`."""
    top = _mapping(data, "")
    _check_keys(
        top, "", {"cluster_name", "teleport_version", "seed", "auth", "groups", "secrets", "kube"}
    )
    cluster_name = _str(top.get("cluster_name", "sim.example.com"), "cluster_name")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,200}[A-Za-z0-9])?", cluster_name):
        raise ScenarioError(f"cluster_name: {cluster_name!r} is not a valid cluster name")
    version = _version(top.get("teleport_version", "17.4.2"), "teleport_version")
    seed = _int(top.get("seed", 0), "seed")
    auth = _parse_auth(top.get("auth", {}), base_dir)
    groups_raw = top.get("groups", [])
    if not isinstance(groups_raw, list):
        raise ScenarioError(f"groups: expected a list, got {_tname(groups_raw)}")
    groups: list[Group] = []
    seen: set[str] = set()
    total = 0
    for i, raw in enumerate(groups_raw):
        g = _parse_group(raw, f"groups[{i}]", version, base_dir)
        if g.name in seen:
            raise ScenarioError(f"groups[{i}].name: {g.name!r} is used by another group")
        seen.add(g.name)
        total += g.count
        groups.append(g)
    if total > MAX_INSTANCES:
        raise ScenarioError(f"groups: {total} instances in all, more than {MAX_INSTANCES}")
    secrets_raw = _mapping(top.get("secrets", {}), "secrets")
    _check_keys(secrets_raw, "secrets", {"plant"})
    secrets = SecretsSpec(plant=_bool(secrets_raw.get("plant", False), "secrets.plant"))
    kube = _parse_kube(top.get("kube", {}))
    return Scenario(
        cluster_name=cluster_name,
        teleport_version=version,
        seed=seed,
        auth=auth,
        groups=tuple(groups),
        secrets=secrets,
        kube=kube,
        source=source,
    )


def _parse_auth(raw: object, base_dir: Path) -> AuthSpec:
    m = _mapping(raw, "auth")
    _check_keys(
        m,
        "auth",
        {
            "fault",
            "delay_s",
            "denied_kinds",
            "inventory",
            "ca_expiry_days",
            "ca_rotation",
            "objects",
            "alerts",
        },
    )
    objects = tuple(
        _existing_file(v, f"auth.objects[{i}]", base_dir)
        for i, v in enumerate(_list(m.get("objects", []), "auth.objects"))
    )
    return AuthSpec(
        fault=_choice(m.get("fault", "none"), "auth.fault", AUTH_FAULTS),
        delay_s=_nonneg(m.get("delay_s", 0), "auth.delay_s"),
        denied_kinds=tuple(
            _str(v, f"auth.denied_kinds[{i}]")
            for i, v in enumerate(_list(m.get("denied_kinds", []), "auth.denied_kinds"))
        ),
        inventory=_bool(m.get("inventory", True), "auth.inventory"),
        ca_expiry_days=_int(m.get("ca_expiry_days", 3650), "auth.ca_expiry_days"),
        ca_rotation=_choice(m.get("ca_rotation", "standby"), "auth.ca_rotation", CA_ROTATIONS),
        objects=objects,
        alerts=tuple(
            _str(v, f"auth.alerts[{i}]")
            for i, v in enumerate(_list(m.get("alerts", []), "auth.alerts"))
        ),
    )


def _parse_group(raw: object, path: str, default_version: str, base_dir: Path) -> Group:
    m = _mapping(raw, path)
    _check_keys(
        m,
        path,
        {
            "name",
            "count",
            "services",
            "version",
            "init",
            "log_lines",
            "log_format",
            "diag",
            "tunnel",
            "fault",
            "delay_s",
            "rtt_ms",
            "clock_offset_s",
            "readyz",
            "log_error_rate",
            "files",
            "external_addrs",
        },
    )
    if "name" not in m:
        raise ScenarioError(f"{path}.name: missing")
    name = _str(m["name"], f"{path}.name")
    if not _NAME_RE.match(name):
        raise ScenarioError(
            f"{path}.name: {name!r} must be lowercase letters, digits and '-' (at most 42)"
        )
    count = _int(m.get("count", 1), f"{path}.count")
    if count < 0:
        raise ScenarioError(f"{path}.count: {count} is negative")
    services_raw = _list(m.get("services", ["node"]), f"{path}.services")
    services: list[str] = []
    for i, s in enumerate(services_raw):
        svc = _choice(s, f"{path}.services[{i}]", SERVICES)
        if svc not in services:
            services.append(svc)
    if not services:
        raise ScenarioError(f"{path}.services: at least one service is needed")
    log_lines = _int(m.get("log_lines", 1000), f"{path}.log_lines")
    if log_lines < 0:
        raise ScenarioError(f"{path}.log_lines: {log_lines} is negative")
    rate = _float(m.get("log_error_rate", 0.01), f"{path}.log_error_rate")
    if not 0.0 <= rate <= 1.0:
        raise ScenarioError(f"{path}.log_error_rate: {rate} is not between 0 and 1")
    files_raw = _mapping(m.get("files", {}), f"{path}.files")
    files: list[tuple[str, Path]] = []
    for node_path, local in files_raw.items():
        fpath = f"{path}.files[{node_path!r}]"
        if not isinstance(node_path, str) or not node_path.startswith("/"):
            raise ScenarioError(f"{fpath}: node path must be absolute")
        files.append((node_path, _existing_file(local, fpath, base_dir)))
    ext_raw = _list(m.get("external_addrs", []), f"{path}.external_addrs")
    ext: list[str] = []
    for i, a in enumerate(ext_raw):
        s = _str(a, f"{path}.external_addrs[{i}]")
        mt = _HOSTPORT_RE.match(s)
        if not mt or not 0 < int(mt.group("port")) < 65536:
            raise ScenarioError(f"{path}.external_addrs[{i}]: {s!r} is not host:port")
        ext.append(s)
    if ext and len(ext) != count:
        raise ScenarioError(
            f"{path}.external_addrs: {len(ext)} addresses for count {count} (must be equal)"
        )
    return Group(
        name=name,
        count=count,
        services=tuple(services),
        version=_version(m.get("version", default_version), f"{path}.version"),
        init=_choice(m.get("init", "systemd"), f"{path}.init", INITS),
        log_lines=log_lines,
        log_format=_choice(m.get("log_format", "text"), f"{path}.log_format", LOG_FORMATS),
        diag=_bool(m.get("diag", False), f"{path}.diag"),
        tunnel=_bool(m.get("tunnel", False), f"{path}.tunnel"),
        fault=_choice(m.get("fault", "none"), f"{path}.fault", NODE_FAULTS),
        delay_s=_nonneg(m.get("delay_s", 0), f"{path}.delay_s"),
        rtt_ms=_nonneg(m.get("rtt_ms", 0), f"{path}.rtt_ms"),
        clock_offset_s=_float(m.get("clock_offset_s", 0), f"{path}.clock_offset_s"),
        readyz=_choice(m.get("readyz", "ok"), f"{path}.readyz", READYZ),
        log_error_rate=rate,
        files=tuple(files),
        external_addrs=tuple(ext),
    )


def _parse_kube(raw: object) -> KubeSpec:
    m = _mapping(raw, "kube")
    _check_keys(m, "kube", {"enabled", "namespaces", "pods", "denied_resources", "log_lines"})
    pods = _int(m.get("pods", 3), "kube.pods")
    if pods < 0:
        raise ScenarioError(f"kube.pods: {pods} is negative")
    log_lines = _int(m.get("log_lines", 30), "kube.log_lines")
    if log_lines < 1:
        raise ScenarioError(f"kube.log_lines: {log_lines} must be at least 1")
    return KubeSpec(
        enabled=_bool(m.get("enabled", False), "kube.enabled"),
        namespaces=tuple(
            _str(v, f"kube.namespaces[{i}]")
            for i, v in enumerate(
                _list(m.get("namespaces", ["teleport-cluster"]), "kube.namespaces"))
        ),
        pods=pods,
        denied_resources=tuple(
            _str(v, f"kube.denied_resources[{i}]")
            for i, v in enumerate(_list(m.get("denied_resources", []), "kube.denied_resources"))
        ),
        log_lines=log_lines,
    )


# --- small typed readers; each error names the field path -------------------


def _tname(v: object) -> str:
    if v is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), type(v).__name__
    )


def _mapping(v: object, path: str) -> Mapping[Any, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        where = path or "scenario"
        raise ScenarioError(f"{where}: expected a mapping, got {_tname(v)}")
    return v


def _check_keys(m: Mapping[Any, Any], path: str, allowed: set[str]) -> None:
    for k in m:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise ScenarioError(f"{where}: unknown field (known: {', '.join(sorted(allowed))})")


def _list(v: object, path: str) -> Sequence[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ScenarioError(f"{path}: expected a list, got {_tname(v)}")
    return v


def _str(v: object, path: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ScenarioError(f"{path}: expected a string, got {_tname(v)}")
    return str(v)


def _int(v: object, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ScenarioError(f"{path}: {v!r} is not an integer")
    return v


def _float(v: object, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScenarioError(f"{path}: {v!r} is not a number")
    return float(v)


def _nonneg(v: object, path: str) -> float:
    f = _float(v, path)
    if f < 0:
        raise ScenarioError(f"{path}: {v!r} is negative")
    return f


def _bool(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise ScenarioError(f"{path}: {v!r} is not true or false")
    return v


def _choice(v: object, path: str, allowed: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise ScenarioError(f"{path}: {v!r} is not one of {', '.join(allowed)}")
    return v


def _version(v: object, path: str) -> str:
    s = _str(v, path).removeprefix("v")
    if not _VERSION_RE.match(s):
        raise ScenarioError(f"{path}: {v!r} is not a version like 17.4.2")
    return s


def _existing_file(v: object, path: str, base_dir: Path) -> Path:
    s = _str(v, path)
    p = Path(s)
    if not p.is_absolute():
        p = base_dir / p
    if not p.is_file():
        raise ScenarioError(f"{path}: file {s!r} not found (looked at {p})")
    return p
