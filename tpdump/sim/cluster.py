"""The runtime model of a simulated cluster: nodes with addresses, effective config and canaries."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

import yaml

from tpdump.sim.keys import ClusterKeys
from tpdump.sim.scenario import Instance, Scenario

NODE_SSH_PORT = 3022
PROXY_SSH_PORT = 3023
AUTH_PORT = 3025
DEFAULT_DATA_DIR = "/var/lib/teleport"
PLAIN_LOG_PATH = "/var/lib/teleport/teleport.log"
DIAG_ADDR = "127.0.0.1:3000"

# teleport.yaml section -> service name, and whether it is on when the section is absent
# (Teleport turns auth, proxy and ssh on unless told otherwise).
_SECTIONS = {
    "ssh_service": ("node", True),
    "auth_service": ("auth", True),
    "proxy_service": ("proxy", True),
    "kubernetes_service": ("kube", False),
    "app_service": ("app", False),
    "db_service": ("db", False),
    "windows_desktop_service": ("windows_desktop", False),
}
_SERVICE_ORDER = ("auth", "proxy", "node", "kube", "app", "db", "windows_desktop")


def ca_types_for(version: str) -> list[str]:
    """Cert authority types of a Teleport major (types.CertAuthTypes of that release)."""
    major = int(version.split(".")[0])
    types = ["host", "user", "db"]
    if major >= 15:
        types.append("db_client")
    types += ["openssh", "jwt", "saml_idp", "oidc_idp"]
    if major >= 15:
        types.append("spiffe")
    if major >= 17:
        types.append("okta")
    return types


@dataclass(frozen=True)
class TeleportConfig:
    """The parts of a node's teleport.yaml the simulator obeys."""

    services: tuple[str, ...]
    data_dir: str = DEFAULT_DATA_DIR
    log_output: str = "stderr"
    log_format: str = "text"
    diag_addr: str = ""
    from_file: bool = False


def parse_teleport_config(text: bytes, fallback: TeleportConfig) -> TeleportConfig:
    """Read the supported settings of a real teleport.yaml; unparsable text keeps `fallback`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return fallback
    if not isinstance(doc, dict):
        return fallback
    services: list[str] = []
    for section, (svc, default_on) in _SECTIONS.items():
        sec = doc.get(section)
        on = default_on
        if isinstance(sec, dict) and "enabled" in sec:
            on = _truthy(sec["enabled"])
        elif sec is not None and not isinstance(sec, dict):
            on = default_on
        if on:
            services.append(svc)
    tele = doc.get("teleport") if isinstance(doc.get("teleport"), dict) else {}
    assert isinstance(tele, dict)
    log = tele.get("log") if isinstance(tele.get("log"), dict) else {}
    assert isinstance(log, dict)
    fmt = log.get("format") if isinstance(log.get("format"), dict) else {}
    assert isinstance(fmt, dict)
    log_format = str(fmt.get("output", "text"))
    return TeleportConfig(
        services=tuple(s for s in _SERVICE_ORDER if s in services),
        data_dir=str(tele.get("data_dir", DEFAULT_DATA_DIR)),
        log_output=str(log.get("output", "stderr")),
        log_format=log_format if log_format in ("text", "json") else "text",
        diag_addr=str(tele.get("diag_addr", "") or ""),
        from_file=True,
    )


def _truthy(v: object) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("yes", "true", "on", "1", "y")


class Canaries:
    """Every canary secret planted, in the order planted; deterministic from the seed."""

    def __init__(self, seed: int, enabled: bool) -> None:
        self.seed = seed
        self.enabled = enabled
        self.items: list[str] = []

    def _hex(self, kind: str, n: int) -> str:
        return hashlib.sha256(f"canary:{self.seed}:{kind}:{n}".encode()).hexdigest()[:16]

    def make(self, kind: str, n: int) -> str:
        """A new canary `CANARY-<kind>-<n>-<hex>` (recorded)."""
        value = f"CANARY-{kind}-{n}-{self._hex(kind, n)}"
        self.items.append(value)
        return value

    def make_b64(self, kind: str, n: int, before: bytes, after: bytes) -> tuple[bytes, str]:
        """Bytes holding a base64-alphabet canary, and the canary's base64 form.

        Real tctl prints `[]byte` fields (CA private keys, password hashes) base64-encoded.
        The canary sits in `before + canary + after` at an offset that is a multiple of 3,
        so the base64 text of the whole value contains the base64 of the canary verbatim:
        both strings are recorded and both are real leaks if found.
        """
        tag = "".join(c for c in kind if c.isalnum())
        raw = f"CANARY{tag}{n}x{self._hex(kind, n)}"
        raw += "0" * (-len(raw) % 3)
        pad = b"A" * (-len(before) % 3)
        value = before + pad + raw.encode() + after
        encoded = base64.b64encode(raw.encode()).decode()
        self.items.append(raw)
        self.items.append(encoded)
        return value, encoded


@dataclass
class SimNode:
    """One instance as the simulator runs it."""

    inst: Instance
    ip: str
    config: TeleportConfig
    pid: int
    files: dict[str, bytes]
    canaries: dict[str, str] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        return self.inst.uuid

    @property
    def hostname(self) -> str:
        return self.inst.hostname

    @property
    def fault(self) -> str:
        return self.inst.group.fault

    @property
    def services(self) -> tuple[str, ...]:
        return self.config.services

    @property
    def has_ssh(self) -> bool:
        """Whether the instance runs Teleport's SSH service (and so has a simulated sshd)."""
        return "node" in self.config.services

    @property
    def external(self) -> bool:
        return bool(self.inst.external_addr)

    @property
    def listen_addr(self) -> tuple[str, int]:
        """Where the proxy dials this node (its own listener or the external address)."""
        if self.inst.external_addr:
            host, _, port = self.inst.external_addr.rpartition(":")
            return host.strip("[]"), int(port)
        return self.ip, NODE_SSH_PORT

    @property
    def heartbeat_addr(self) -> str:
        """`spec.addr` of the node heartbeat: empty for reverse-tunnel nodes."""
        if self.inst.group.tunnel:
            return ""
        if self.inst.external_addr:
            return self.inst.external_addr
        return f"{self.ip}:{NODE_SSH_PORT}"


