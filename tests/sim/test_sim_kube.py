"""The Kubernetes API stand-in, driven by the real kubectl (SPEC §6, §14)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _token(sim: Sim) -> str:
    return str(yaml.safe_load((sim.state / "kubeconfig").read_text())["users"][0]["user"]
               ["token"])


def _get(sim: Sim, path: str) -> tuple[int, Any]:
    code, body = _request(sim, path, _token(sim))
    return code, json.loads(body)


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items]


def _untoken(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _all_pages(sim: Sim, path: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Follow the continue tokens of a list: (all items, number of pages)."""
    sep = "&" if "?" in path else "?"
    items: list[dict[str, Any]] = []
    token, pages = "", 0
    while True:
        query = f"limit={limit}" + (f"&continue={urllib.parse.quote(token)}" if token else "")
        code, doc = _get(sim, f"{path}{sep}{query}")
        assert code == 200, doc
        pages += 1
        assert len(doc["items"]) <= limit
        items += doc["items"]
        token = doc["metadata"].get("continue", "")
        if not token:
            assert "remainingItemCount" not in doc["metadata"]
            return items, pages
        assert pages < 50


def test_kubectl_chunked_list_is_the_whole_list(kube_sim: Sim) -> None:
    whole = kubectl(kube_sim, "get", "pods", "-A", "-o", "name")
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout.split()) == 7  # nginx, 3 teleport-cluster, 3 teleport-kube-agent
    chunked = kubectl(kube_sim, "get", "pods", "-A", "--chunk-size=2", "-o", "name", "-v=6")
    assert chunked.returncode == 0, chunked.stderr
    assert chunked.stdout.split() == whole.stdout.split()
    # kubectl really paged: 4 requests of 2, the last 3 with the previous page's token.
    gets = re.findall(r"GET \S+/api/v1/pods\?(\S+) 200", chunked.stderr)
    assert len(gets) == 4 and all("limit=2" in g for g in gets)
    assert ["continue=" in g for g in gets] == [False, True, True, True]
    # Cluster-scoped and namespaced lists page too.
    for args in (["namespaces"], ["configmaps", "-n", "teleport-cluster"]):
        plain = kubectl(kube_sim, "get", *args, "-o", "name")
        paged = kubectl(kube_sim, "get", *args, "--chunk-size=1", "-o", "name", "-v=6")
        assert paged.returncode == 0, paged.stderr
        assert paged.stdout.split() == plain.stdout.split() and len(plain.stdout.split()) > 2
        assert paged.stderr.count("continue=") == len(plain.stdout.split()) - 1


def test_list_paging_metadata(kube_sim: Sim) -> None:
    code, full = _get(kube_sim, "/api/v1/pods")
    assert code == 200 and "continue" not in full["metadata"] and len(full["items"]) == 7
    code, first = _get(kube_sim, "/api/v1/pods?limit=2")
    assert code == 200 and len(first["items"]) == 2
    meta = first["metadata"]
    assert meta["resourceVersion"] and meta["continue"] and meta["remainingItemCount"] == 5
    # The token is the real API server's: URL-safe base64 of {"v", "rv", "start"}.
    raw = _untoken(meta["continue"])
    assert raw["v"] == "meta.k8s.io/v1" and raw["rv"] > 0 and raw["start"]
    code, second = _get(kube_sim, "/api/v1/pods?limit=2&continue=" + meta["continue"])
    assert code == 200 and second["metadata"]["remainingItemCount"] == 3
    assert _names(first["items"] + second["items"]) == _names(full["items"])[:4]
    items, pages = _all_pages(kube_sim, "/api/v1/pods", 2)
    assert _names(items) == _names(full["items"]) and pages == 4
    # A limit that covers the rest: no continue.
    code, doc = _get(kube_sim, "/api/v1/pods?limit=7")
    assert code == 200 and len(doc["items"]) == 7 and "continue" not in doc["metadata"]
    # Namespaced, cluster-scoped and other groups.
    for path in ("/api/v1/namespaces/teleport-cluster/pods", "/api/v1/namespaces",
                 "/apis/events.k8s.io/v1/events", "/api/v1/namespaces/teleport-agent/events"):
        code, whole = _get(kube_sim, path)
        assert code == 200 and len(whole["items"]) > 2, path
        items, pages = _all_pages(kube_sim, path, 2)
        assert _names(items) == _names(whole["items"]), path
        assert pages == (len(whole["items"]) + 1) // 2
    # With a label selector the remaining count is unknown: continue, but no count.
    code, sel = _get(kube_sim, "/api/v1/pods?limit=1&labelSelector=app.kubernetes.io%2Fname")
    assert code == 200 and len(sel["items"]) == 1
    assert sel["metadata"]["continue"] and "remainingItemCount" not in sel["metadata"]
    items, _ = _all_pages(kube_sim, "/api/v1/pods?labelSelector=app.kubernetes.io%2Fname", 1)
    assert len(items) == 6 and not any(n.startswith("default/") for n in _names(items))


