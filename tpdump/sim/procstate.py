"""`<data_dir>/proc/sqlite.db`: a node's process storage as a real SQLite file.

Schema of `lib/backend/lite/lite.go` (tables `kv` and `events`); keys and values of
`lib/auth/storage/storage.go` and `lib/auth/state/state.go`: `/ids/<role>/current`
(IdentityV2 JSON: a PEM private key, SSH and TLS certificates, CA certificates; `[]byte`
fields are base64 in Go's JSON), `/states/<role>/state` (StateV2: the local rotation) and
`/teleport/last-known-version`. Built with Python's sqlite3 into bytes on first use.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import sqlite3
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tpdump.sim.cluster import SimCluster, SimNode
from tpdump.sim.objects import go_time, rev, rotation_zero

# CREATE statements of lite.go createSchema(), verbatim (revision columns included).
SCHEMA = """CREATE TABLE IF NOT EXISTS kv (
           key TEXT NOT NULL PRIMARY KEY,
           modified INTEGER NOT NULL,
           expires DATETIME,
           value BLOB,
           revision TEXT NOT NULL DEFAULT ""
		);
        CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires);
CREATE TABLE IF NOT EXISTS events (
           id INTEGER PRIMARY KEY,
           type TEXT NOT NULL,
           created INTEGER NOT NULL,
           kv_key TEXT NOT NULL,
           kv_modified INTEGER NOT NULL,
           kv_expires DATETIME,
           kv_value BLOB,
           kv_revision TEXT NOT NULL DEFAULT ""
         );
        CREATE INDEX IF NOT EXISTS events_created ON events (created);
"""
OP_PUT = 2  # api/types OpType: OpInvalid, OpInit, OpPut, ...

# types.SystemRole of each simulator service, lower-cased as the storage keys use them.
ROLE_OF = {"auth": "admin", "proxy": "proxy", "node": "node", "kube": "kube", "app": "app",
           "db": "db", "windows_desktop": "windowsdesktop"}
_ROLE_TITLE = {"admin": "Admin", "proxy": "Proxy", "node": "Node", "kube": "Kube",
               "app": "App", "db": "Db", "windowsdesktop": "WindowsDesktop",
               "instance": "Instance"}
EC_HEADER = b"-----BEGIN EC PRIVATE KEY-----\n"


def roles_of(node: SimNode) -> list[str]:
    """Identities a process keeps: the instance identity and one per service."""
    return ["instance"] + [ROLE_OF[s] for s in node.services if s in ROLE_OF]


def go_sqlite_time(ts: float) -> str:
    """How mattn/go-sqlite3 stores a time.Time (SQLiteTimestampFormats[0])."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    nanos = f"{d.microsecond * 1000:09d}".rstrip("0")
    return d.strftime("%Y-%m-%d %H:%M:%S") + (f".{nanos}" if nanos else "") + "+00:00"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def private_key_pem(seed: str, canary: str = "") -> bytes:
    """A deterministic ECDSA P-256 key as Teleport writes it (SEC1 `EC PRIVATE KEY`).

    With a canary, the second line of the body is replaced by it: that line starts at a
    byte offset that is a multiple of 3, so base64 of the whole PEM contains the base64 of
    the canary verbatim (the key no longer parses: a canary stands for a secret)."""
    scalar = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % (2**255) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    if canary:
        lines = pem.split(b"\n")
        assert pem.startswith(EC_HEADER) and (len(EC_HEADER) + 65) % 3 == 0
        body = lines[2]
        lines[2] = canary.encode() + body[len(canary):]
        pem = b"\n".join(lines)
    return pem


