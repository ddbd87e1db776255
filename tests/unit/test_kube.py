"""The Kubernetes collector's parts: bounded reads, deadlines, the concurrency bound,
namespace detection, and what is stripped from objects."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from tpdump.collectors.kube import (
    KubeApi,
    KubeCallError,
    KubeCollector,
    KubeSummary,
    ResourceType,
    _containers,
    _read_capped,
    events_table,
    teleport_reason,
)
from tpdump.config import resolve
from tpdump.redact import Redactor


class Stream:
    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self.data = data
        self.chunk = chunk

    async def read(self, n: int = -1) -> bytes:
        n = min(n if n > 0 else self.chunk, self.chunk)
        out, self.data = self.data[:n], self.data[n:]
        return out


class Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.content = Stream(body, 4096)
        self.released = False

    def release(self) -> None:
        self.released = True


class FakeClient:
    """Answers call_api like kubernetes_asyncio's ApiClient with _preload_content=False."""

    def __init__(self, answers: dict[str, tuple[int, Any]], delay: float = 0.0,
                 hang: frozenset[str] = frozenset()) -> None:
        self.answers = answers
        self.delay = delay
        self.hang = hang
        self.in_flight = 0
        self.peak = 0
        self.paths: list[str] = []

    async def call_api(self, path: str, method: str, **kw: Any) -> Response:
        assert method == "GET"
        self.paths.append(path)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if path in self.hang:
                await anyio.sleep(3600)
            await anyio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        status, body = self.answers.get(path, (404, {"kind": "Status", "reason": "NotFound",
                                                     "message": "not found"}))
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Response(status, raw)

    async def close(self) -> None:
        pass


def lines(n: int) -> bytes:
    return b"".join(b"2026-11-26T10:00:%02d.000000000Z line %d\n" % (i % 60, i)
                    for i in range(n))


def test_read_capped_keeps_the_newest_whole_lines() -> None:
    data = lines(200)
    got, cut = anyio.run(_read_capped, Stream(data), 500, True)
    assert cut and len(got) <= 500
    assert data.endswith(got)
    assert got.startswith(b"2026-")  # starts on a line boundary
    got, cut = anyio.run(_read_capped, Stream(data), len(data), True)
    assert (got, cut) == (data, False)


def test_read_capped_head_for_json() -> None:
    got, cut = anyio.run(_read_capped, Stream(b"x" * 100), 30, False)
    assert (got, cut) == (b"x" * 30, True)
    got, cut = anyio.run(_read_capped, Stream(b"x" * 30), 30, False)
    assert (got, cut) == (b"x" * 30, False)


def test_status_errors_and_deadline() -> None:
    client = FakeClient({"/api/v1/secrets": (403, {"kind": "Status", "reason": "Forbidden",
                                                   "message": "secrets is forbidden"})},
                        hang=frozenset({"/slow"}))
    api = KubeApi(client, concurrency=2, timeout=0.2)

    async def main() -> None:
        with pytest.raises(KubeCallError) as denied:
            await api.get_json("/api/v1/secrets")
        assert (denied.value.status, denied.value.code) == (403, "TPD501")
        assert "secrets is forbidden" in denied.value.text()
        with pytest.raises(KubeCallError) as missing:
            await api.get_json("/nope")
        assert missing.value.code == "TPD502"
        started = anyio.current_time()
        with pytest.raises(KubeCallError) as slow:
            await api.get_json("/slow")
        assert slow.value.code == "TPD503"
        assert anyio.current_time() - started < 2

    anyio.run(main)


def test_api_calls_never_exceed_the_concurrency_bound() -> None:
    answers = {f"/p{i}": (200, {"items": []}) for i in range(40)}
    client = FakeClient(answers, delay=0.01)
    api = KubeApi(client, concurrency=3, timeout=5)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(api.get_json, f"/p{i}")

    anyio.run(main)
    assert client.peak == 3 and api.calls == 40


def test_list_all_follows_continue_tokens() -> None:
    answers = {"/api/v1/pods": (200, {"items": [{"n": 1}], "metadata": {"continue": "x"}})}
    pages = iter([{"items": [{"n": 1}], "metadata": {"continue": "t1"}},
                  {"items": [{"n": 2}], "metadata": {"continue": "t2"}},
                  {"items": [{"n": 3}], "metadata": {}}])
    queries: list[list[tuple[str, str]]] = []

    class Paged(FakeClient):
        async def call_api(self, path: str, method: str, **kw: Any) -> Response:
            queries.append(kw["query_params"])
            return Response(200, json.dumps(next(pages)).encode())

    api = KubeApi(Paged(answers), concurrency=2, timeout=5)
    _, items = anyio.run(api.list_all, "/api/v1/pods")
    assert [i["n"] for i in items] == [1, 2, 3]
    assert ("continue", "t1") in queries[1] and ("continue", "t2") in queries[2]
    assert all(("limit", "500") in q for q in queries)


def pod(name: str, labels: dict[str, str], containers: list[str],
        restarts: dict[str, int] | None = None) -> dict[str, Any]:
    restarts = restarts or {}
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"containerStatuses": [{"name": c, "restartCount": restarts.get(c, 0)}
                                             for c in containers]}}


def test_teleport_pods_are_recognised() -> None:
    assert teleport_reason(pod("a", {"app.kubernetes.io/name": "teleport-cluster"}, ["x"]))
    assert teleport_reason(pod("a", {"app": "teleport-kube-agent"}, ["x"]))
    assert teleport_reason(pod("a", {"helm.sh/chart": "teleport-kube-agent-17.4.2"}, ["x"]))
    assert teleport_reason(pod("a", {}, ["sidecar", "teleport"])) == \
        "a container named teleport"
    assert teleport_reason(pod("a", {"app": "nginx"}, ["nginx"])) is None
    assert teleport_reason(pod("a", {"app.kubernetes.io/name": "teleport-clusterx"},
                               ["x"])) is None


