"""The runtime model of a simulated cluster: nodes with addresses, effective config and canaries."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import posixpath
import time
from dataclasses import dataclass, field

import yaml

from tpdump.sim import hostile
from tpdump.sim.keys import ClusterKeys
from tpdump.sim.scenario import Group, Instance, Scenario
from tpdump.sim.systemd import UNIT_DIRS, UnitFile, enable_links, find_units, main_unit

NODE_SSH_PORT = 3022
PROXY_SSH_PORT = 3023
AUTH_PORT = 3025
DEFAULT_DATA_DIR = "/var/lib/teleport"
PLAIN_LOG_PATH = "/var/lib/teleport/teleport.log"
DIAG_ADDR = "127.0.0.1:3000"
TELEPORT_BIN = "/usr/local/bin/teleport"
DEFAULT_CONFIG = "/etc/teleport.yaml"
PID_FILE = "/run/teleport.pid"
TELEPORT_UNIT_PATH = "/etc/systemd/system/teleport.service"
# Debian 12 is merged-/usr and /var/run is /run: node paths are stored under their target.
SYMLINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64",
            "/var/run": "/run"}
PLAIN_NOFILE = ("1024", "4096")  # the kernel's defaults for a process not started by systemd

# examples/systemd/teleport.service of gravitational/teleport, verbatim.
TELEPORT_UNIT = """[Unit]
Description=Teleport Service
After=network.target

[Service]
Type=simple
Restart=always
RestartSec=5
EnvironmentFile=-/etc/default/teleport
ExecStart=/usr/local/bin/teleport start --config /etc/teleport.yaml --pid-file=/run/teleport.pid
# systemd before 239 needs an absolute path
ExecReload=/bin/sh -c "exec pkill -HUP -L -F /run/teleport.pid"
PIDFile=/run/teleport.pid
LimitNOFILE=524288

[Install]
WantedBy=multi-user.target
"""

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
    log_severity: str = "INFO"
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
        log_severity=str(log.get("severity", "INFO") or "INFO").upper(),
        diag_addr=str(tele.get("diag_addr", "") or ""),
        from_file=True,
    )


def canonical_path(path: str) -> str:
    """`path` with the well-known directory symlinks of a Debian 12 host resolved."""
    path = posixpath.normpath("/" + path.lstrip("/"))
    for link, target in SYMLINKS.items():
        if path == link or path.startswith(link + "/"):
            base = target if target.startswith("/") else "/" + target
            return base + path[len(link):]
    return path


def argv_option(argv: list[str], long: str, short: str = "") -> str | None:
    """The value of `--long VALUE`, `--long=VALUE` (or `-s VALUE`, `-sVALUE`) in argv."""
    value: str | None = None
    for i, arg in enumerate(argv):
        if arg == long or (short and arg == short):
            if i + 1 < len(argv):
                value = argv[i + 1]
        elif arg.startswith(long + "="):
            value = arg[len(long) + 1:]
        elif short and arg.startswith(short) and len(arg) > len(short) and not arg.startswith(
                "--"):
            value = arg[len(short):]
    return value


@dataclass(frozen=True)
class GroupModel:
    """What every instance of a group shares, worked out once: files, units, command line."""

    files: dict[str, bytes]
    units: dict[str, UnitFile]
    links: dict[str, str]
    main_unit: str
    argv: tuple[str, ...]
    config_path: str
    pid_file: str
    nofile: tuple[str, str]
    config: TeleportConfig
    secrets: dict[str, str] = field(default_factory=dict)  # the `hostile` fault's canaries


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

    def make_b64_raw(self, kind: str, n: int) -> tuple[str, str]:
        """A base64-alphabet canary whose length is a multiple of 3, and its base64 form
        (both recorded): placed at an offset that is a multiple of 3 inside a `[]byte`
        value, its base64 form shows verbatim in the value's JSON."""
        raw = f"CANARY{kind}{n}x{self._hex(kind, n)}"
        raw += "0" * (-len(raw) % 3)
        encoded = base64.b64encode(raw.encode()).decode()
        self.items.append(raw)
        self.items.append(encoded)
        return raw, encoded