class SimCluster:
    """The whole simulated cluster, built once from a scenario."""

    def __init__(self, scenario: Scenario, net: int, keys: ClusterKeys | None = None) -> None:
        self.scenario = scenario
        self.net = net
        self.started = time.time()
        self.canaries = Canaries(scenario.seed, scenario.secrets.plant)
        self.ca_types = ca_types_for(scenario.teleport_version)
        self.keys = keys or ClusterKeys.generate(
            scenario.cluster_name, self.ca_types, scenario.auth.ca_expiry_days
        )
        self.nodes: list[SimNode] = []
        self.by_name: dict[str, SimNode] = {}
        for inst in scenario.instances():
            node = self._make_node(inst)
            self.nodes.append(node)
            for key in (node.uuid, node.hostname, f"{node.uuid}.{scenario.cluster_name}", node.ip):
                self.by_name.setdefault(key, node)
            if node.inst.external_addr:
                self.by_name.setdefault(node.listen_addr[0], node)

    @property
    def auth_addr(self) -> tuple[str, int]:
        return f"127.{self.net}.255.1", AUTH_PORT

    @property
    def proxy_addr(self) -> tuple[str, int]:
        return f"127.{self.net}.255.2", PROXY_SSH_PORT

    def node_ip(self, index: int) -> str:
        return f"127.{self.net}.{index // 250}.{index % 250 + 1}"

    def _make_node(self, inst: Instance) -> SimNode:
        g = inst.group
        plain = g.init == "plain"
        default = TeleportConfig(
            services=g.services,
            log_output=PLAIN_LOG_PATH if plain else "stderr",
            log_format=g.log_format,
            diag_addr=DIAG_ADDR if g.diag else "",
        )
        files = {path: local.read_bytes() for path, local in g.files}
        config = default
        if "/etc/teleport.yaml" in files:
            config = parse_teleport_config(files["/etc/teleport.yaml"], default)
        seed_hash = hashlib.sha256(f"pid:{self.scenario.seed}:{inst.uuid}".encode()).digest()
        pid = 300 + int.from_bytes(seed_hash[:4], "big") % 60000
        node = SimNode(inst=inst, ip=self.node_ip(inst.index), config=config, pid=pid, files=files)
        if self.canaries.enabled:
            n = inst.index + 1
            node.canaries["join_token"] = self.canaries.make("join_token", n)
            if plain:
                node.canaries["cmdline_token"] = self.canaries.make("cmdline_token", n)
            node.canaries["bearer"] = self.canaries.make("bearer", n)
            node.canaries["cookie"] = self.canaries.make("cookie", n)
        return node

    def resolve(self, host: str) -> SimNode | None:
        """The node a proxy destination names: its address host, UUID, hostname or IP."""
        return self.by_name.get(host)
