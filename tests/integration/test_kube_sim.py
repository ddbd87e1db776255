"""`tpdump kube` and `tpdump cluster --kube` against the simulator's Kubernetes API stand-in,
checked against what the real kubectl sees of the same API (SPEC §6, issue 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import (
    Dump,
    find_archive,
    read_archive,
    run_dump,
    simulated,
    tpdump_cmd,
)

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None and os.environ.get("CI") != "true",
    reason="kubectl not installed (CI installs it)")

NAMESPACES = ["teleport-cluster", "teleport-agent"]
DENIED = ["leases", "certificates.cert-manager.io"]
SCENARIO: dict[str, Any] = {
    "cluster_name": "kube.example.com", "seed": 11,
    "groups": [{"name": "web", "count": 2, "services": ["node"]}],
    "secrets": {"plant": True},
    "kube": {"enabled": True, "namespaces": NAMESPACES, "pods": 3,
             "denied_resources": DENIED},
}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with simulated(tmp_path_factory.mktemp("kube"), SCENARIO) as st:
        yield st


def kubectl(state: Path, *args: str) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", str(state / "kubeconfig"), *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_kube(state: Path, out: Path, *extra: str) -> Dump:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        tpdump_cmd("kube", "--kubeconfig", str(state / "kubeconfig"), "-o", f"{out}/", "-q",
                   *extra),
        capture_output=True, text=True, timeout=120, env={**os.environ, "CI": "true"})
    archive = find_archive(out)
    return Dump(done.returncode, done.stdout, done.stderr, time.monotonic() - started,
                archive, read_archive(archive) if archive else {})


@pytest.fixture(scope="module")
def kube_dump(state: Path, tmp_path_factory: pytest.TempPathFactory) -> Dump:
    return run_kube(state, tmp_path_factory.mktemp("out"))


def canaries(state: Path) -> list[str]:
    return [c for c in (state / "canaries.txt").read_text().splitlines() if c.strip()]


def test_a_file_per_listable_type_and_error_files_for_denied(state: Path,
                                                            kube_dump: Dump) -> None:
    assert kube_dump.returncode == 0, kube_dump.stderr
    # What the real kubectl says can be listed in a namespace, named as RFD 77 names it.
    listable = kubectl(state, "api-resources", "--namespaced=true", "--verbs=list",
                       "-o", "name").split()
    assert len(listable) > 20
    names = {f"kube/kubectl_get_{n}" for n in listable}
    written = {p.rsplit(".", 1)[0] for p in kube_dump.files
               if p.startswith("kube/kubectl_get_")}
    assert written == names
    denied = {"kube/kubectl_get_leases.coordination.k8s.io",
              "kube/kubectl_get_certificates.cert-manager.io"}
    for name in names - denied:
        doc = yaml.safe_load(kube_dump.files[f"{name}.yaml"])
        assert doc["kind"] == "List" and isinstance(doc["items"], list), name
    for name in denied:
        assert f"{name}.yaml" not in kube_dump.files
        text = kube_dump.files[f"{name}.error"].decode()
        assert "403 Forbidden" in text and "TPD501" in text
        assert all(f"namespace {ns}" in text for ns in NAMESPACES)
    report = kube_dump.report
    assert set(report["kube"]["types_failed"]) == {
        "leases.coordination.k8s.io", "certificates.cert-manager.io"}
    assert {g["code"] for g in report["problems"]} == {"TPD501"}


def test_objects_equal_what_kubectl_gets(state: Path, kube_dump: Dump) -> None:
    for ns in NAMESPACES:
        real = yaml.safe_load(kubectl(state, "get", "deployments.apps,statefulsets.apps",
                                      "-n", ns, "-o", "yaml"))
        want = {(o["kind"], o["metadata"]["name"]) for o in real["items"]}
        for plural in ("deployments.apps", "statefulsets.apps"):
            doc = yaml.safe_load(kube_dump.files[f"kube/kubectl_get_{plural}.yaml"])
            got = {(o["kind"], o["metadata"]["name"]) for o in doc["items"]
                   if o["metadata"]["namespace"] == ns}
            want -= got
        assert not want, f"{ns}: missing {want}"
    pods = yaml.safe_load(kube_dump.files["kube/kubectl_get_pods.yaml"])["items"]
    assert all(p["apiVersion"] == "v1" and p["kind"] == "Pod" for p in pods)
    assert all("managedFields" not in p["metadata"] for p in pods)


def test_a_log_per_container_and_previous_when_restarted(state: Path,
                                                         kube_dump: Dump) -> None:
    expected: set[str] = set()
    for ns in NAMESPACES:
        pods = json.loads(kubectl(state, "get", "pods", "-n", ns, "-o", "json"))["items"]
        for pod in pods:
            for st in pod["status"]["containerStatuses"]:
                base = f"kube/kubectl_logs_{ns}_{pod['metadata']['name']}_{st['name']}"
                expected.add(f"{base}.log")
                if st["restartCount"]:
                    expected.add(f"{base}.previous.log")
    assert any(p.endswith(".previous.log") for p in expected)
    logs = {p for p in kube_dump.files if p.startswith("kube/kubectl_logs_")}
    assert logs == expected
    # Timestamps as `kubectl logs --timestamps` prints them, same lines.
    some = sorted(p for p in expected if p.endswith(".previous.log"))[0]
    _, ns, rest = some.split("_", 2)[0], some.split("_")[2], some
    name = rest[len(f"kube/kubectl_logs_{ns}_"):].rsplit("_", 1)[0]
    real = kubectl(state, "logs", "--timestamps", "--previous", "-n", ns, name,
                   "-c", "teleport")
    got = kube_dump.files[some].decode()
    assert [ln.split(" ", 1)[0] for ln in got.splitlines()] == \
        [ln.split(" ", 1)[0] for ln in real.splitlines()]


def test_no_planted_secret_anywhere(state: Path, kube_dump: Dump) -> None:
    planted = canaries(state)
    kube_canaries = [c for c in planted if "kube" in c.lower()]
    assert len(planted) >= 10 and kube_canaries
    blob = b"\0".join(kube_dump.files.values())
    leaked = [c for c in planted if c.encode() in blob]
    print(f"canaries checked: {len(planted)} in {len(kube_dump.files)} files")
    assert not leaked
    secrets = yaml.safe_load(kube_dump.files["kube/kubectl_get_secrets.yaml"])["items"]
    assert secrets
    for s in secrets:
        assert all(v == "<redacted by tpdump: Kubernetes Secret value>"
                   for v in s.get("data", {}).values()), s["metadata"]["name"]
    assert kube_dump.report["redactions"]["Kubernetes Secret value"] >= len(secrets)


def test_namespace_without_teleport_is_not_dumped_unless_named(
        state: Path, kube_dump: Dump, tmp_path: Path) -> None:
    def namespaces(d: Dump) -> set[str]:
        items = yaml.safe_load(d.files["kube/kubectl_get_deployments.apps.yaml"])["items"]
        return {o["metadata"]["namespace"] for o in items}

    assert "default" in kubectl(state, "get", "namespaces", "-o", "name").replace(
        "namespace/", "").split()
    assert namespaces(kube_dump) == {"teleport-cluster"}  # the agent is a StatefulSet
    assert set(kube_dump.json("kube/namespaces.json")) == set(NAMESPACES)
    named = run_kube(state, tmp_path, "--kube-namespace", "default")
    assert named.returncode == 0, named.stderr
    assert namespaces(named) == {"default"}
    assert named.json("kube/namespaces.json") == {"default": "named with --kube-namespace"}
    assert not any(p.startswith("kube/kubectl_logs_teleport") for p in named.files)


def test_newest_log_lines_kept_under_a_byte_cap(state: Path, tmp_path: Path) -> None:
    dump = run_kube(state, tmp_path, "--kube-log-bytes", "600", "--kube-namespace",
                    "teleport-cluster")
    assert dump.returncode == 0, dump.stderr
    name = next(p for p in dump.files if p.startswith("kube/kubectl_logs_teleport-cluster_")
                and p.endswith("_teleport.log"))
    pod = name[len("kube/kubectl_logs_teleport-cluster_"):].rsplit("_", 1)[0]
    real = kubectl(state, "logs", "--timestamps", "-n", "teleport-cluster", pod,
                   "-c", "teleport").splitlines()
    got = dump.files[name].decode().splitlines()
    assert 0 < len(got) < len(real) and len(dump.files[name]) <= 600
    assert got[-1].split(" ", 1)[0] == real[-1].split(" ", 1)[0]  # the newest line
    assert all(line.split(" ", 1)[0] in {r.split(" ", 1)[0] for r in real} for line in got)
    manifest = {e["path"]: e for e in dump.json("manifest.json")["files"]}
    assert manifest[name]["truncated"] is True
    assert dump.report["kube"]["logs_truncated"] >= 1


def test_cluster_dump_includes_kube_and_no_kube_leaves_it_out(state: Path,
                                                              tmp_path: Path) -> None:
    with_kube = run_dump(state, tmp_path / "a")
    assert with_kube.returncode == 0, with_kube.stderr
    assert "kube/kubectl_get_pods.yaml" in with_kube.files
    assert any(p.startswith("nodes/") for p in with_kube.files)
    assert "kube:" in with_kube.stdout and with_kube.report["kube"]["logs"] > 0
    without = run_dump(state, tmp_path / "b", "--no-kube")
    assert without.returncode == 0
    assert not any(p.startswith("kube/") for p in without.files)
    assert without.report["kube"] is None


def test_unusable_kubeconfig(state: Path, tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n"
                   "current-context: nowhere\nusers: []\n")
    alone = run_kube(state, tmp_path / "a", "--kubeconfig", str(bad))
    assert alone.returncode == 3 and alone.archive is not None
    assert alone.report["verdict"] == "FAILED"
    assert {g["code"] for g in alone.report["problems"]} == {"TPD500"}
    # In a cluster dump a broken Kubernetes part costs only itself.
    dump = run_dump(state, tmp_path / "b", "--kubeconfig", str(bad))
    assert dump.returncode == 1
    assert "TPD500" in {g["code"] for g in dump.report["problems"]}
    assert dump.report["nodes"]["ok"] == 2
    assert "kube/error.txt" in dump.files


def test_in_cluster_configuration(state: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The service account files a pod gets, and KUBERNETES_SERVICE_HOST/PORT."""
    import base64

    from tpdump import cli
    from tpdump.collectors import kube

    conf = yaml.safe_load((state / "kubeconfig").read_text())
    server = conf["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    token = tmp_path / "token"
    token.write_text(conf["users"][0]["user"]["token"])
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(conf["clusters"][0]["cluster"][
        "certificate-authority-data"]))
    monkeypatch.setattr(kube, "IN_CLUSTER_TOKEN", str(token))
    monkeypatch.setattr(kube, "IN_CLUSTER_CA", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    code = cli.main(["kube", "-q", "-o", f"{tmp_path}/out/", "--kube-namespace",
                     "teleport-cluster"])
    assert code == 0
    archive = find_archive(tmp_path / "out")
    assert archive is not None
    files = read_archive(archive)
    report = json.loads(files["report.json"])
    assert report["kube"]["context"] == "in-cluster"
    assert any(p.startswith("kube/kubectl_logs_teleport-cluster_") for p in files)