@dataclass
class SimNode:
    """One instance as the simulator runs it."""

    inst: Instance
    ip: str
    config: TeleportConfig
    pid: int
    files: dict[str, bytes]
    canaries: dict[str, str] = field(default_factory=dict)
    model: GroupModel | None = None

    @property
    def argv(self) -> list[str]:
        """The teleport command line (/proc/<pid>/cmdline, ExecStart of the main unit)."""
        argv = list(self.model.argv) if self.model else [TELEPORT_BIN, "start"]
        if "cmdline_token" in self.canaries:
            argv.append(f"--token={self.canaries['cmdline_token']}")
        return argv

    @property
    def systemd(self) -> bool:
        return self.inst.group.init == "systemd"

    @property
    def environ(self) -> bytes:
        """/proc/<pid>/environ of the teleport process (NUL-separated NAME=value)."""
        env = [("LANG", "C.UTF-8"), ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                              "/usr/bin:/sbin:/bin"),
               ("HOME", "/root"), ("TELEPORT_HOME", "/var/lib/teleport")]
        if self.systemd:
            env += [("INVOCATION_ID", f"{self.pid:08x}" * 4),
                    ("JOURNAL_STREAM", f"8:{self.pid * 7}"), ("SYSTEMD_EXEC_PID", str(self.pid))]
        c = self.canaries
        if "env_token" in c:
            env.append(("TELEPORT_AUTH_TOKEN", c["env_token"]))
        if "env_aws_secret" in c:
            env += [("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
                    ("AWS_SECRET_ACCESS_KEY", c["env_aws_secret"])]
        if "env_proxy_password" in c:
            env.append(("HTTPS_PROXY",
                        f"http://proxyuser:{c['env_proxy_password']}@proxy.internal:3128"))
        env.append(("NO_PROXY", "localhost,127.0.0.1,.cluster.local"))
        return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env)

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
        self._models: dict[str, GroupModel] = {}
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

    def group_model(self, g: Group) -> GroupModel:
        """The shared model of group `g` (built on first use; files are read once)."""
        model = self._models.get(g.name)
        if model is None:
            model = self._models[g.name] = self._build_model(g)
        return model

    def _build_model(self, g: Group) -> GroupModel:
        plain = g.init == "plain"
        files = {canonical_path(path): local.read_bytes() for path, local in g.files}
        units: dict[str, UnitFile] = {}
        main = None
        if not plain:
            if not any(posixpath.basename(p) == "teleport.service"
                       and posixpath.dirname(p) in UNIT_DIRS for p in files):
                files = {TELEPORT_UNIT_PATH: TELEPORT_UNIT.encode(), **files}
            units = find_units(files)
            main = main_unit(units)
        argv = main.exec_start() if main is not None else []
        if not argv:
            argv = [TELEPORT_BIN, "start", "--config", DEFAULT_CONFIG, f"--pid-file={PID_FILE}"]
        config_path = canonical_path(argv_option(argv, "--config", "-c") or DEFAULT_CONFIG)
        pid_file = canonical_path(argv_option(argv, "--pid-file") or PID_FILE)
        default = TeleportConfig(
            services=g.services,
            log_output=PLAIN_LOG_PATH if plain else "stderr",
            log_format=g.log_format,
            diag_addr=DIAG_ADDR if g.diag else "",
        )
        config = default
        if config_path in files:
            config = parse_teleport_config(files[config_path], default)
        flag_diag = argv_option(argv, "--diag-addr")
        if flag_diag:
            config = dataclasses.replace(config, diag_addr=flag_diag)
        nofile = main.nofile() if main is not None else PLAIN_NOFILE
        links = enable_links(units)
        secrets: dict[str, str] = {}
        if g.fault == "hostile":
            secrets = hostile.secrets_of(lambda kind: self.canaries.make(kind, len(self._models)))
            argv = hostile.argv(argv)
            config_path = canonical_path(hostile.CONFIG_LINK)
            units = {**units, **hostile.units(secrets)}  # never enabled: no .wants links
        return GroupModel(files=files, units=units, links=links,
                          main_unit=main.name if main is not None else "", argv=tuple(argv),
                          config_path=config_path, pid_file=pid_file, nofile=nofile,
                          config=config, secrets=secrets)

    def _make_node(self, inst: Instance) -> SimNode:
        g = inst.group
        plain = g.init == "plain"
        model = self.group_model(g)
        seed_hash = hashlib.sha256(f"pid:{self.scenario.seed}:{inst.uuid}".encode()).digest()
        pid = 300 + int.from_bytes(seed_hash[:4], "big") % 60000
        node = SimNode(inst=inst, ip=self.node_ip(inst.index), config=model.config, pid=pid,
                       files=model.files, model=model)
        if self.canaries.enabled:
            n = inst.index + 1
            node.canaries["join_token"] = self.canaries.make("join_token", n)
            if plain:
                node.canaries["cmdline_token"] = self.canaries.make("cmdline_token", n)
            node.canaries["bearer"] = self.canaries.make("bearer", n)
            node.canaries["cookie"] = self.canaries.make("cookie", n)
            node.canaries["log_token"] = self.canaries.make("log_token", n)
            raw, _ = self.canaries.make_b64_raw("prockey", n)
            node.canaries["proc_key"] = raw
            # The teleport process's environment (systemd Environment=, Helm env, shells).
            node.canaries["env_token"] = self.canaries.make("env_token", n)
            node.canaries["env_aws_secret"] = self.canaries.make("env_aws_secret", n)
            node.canaries["env_proxy_password"] = self.canaries.make("env_proxy_password", n)
        return node

    def resolve(self, host: str) -> SimNode | None:
        """The node a proxy destination names: its address host, UUID, hostname or IP."""
        return self.by_name.get(host)