def test_bad_continue_tokens(kube_sim: Sim) -> None:
    def token(doc: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    _, first = _get(kube_sim, "/api/v1/pods?limit=2")
    good = _untoken(first["metadata"]["continue"])
    # Undecodable or not a token: 400 BadRequest, the real messages.
    for bad in ("!!!garbled!!!", token(["x"]), token({**good, "v": "meta.k8s.io/v9"}),
                token({**good, "rv": 0}), token({**good, "start": ""})):
        code, doc = _get(kube_sim, f"/api/v1/pods?limit=2&continue={urllib.parse.quote(bad)}")
        assert code == 400, bad
        assert doc["kind"] == "Status" and doc["reason"] == "BadRequest" and doc["code"] == 400
        assert doc["message"].startswith("invalid continue token: continue key is not valid")
    # A well-formed token of another resourceVersion: 410 Expired, as for a compacted one.
    stale = token({**good, "rv": good["rv"] - 100})
    code, doc = _get(kube_sim, f"/api/v1/namespaces/teleport-cluster/pods?continue={stale}")
    assert code == 410 and doc["reason"] == "Expired" and doc["code"] == 410
    assert doc["message"].startswith("The provided continue parameter is too old to display a "
                                      "consistent list result.")
    out = kubectl(kube_sim, "get", "--raw", f"/api/v1/pods?limit=1&continue={stale}")
    assert out.returncode == 1 and "too old to display a consistent list" in out.stderr


def test_set_based_label_selectors(kube_sim: Sim) -> None:
    def pods(selector: str) -> set[str]:
        out = kubectl(kube_sim, "get", "pods", "-A", "-l", selector, "-o", "name")
        assert out.returncode == 0, out.stderr
        return set(out.stdout.split())

    every = pods("")
    teleport = pods("app.kubernetes.io/name in (teleport-cluster,teleport-kube-agent)")
    assert len(teleport) == 6 and not any("nginx" in p for p in teleport)
    assert teleport == pods("app.kubernetes.io/name in ( teleport-kube-agent , "
                            "teleport-cluster )")
    assert pods("app.kubernetes.io/name in (teleport-cluster)") == \
        {p for p in teleport if "teleport-cluster-" in p}
    assert pods("app.kubernetes.io/name notin (teleport-cluster,teleport-kube-agent)") == \
        every - teleport
    # Commas inside the parentheses do not split terms; terms combine with AND.
    proxies = pods("app.kubernetes.io/name in (teleport-cluster,teleport-kube-agent),"
                   "app.kubernetes.io/component notin (auth,x),app.kubernetes.io/component")
    assert len(proxies) == 2 and all("-proxy-" in p for p in proxies)
    assert pods("app.kubernetes.io/component!=auth,app.kubernetes.io/name==teleport-cluster") \
        == proxies
    assert pods("!app.kubernetes.io/name") == every - teleport
    assert pods("app=nginx") == every - teleport
    assert pods("apps.kubernetes.io/pod-index>0,apps.kubernetes.io/pod-index<2") == \
        {"pod/teleport-kube-agent-1"}
    # A selector that does not parse: the real 400.
    code, doc = _get(kube_sim, "/api/v1/pods?labelSelector=" + urllib.parse.quote("a in (b"))
    assert code == 400 and doc["reason"] == "BadRequest"
    code, doc = _get(kube_sim, "/api/v1/pods?labelSelector=" + urllib.parse.quote("a in ()"))
    assert code == 400


def _stamp(line: str) -> dt.datetime:
    return dt.datetime.fromisoformat(line.split(" ", 1)[0])


def test_logs_since(kube_sim: Sim) -> None:
    doc = json.loads(kubectl(kube_sim, "get", "pods", "-n", "teleport-cluster",
                             "-o", "json").stdout)
    pod = next(p for p in doc["items"]
               if p["status"]["containerStatuses"][0]["restartCount"] > 0)
    name, cstatus = pod["metadata"]["name"], pod["status"]["containerStatuses"][0]
    base = ("logs", "-n", "teleport-cluster", name, "-c", "teleport")
    full = kubectl(kube_sim, *base, "--timestamps").stdout.splitlines()
    assert len(full) == 30
    # The log is recent: the last line about a minute before the simulator started; the
    # previous container's lines end before it terminated, minutes before the restart.
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=55) < now - _stamp(full[-1]) < dt.timedelta(minutes=10)
    started = dt.datetime.fromisoformat(cstatus["state"]["running"]["startedAt"])
    assert started <= _stamp(full[0])
    prev = kubectl(kube_sim, *base, "--previous", "--timestamps").stdout.splitlines()
    finished = dt.datetime.fromisoformat(cstatus["lastState"]["terminated"]["finishedAt"])
    assert _stamp(prev[-1]) <= finished < started - dt.timedelta(minutes=2)
    assert [_stamp(x) for x in full] == sorted(_stamp(x) for x in full)

    assert kubectl(kube_sim, *base, "--since=1s").stdout == ""
    assert kubectl(kube_sim, *base, "--since=24h", "--timestamps").stdout.splitlines() == full
    plain = kubectl(kube_sim, *base, "--since=24h").stdout.splitlines()
    assert plain == [x.split(" ", 1)[1] for x in full]
    assert kubectl(kube_sim, *base, "--previous", "--since=5m").stdout == ""
    assert len(kubectl(kube_sim, *base, "--previous", "--since=1h").stdout.splitlines()) == 12
    # sinceSeconds in the middle of the log: some lines, not all.
    k = 15
    secs = int((dt.datetime.now(dt.UTC) - _stamp(full[k])).total_seconds()) + 1
    mid = kubectl(kube_sim, *base, f"--since={secs}s", "--timestamps").stdout.splitlines()
    assert 0 < len(mid) < len(full) and len(mid) >= len(full) - k - 2
    assert mid == full[len(full) - len(mid):]
    # sinceTime (kubectl sends whole seconds): from that second on.
    since = _stamp(full[k]).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = kubectl(kube_sim, *base, f"--since-time={since}", "--timestamps")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == full[k:]
    # tailLines first, then since (as the kubelet).
    assert kubectl(kube_sim, *base, "--tail=3", f"--since-time={since}").stdout.splitlines() \
        == [x.split(" ", 1)[1] for x in full[-3:]]
    # The real errors.
    path = f"/api/v1/namespaces/teleport-cluster/pods/{name}/log?container=teleport"
    code, doc = _get(kube_sim, path + "&sinceSeconds=0")
    assert code == 422 and doc["reason"] == "Invalid"
    assert doc["details"]["causes"][0]["field"] == "sinceSeconds"
    code, doc = _get(kube_sim, path + "&sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z")
    assert code == 422 and "at most one of `sinceTime` or `sinceSeconds`" in doc["message"]
    code, doc = _get(kube_sim, path + "&sinceTime=yesterday")
    assert code == 400 and doc["reason"] == "BadRequest"