def test_containers_and_restarts() -> None:
    p = pod("a", {}, ["teleport", "side"], {"teleport": 2})
    p["spec"]["initContainers"] = [{"name": "init"}]
    assert _containers(p) == [("init", False), ("teleport", True), ("side", False)]


def collector(redactor: Redactor) -> KubeCollector:
    settings = resolve({}, {})
    return KubeCollector(KubeApi(FakeClient({}), concurrency=1, timeout=1), None,  # type: ignore[arg-type]
                         redactor, settings, KubeSummary())


def test_secret_values_never_kept_keys_are() -> None:
    r = Redactor()
    secret = {"metadata": {"name": "s", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"k":"c2VjcmV0"}}'},
        "managedFields": [{"manager": "kubectl"}]},
        "type": "Opaque", "data": {"k": "c2VjcmV0", "k2": "eA=="},
        "stringData": {"plain": "hunter2"}}
    out = collector(r).clean(ResourceType("", "v1", "secrets", "Secret"), secret)
    text = json.dumps(out)
    assert "c2VjcmV0" not in text and "hunter2" not in text and "eA==" not in text
    assert set(out["data"]) == {"k", "k2"} and set(out["stringData"]) == {"plain"}
    assert out["apiVersion"] == "v1" and out["kind"] == "Secret"
    assert "managedFields" not in out["metadata"]
    assert r.counts["Kubernetes Secret value"] == 4


def test_configmap_teleport_yaml_and_env_secrets_stripped() -> None:
    r = Redactor()
    cm = {"metadata": {"name": "c"}, "data": {
        "teleport.yaml": "teleport:\n  auth_token: canary-abc\n  nodename: n1\n",
        "note": "Authorization: Bearer canaryBEARER123456"}}
    out = collector(r).clean(ResourceType("", "v1", "configmaps", "ConfigMap"), cm)
    assert "canary-abc" not in out["data"]["teleport.yaml"]
    assert "nodename: n1" in out["data"]["teleport.yaml"]
    assert "canaryBEARER123456" not in out["data"]["note"]
    dep = {"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{
        "name": "teleport", "env": [{"name": "TELEPORT_JOIN_TOKEN", "value": "canary-env"},
                                    {"name": "LOG_LEVEL", "value": "debug"},
                                    {"name": "FROM", "valueFrom": {"secretKeyRef": {
                                        "name": "x", "key": "y"}}}]}]}}}}
    out = collector(r).clean(ResourceType("apps", "v1", "deployments", "Deployment"), dep)
    env = out["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["value"] != "canary-env" and env[1]["value"] == "debug"
    assert env[2]["valueFrom"]["secretKeyRef"] == {"name": "x", "key": "y"}


def test_events_table_sorted_by_time() -> None:
    r = Redactor()
    events = [
        {"metadata": {"namespace": "b"}, "lastTimestamp": "2026-11-26T10:00:02Z",
         "type": "Warning", "reason": "BackOff", "count": 3,
         "involvedObject": {"kind": "Pod", "name": "p2"}, "message": "Back-off"},
        {"metadata": {"namespace": "a"}, "lastTimestamp": "2026-11-26T10:00:01Z",
         "type": "Normal", "reason": "Pulled", "involvedObject": {"kind": "Pod",
                                                                   "name": "p1"},
         "message": "token=canarytok12345 pulled"},
    ]
    table = events_table(events, r).splitlines()
    assert table[0].startswith("LAST SEEN")
    assert [row.split("\t")[4] for row in table[1:]] == ["pod/p1", "pod/p2"]
    assert "canarytok12345" not in "\n".join(table)


def test_discovery_keeps_namespaced_listable_types_only() -> None:
    answers: dict[str, tuple[int, Any]] = {
        "/api": (200, {"versions": ["v1"]}),
        "/apis": (200, {"groups": [
            {"name": "apps", "preferredVersion": {"version": "v1"}},
            {"name": "metrics.k8s.io", "preferredVersion": {"version": "v1beta1"}}]}),
        "/api/v1": (200, {"resources": [
            {"name": "pods", "kind": "Pod", "namespaced": True, "verbs": ["get", "list"]},
            {"name": "pods/log", "kind": "Pod", "namespaced": True, "verbs": ["get"]},
            {"name": "nodes", "kind": "Node", "namespaced": False, "verbs": ["list"]},
            {"name": "bindings", "kind": "Binding", "namespaced": True,
             "verbs": ["create"]}]}),
        "/apis/apps/v1": (200, {"resources": [
            {"name": "deployments", "kind": "Deployment", "namespaced": True,
             "verbs": ["list"]}]}),
        "/apis/metrics.k8s.io/v1beta1": (503, {"kind": "Status",
                                               "reason": "ServiceUnavailable",
                                               "message": "the server is currently unable"}),
    }
    written: dict[str, str] = {}

    class Archive:
        async def add(self, path: str, data: str | bytes, **kw: Any) -> str:
            written[path] = data if isinstance(data, str) else data.decode()
            return path

    c = KubeCollector(KubeApi(FakeClient(answers), concurrency=2, timeout=5),
                      Archive(), Redactor(), resolve({}, {}), KubeSummary())  # type: ignore[arg-type]
    types = anyio.run(c.discover)
    assert sorted(t.name for t in types) == ["deployments.apps", "pods"]
    assert "kube/discovery_metrics.k8s.io_v1beta1.error" in written
    assert [p.code for p in c.problems] == ["TPD502"]
    assert "pods/log" not in written["kube/api-resources.txt"]
    assert "nodes" in written["kube/api-resources.txt"]
