"""kubernetes_asyncio writes a kubeconfig's `*-data` credentials (client key, client
certificate, CA) to temporary files it keeps for the life of the process; tpdump removes
them as soon as its client is built, also when the configuration fails, so none is left
while `tpdump kube`, a cluster dump with Kubernetes, or `tpdump serve` keeps running."""

from __future__ import annotations

import base64
import datetime
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio.config import kube_config

from tests.integration.helpers import simulated
from tpdump.collectors.kube import KubeApi, KubeCallError
from tpdump.config import load_file, resolve
from tpdump.kuberun import run_kube
from tpdump.logs import configure
from tpdump.runner import run_cluster

SCENARIO: dict[str, Any] = {
    "cluster_name": "kubetmp.example.com", "seed": 4,
    "groups": [{"name": "web", "count": 1, "services": ["node"]}],
    "kube": {"enabled": True, "namespaces": ["teleport-cluster"], "pods": 1},
}


def client_pair() -> tuple[bytes, bytes]:
    """A client key and a self-signed certificate for it (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tpdump-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with simulated(tmp_path_factory.mktemp("kubetmp"), SCENARIO) as st:
        yield st


def with_client_cert(state: Path, dest: Path, *, matching: bool = True) -> tuple[Path, bytes]:
    """The stand-in's kubeconfig plus a client key and certificate given as `*-data`;
    returns it and the key's PEM (what must never stay on disk)."""
    cfg = yaml.safe_load((state / "kubeconfig").read_text())
    key, cert = client_pair()
    if not matching:
        cert = client_pair()[1]  # another key's certificate: loading the pair fails
    user = cfg["users"][0]["user"]
    user["client-certificate-data"] = base64.b64encode(cert).decode()
    user["client-key-data"] = base64.b64encode(key).decode()
    dest.write_text(yaml.safe_dump(cfg))
    dest.chmod(0o600)
    return dest, key


def leftovers(tmp: Path, key: bytes) -> list[str]:
    """Credential files still on disk: kubernetes_asyncio's own list, and any file under
    the temporary directory holding the key."""
    found = [p for p in kube_config._temp_files.values() if os.path.exists(p)]
    for path in tmp.rglob("*"):
        if path.is_file() and key in path.read_bytes():
            found.append(str(path))
    return found


def open_under(tmp: Path) -> list[str]:
    """What this process still has open under `tmp` (deleted files included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{tmp}/"):
            found.append(target)
    return found


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary directory (kubernetes_asyncio writes to the default)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def watch_calls(monkeypatch: pytest.MonkeyPatch, tmp: Path, key: bytes) -> list[list[str]]:
    """What is left on disk at every Kubernetes API call of the run."""
    seen: list[list[str]] = []
    original = KubeApi._call

    async def recording(self: KubeApi, *args: Any) -> tuple[bytes, bool]:
        seen.append(leftovers(tmp, key))
        return await original(self, *args)

    monkeypatch.setattr(KubeApi, "_call", recording)
    return seen


def test_tpdump_kube_leaves_no_credential_file(state: Path, tmp_path: Path, private_tmp: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig, key = with_client_cert(state, tmp_path / "kubeconfig")
    seen = watch_calls(monkeypatch, private_tmp, key)
    settings = resolve({}, {"kubeconfig": str(kubeconfig), "quiet": True,
                            "output": f"{tmp_path}/out/"})
    outcome = anyio.run(run_kube, settings, configure(verbose=False, quiet=True,
                                                      fmt="console"), "test")
    assert int(outcome.exit_code) in (0, 1), outcome.report.get("kube")
    assert outcome.report["kube"]["objects"] > 0
    assert seen and all(s == [] for s in seen), seen[:1]
    assert leftovers(private_tmp, key) == []
    assert list(private_tmp.iterdir()) == []
    assert open_under(private_tmp) == []  # kubernetes_asyncio drops mkstemp's descriptor
    # a second run in the same process loads the same credentials again
    outcome = anyio.run(run_kube, settings, configure(verbose=False, quiet=True,
                                                      fmt="console"), "test")
    assert outcome.report["kube"]["objects"] > 0 and leftovers(private_tmp, key) == []
    assert open_under(private_tmp) == []


def test_cluster_dump_with_kube_leaves_no_credential_file(
        state: Path, tmp_path: Path, private_tmp: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig, key = with_client_cert(state, tmp_path / "kubeconfig")
    seen = watch_calls(monkeypatch, private_tmp, key)
    settings = resolve(load_file(str(state / "tpdump.yaml")),
                       {"kubeconfig": str(kubeconfig), "kube": True, "quiet": True,
                        "output": f"{tmp_path}/out/"})
    outcome = anyio.run(run_cluster, settings, configure(verbose=False, quiet=True,
                                                         fmt="console"), "test")
    assert outcome.report["kube"]["objects"] > 0
    assert seen and all(s == [] for s in seen), seen[:1]
    assert leftovers(private_tmp, key) == [] and list(private_tmp.iterdir()) == []


def test_a_failing_configuration_leaves_no_credential_file(
        state: Path, tmp_path: Path, private_tmp: Path) -> None:
    """A key that does not match its certificate: the client cannot be built (TPD500
    BadConfig); the files written for it are gone all the same."""
    kubeconfig, key = with_client_cert(state, tmp_path / "kubeconfig", matching=False)
    settings = resolve({}, {"kubeconfig": str(kubeconfig), "quiet": True})

    async def connect() -> None:
        with pytest.raises(KubeCallError) as err:
            await KubeApi.connect(settings)
        assert "unusable Kubernetes configuration" in err.value.text()

    anyio.run(connect)
    assert leftovers(private_tmp, key) == [] and list(private_tmp.iterdir()) == []


def test_a_cancelled_connect_leaves_no_credential_file(
        state: Path, tmp_path: Path, private_tmp: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while the client is being built (after the files were written)."""
    kubeconfig, key = with_client_cert(state, tmp_path / "kubeconfig")
    settings = resolve({}, {"kubeconfig": str(kubeconfig), "quiet": True})
    from kubernetes_asyncio import client

    class Stuck(client.ApiClient):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise anyio.get_cancelled_exc_class()()

    monkeypatch.setattr(client, "ApiClient", Stuck)

    async def connect() -> None:
        with anyio.move_on_after(5):
            await KubeApi.connect(settings)

    with pytest.raises(BaseException):  # noqa: B017 - the cancellation escapes
        anyio.run(connect)
    assert leftovers(private_tmp, key) == [] and list(private_tmp.iterdir()) == []