def test_events_carry_times_counts_and_objects(kube_sim: Sim) -> None:
    out = kubectl(kube_sim, "get", "events", "-A", "-o", "json")
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)["items"]
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in json.loads(
        kubectl(kube_sim, "get", "pods", "-A", "-o", "json").stdout)["items"]}
    assert len(events) >= 4 * len(pods)
    for ev in events:
        assert ev["kind"] == "Event" and ev["type"] in ("Normal", "Warning")
        assert ev["reason"] and ev["message"]
        assert {"firstTimestamp", "lastTimestamp", "eventTime"} <= set(ev)
        obj = ev["involvedObject"]
        pod = pods[(obj["namespace"], obj["name"])]
        assert obj["kind"] == "Pod" and obj["uid"] == pod["metadata"]["uid"]
        if ev["reason"] == "Scheduled":
            # New-style (the scheduler): eventTime, no count, no first/last timestamps.
            assert ev["eventTime"] and ev["firstTimestamp"] is None and "count" not in ev
            assert ev["reportingComponent"] == "default-scheduler"
            continue
        first = dt.datetime.fromisoformat(ev["firstTimestamp"])
        last = dt.datetime.fromisoformat(ev["lastTimestamp"])
        assert first <= last <= dt.datetime.now(dt.UTC) and ev["count"] >= 1
        assert ev["eventTime"] is None and ev["source"]["component"] == "kubelet"
        assert obj["fieldPath"] == "spec.containers{teleport}" or obj["name"].startswith("nginx")
    backoffs = [e for e in events if e["reason"] == "BackOff"]
    restarted = {k: p for k, p in pods.items()
                 if p["status"]["containerStatuses"][0]["restartCount"]}
    assert len(backoffs) == len(restarted) == 2
    for ev in backoffs:
        pod = restarted[(ev["involvedObject"]["namespace"], ev["involvedObject"]["name"])]
        assert ev["type"] == "Warning"
        assert ev["count"] == pod["status"]["containerStatuses"][0]["restartCount"]
    # kubectl events sorts and prints them from these fields.
    warn = kubectl(kube_sim, "events", "-A", "--types=Warning")
    assert warn.returncode == 0, warn.stderr
    assert warn.stdout.count("BackOff") == 2 and "(x3 over" in warn.stdout
    new = json.loads(kubectl(kube_sim, "get", "events.events.k8s.io", "-A", "-o",
                             "json").stdout)["items"]
    assert len(new) == len(events)
    for ev in new:
        assert ev["regarding"]["kind"] == "Pod" and ev["note"] and ev["reason"]
        assert ev["eventTime"] or (ev["deprecatedLastTimestamp"] and ev["deprecatedCount"])
