"""Key material of the simulated cluster: SSH CAs, host/user keys and TLS CA certificates.

One host key serves every node (certificates differ per node) so that 10,000 nodes stay
cheap; TLS CA certificates are real X.509 so that expiry and CA pins are genuine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER_CERT_DAYS = 30
HOST_CERT_DAYS = 365


@dataclass(frozen=True)
class TLSAuthority:
    """A TLS CA certificate of one cert authority type."""

    ca_type: str
    cert_pem: bytes
    not_after: dt.datetime
    spki_sha256: str
    key: ec.EllipticCurvePrivateKey | None = None
    name: x509.Name | None = None


@dataclass
class ClusterKeys:
    """Every key the simulated cluster uses; generated once per simulator run."""

    cluster_name: str
    host_ca: asyncssh.SSHKey
    user_ca: asyncssh.SSHKey
    rogue_ca: asyncssh.SSHKey
    host_key: asyncssh.SSHKey
    user_key: asyncssh.SSHKey
    user_cert: asyncssh.SSHCertificate
    tls: dict[str, TLSAuthority]

    @classmethod
    def generate(cls, cluster_name: str, ca_types: list[str], expiry_days: int,
                 login: str = "tpdump") -> ClusterKeys:
        """Create fresh keys; TLS CAs expire in `expiry_days` (negative: already expired)."""
        host_ca = asyncssh.generate_private_key("ssh-ed25519", comment=f"{cluster_name} host CA")
        user_ca = asyncssh.generate_private_key("ssh-ed25519", comment=f"{cluster_name} user CA")
        rogue_ca = asyncssh.generate_private_key("ssh-ed25519", comment="rogue CA")
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        user_key = asyncssh.generate_private_key("ssh-ed25519", comment=login)
        now = dt.datetime.now(dt.UTC)
        user_cert = user_ca.generate_user_certificate(
            user_key,
            login,
            principals=[login],
            valid_after=int(now.timestamp()) - 60,
            valid_before=int((now + dt.timedelta(days=USER_CERT_DAYS)).timestamp()),
        )
        tls = {t: _tls_ca(cluster_name, t, now, expiry_days) for t in ca_types}
        return cls(cluster_name, host_ca, user_ca, rogue_ca, host_key, user_key, user_cert, tls)

    def host_cert(self, principals: list[str], key_id: str,
                  rogue: bool = False) -> asyncssh.SSHCertificate:
        """A host certificate for the shared host key (signed by a rogue CA when asked)."""
        ca = self.rogue_ca if rogue else self.host_ca
        now = int(dt.datetime.now(dt.UTC).timestamp())
        return ca.generate_host_certificate(
            self.host_key,
            key_id,
            principals=principals,
            valid_after=now - 60,
            valid_before=now + HOST_CERT_DAYS * 86400,
        )

    def write(self, keys_dir: Path, known_hosts: Path) -> None:
        """Write the user key, its certificate, the CA public keys and known_hosts."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        key_path = keys_dir / "id_ed25519"
        key_path.write_bytes(self.user_key.export_private_key())
        key_path.chmod(0o600)
        (keys_dir / "id_ed25519.pub").write_bytes(self.user_key.export_public_key())
        (keys_dir / "id_ed25519-cert.pub").write_bytes(self.user_cert.export_certificate())
        (keys_dir / "host_ca.pub").write_bytes(self.host_ca.export_public_key())
        (keys_dir / "user_ca.pub").write_bytes(self.user_ca.export_public_key())
        line = b"@cert-authority * " + self.host_ca.export_public_key().strip() + b"\n"
        known_hosts.write_bytes(line)


def _tls_ca(cluster: str, ca_type: str, now: dt.datetime, days: int) -> TLSAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
            x509.NameAttribute(NameOID.COMMON_NAME, cluster),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, str(abs(hash((cluster, ca_type))))),
        ]
    )
    not_after = now + dt.timedelta(days=days)
    not_before = min(now - dt.timedelta(minutes=1), not_after - dt.timedelta(days=1))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TLSAuthority(
        ca_type=ca_type,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        not_after=not_after,
        spki_sha256="sha256:" + hashlib.sha256(spki).hexdigest(),
        key=key,
        name=name,
    )
