"""deploy/: the systemd units pass `systemd-analyze verify`; the Kubernetes manifests are
read by the real kubectl; the RBAC rules grant every request tpdump's Kubernetes collector
makes and nothing more.

How "what tpdump uses" is found: `tpdump kube` runs in-process against the simulator's
Kubernetes API stand-in (real HTTPS, real kubernetes_asyncio client) with `KubeApi._call`
(the one place every API request goes through; it only ever sends GET) wrapped to record
each path and query. Each request is turned into Kubernetes authorization attributes (verb,
API group, resource, subresource, namespace, or non-resource URL) the way the API server's
request-info resolver does, and checked against the manifests' rules with the RBAC
matching rules. Conversely every (rule, verb) in the manifests must be needed by at least
one recorded request, and no rule may grant a verb other than get and list.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from tpdump.cli import parser
from tpdump.collectors.kube import KubeApi
from tpdump.config import resolve
from tpdump.kuberun import run_kube
from tpdump.logs import configure

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IN_CI = os.environ.get("CI") == "true"


# --- systemd ----------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not IN_CI,
                    reason="systemd-analyze not installed (CI installs systemd-container)")
def test_systemd_units_verify(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing under CI"
    exe = Path(sys.executable).parent / "tpdump"
    assert exe.exists(), "the tpdump entry point is not installed in this environment"
    units = sorted((DEPLOY / "systemd").iterdir())
    assert {u.name for u in units} >= {"tpdump-snapshot.service", "tpdump-snapshot.timer",
                                       "tpdump-serve.service"}
    for unit in units:  # the real path of tpdump here, so ExecStart= is checked too
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/tpdump",
                                                                   str(exe)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           *[str(tmp_path / u.name) for u in units]],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ours = [line for line in (done.stdout + done.stderr).splitlines()
            if "tpdump" in line]
    assert not ours, f"warnings about the units: {ours}"


def _exec_args(unit: Path) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.split("=", 1)[1])


def test_units_run_valid_tpdump_commands() -> None:
    for name, command in (("tpdump-snapshot.service", "snapshot"),
                          ("tpdump-serve.service", "serve")):
        argv = _exec_args(DEPLOY / "systemd" / name)
        args = parser().parse_args(argv[1:])
        assert args.command == command
        if command == "serve":
            assert args.listen.startswith("127.0.0.1:") and args.token_file
    timer = (DEPLOY / "systemd" / "tpdump-snapshot.timer").read_text()
    assert "Unit=tpdump-snapshot.service" in timer and "Persistent=true" in timer


# --- Kubernetes manifests -----------------------------------------------------------------
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def test_cronjob_runs_tpdump_snapshot_as_the_service_account() -> None:
    (sa,) = by_kind("ServiceAccount")
    (cron,) = by_kind("CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert cron["metadata"]["namespace"] == sa["metadata"]["namespace"]
    (container,) = pod["containers"]
    args = parser().parse_args(container["args"])
    assert container["command"] == ["tpdump"] and args.command == "snapshot"
    assert args.keep and args.config
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert args.dir in mounts and str(Path(args.config).parent) in mounts
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {d["metadata"]["name"] for d in by_kind("PersistentVolumeClaim")}
    for binding in (*by_kind("RoleBinding"), *by_kind("ClusterRoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tpdump",
                                        "namespace": sa["metadata"]["namespace"]}]
        kind = binding["roleRef"]["kind"]
        assert binding["roleRef"]["name"] in {d["metadata"]["name"] for d in by_kind(kind)}


@pytest.mark.skipif(shutil.which("kubectl") is None and not IN_CI,
                    reason="kubectl not installed (CI installs it)")
def test_kubectl_reads_the_manifests(sim_state: Path) -> None:
    """The real kubectl parses every manifest and maps every kind (against the
    stand-in's discovery; no schema: the stand-in serves no OpenAPI)."""
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(sim_state / "kubeconfig"), "create", "--dry-run=client",
         "--validate=false", "-o", "name", "-f", str(DEPLOY / "kubernetes")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(
        f"{_kubectl_kind(d)}/{d['metadata']['name']}" for d in manifests())


def _kubectl_kind(doc: dict[str, Any]) -> str:
    group = doc["apiVersion"].rpartition("/")[0]
    kind = doc["kind"].lower()
    return f"{kind}.{group}" if group else kind


# --- RBAC: what tpdump asks for vs what the manifests grant -------------------------------
@dataclass(frozen=True)
class Attrs:
    """Authorization attributes of one request (k8s.io/apiserver RequestInfo)."""

    verb: str
    path: str = ""  # non-resource URL
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)


