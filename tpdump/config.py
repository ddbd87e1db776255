"""Settings of a run: the profile table (every default lives here), the config file, flags.

Precedence: profile defaults < config file < command-line flags. The profile itself can
come from the file or a flag.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tpdump.errors import UsageError

# Every number tpdump uses by default, per profile. Nothing else hard-codes one.
PROFILES: dict[str, dict[str, Any]] = {
    "standard": {
        "concurrency": 64,
        "connect_timeout": 10.0,
        "node_timeout": 60.0,
        "item_timeout": 20.0,
        "timeout": 900.0,
        "tctl_concurrency": 4,
        "tctl_timeout": 60.0,
        "preflight_timeout": 4.0,
        "max_output": 8 * 1024 * 1024,
        "sessions_per_node": 4,
        "tunnels_per_proxy_connection": 64,
        "log_window_h": 24.0,
        "log_lines": 20000,
        "log_bytes": 8 * 1024 * 1024,
        "datadir_entries": 2000,
        "sqlite_bytes": 64 * 1024 * 1024,
        "kube_concurrency": 8,
        "kube_timeout": 20.0,
        "kube_log_lines": 5000,
        "kube_log_bytes": 4 * 1024 * 1024,
        "metrics": True,
        "journal_json": True,
        "skip_items": (),
        "compress_level": 6,
        "max_size": None,
    },
    "speed": {
        "concurrency": 128,
        "connect_timeout": 10.0,
        "node_timeout": 30.0,
        "item_timeout": 12.0,
        "timeout": 300.0,
        "tctl_concurrency": 4,
        "tctl_timeout": 30.0,
        "preflight_timeout": 3.0,
        "max_output": 1024 * 1024,
        "sessions_per_node": 4,
        "tunnels_per_proxy_connection": 64,
        "log_window_h": 2.0,
        "log_lines": 2000,
        "log_bytes": 1024 * 1024,
        "datadir_entries": 500,
        "sqlite_bytes": 16 * 1024 * 1024,
        "kube_concurrency": 16,
        "kube_timeout": 10.0,
        "kube_log_lines": 1000,
        "kube_log_bytes": 1024 * 1024,
        "metrics": False,
        "journal_json": False,
        "skip_items": ("systemd", "debug socket", "connections", "disk", "data_dir listing",
                       "process state"),
        "compress_level": 1,
        "max_size": None,
    },
    "complete": {
        "concurrency": 32,
        "connect_timeout": 20.0,
        "node_timeout": 180.0,
        "item_timeout": 60.0,
        "timeout": 3600.0,
        "tctl_concurrency": 2,
        "tctl_timeout": 120.0,
        "preflight_timeout": 8.0,
        "max_output": 64 * 1024 * 1024,
        "sessions_per_node": 4,
        "tunnels_per_proxy_connection": 64,
        "log_window_h": 168.0,
        "log_lines": 200000,
        "log_bytes": 64 * 1024 * 1024,
        "datadir_entries": 20000,
        "sqlite_bytes": 256 * 1024 * 1024,
        "kube_concurrency": 8,
        "kube_timeout": 60.0,
        "kube_log_lines": 50000,
        "kube_log_bytes": 32 * 1024 * 1024,
        "metrics": True,
        "journal_json": True,
        "skip_items": (),
        "compress_level": 6,
        "max_size": None,
    },
    "small": {
        "concurrency": 64,
        "connect_timeout": 10.0,
        "node_timeout": 45.0,
        "item_timeout": 15.0,
        "timeout": 900.0,
        "tctl_concurrency": 4,
        "tctl_timeout": 60.0,
        "preflight_timeout": 4.0,
        "max_output": 256 * 1024,
        "sessions_per_node": 4,
        "tunnels_per_proxy_connection": 64,
        "log_window_h": 2.0,
        "log_lines": 1000,
        "log_bytes": 256 * 1024,
        "datadir_entries": 500,
        "sqlite_bytes": 8 * 1024 * 1024,
        "kube_concurrency": 8,
        "kube_timeout": 15.0,
        "kube_log_lines": 1000,
        "kube_log_bytes": 256 * 1024,
        "metrics": False,
        "journal_json": False,
        "skip_items": ("data_dir listing",),
        "compress_level": 9,
        "max_size": 25 * 1000 * 1000,
    },
}
DEFAULT_PROFILE = "standard"

# RFD 77 kinds and the newer ones, fetched one kind per call. `connectors` is an alias
# tctl resolves to every connector kind; it stays because RFD 77 lists it.
DEFAULT_KINDS: tuple[str, ...] = (
    "auth_server", "cert_authority", "cluster_auth_preference", "connectors", "github",
    "kube_server", "namespace", "node", "oidc", "proxy", "remote_cluster", "role", "saml",
    "semaphore", "trusted_cluster", "tunnel", "user", "lock", "app_server", "db_server",
    "windows_desktop_service", "cluster_networking_config", "session_recording_config",
    "ui_config",
)
# The items of a node a profile (or --skip-items) can leave out.
NODE_ITEMS: tuple[str, ...] = ("systemd", "journal", "log file", "diag", "debug socket",
                               "connections", "disk", "data_dir listing", "process state")
# Kinds tctl must never be asked for by tpdump.
FORBIDDEN_KINDS = frozenset({"all"})


@dataclass(frozen=True)
class Settings:
    """The effective settings of one run."""

    profile: str = DEFAULT_PROFILE
    # where the cluster is
    auth_server: str | None = None
    identity: str | None = None
    tctl: str = "tctl"
    proxy: str | None = None
    ssh_user: str = "root"
    ssh_key: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    insecure_accept_any_host_key: bool = False
    cluster_name: str | None = None
    targets: Mapping[str, str] = field(default_factory=dict)
    # what
    nodes: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    include_kinds: tuple[str, ...] = ()
    exclude_kinds: tuple[str, ...] = ()
    # how hard and how long (defaults come from the profile)
    concurrency: int = 0
    connect_timeout: float = 0.0
    node_timeout: float = 0.0
    item_timeout: float = 0.0
    timeout: float = 0.0
    tctl_concurrency: int = 0
    tctl_timeout: float = 0.0
    preflight_timeout: float = 0.0
    max_output: int = 0
    sessions_per_node: int = 0
    tunnels_per_proxy_connection: int = 0
    log_window_h: float = 0.0
    log_lines: int = 0
    log_bytes: int = 0
    datadir_entries: int = 0
    sqlite_bytes: int = 0
    sysroot: str | None = None
    # Kubernetes (None: on when --kubeconfig is given or tpdump runs in a pod)
    kube: bool | None = None
    kube_namespace: tuple[str, ...] = ()
    kubeconfig: str | None = None
    kube_context: str | None = None
    kube_concurrency: int = 0
    kube_timeout: float = 0.0
    kube_log_lines: int = 0
    kube_log_bytes: int = 0
    # what each node gives (the profile decides; flags and the file can override)
    metrics: bool = True
    journal_json: bool = True
    skip_items: tuple[str, ...] = ()
    compress_level: int = 6  # deflate level of the archive: 1 fastest, 9 smallest
    # obfuscation (SPEC §8; secrets are stripped regardless)
    obfuscate: bool = False
    obfuscation_key: str | None = None
    obfuscation_map: str | None = None
    obfuscate_uuids: bool = False
    # output
    format: str = "tar.gz"
    max_size: int | None = None
    split_size: int | None = None
    output: str | None = None
    quiet: bool = False
    verbose: bool = False
    log_format: str = "console"

    def kinds(self) -> tuple[str, ...]:
        """The tctl kinds to fetch, after --include-kinds / --exclude-kinds."""
        chosen = self.include_kinds or DEFAULT_KINDS
        return tuple(k for k in chosen if k not in self.exclude_kinds)

    def kube_enabled(self) -> bool:
        """--kube/--no-kube, or by default: when a kubeconfig is given or tpdump runs in a
        pod (the service account's token is mounted)."""
        if self.kube is not None:
            return self.kube
        return self.kubeconfig is not None or (
            bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
            and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists())

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["targets"] = dict(self.targets)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


_FIELDS = {f.name: f for f in fields(Settings)}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


# Upper bounds of the numeric settings: far above any sensible value, low enough that a
# typo (`concurrency: 100000000000000000000`) is an error, not a run that tries it.
MAX_BYTES = 2**40  # 1 TiB: byte caps and sizes
MAX_SECONDS = 7 * 24 * 3600.0  # 7 days: every timeout
MAX_WINDOW_H = 10 * 365 * 24.0  # 10 years: the log window, in hours
MAX_PARALLEL = 4096  # anything done "at once"
MAX_COUNT = 10**7  # lines and entries
_INT_LIMITS = {"concurrency": MAX_PARALLEL, "tctl_concurrency": MAX_PARALLEL,
               "sessions_per_node": MAX_PARALLEL, "tunnels_per_proxy_connection": MAX_PARALLEL,
               "kube_concurrency": MAX_PARALLEL, "log_lines": MAX_COUNT,
               "datadir_entries": MAX_COUNT, "kube_log_lines": MAX_COUNT,
               "compress_level": 9}


def _too_large(name: str, value: object, limit: str) -> UsageError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return UsageError(f"{name}: too large, got {shown} (at most {limit})")


def parse_size(value: object, name: str) -> int:
    """A byte size from `5MB`, `512KiB`, `1000` or an int (at most MAX_BYTES)."""
    if isinstance(value, bool):
        raise UsageError(f"{name}: expected a size like 5MB, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise UsageError(f"{name}: must be positive, got {value}")
        if value > MAX_BYTES:
            raise _too_large(name, value, "1TiB")
        return value
    match = _SIZE.match(str(value))
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _UNITS:
        raise UsageError(f"{name}: expected a size like 5MB or 512KiB, got {value!r}")
    scaled = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(scaled) or scaled > MAX_BYTES:
        raise _too_large(name, value, "1TiB")
    size = int(scaled)
    if size <= 0:
        raise UsageError(f"{name}: must be positive, got {value!r}")
    return size


def _coerce(name: str, value: Any, base: Path | None) -> Any:
    """Check and convert one value from the config file or a flag to its field's type."""
    kind = _FIELDS[name].type
    if name in _SIZE_FIELDS:
        if name in _OPTIONAL_SIZES and (value is None or str(value).lower() in ("none", "off")):
            return None
        return parse_size(value, name)
    if name == "targets":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise UsageError("targets: expected a mapping of node name or UUID to host:port")
        return dict(value)
    if kind in ("int",):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{name}: expected a positive whole number, got {value!r}")
        limit = _INT_LIMITS.get(name, MAX_COUNT)
        if value > limit:
            raise _too_large(name, value, str(limit))
        return value
    if kind in ("float",):
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name}: expected a positive number of seconds, got {value!r}")
        if name == "log_window_h":
            if value > MAX_WINDOW_H:
                raise _too_large(name, value, f"{MAX_WINDOW_H:g} hours")
        elif value > MAX_SECONDS:
            raise _too_large(name, value, f"{MAX_SECONDS:g} seconds (7 days)")
        return float(value)
    if kind in ("bool", "bool | None"):
        if not isinstance(value, bool):
            raise UsageError(f"{name}: expected true or false, got {value!r}")
        return value
    if kind.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{name}: expected a list of names, got {value!r}")
        return tuple(v.strip() for v in value)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{name}: expected a non-empty string, got {value!r}")
    # Relative paths in a config file are relative to the file, as users expect (a bare
    # `tctl` stays a name looked up on PATH).
    if (base is not None and name in _PATH_FIELDS and not value.startswith("/")
            and ("/" in value or name != "tctl")):
        value = str((base / value).resolve())
    return value


_PATH_FIELDS = frozenset({"identity", "tctl", "ssh_key", "known_hosts", "ssh_config", "output",
                          "sysroot", "kubeconfig", "obfuscation_key", "obfuscation_map"})
_OPTIONAL_SIZES = frozenset({"max_size", "split_size"})
_SIZE_FIELDS = frozenset({"max_output", "log_bytes", "sqlite_bytes", "kube_log_bytes",
                          "max_size", "split_size"})


def load_file(path: str) -> dict[str, Any]:
    """Read and check a YAML config file; keys are the long option names."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from exc
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: a value YAML cannot build (`2024-02-30`, `!!int abc`).
        first = " ".join(str(exc).split())
        raise UsageError(f"--config {path}: not valid YAML: {first}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value")
    base = Path(path).resolve().parent
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise UsageError(f"--config {path}: unknown option {key!r}")
        out[name] = _coerce(name, value, base)
    return out


def resolve(file_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> Settings:
    """Merge profile defaults, the config file and flags into Settings."""
    for name in flag_values:
        if name not in _FIELDS:
            raise UsageError(f"unknown option {name!r}")
    profile = flag_values.get("profile") or file_values.get("profile") or DEFAULT_PROFILE
    if not isinstance(profile, str) or profile not in PROFILES:
        raise UsageError(f"--profile: {profile!r} is not one of {', '.join(PROFILES)}")
    merged: dict[str, Any] = dict(PROFILES[profile])
    merged.update(file_values)
    merged.update({k: _coerce(k, v, None) for k, v in flag_values.items() if v is not None})
    merged["profile"] = profile
    unknown = [i for i in merged.get("skip_items", ()) if i not in NODE_ITEMS]
    if unknown:
        raise UsageError(f"--skip-items: {', '.join(unknown)} not among {', '.join(NODE_ITEMS)}")
    if merged.get("format", "tar.gz") not in ("tar.gz", "zip"):
        raise UsageError(f"--format: {merged['format']!r} is not tar.gz or zip")
    if merged.get("log_format", "console") not in ("console", "json"):
        raise UsageError(f"--log-format: {merged['log_format']!r} is not console or json")
    for kind in (*merged.get("include_kinds", ()), *merged.get("exclude_kinds", ())):
        if kind in FORBIDDEN_KINDS:
            raise UsageError(f"kind {kind!r} is never fetched: `tctl get all` includes secrets")
    if (merged.get("obfuscation_key") or merged.get("obfuscation_map")
            or merged.get("obfuscate_uuids")) and not merged.get("obfuscate"):
        if "obfuscate" in flag_values and flag_values["obfuscate"] is False:
            raise UsageError("--obfuscation-key, --obfuscation-map and --obfuscate-uuids need "
                             "--obfuscate (--no-obfuscate was given)")
        merged["obfuscate"] = True
    return Settings(**merged)
