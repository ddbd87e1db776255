"""Teleport resources of the simulated cluster and the text that tctl prints for them.

Formats follow gravitational/teleport (see docs/teleport-formats.md for the sources):
`tctl get` YAML is ghodss/yaml of the JSON form (keys sorted, documents joined by `---`),
JSON is an indented array in proto field order, `tctl status` has a two-column (<= v16) and
a per-authority (>= v17) layout, errors are `\\x1b[31mERROR: \\x1b[0m<msg>` + 2 newlines.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
import yaml

from tpdump.sim.cluster import SimCluster
from tpdump.sim.tctl import version_line

Doc = dict[str, Any]
ZERO_TIME = "0001-01-01T00:00:00Z"
HEARTBEAT_TTL_S = 600
RED = "\x1b[31m"
RESET = "\x1b[0m"

# Heartbeat kinds and the scenario service that produces them.
HEARTBEAT_KINDS = {
    "node": "node",
    "proxy": "proxy",
    "auth_server": "auth",
    "kube_server": "kube",
    "app_server": "app",
    "db_server": "db",
    "windows_desktop_service": "windows_desktop",
}
# types.SystemRole values (inventory `spec.services`).
SYSTEM_ROLES = {
    "auth": "Auth",
    "proxy": "Proxy",
    "node": "Node",
    "kube": "Kube",
    "app": "App",
    "db": "Db",
    "windows_desktop": "WindowsDesktop",
}
# ParseShortcut aliases (lib/services/resource.go) for the kinds the simulator knows.
ALIASES = {
    "roles": "role",
    "namespaces": "namespace",
    "ns": "namespace",
    "auth_servers": "auth_server",
    "auth": "auth_server",
    "proxies": "proxy",
    "nodes": "node",
    "connector": "connectors",
    "users": "user",
    "cert_authorities": "cert_authority",
    "cas": "cert_authority",
    "reverse_tunnels": "tunnel",
    "rts": "tunnel",
    "tc": "trusted_cluster",
    "cluster": "trusted_cluster",
    "clusters": "trusted_cluster",
    "cluster_authentication_preferences": "cluster_auth_preference",
    "cluster_auth_preferences": "cluster_auth_preference",
    "cap": "cluster_auth_preference",
    "ui": "ui_config",
    "networking_config": "cluster_networking_config",
    "networking": "cluster_networking_config",
    "net_config": "cluster_networking_config",
    "netconfig": "cluster_networking_config",
    "recording_config": "session_recording_config",
    "session_recording": "session_recording_config",
    "rec_config": "session_recording_config",
    "recconfig": "session_recording_config",
    "remote_clusters": "remote_cluster",
    "rc": "remote_cluster",
    "rcs": "remote_cluster",
    "semaphores": "semaphore",
    "sem": "semaphore",
    "sems": "semaphore",
    "kube_servers": "kube_server",
    "locks": "lock",
    "db_servers": "db_server",
    "apps": "app",
    "app_servers": "app_server",
    "windows_service": "windows_desktop_service",
    "win_desktop_service": "windows_desktop_service",
    "win_service": "windows_desktop_service",
    "windows_desktop_services": "windows_desktop_service",
    "win_desktop": "windows_desktop",
    "tokens": "token",
    "bots": "bot",
}
# The Teleport major that first knows a kind (tctl of an older major rejects it).
KIND_SINCE = {
    "node": 1, "proxy": 1, "auth_server": 1, "role": 2, "user": 1, "namespace": 1,
    "cert_authority": 1, "connectors": 2, "github": 2, "oidc": 2, "saml": 2,
    "trusted_cluster": 2, "tunnel": 2, "remote_cluster": 3, "cluster_auth_preference": 2,
    "semaphore": 4, "app_server": 8, "app": 8, "db_server": 6, "db": 8, "lock": 7,
    "cluster_networking_config": 7, "session_recording_config": 7,
    "windows_desktop_service": 8, "windows_desktop": 8, "token": 9, "kube_server": 11,
    "ui_config": 12, "installer": 12, "kube_cluster": 11, "login_rule": 12, "device": 12,
    "bot": 14, "access_list": 14, "integration": 14, "discovery_config": 14,
    "crown_jewel": 16, "vnet_config": 16, "bot_instance": 16, "static_host_user": 16,
    "access_graph_settings": 16, "spiffe_federation": 16, "workload_identity": 17,
    "user_task": 17, "autoupdate_config": 17, "autoupdate_version": 17,
    "autoupdate_agent_rollout": 17, "workload_identity_x509_revocation": 17,
}
# Singleton kinds: RBAC verb "read" rather than "list".
SINGLETONS = {
    "cluster_auth_preference", "cluster_networking_config", "session_recording_config",
    "ui_config", "vnet_config", "access_graph_settings", "autoupdate_config",
    "autoupdate_version", "autoupdate_agent_rollout",
}

# libyaml when available: tctl output of 10,000 heartbeats stays fast.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def major_of(version: str) -> int:
    return int(version.split(".")[0])


def go_time(ts: float) -> str:
    """Go's RFC3339Nano in UTC (trailing zero digits of the fraction trimmed)."""
    secs = int(ts)
    nanos = round((ts - secs) * 1e9)
    if nanos >= 1_000_000_000:
        secs, nanos = secs + 1, nanos - 1_000_000_000
    base = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def human_time(ts: float) -> str:
    """Teleport's HumanDateFormatSeconds, `Jan _2 15:04:05 UTC`."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return f"{d:%b} {d.day:>2} {d:%H:%M:%S} UTC"


def error_text(message: str) -> str:
    """How tctl prints an error (utils.FatalError: red `ERROR: `, message, Fprintln)."""
    return f"{RED}ERROR: {RESET}{message}\n\n"


def rev(*parts: object) -> str:
    return str(uuidlib.UUID(bytes=hashlib.sha256(repr(parts).encode()).digest()[:16], version=4))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tabwrite(rows: Sequence[Sequence[str]], minwidth: int = 5, padding: int = 1) -> str:
    """Go text/tabwriter as asciitable uses it: every cell tab-terminated, padded with spaces."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [minwidth] * ncols
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell) + padding)
    return "".join(
        "".join(cell.ljust(widths[i]) for i, cell in enumerate(r)) + "\n" for r in rows
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """asciitable.MakeTable(...).AsBuffer(): header, dashes, rows."""
    body = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    return tabwrite([list(headers), ["-" * w for w in widths], *body])


def render_yaml(docs: Sequence[Doc]) -> str:
    """utils.WriteYAML: each document as YAML, `---` between them; `[]` when empty."""
    if not docs:
        return "[]"
    parts = [
        yaml.dump(d, sort_keys=True, default_flow_style=False, width=1 << 30,
                       allow_unicode=True, Dumper=_DUMPER)
        for d in docs
    ]
    return "---\n".join(parts)


def render_json(docs: Sequence[Doc]) -> str:
    """utils.WriteJSONArray: an indented array, `[]` when empty."""
    if not docs:
        return "[]"
    return json.dumps(list(docs), indent=4, ensure_ascii=False) + "\n"


def rotation_zero() -> Doc:
    return {
        "current_id": "",
        "started": ZERO_TIME,
        "last_rotated": ZERO_TIME,
        "schedule": {"update_clients": ZERO_TIME, "update_servers": ZERO_TIME,
                     "standby": ZERO_TIME},
    }


@dataclass(frozen=True)
class Reply:
    """What a tctl invocation prints and returns."""

    stdout: str = ""
    stderr: str = ""
    code: int = 0


class TctlError(Exception):
    """A failed tctl command; `message` is what follows `ERROR: `."""

    def __init__(self, message: str, stdout: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stdout = stdout


class Objects:
    """Builds every resource of the cluster and answers tctl commands."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.scenario = cluster.scenario
        self.version = cluster.scenario.teleport_version
        self.major = major_of(self.version)
        self.auth_id = next(
            (n.uuid for n in cluster.nodes if "auth" in n.services),
            rev("auth", self.scenario.seed),
        )
        self.openssh_ca = asyncssh.generate_private_key("ssh-ed25519")
        self._secrets = self._plant_secrets()
        self._extra = self._load_extra_objects()

    # --- secrets -----------------------------------------------------------

    def _plant_secrets(self) -> dict[str, Any]:
        c = self.cluster.canaries
        s: dict[str, Any] = {}
        if not c.enabled:
            return s
        for i, ca_type in enumerate(self.cluster.ca_types, start=1):
            head = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA"
            tail = b"IDAQAB\n-----END RSA PRIVATE KEY-----\n"
            value, _ = c.make_b64(f"cakey{ca_type}", i, head, tail)
            s[f"ca:{ca_type}"] = value
        for kind in ("github", "oidc"):
            s[f"client_secret:{kind}"] = c.make(f"{kind}_client_secret", 1)
        saml = c.make("saml_signing_key", 1)
        s["saml_key"] = (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx3m9sAml\n"
            f"{saml}\n-----END RSA PRIVATE KEY-----\n"
        )
        s["token:join"] = c.make("token", 1)
        s["token:trusted"] = c.make("trusted_cluster_token", 1)
        for i, user in enumerate(("alice", "bob"), start=1):
            value, _ = c.make_b64(f"passwordhash{user}", i, b"$2a$10$", b"Qx7m1e")
            s[f"password:{user}"] = value
        return s

    def _load_extra_objects(self) -> dict[str, list[Doc]]:
        extra: dict[str, list[Doc]] = {}
        for path in self.scenario.auth.objects:
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
                    extra.setdefault(doc["kind"], []).append(doc)
        return extra

    # --- heartbeats --------------------------------------------------------

    def _meta(self, name: str, now: float, labels: dict[str, str] | None = None,
              expires: bool = True) -> Doc:
        m: Doc = {"name": name}
        if labels:
            m["labels"] = labels
        if expires:
            m["expires"] = go_time(now + HEARTBEAT_TTL_S)
        m["revision"] = rev(name, int(now) // 60)
        return m

    def heartbeats(self, kind: str, now: float) -> list[Doc]:
        service = HEARTBEAT_KINDS[kind]
        out: list[Doc] = []
        cluster = self.scenario.cluster_name
        for node in self.cluster.nodes:
            if service not in node.services:
                continue
            v = node.inst.version
            labels = {"group": node.inst.group.name,
                      "teleport.internal/resource-id": rev(node.uuid)}
            n = node.inst.n
            if kind == "node":
                spec: Doc = {"addr": node.heartbeat_addr, "hostname": node.hostname,
                             "rotation": rotation_zero()}
                if node.inst.group.tunnel:
                    spec["use_tunnel"] = True
                spec["version"] = v
                out.append({"kind": "node", "sub_kind": "teleport", "version": "v2",
                            "metadata": self._meta(node.uuid, now, labels), "spec": spec})
            elif kind == "proxy":
                out.append({"kind": "proxy", "version": "v2",
                            "metadata": self._meta(node.uuid, now, labels),
                            "spec": {"addr": f"{node.ip}:3023",
                                     "public_addrs": [f"{cluster}:443"],
                                     "hostname": node.hostname, "rotation": rotation_zero(),
                                     "version": v}})
            elif kind == "auth_server":
                out.append({"kind": "auth_server", "version": "v2",
                            "metadata": self._meta(node.uuid, now, labels),
                            "spec": {"addr": f"{node.ip}:3025", "hostname": node.hostname,
                                     "rotation": rotation_zero(), "version": v}})
            elif kind == "kube_server":
                kname = f"{node.hostname}-k8s"
                out.append({"kind": "kube_server", "version": "v3",
                            "metadata": self._meta(kname, now),
                            "spec": {"version": v, "hostname": node.hostname,
                                     "host_id": node.uuid, "rotation": rotation_zero(),
                                     "cluster": {"kind": "kube_cluster", "version": "v3",
                                                 "metadata": {"name": kname,
                                                              "labels": {"env": "sim"}},
                                                 "spec": {}}}})
            elif kind == "app_server":
                aname = f"grafana-{node.hostname}"
                out.append({"kind": "app_server", "version": "v3",
                            "metadata": self._meta(aname, now),
                            "spec": {"version": v, "hostname": node.hostname,
                                     "host_id": node.uuid, "rotation": rotation_zero(),
                                     "app": {"kind": "app", "version": "v3",
                                             "metadata": {"name": aname},
                                             "spec": {"uri": "http://localhost:3000",
                                                      "public_addr": f"{aname}.{cluster}"}}}})
            elif kind == "db_server":
                dname = f"postgres-{node.hostname}"
                out.append({"kind": "db_server", "version": "v3",
                            "metadata": self._meta(dname, now),
                            "spec": {"version": v, "hostname": node.hostname,
                                     "host_id": node.uuid, "rotation": rotation_zero(),
                                     "database": {"kind": "db", "version": "v3",
                                                  "metadata": {"name": dname},
                                                  "spec": {"protocol": "postgres",
                                                           "uri": f"localhost:{5432 + n % 10}"}}}})
            elif kind == "windows_desktop_service":
                out.append({"kind": "windows_desktop_service", "version": "v3",
                            "metadata": self._meta(node.uuid, now),
                            "spec": {"addr": f"{node.ip}:3028", "teleport_version": v,
                                     "hostname": node.hostname}})
        return out

    # --- configuration resources -------------------------------------------

    def _rotation(self, now: float) -> tuple[Doc, str]:
        phase = self.scenario.auth.ca_rotation
        if phase == "standby":
            return rotation_zero(), "never updated"
        started = now - 3600
        grace = 30 * 3600
        desc = {"update_clients": "rotating clients", "update_servers": "rotating servers",
                "rollback": "rolling back"}[phase]
        doc = {
            "state": "in_progress", "phase": phase, "mode": "manual",
            "current_id": rev("rotation", self.scenario.seed), "started": go_time(started),
            "grace_period": "30h0m0s", "last_rotated": ZERO_TIME,
            "schedule": {"update_clients": go_time(started), "update_servers": go_time(started),
                         "standby": go_time(started + grace)},
        }
        text = (f"{desc} (mode: manual, started: {human_time(started)}, "
                f"ending: {human_time(started + grace)})")
        return doc, text

    def ca_keys(self, ca_type: str) -> list[tuple[str, str]]:
        """(protocol, algorithm) of each active key of an authority (status table)."""
        keys: list[tuple[str, str]] = []
        if ca_type in ("host", "user", "openssh"):
            keys.append(("SSH", "Ed25519"))
        if ca_type in ("host", "user", "db", "db_client", "saml_idp", "spiffe"):
            keys.append(("TLS", "ECDSA P-256"))
        if ca_type in ("jwt", "oidc_idp", "spiffe", "okta"):
            keys.append(("JWT", "ECDSA P-256"))
        return keys

    def cert_authorities(self, now: float, with_secrets: bool) -> list[Doc]:
        keys = self.cluster.keys
        rotation, _ = self._rotation(now)
        out: list[Doc] = []
        for ca_type in self.cluster.ca_types:
            tls = keys.tls[ca_type]
            priv = self._secrets.get(f"ca:{ca_type}")
            if priv is None and with_secrets:
                priv = (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFakeSimKey0\n"
                        b"-----END PRIVATE KEY-----\n")
            active: Doc = {}
            for proto, _algo in self.ca_keys(ca_type):
                if proto == "SSH":
                    pub = {"host": keys.host_ca, "user": keys.user_ca}.get(ca_type, self.openssh_ca)
                    entry: Doc = {"public_key": b64(pub.export_public_key())}
                    if priv is not None:
                        entry["private_key"] = b64(priv)
                    active.setdefault("ssh", []).append(entry)
                elif proto == "TLS":
                    entry = {"cert": b64(tls.cert_pem)}
                    if priv is not None:
                        entry["key"] = b64(priv)
                    active.setdefault("tls", []).append(entry)
                else:
                    entry = {"public_key": b64(tls.cert_pem)}
                    if priv is not None:
                        entry["private_key"] = b64(priv)
                    active.setdefault("jwt", []).append(entry)
            out.append({
                "kind": "cert_authority", "sub_kind": ca_type, "version": "v2",
                "metadata": {"name": self.scenario.cluster_name,
                             "revision": rev("ca", ca_type, self.scenario.seed)},
                "spec": {"type": ca_type, "cluster_name": self.scenario.cluster_name,
                         "active_keys": active, "rotation": rotation},
            })
        return out

    def connectors(self, kind: str, with_secrets: bool) -> list[Doc]:
        cluster = self.scenario.cluster_name
        secret = self._secrets.get(f"client_secret:{kind}")
        if secret is None and with_secrets:
            secret = "sim-client-secret-not-a-canary"
        if kind == "github":
            spec: Doc = {"client_id": "Iv1.5e1f0c2d3b4a5968", "display": "GitHub",
                         "redirect_url": f"https://{cluster}:443/v1/webapi/github/callback",
                         "teams_to_logins": [{"logins": ["access", "editor"],
                                              "organization": "acme", "team": "admins"}]}
            if secret is not None:
                spec["client_secret"] = secret
            return [{"kind": "github", "version": "v3",
                     "metadata": {"name": "github", "revision": rev("github")}, "spec": spec}]
        if kind == "oidc":
            spec = {"issuer_url": "https://idp.example.com/", "client_id": "teleport",
                    "redirect_url": [f"https://{cluster}:443/v1/webapi/oidc/callback"],
                    "claims_to_roles": [{"claim": "groups", "value": "admins",
                                         "roles": ["editor"]}],
                    "max_age": "24h0m0s"}
            if secret is not None:
                spec["client_secret"] = secret
            return [{"kind": "oidc", "version": "v3",
                     "metadata": {"name": "okta-oidc", "revision": rev("oidc")}, "spec": spec}]
        spec = {"acs": f"https://{cluster}:443/v1/webapi/saml/acs/okta", "display": "Okta",
                "entity_descriptor_url": "https://example.okta.com/app/sim/sso/saml/metadata",
                "attributes_to_roles": [{"name": "groups", "value": "okta-admin",
                                         "roles": ["editor"]}],
                "audience": f"https://{cluster}:443/v1/webapi/saml/acs/okta",
                "service_provider_issuer": f"https://{cluster}:443/v1/webapi/saml/acs/okta"}
        key = self._secrets.get("saml_key")
        if key is None and with_secrets:
            key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpSimFake\n-----END RSA PRIVATE KEY-----\n"
        pair: Doc = {"cert": self.cluster.keys.tls["host"].cert_pem.decode()}
        if key is not None:
            pair["private_key"] = key
        spec["signing_key_pair"] = pair
        return [{"kind": "saml", "version": "v2",
                 "metadata": {"name": "okta", "revision": rev("saml")}, "spec": spec}]

    def users(self, now: float, with_secrets: bool) -> list[Doc]:
        out: list[Doc] = []
        for name, roles in (("alice", ["editor", "access"]), ("bob", ["access"]),
                            ("carol", ["auditor"]), ("tpdump", ["editor", "auditor"])):
            spec: Doc = {
                "roles": roles,
                "traits": {"logins": [name, "root"] if name == "alice" else [name]},
                "status": {"is_locked": False, "lock_expires": ZERO_TIME,
                           "locked_time": ZERO_TIME, "recovery_attempt_lock_expires": ZERO_TIME},
                "expires": ZERO_TIME,
                "created_by": {"time": go_time(self.cluster.started - 86400 * 90),
                               "user": {"name": "builtin-Admin"}},
            }
            pw = self._secrets.get(f"password:{name}")
            if pw is None and with_secrets and name != "tpdump":
                pw = b"$2a$10$simsimsimsimsimsimsimuFakeHashNotACanary0000000000000"
            if pw is not None:
                spec["local_auth"] = {"password_hash": b64(pw)}
            out.append({"kind": "user", "version": "v2",
                        "metadata": {"name": name, "revision": rev("user", name)}, "spec": spec})
        return out

    def roles(self) -> list[Doc]:
        def role(name: str, allow: Doc, deny: Doc | None = None,
                 options: Doc | None = None) -> Doc:
            return {"kind": "role", "version": "v7",
                    "metadata": {"name": name, "labels": {"teleport.internal/resource-type":
                                                          "preset"},
                                 "revision": rev("role", name)},
                    "spec": {"allow": allow, "deny": deny or {},
                             "options": options or {"max_session_ttl": "30h0m0s",
                                                    "forward_agent": False,
                                                    "cert_format": "standard"}}}
        return [
            role("access", {"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"},
                            "rules": [{"resources": ["event"], "verbs": ["list", "read"]}]},
                 {"rules": [{"resources": ["*"], "verbs": ["delete"]}]}),
            role("auditor", {"rules": [{"resources": ["session", "event"],
                                        "verbs": ["list", "read"]}]}),
            role("editor", {"rules": [{"resources": ["*"],
                                       "verbs": ["list", "create", "read", "update", "delete"]}]}),
            role("admin", {"logins": ["{{internal.logins}}", "root"], "node_labels": {"*": "*"},
                           "rules": [{"resources": ["*"], "verbs": ["*"]}]}),
            role("orphan-role", {"logins": ["nobody"]}),
        ]

    def resources(self, kind: str, now: float, with_secrets: bool) -> list[Doc]:
        """Every document of `kind` (heartbeats, configuration, then `auth.objects`)."""
        cluster = self.scenario.cluster_name
        origin = {"teleport.dev/origin": "defaults"}
        docs: list[Doc]
        if kind in HEARTBEAT_KINDS:
            docs = self.heartbeats(kind, now)
        elif kind == "cert_authority":
            docs = self.cert_authorities(now, with_secrets)
        elif kind in ("github", "oidc", "saml"):
            docs = self.connectors(kind, with_secrets)
        elif kind == "connectors":
            docs = []
            for k in ("oidc", "saml", "github"):
                docs += self.connectors(k, with_secrets) + self._extra.get(k, [])
            return docs
        elif kind == "user":
            docs = self.users(now, with_secrets)
        elif kind == "role":
            docs = self.roles()
        elif kind == "namespace":
            docs = [{"kind": "namespace", "version": "v2", "metadata": {"name": "default"},
                     "spec": {}}]
        elif kind == "cluster_auth_preference":
            spec: Doc = {"type": "local", "allow_local_auth": True,
                         "disconnect_expired_cert": False, "locking_mode": "best_effort",
                         "webauthn": {"rp_id": cluster}, "require_session_mfa": 0}
            if self.major >= 17:
                spec["second_factors"] = ["otp", "webauthn"]
            else:
                spec["second_factor"] = "on"
            docs = [{"kind": "cluster_auth_preference", "version": "v2",
                     "metadata": {"name": "cluster-auth-preference", "labels": origin,
                                  "revision": rev("cap")}, "spec": spec}]
        elif kind == "cluster_networking_config":
            docs = [{"kind": "cluster_networking_config", "version": "v2",
                     "metadata": {"name": "cluster-networking-config", "labels": origin,
                                  "revision": rev("cnc")},
                     "spec": {"keep_alive_interval": "5m0s", "keep_alive_count_max": 3,
                              "proxy_listener_mode": 1,
                              "tunnel_strategy": {"type": "agent_mesh"}}}]
        elif kind == "session_recording_config":
            docs = [{"kind": "session_recording_config", "version": "v2",
                     "metadata": {"name": "session-recording-config", "labels": origin,
                                  "revision": rev("src")},
                     "spec": {"mode": "node", "proxy_checks_host_keys": True}}]
        elif kind == "ui_config":
            docs = [{"kind": "ui_config", "version": "v1",
                     "metadata": {"name": "ui-config", "revision": rev("ui")},
                     "spec": {"scrollback_lines": 1000}}]
        elif kind == "remote_cluster":
            docs = [{"kind": "remote_cluster", "version": "v3",
                     "metadata": {"name": f"leaf.{cluster}", "revision": rev("rc")},
                     "status": {"connection": "online", "last_heartbeat": go_time(now - 20)}}]
        elif kind == "trusted_cluster":
            docs = [{"kind": "trusted_cluster", "version": "v2",
                     "metadata": {"name": "main.example.com", "revision": rev("tc")},
                     "spec": {"enabled": True,
                              "role_map": [{"remote": "access", "local": ["access"]}],
                              "token": self._secrets.get("token:trusted",
                                                         "sim-trusted-cluster-token"),
                              "tunnel_addr": "main.example.com:3024",
                              "web_proxy_addr": "main.example.com:443"}}]
        elif kind == "tunnel":
            docs = [{"kind": "tunnel", "version": "v2",
                     "metadata": {"name": "main.example.com"},
                     "spec": {"cluster_name": "main.example.com",
                              "dial_addrs": ["main.example.com:3024"]}}]
        elif kind == "semaphore":
            docs = [{"kind": "semaphore", "sub_kind": "connection", "version": "v3",
                     "metadata": {"name": "alice", "expires": go_time(now + 1800)},
                     "spec": {"leases": [{"lease_id": rev("lease", 1),
                                          "expires": go_time(now + 1800)}]}}]
        elif kind == "lock":
            docs = [{"kind": "lock", "version": "v2",
                     "metadata": {"name": rev("lock"), "revision": rev("lock", 2)},
                     "spec": {"target": {"user": "mallory"},
                              "message": "Suspicious activity", "created_by": "alice",
                              "created_at": go_time(self.cluster.started - 7200)}}]
        elif kind == "token":
            join = self._secrets.get("token:join", rev("join-token", self.scenario.seed)
                                     .replace("-", ""))
            docs = [
                {"kind": "token", "version": "v2",
                 "metadata": {"name": join, "expires": go_time(now + 1800),
                              "revision": rev("token", 1)},
                 "spec": {"roles": ["Node"], "join_method": "token"}},
                {"kind": "token", "version": "v2",
                 "metadata": {"name": "iam-token", "revision": rev("token", 2)},
                 "spec": {"roles": ["Node"], "join_method": "iam",
                          "allow": [{"aws_account": "111111111111"}]}},
            ]
        else:
            docs = []
        return docs + self._extra.get(kind, [])

    # --- inventory, status ---------------------------------------------------

    def instances(self, now: float) -> list[Doc]:
        out: list[Doc] = []
        for node in self.cluster.nodes:
            spec: Doc = {"version": "v" + node.inst.version,
                         "services": [SYSTEM_ROLES[s] for s in node.services],
                         "hostname": node.hostname, "auth_id": self.auth_id,
                         "last_seen": go_time(now - (node.inst.index % 60))}
            out.append({"kind": "instance", "version": "v1",
                        "metadata": {"name": node.uuid, "expires": go_time(now + 3600)},
                        "spec": spec})
        return out

    def status(self, now: float, debug: bool = False) -> str:
        cluster = self.scenario.cluster_name
        pins = [self.cluster.keys.tls["host"].spki_sha256]
        _, rot = self._rotation(now)
        # A user denied cert_authority cannot list the authorities: <= v16 prints the error
        # per type, >= v17 skips them (and, since its pins come from them, the pins too).
        denied = "cert_authority" in self.scenario.auth.denied_kinds
        ca_error = 'access denied to perform action "list" on "cert_authority"'
        if self.major <= 16:
            two = [["Cluster", cluster], ["Version", self.version]]
            two += [[f"{t} CA ", ca_error if denied else rot] for t in self.cluster.ca_types]
            two += [["CA pin", p] for p in pins]
            return tabwrite(two)
        if denied:
            pins = []
        summary = [["Cluster:", cluster], ["Version:", self.version]]
        summary += [["CA pins:" if i == 0 else "", p] for i, p in enumerate(pins)]
        rows: list[list[str]] = []
        for t in ([] if denied else self.cluster.ca_types):
            krows = sorted(["", "", proto, "active", algo, "software"]
                           for proto, algo in self.ca_keys(t))
            if not krows:
                krows = [["", "", "", "no keys found for authority", "", ""]]
            krows[0][0], krows[0][1] = t, rot
            rows += krows
        return tabwrite(summary) + "\n" + table(
            ["authority", "rotation", "protocol", "status", "algorithm", "storage"], rows)

    # --- tctl command dispatch ----------------------------------------------

    def normalize_kind(self, raw: str) -> str:
        """ParseShortcut: lowercase, aliases; kinds this version does not know are rejected."""
        kind = ALIASES.get(raw.lower(), raw.lower())
        if KIND_SINCE.get(kind, 10**6) > self.major:
            raise TctlError(
                f'unsupported resource: "{raw}" - resources should be expressed as '
                "'type/name', for example 'connector/github'"
            )
        return kind

    def run(self, args: list[str], now: float | None = None, debug: bool = False) -> Reply:
        """Answer one tctl command (global flags already removed)."""
        now = time.time() if now is None else now
        try:
            return self._run(args, now, debug)
        except TctlError as exc:
            return Reply(stdout=exc.stdout, stderr=error_text(exc.message), code=1)

    def _run(self, args: list[str], now: float, debug: bool) -> Reply:
        if not args:
            raise TctlError("expected command but got nothing")
        cmd, rest = args[0], args[1:]
        if cmd == "version":
            return Reply(stdout=version_line(self.version))
        if cmd == "status":
            return Reply(stdout=self.status(now, debug))
        if cmd == "get":
            return self._get(rest, now)
        if cmd == "inventory":
            return self._inventory(rest, now)
        raise TctlError(f'expected command but got "{cmd}"')

    def _flags(self, rest: list[str], known: dict[str, bool]) -> tuple[dict[str, str], list[str]]:
        """Parse `--flag=v`, `--flag v` and boolean flags; `known` maps name -> takes value."""
        flags: dict[str, str] = {}
        pos: list[str] = []
        i = 0
        while i < len(rest):
            a = rest[i]
            if a.startswith("--"):
                name, eq, val = a[2:].partition("=")
                if name not in known:
                    raise TctlError(f"unknown long flag '--{name}'")
                if known[name] and not eq:
                    if i + 1 >= len(rest):
                        raise TctlError(f"expected argument for flag '--{name}'")
                    val = rest[i + 1]
                    i += 1
                flags[name] = val if known[name] else "true"
            else:
                pos.append(a)
            i += 1
        return flags, pos

    def _get(self, rest: list[str], now: float) -> Reply:
        flags, pos = self._flags(rest, {"format": True, "with-secrets": False,
                                        "verbose": False, "namespace": True})
        if not pos:
            raise TctlError("required argument 'resources' not provided")
        fmt = flags.get("format", "yaml")
        with_secrets = "with-secrets" in flags
        ref = pos[0]
        docs: list[Doc] = []
        if ref == "all":
            # `tctl get all` turns on --with-secrets (tool/tctl/common/resource_command.go).
            with_secrets = True
            for kind in ("user", "role", "namespace", "cert_authority", "github", "oidc",
                         "saml", "trusted_cluster", "token", "cluster_auth_preference",
                         "cluster_networking_config", "session_recording_config"):
                if KIND_SINCE.get(kind, 0) <= self.major:
                    self._check_denied(kind, "")
                    docs += self.resources(kind, now, with_secrets)
        else:
            for one in ref.split(","):
                kind_raw, _, name = one.partition("/")
                kind = self.normalize_kind(kind_raw)
                self._check_denied(kind, name)
                found = self.resources(kind, now, with_secrets)
                if name:
                    found = [d for d in found if d.get("metadata", {}).get("name") == name]
                    if not found:
                        raise TctlError(f'{kind} "{name}" not found')
                docs += found
        if fmt == "yaml":
            return Reply(stdout=render_yaml(docs))
        if fmt == "json":
            return Reply(stdout=render_json(docs))
        if fmt == "text":
            return Reply(stdout=self._text(docs))
        raise TctlError("unsupported format")

    def _check_denied(self, kind: str, name: str) -> None:
        denied = set(self.scenario.auth.denied_kinds)
        if kind in denied or (kind == "connectors" and {"github", "oidc", "saml"} & denied):
            verb = "read" if kind in SINGLETONS else "list"
            target = "oidc" if kind == "connectors" else kind
            msg = f'access denied to perform action "{verb}" on "{target}"'
            if self.major >= 18:
                msg = f'getting resource "{name}" of type "{kind}"\n\t' + msg
            raise TctlError(msg)

    def _text(self, docs: list[Doc]) -> str:
        rows: list[list[str]] = []
        kinds = {d.get("kind") for d in docs}
        if kinds <= {"node"}:
            for d in docs:
                spec, meta = d["spec"], d["metadata"]
                addr = "⟵ Tunnel" if spec.get("use_tunnel") else spec.get("addr", "")
                labels = ",".join(f"{k}={v}" for k, v in sorted(meta.get("labels", {}).items())
                                  if not k.startswith("teleport.internal/"))
                rows.append([spec["hostname"], meta["name"], addr, labels, spec["version"]])
            return table(["Host", "UUID", "Public Address", "Labels", "Version"], rows)
        if kinds <= {"proxy", "auth_server"}:
            for d in docs:
                spec = d["spec"]
                rows.append([d["metadata"]["name"], spec["hostname"], spec.get("addr", ""),
                             spec["version"]])
            return table(["Host", "Name", "Address", "Version"], rows)
        for d in docs:
            rows.append([str(d.get("kind", "")), str(d.get("metadata", {}).get("name", ""))])
        return table(["Kind", "Name"], rows)

    def _inventory(self, rest: list[str], now: float) -> Reply:
        if self.major < 12:
            raise TctlError('expected command but got "inventory"')
        if not rest or rest[0] not in ("ls", "list", "status"):
            raise TctlError("expected command but got nothing" if not rest else
                            f'expected command but got "{rest[0]}"')
        flags, _ = self._flags(rest[1:], {"format": True, "services": True, "older-than": True,
                                          "newer-than": True, "exact-version": True,
                                          "upgrader": True, "update-group": True,
                                          "connected": False})
        fmt = flags.get("format", "text")
        unsupported = "unknown method GetInstances for service proto.AuthService"
        if rest[0] == "status":
            if not self.scenario.auth.inventory:
                raise TctlError("unknown method GetInventoryStatus for service proto.AuthService")
            counts: dict[str, int] = {}
            for node in self.cluster.nodes:
                counts["v" + node.inst.version] = counts.get("v" + node.inst.version, 0) + 1
            return Reply(stdout=json.dumps({"InstanceCount": len(self.cluster.nodes),
                                            "VersionCounts": counts}) + "\n")
        docs = self.instances(now)
        if "services" in flags:
            want = {SYSTEM_ROLES.get(s.strip().lower(), s.strip())
                    for s in flags["services"].split(",")}
            docs = [d for d in docs if want & set(d["spec"]["services"])]
        if fmt == "json":
            if not self.scenario.auth.inventory:
                raise TctlError(unsupported, stdout="[]")
            body = "[]" if not docs else json.dumps(docs, indent=4, ensure_ascii=False)
            return Reply(stdout=body + "\n")
        if fmt == "text":
            if not self.scenario.auth.inventory:
                raise TctlError(unsupported)
            if self.major >= 16:
                headers = ["Server ID", "Hostname", "Services", "Agent Version", "Upgrader",
                           "Upgrader Version", "Update Group"]
                rows = [[d["metadata"]["name"], d["spec"]["hostname"],
                         ",".join(d["spec"]["services"]), d["spec"]["version"], "none", "none",
                         ""] for d in docs]
            else:
                headers = ["Server ID", "Hostname", "Services", "Version", "Upgrader"]
                rows = [[d["metadata"]["name"], d["spec"]["hostname"],
                         ",".join(d["spec"]["services"]), d["spec"]["version"], "none"]
                        for d in docs]
            return Reply(stdout=table(headers, rows))
        raise TctlError(f'unknown format "{fmt}", must be one of ["text", "json"]')