def attributes(path: str, query: list[tuple[str, str]]) -> Attrs:
    """What the API server's request-info resolver makes of a GET."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
    if not rest:
        return Attrs("get", path=path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    watch = any(k == "watch" and v in ("1", "true") for k, v in query)
    if len(rest) == 1:
        return Attrs("watch" if watch else "list", group=group, resource=rest[0],
                     namespace=namespace)
    return Attrs("get", group=group, resource=rest[0],
                 subresource=rest[2] if len(rest) >= 3 else "", namespace=namespace)


def rule_allows(rule: dict[str, Any], a: Attrs) -> bool:
    """k8s.io/component-helpers/auth/rbac: VerbMatches, APIGroupMatches, ResourceMatches,
    NonResourceURLMatches."""
    if a.verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
        return False
    if not a.resource_request:
        return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                   for u in rule.get("nonResourceURLs", []))
    if "nonResourceURLs" in rule:
        return False
    groups = rule.get("apiGroups", [])
    if "*" not in groups and a.group not in groups:
        return False
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    for r in rule.get("resources", []):
        if r in ("*", combined):
            return True
        if a.subresource and r == f"*/{a.subresource}":
            return True
    return False


def grants(a: Attrs, namespaces: set[str]) -> list[tuple[str, int]]:
    """The (role name, rule index) pairs that allow `a` for the ServiceAccount. The Role
    is installed in every namespace tpdump dumps (deploy/kubernetes/rbac.yaml says so)."""
    found = []
    for role in by_kind("ClusterRole"):
        for i, rule in enumerate(role["rules"]):
            if rule_allows(rule, a):
                found.append((role["metadata"]["name"], i))
    if a.namespace and a.namespace in namespaces:
        for role in by_kind("Role"):
            for i, rule in enumerate(role["rules"]):
                if rule_allows(rule, a):
                    found.append((role["metadata"]["name"], i))
    return found


@pytest.fixture(scope="module")
def recorded(sim_state: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[list[Attrs], set[str]]:
    """Every request of one `tpdump kube` run against the stand-in."""
    calls: list[tuple[str, list[tuple[str, str]]]] = []
    original = KubeApi._call

    async def recording(self: KubeApi, path: str, query: Any, accept: str, cap: int,
                        keep_tail: bool) -> tuple[bytes, bool]:
        q = list(query)
        calls.append((path, q))
        return await original(self, path, q, accept, cap, keep_tail)

    out = tmp_path_factory.mktemp("kube-rbac")
    settings = resolve({}, {"kubeconfig": str(sim_state / "kubeconfig"), "quiet": True,
                            "output": f"{out}/"})
    KubeApi._call = recording  # type: ignore[method-assign]
    try:
        outcome = anyio.run(run_kube, settings, configure(verbose=False, quiet=True,
                                                          fmt="console"), "test")
    finally:
        KubeApi._call = original  # type: ignore[method-assign]
    assert int(outcome.exit_code) in (0, 1)
    namespaces = set(outcome.report["kube"]["namespaces"])
    assert namespaces, "the stand-in has Teleport namespaces"
    return [attributes(p, q) for p, q in calls], namespaces


def test_every_request_is_granted(recorded: tuple[list[Attrs], set[str]]) -> None:
    attrs, namespaces = recorded
    kinds = {(a.verb, a.resource or a.path.split("/")[1]) for a in attrs}
    # The run exercised every code path: discovery, the cluster-wide scans, lists, logs.
    assert ("get", "version") in kinds and ("get", "apis") in kinds
    assert any(a.resource == "pods" and not a.namespace and a.verb == "list" for a in attrs)
    assert any(a.group == "apps" and a.resource == "statefulsets" and not a.namespace
               for a in attrs)
    assert any(a.subresource == "log" and a.verb == "get" for a in attrs)
    assert any(a.resource == "secrets" and a.namespace for a in attrs)
    denied = sorted({a for a in attrs if not grants(a, namespaces)}, key=repr)
    assert not denied, f"requests tpdump makes that deploy/ does not grant: {denied}"


def test_nothing_more_is_granted(recorded: tuple[list[Attrs], set[str]]) -> None:
    attrs, namespaces = recorded
    used = {g for a in attrs for g in grants(a, namespaces)}
    for kind in ("ClusterRole", "Role"):
        for role in by_kind(kind):
            for i, rule in enumerate(role["rules"]):
                assert set(rule["verbs"]) <= {"get", "list"}, rule
                assert "*" not in rule["verbs"]
                assert (role["metadata"]["name"], i) in used, \
                    f"{kind} {role['metadata']['name']} rule {rule} is never needed"
                # Each verb of a rule is needed on its own.
                for verb in rule["verbs"]:
                    narrowed = {**rule, "verbs": [verb]}
                    assert any(rule_allows(narrowed, a) for a in attrs), (rule, verb)
                # Each listed non-resource URL and resource is needed.
                for url in rule.get("nonResourceURLs", []):
                    assert any(rule_allows({**rule, "nonResourceURLs": [url]}, a)
                               for a in attrs), url
                for res in rule.get("resources", []):
                    assert any(rule_allows({**rule, "resources": [res]}, a)
                               for a in attrs), res
    # Cluster-wide, only what finding Teleport's namespaces needs (no secrets there).
    cluster_wide = {(r, g) for role in by_kind("ClusterRole") for rule in role["rules"]
                    for r in rule.get("resources", []) for g in rule["apiGroups"]}
    assert cluster_wide == {("pods", ""), ("deployments", "apps"), ("statefulsets", "apps")}
    assert not by_kind("ClusterRole")[0].get("aggregationRule")


def test_rbac_evaluator_is_not_vacuous() -> None:
    """Writes, secrets cluster-wide, other namespaces, exec: all denied."""
    ns = {"teleport"}
    for a in (Attrs("create", group="", resource="pods", namespace="teleport"),
              Attrs("list", group="", resource="secrets"),
              Attrs("list", group="", resource="secrets", namespace="kube-system"),
              Attrs("get", group="", resource="secrets", namespace="teleport"),
              Attrs("get", group="", resource="pods", subresource="exec",
                    namespace="teleport"),
              Attrs("delete", group="apps", resource="deployments", namespace="teleport"),
              Attrs("get", path="/metrics"), Attrs("get", path="/healthz")):
        assert not grants(a, ns), a
    assert grants(Attrs("list", group="", resource="secrets", namespace="teleport"), ns)