class ProcessStateBuilder:
    """Builds the sqlite.db of any node of a cluster (the caller caches the bytes)."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster

    def build(self, node: SimNode) -> bytes:
        scen = self.cluster.scenario
        when = self.cluster.started - 86400 * 2 - node.inst.index % 3600
        con = sqlite3.connect(":memory:")
        try:
            con.executescript(SCHEMA)
            # one SSH host certificate per node: every identity of a process holds the same
            ssh_cert = self.cluster.keys.host_cert(
                [node.uuid, node.hostname, f"{node.uuid}.{scen.cluster_name}"],
                node.uuid).export_certificate()
            state = self._state(node)
            rows: list[tuple[str, bytes]] = []
            for n, role in enumerate(roles_of(node)):
                canary = node.canaries.get("proc_key", "") if n == 0 else ""
                rows.append((f"/ids/{role}/current",
                             self._identity(node, role, canary, ssh_cert)))
                rows.append((f"/states/{role}/state", state))
                if scen.auth.ca_rotation != "standby":
                    rows.append((f"/ids/{role}/replacement",
                                 self._identity(node, role, "", ssh_cert, replacement=True)))
            rows.append(("/teleport/last-known-version", node.inst.version.encode()))
            for i, (key, value) in enumerate(sorted(rows)):
                ts = when + i * 0.013
                nanos = int(ts * 1e9)
                revision = rev("kv", scen.seed, node.uuid, key)
                con.execute("INSERT INTO kv(key, modified, expires, value, revision) "
                            "values(?, ?, ?, ?, ?)", (key, nanos, None, value, revision))
                con.execute("INSERT INTO events(type, created, kv_key, kv_modified, kv_expires,"
                            " kv_value, kv_revision) values(?, ?, ?, ?, ?, ?, ?)",
                            (OP_PUT, go_sqlite_time(ts), key, nanos, None, value, revision))
            con.commit()
            return con.serialize()
        finally:
            con.close()

    def _identity(self, node: SimNode, role: str, canary: str, ssh_cert: bytes,
                  replacement: bool = False) -> bytes:
        keys = self.cluster.keys
        tag = f"{self.cluster.scenario.seed}:{node.uuid}:{role}:{replacement}"
        key_pem = private_key_pem(tag, canary)
        host_ca = keys.tls.get("host")
        doc: dict[str, Any] = {
            "kind": "identity", "version": "v2",
            "metadata": {"name": "replacement" if replacement else "current"},
            "spec": {
                "key": _b64(key_pem),
                "ssh_cert": _b64(ssh_cert),
                "tls_cert": _b64(self._tls_cert(node, role, tag)),
                "tls_ca_certs": [_b64(host_ca.cert_pem)] if host_ca else [],
                "ssh_ca_certs": [_b64(keys.host_ca.export_public_key())],
            },
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def _tls_cert(self, node: SimNode, role: str, tag: str) -> bytes:
        ca = self.cluster.keys.tls.get("host")
        leaf = ec.derive_private_key(
            int.from_bytes(hashlib.sha256(("leaf:" + tag).encode()).digest(), "big")
            % (2**255) + 1, ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ROLE_TITLE.get(role, role)),
            x509.NameAttribute(NameOID.COMMON_NAME,
                               f"{node.uuid}.{self.cluster.scenario.cluster_name}"),
        ])
        now = dt.datetime.fromtimestamp(self.cluster.started, dt.UTC)
        signer = ca.key if ca is not None and ca.key is not None else leaf
        issuer = ca.name if ca is not None and ca.name is not None else subject
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(leaf.public_key())
            .serial_number(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:16], "big"))
            .not_valid_before(now - dt.timedelta(days=2))
            .not_valid_after(now + dt.timedelta(days=28))
            .sign(signer, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def _state(self, node: SimNode) -> bytes:
        phase = self.cluster.scenario.auth.ca_rotation
        rotation: dict[str, Any] = rotation_zero()
        if phase != "standby":
            started = self.cluster.started - 3600
            rotation = {
                "state": "in_progress", "phase": phase, "mode": "manual",
                "current_id": rev("rotation", self.cluster.scenario.seed),
                "started": go_time(started), "grace_period": "30h0m0s",
                "last_rotated": rotation_zero()["last_rotated"],
                "schedule": {"update_clients": go_time(started),
                             "update_servers": go_time(started),
                             "standby": go_time(started + 30 * 3600)},
            }
        doc = {"kind": "state", "version": "v2", "metadata": {"name": "state"},
               "spec": {"rotation": rotation}}
        return json.dumps(doc, separators=(",", ":")).encode()
