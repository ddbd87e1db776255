"""The Kubernetes API stand-in, driven by the real kubectl (SPEC §6, §14)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from simharness import Sim, start_sim, stop_sim

KUBE_SCENARIO = """
cluster_name: kube.example.com
seed: 11
groups: [{name: n, count: 1}]
secrets: {plant: true}
kube:
  enabled: true
  namespaces: [teleport-cluster, teleport-agent]
  pods: 3
  denied_resources: [secrets]
"""

# Outside CI a machine without kubectl skips; under CI=true (.ci/lab-setup.sh installs it)
# a missing kubectl fails the tests instead.
pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None and os.environ.get("CI") != "true",
    reason="kubectl not installed (CI installs it)")


@pytest.fixture(scope="module")
def kube_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    sim = start_sim(tmp_path_factory.mktemp("kube"), KUBE_SCENARIO)
    try:
        yield sim
    finally:
        stop_sim(sim)


def kubectl(sim: Sim, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(sim.state / "kubeconfig"),
         "--cache-dir", str(sim.state / "kubecache"), *args],
        capture_output=True, text=True, timeout=20, check=False,
        env={**os.environ, "HOME": str(sim.state)})


def pod_names(sim: Sim, ns: str) -> list[str]:
    out = kubectl(sim, "get", "pods", "-n", ns, "-o", "name")
    assert out.returncode == 0, out.stderr
    return [line.removeprefix("pod/") for line in out.stdout.split()]


def test_api_resources_include_crd(kube_sim: Sim) -> None:
    out = kubectl(kube_sim, "api-resources", "--namespaced=true", "--verbs=list", "-o", "name")
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    for want in ("pods", "secrets", "configmaps", "events", "deployments.apps",
                 "statefulsets.apps", "jobs.batch", "cronjobs.batch",
                 "roles.rbac.authorization.k8s.io", "poddisruptionbudgets.policy",
                 "leases.coordination.k8s.io", "events.events.k8s.io",
                 "certificates.cert-manager.io"):
        assert want in names
    assert "namespaces" not in names and "pods/log" not in names


def test_namespaces_include_one_without_teleport(kube_sim: Sim) -> None:
    out = kubectl(kube_sim, "get", "namespaces", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert {"namespace/default", "namespace/teleport-cluster",
            "namespace/teleport-agent"} <= set(out.stdout.split())
    pods = pod_names(kube_sim, "default")
    assert pods and all(p.startswith("nginx-") for p in pods)


def test_pods_yaml_have_teleport_container(kube_sim: Sim) -> None:
    out = kubectl(kube_sim, "get", "pods", "-n", "teleport-cluster", "-o", "yaml")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["kind"] == "List" and len(doc["items"]) == 3
    for pod in doc["items"]:
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "teleport-cluster"
        assert [c["name"] for c in pod["spec"]["containers"]] == ["teleport"]
    comps = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"]
                   for p in doc["items"])
    assert comps == ["auth", "proxy", "proxy"]
    agent = yaml.safe_load(kubectl(kube_sim, "get", "statefulsets", "-n", "teleport-agent",
                                   "-o", "yaml").stdout)
    assert [s["metadata"]["name"] for s in agent["items"]] == ["teleport-kube-agent"]
    cms = yaml.safe_load(kubectl(kube_sim, "get", "configmaps", "-n", "teleport-cluster",
                                 "-o", "yaml").stdout)
    assert any("teleport.yaml" in (c.get("data") or {}) for c in cms["items"])
    jobs = kubectl(kube_sim, "get", "jobs.batch", "-n", "teleport-cluster", "-o", "json")
    assert jobs.returncode == 0 and json.loads(jobs.stdout)["items"] == []


def test_logs_with_timestamps_and_previous(kube_sim: Sim) -> None:
    pods = pod_names(kube_sim, "teleport-cluster")
    auth = next(p for p in pods if "-auth-" in p)
    out = kubectl(kube_sim, "logs", "--timestamps", "-n", "teleport-cluster", auth,
                  "-c", "teleport")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) > 10
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")
    assert all(stamp.match(line) for line in lines)
    canaries = set((kube_sim.state / "canaries.txt").read_text().split())
    bearer = re.search(r"Bearer (\S+?)\]", out.stdout)
    assert bearer and bearer.group(1) in canaries
    tail = kubectl(kube_sim, "logs", "-n", "teleport-cluster", auth, "--tail", "2")
    assert len(tail.stdout.splitlines()) == 2 and not stamp.match(tail.stdout)
    # The auth pod never restarted: the real 400 error.
    prev = kubectl(kube_sim, "logs", "--previous", "-n", "teleport-cluster", auth,
                   "-c", "teleport")
    assert prev.returncode == 1
    assert f'previous terminated container "teleport" in pod "{auth}" not found' in prev.stderr
    # The first proxy pod restarted.
    doc = json.loads(kubectl(kube_sim, "get", "pods", "-n", "teleport-cluster",
                             "-o", "json").stdout)
    restarted = [p["metadata"]["name"] for p in doc["items"]
                 if p["status"]["containerStatuses"][0]["restartCount"] > 0]
    assert restarted
    prev = kubectl(kube_sim, "logs", "--previous", "--timestamps", "-n", "teleport-cluster",
                   restarted[0], "-c", "teleport")
    assert prev.returncode == 0, prev.stderr
    assert "Critical service exited" in prev.stdout.splitlines()[-1]


def test_denied_resource_is_forbidden(kube_sim: Sim) -> None:
    out = kubectl(kube_sim, "get", "secrets", "-n", "teleport-cluster")
    assert out.returncode == 1
    assert ('secrets is forbidden: User "system:serviceaccount:tpdump:tpdump" cannot list '
            'resource "secrets" in API group "" in the namespace "teleport-cluster"'
            in out.stderr)


def _request(sim: Sim, path: str, token: str | None) -> tuple[int, bytes]:
    cfg = yaml.safe_load((sim.state / "kubeconfig").read_text())
    cluster = cfg["clusters"][0]["cluster"]
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    req = urllib.request.Request(cluster["server"] + path)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_raw_api_errors_and_secret_canaries(kube_sim: Sim) -> None:
    cfg = yaml.safe_load((kube_sim.state / "kubeconfig").read_text())
    token = cfg["users"][0]["user"]["token"]
    code, body = _request(kube_sim, "/api/v1/namespaces", None)
    assert code == 401 and json.loads(body)["reason"] == "Unauthorized"
    code, body = _request(kube_sim, "/api/v1/namespaces", "wrong")
    assert code == 401
    code, body = _request(kube_sim, "/no/such/path", token)
    assert code == 404 and json.loads(body)["kind"] == "Status"
    code, _ = _request(kube_sim, "/openapi/v3", token)
    assert code == 404
    # Denied everywhere, in every namespace and across namespaces.
    code, body = _request(kube_sim, "/api/v1/namespaces/teleport-cluster/secrets", token)
    assert code == 403 and json.loads(body)["reason"] == "Forbidden"
    code, body = _request(kube_sim, "/api/v1/secrets", token)
    assert code == 403


def test_secret_values_are_canaries(tmp_path: Path) -> None:
    from tpdump.sim.cluster import SimCluster
    from tpdump.sim.kube import KubeWorld
    from tpdump.sim.scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(KUBE_SCENARIO.replace("denied_resources: [secrets]",
                                          "denied_resources: []"))
    cluster = SimCluster(load_scenario(path), 99)
    world = KubeWorld(cluster)
    secrets = world.items("", "secrets", None)
    assert secrets
    values = [v for s in secrets for v in s["data"].values()]
    assert all(v in cluster.canaries.items for v in values)
    assert all(base64.b64decode(v).decode() in cluster.canaries.items for v in values)
