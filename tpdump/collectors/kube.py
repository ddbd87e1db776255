"""Kubernetes (SPEC §6): the namespaces where Teleport runs, every namespaced resource type
the API lists, pod logs with timestamps (and the previous container's), and events.

The client is kubernetes_asyncio, for what it does well: kubeconfig (contexts, client
certificates, exec plugins, OIDC) and in-cluster configuration. Requests go through its
ApiClient as raw GETs of discovered paths, so that every type — core, groups, CRDs — is
handled alike, and pod logs are streamed with the newest bytes kept. Every call goes
through one concurrency limit and has its own deadline; a failing or denied type becomes
a `.error` file and the dump goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from tpdump.archive import ArchiveWriter, safe_component
from tpdump.config import Settings
from tpdump.errors import Problem
from tpdump.redact import Redactor, dump_yaml, secret_env_name

log = structlog.get_logger("tpdump.kube")

# The Helm charts Teleport ships, and the container name both use (SPEC §6).
TELEPORT_CHARTS = ("teleport-cluster", "teleport-kube-agent")
TELEPORT_CONTAINER = "teleport"
CHART_LABELS = ("app.kubernetes.io/name", "app")
PAGE = 500  # items per list call: bounded memory and bounded API load per call
SECRET_MARKER = "Kubernetes Secret value"
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


class KubeCallError(Exception):
    """One failed API call: the HTTP status (0: no answer), the Status reason, a message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def code(self) -> str:
        if self.status in (401, 403):
            return "TPD501"
        if self.status == 0 and self.reason == "Timeout":
            return "TPD503"
        if self.status == 0:
            return "TPD500"
        return "TPD502"

    def text(self) -> str:
        what = f"HTTP {self.status} {self.reason}" if self.status else self.reason
        return f"{what}: {self.message}"


@dataclass(frozen=True)
class ResourceType:
    """A namespaced, listable type from discovery."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def name(self) -> str:
        """`<plural>[.<group>]`, as kubectl and RFD 77 name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def list_path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" if namespace else \
            f"{base}/{self.plural}"


@dataclass
class KubeSummary:
    """What the report says about the Kubernetes part."""

    context: str = ""
    server: str = ""
    version: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)  # namespace -> why chosen
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: int = 0
    log_bytes: int = 0
    logs_truncated: int = 0
    objects: int = 0
    calls: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        failed = {k: v for k, v in self.types.items() if v["status"] != "ok"}
        return {"context": self.context, "server": self.server, "version": self.version,
                "namespaces": self.namespaces, "types": len(self.types),
                "types_failed": failed, "objects": self.objects, "logs": self.logs,
                "log_bytes": self.log_bytes, "logs_truncated": self.logs_truncated,
                "api_calls": self.calls, "error": self.error}


def forget_temp_files(directory: str) -> None:
    """Remove the credential files kubernetes_asyncio wrote under `directory`, its memory
    of them (its cache would hand the removed names to the next load), and the descriptors
    it left open on them (it drops the one `mkstemp` returns: one per file and run)."""
    from kubernetes_asyncio.config import kube_config

    temp_files: dict[str, str] = kube_config._temp_files
    for key, name in list(temp_files.items()):
        if os.path.dirname(name) == directory:
            temp_files.pop(key, None)
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith(directory + "/"):
                    os.close(int(fd))
    shutil.rmtree(directory, ignore_errors=True)


class KubeApi:
    """Raw GETs through kubernetes_asyncio's ApiClient, bounded and with deadlines."""

    def __init__(self, client: Any, *, concurrency: int, timeout: float,
                 temp_dir: str | None = None) -> None:
        self.client = client
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.timeout = timeout
        self.calls = 0
        self.temp_dir = temp_dir

    @classmethod
    async def connect(cls, settings: Settings) -> tuple[KubeApi, str, str]:
        """(api, context name, server URL) from --kubeconfig, the in-cluster service
        account, or the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""
        from kubernetes_asyncio import client, config
        from kubernetes_asyncio.config.config_exception import ConfigException
        from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

        cfg = client.Configuration()
        context = settings.kube_context or ""
        # kubernetes_asyncio writes a kubeconfig's `*-data` credentials (client key and
        # certificate, CA) to files, which it would keep until the process ends: here they
        # go to a private directory removed as soon as the client's TLS context is built
        # (ApiClient loads them at once), on errors and cancellation too.
        temp_dir = tempfile.mkdtemp(prefix="tpdump-kube-")
        try:
            try:
                if settings.kubeconfig is None and in_cluster():
                    InClusterConfigLoader(IN_CLUSTER_TOKEN, IN_CLUSTER_CA).load_and_set(cfg)
                    context = "in-cluster"
                else:
                    path = kubeconfig_path(settings)
                    loader = await config.load_kube_config(
                        config_file=path, context=settings.kube_context,
                        client_configuration=cfg, persist_config=False,
                        temp_file_path=temp_dir)
                    current = loader.current_context
                    context = str((current or {}).get("name", "") or context)
                cfg.connection_pool_maxsize = settings.kube_concurrency
                api_client = client.ApiClient(cfg)
            except ConfigException as exc:
                raise KubeCallError(0, "BadConfig", f"unusable Kubernetes configuration: "
                                    f"{exc}") from exc
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # OSError includes ssl.SSLError: a key or certificate that does not load
                raise KubeCallError(0, "BadConfig", f"unusable Kubernetes configuration: "
                                    f"{type(exc).__name__}: {exc}") from exc
        finally:
            forget_temp_files(temp_dir)
        return cls(api_client, concurrency=settings.kube_concurrency,
                   timeout=settings.kube_timeout, temp_dir=temp_dir), context, str(cfg.host)

    async def aclose(self) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.client.close()
        finally:
            if self.temp_dir is not None:  # a token refresh may have written more
                forget_temp_files(self.temp_dir)

    async def _call(self, path: str, query: Iterable[tuple[str, str]], accept: str,
                    cap: int, keep_tail: bool) -> tuple[bytes, bool]:
        """GET `path`; (body, truncated). A body over `cap` keeps its head, or its tail
        when `keep_tail` (newest log lines)."""
        import aiohttp

        async with self.limiter:
            self.calls += 1
            try:
                with anyio.fail_after(self.timeout):
                    resp = await self.client.call_api(
                        path, "GET", query_params=list(query),
                        header_params={"Accept": accept}, auth_settings=["BearerToken"],
                        _preload_content=False)
                    try:
                        if not 200 <= resp.status <= 299:
                            raise _status_error(resp.status, await resp.content.read(65536))
                        return await _read_capped(resp.content, cap, keep_tail)
                    finally:
                        resp.release()
            except TimeoutError as exc:
                raise KubeCallError(0, "Timeout", f"no answer within {self.timeout:g} s") \
                    from exc
            except aiohttp.ClientError as exc:
                raise KubeCallError(0, "Unreachable", f"{type(exc).__name__}: {exc}") \
                    from exc
            except OSError as exc:
                raise KubeCallError(0, "Unreachable", str(exc)) from exc

    async def get_json(self, path: str, query: Iterable[tuple[str, str]] = (),
                       cap: int = 256 * 1024 * 1024) -> dict[str, Any]:
        body, truncated = await self._call(path, query, "application/json", cap, False)
        if truncated:
            raise KubeCallError(200, "TooLarge", f"the answer is larger than {cap} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise KubeCallError(200, "BadJSON", f"the answer is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise KubeCallError(200, "BadJSON", "the answer is not a JSON object")
        return data

    async def get_text(self, path: str, query: Iterable[tuple[str, str]], cap: int
                       ) -> tuple[bytes, bool]:
        return await self._call(path, query, "*/*", cap, True)

    async def list_all(self, path: str, query: Iterable[tuple[str, str]] = (),
                       max_items: int = 100_000) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Every item of a list, page by page (limit/continue); (first page, items)."""
        base = list(query)
        items: list[dict[str, Any]] = []
        first: dict[str, Any] | None = None
        token = ""
        while True:
            q = [*base, ("limit", str(PAGE))] + ([("continue", token)] if token else [])
            page = await self.get_json(path, q)
            first = first or page
            got = page.get("items") or []
            if not isinstance(got, list):
                raise KubeCallError(200, "BadJSON", "`items` is not a list")
            items.extend(i for i in got if isinstance(i, dict))
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "") if isinstance(meta, dict) else ""
            if not token or len(items) >= max_items:
                return first, items


def kubeconfig_path(settings: Settings) -> str:
    """--kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config."""
    path = settings.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
        or os.path.expanduser("~/.kube/config")
    if not os.path.exists(path):
        raise KubeCallError(0, "NoConfig", f"kubeconfig {path} does not exist")
    return path


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(IN_CLUSTER_TOKEN)


def _status_error(status: int, body: bytes) -> KubeCallError:
    """The API's `Status` object as an error (or the raw text when it is not one)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status":
        return KubeCallError(status, str(data.get("reason") or "Error"),
                             str(data.get("message") or ""))
    text = body.decode("utf-8", "replace").strip().splitlines()
    return KubeCallError(status, "Error", text[0][:300] if text else "no message")


async def _read_capped(stream: Any, cap: int, keep_tail: bool) -> tuple[bytes, bool]:
    """Read a body; beyond `cap` keep the head, or the last `cap` bytes (cut at a line)."""
    if not keep_tail:
        data = await stream.read(cap + 1)
        rest = data
        while rest and len(data) <= cap:
            rest = await stream.read(cap + 1 - len(data))
            data += rest
        return (data[:cap], True) if len(data) > cap else (data, False)
    chunks: deque[bytes] = deque()
    size = 0
    dropped = False
    while True:
        chunk = await stream.read(256 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        while size - len(chunks[0]) >= cap:
            size -= len(chunks.popleft())
            dropped = True
    data = b"".join(chunks)
    if len(data) > cap:
        data, dropped = data[-cap:], True
    if dropped:
        nl = data.find(b"\n")
        data = data[nl + 1:] if nl >= 0 else data
    return data, dropped


class KubeCollector:
    """The Kubernetes part of a dump, written into `kube/` of the archive."""

    def __init__(self, api: KubeApi, archive: ArchiveWriter, redactor: Redactor,
                 settings: Settings, summary: KubeSummary) -> None:
        self.api = api
        self.archive = archive
        self.redactor = redactor
        self.settings = settings
        self.summary = summary
        self.problems: list[Problem] = []
        self.pods: list[dict[str, Any]] = []

    async def collect(self) -> None:
        """Version, discovery, namespaces, every type's list, then the pod logs."""
        await self._version()
        types = await self.discover()
        namespaces = await self.namespaces()
        self.summary.namespaces = namespaces
        await self._write("namespaces.json", json.dumps(namespaces, indent=1, sort_keys=True),
                          "tpdump: namespaces dumped and why")
        if not namespaces:
            return
        async with anyio.create_task_group() as tg:
            for rtype in types:
                tg.start_soon(self.dump_type, rtype, sorted(namespaces))
        async with anyio.create_task_group() as tg:
            for pod in self.pods:
                for container, restarted in _containers(pod):
                    tg.start_soon(self.dump_log, pod, container, False)
                    if restarted:
                        tg.start_soon(self.dump_log, pod, container, True)

    async def _write(self, name: str, data: str | bytes, source: str,
                     truncated: bool = False, priority: str = "normal") -> None:
        await self.archive.add(f"kube/{name}", data, source=source, truncated=truncated,
                               priority=priority, node="kube" if priority == "log" else None)

    async def _version(self) -> None:
        data = await self.api.get_json("/version")
        self.summary.version = str(data.get("gitVersion", ""))
        await self._write("version.json", json.dumps(data, indent=1), "API: GET /version")

    # --- discovery -------------------------------------------------------------------
    async def discover(self) -> list[ResourceType]:
        """Every namespaced type that can be listed (`kubectl api-resources --namespaced
        --verbs=list`), one version per group (the preferred one)."""
        lists: list[tuple[str, str, dict[str, Any]]] = []
        core = await self.api.get_json("/api")
        versions = [str(v) for v in core.get("versions") or ["v1"]]
        groups_doc = await self.api.get_json("/apis")
        wanted: list[tuple[str, str]] = [("", versions[0])]
        for g in groups_doc.get("groups") or []:
            if not isinstance(g, dict) or not g.get("name"):
                continue
            pref = g.get("preferredVersion") or (g.get("versions") or [{}])[0]
            if isinstance(pref, dict) and pref.get("version"):
                wanted.append((str(g["name"]), str(pref["version"])))

        async def fetch(group: str, version: str) -> None:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                lists.append((group, version, await self.api.get_json(path)))
            except KubeCallError as exc:
                # An aggregated API that is down (metrics-server...) must not stop the rest.
                name = f"{group}/{version}" if group else version
                self.problems.append(Problem(exc.code, f"kube discovery {name}", exc.text()))
                await self._write(f"discovery_{safe_component(name)}.error",
                                  f"GET {path}\n{exc.code} {exc.text()}\n",
                                  f"API: GET {path}")

        async with anyio.create_task_group() as tg:
            for group, version in wanted:
                tg.start_soon(fetch, group, version)
        types: list[ResourceType] = []
        table = ["NAME\tSHORTNAMES\tAPIVERSION\tNAMESPACED\tKIND\tVERBS"]
        for group, version, doc in sorted(lists):
            for r in doc.get("resources") or []:
                if not isinstance(r, dict):
                    continue
                name = str(r.get("name", ""))
                verbs = r.get("verbs") or []
                if not name or "/" in name:
                    continue  # subresources (pods/log, …)
                rt = ResourceType(group, version, name, str(r.get("kind", "")))
                table.append("\t".join([name, ",".join(r.get("shortNames") or []),
                                        rt.api_version, str(bool(r.get("namespaced"))).lower(),
                                        rt.kind, ",".join(verbs)]))
                if r.get("namespaced") and "list" in verbs:
                    types.append(rt)
        await self._write("api-resources.txt", "\n".join(table) + "\n",
                          "API: discovery (/api, /apis)")
        return types

    # --- namespaces ------------------------------------------------------------------
    async def namespaces(self) -> dict[str, str]:
        """Where Teleport runs, and why each namespace was chosen."""
        if self.settings.kube_namespace:
            return {ns: "named with --kube-namespace" for ns in self.settings.kube_namespace}
        found: dict[str, str] = {}
        try:
            _, pods = await self.api.list_all("/api/v1/pods")
        except KubeCallError as exc:
            self.problems.append(Problem(exc.code, "kube namespaces",
                                         f"cannot list pods in all namespaces to find "
                                         f"Teleport ({exc.text()}); name them with "
                                         f"--kube-namespace"))
            pods = []
        for pod in pods:
            why = teleport_reason(pod)
            ns = _field(pod, "metadata").get("namespace")
            if why and isinstance(ns, str) and ns not in found:
                found[ns] = why
        # Workloads scaled to zero have no pods: look at their labels too.
        for group, plural in (("apps", "deployments"), ("apps", "statefulsets")):
            for label in CHART_LABELS:
                selector = f"{label} in ({','.join(TELEPORT_CHARTS)})"
                try:
                    _, items = await self.api.list_all(f"/apis/{group}/v1/{plural}",
                                                       [("labelSelector", selector)])
                except KubeCallError:
                    continue  # the pod scan is what counts; this is a second look
                for obj in items:
                    ns = _field(obj, "metadata").get("namespace")
                    if isinstance(ns, str) and ns not in found:
                        found[ns] = f"{plural} labelled {label}"
        if not found:
            self.problems.append(Problem("TPD504", "kube namespaces",
                                         "no pod runs a Teleport chart or a container named "
                                         "`teleport`; name the namespace with "
                                         "--kube-namespace"))
        return found

    # --- objects ---------------------------------------------------------------------
    async def dump_type(self, rtype: ResourceType, namespaces: list[str]) -> None:
        """`kubectl_get_<plural>[.<group>].yaml`: a List of the type's items in every chosen
        namespace; `.error` with the reason for the namespaces that failed."""
        items: list[dict[str, Any]] = []
        errors: list[str] = []
        codes: list[str] = []
        for ns in namespaces:
            try:
                _, got = await self.api.list_all(rtype.list_path(ns))
            except KubeCallError as exc:
                errors.append(f"namespace {ns}: GET {rtype.list_path(ns)}\n  {exc.code} "
                              f"{exc.text()}")
                codes.append(exc.code)
                continue
            items.extend(got)
        base = f"kubectl_get_{safe_component(rtype.name)}"
        entry: dict[str, Any] = {"status": "ok", "count": len(items)}
        if errors:
            code = "TPD501" if all(c == "TPD501" for c in codes) else \
                next(c for c in codes if c != "TPD501")
            entry = {"status": "denied" if code == "TPD501" else "error", "code": code,
                     "count": len(items), "message": errors[0].splitlines()[1].strip()}
            self.problems.append(Problem(code, f"kube {rtype.name}",
                                         errors[0].splitlines()[1].strip()))
            await self._write(f"{base}.error", "\n".join(errors) + "\n",
                              f"API: list {rtype.name}")
        self.summary.types[rtype.name] = entry
        if errors and not items:
            return
        if rtype.plural == "pods" and not rtype.group:
            self.pods = items
        if rtype.plural == "events" and not rtype.group:
            await self._write("events.txt", events_table(items, self.redactor),
                              "API: list events (sorted by time)")
        clean = [self.clean(rtype, i) for i in items]
        self.summary.objects += len(clean)
        doc = {"apiVersion": "v1", "items": clean, "kind": "List",
               "metadata": {"resourceVersion": ""}}
        text = await anyio.to_thread.run_sync(dump_yaml, [doc])
        await self._write(f"{base}.yaml", text,
                          f"API: list {rtype.name} in {', '.join(namespaces)}")

    def clean(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """An item as `kubectl get -o yaml` shows it, without secrets."""
        out = {"apiVersion": rtype.api_version, "kind": rtype.kind, **obj}
        meta = dict(_field(out, "metadata"))
        meta.pop("managedFields", None)
        annotations = dict(_field(meta, "annotations"))
        if "kubectl.kubernetes.io/last-applied-configuration" in annotations and (
                rtype.kind == "Secret" or rtype.kind == "ConfigMap"):
            annotations["kubectl.kubernetes.io/last-applied-configuration"] = \
                self.redactor.marker(SECRET_MARKER)
        if annotations:
            meta["annotations"] = annotations
        out["metadata"] = meta
        if rtype.kind == "Secret" and not rtype.group:
            for key in ("data", "stringData"):
                values = out.get(key)
                if isinstance(values, Mapping):
                    out[key] = {str(k): self.redactor.marker(SECRET_MARKER) for k in values}
        if rtype.kind == "ConfigMap" and not rtype.group:
            data = out.pop("data", None)
            binary = out.pop("binaryData", None)
            out = dict(self.redactor.document(out))
            if isinstance(data, Mapping):
                out["data"] = {str(k): self._config_value(str(k), v) for k, v in data.items()}
            if isinstance(binary, Mapping):
                out["binaryData"] = {str(k): self.redactor.marker("binary data")
                                     for k in binary}
            return out
        return dict(self.redactor.document(_scrub_env(out, self.redactor)))

    def _config_value(self, key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return self.redactor.document(value)
        if key.endswith((".yaml", ".yml")):
            return self.redactor.yaml_text(value)[0]
        return self.redactor.text(value)

    # --- logs ------------------------------------------------------------------------
    async def dump_log(self, pod: dict[str, Any], container: str, previous: bool) -> None:
        """`kubectl_logs_<ns>_<pod>_<container>[.previous].log`, newest lines kept."""
        meta = pod.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        settings = self.settings
        base = "_".join(safe_component(p) for p in ("kubectl_logs", ns, name, container))
        base += ".previous" if previous else ""
        path = f"/api/v1/namespaces/{ns}/pods/{name}/log"
        query = [("container", container), ("timestamps", "true"),
                 ("tailLines", str(settings.kube_log_lines))]
        if not previous:
            query.append(("sinceSeconds", str(int(settings.log_window_h * 3600))))
        else:
            query.append(("previous", "true"))
        try:
            body, truncated = await self.api.get_text(path, query, settings.kube_log_bytes)
        except KubeCallError as exc:
            self.problems.append(Problem(exc.code, f"kube log {ns}/{name}/{container}",
                                         exc.text()))
            await self._write(f"{base}.error", f"GET {path}\n{exc.code} {exc.text()}\n",
                              f"API: pod log {ns}/{name} {container}")
            return
        text = self.redactor.text(body.decode("utf-8", "replace"))
        self.summary.logs += 1
        self.summary.log_bytes += len(body)
        self.summary.logs_truncated += int(truncated)
        await self._write(f"{base}.log", text,
                          f"API: pod log {ns}/{name} container {container}"
                          f"{' (previous)' if previous else ''}, timestamps", truncated,
                          priority="log")


def _field(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A field that must be an object; anything else from the API counts as empty."""
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def _items(obj: Mapping[str, Any], key: str) -> list[Any]:
    """A field that must be a list; anything else from the API counts as empty."""
    value = obj.get(key)
    return value if isinstance(value, list) else []


def teleport_reason(obj: Mapping[str, Any]) -> str | None:
    """Why a pod belongs to Teleport (chart label or container name), or None."""
    meta = _field(obj, "metadata")
    labels = meta.get("labels") or {}
    if isinstance(labels, Mapping):
        for label in CHART_LABELS:
            if labels.get(label) in TELEPORT_CHARTS:
                return f"pods labelled {label}={labels[label]}"
        chart = str(labels.get("helm.sh/chart", ""))
        if any(chart.startswith(c + "-") for c in TELEPORT_CHARTS):
            return f"pods labelled helm.sh/chart={chart}"
    spec = _field(obj, "spec")
    for key in ("containers", "initContainers"):
        for c in _items(spec, key):
            if isinstance(c, Mapping) and c.get("name") == TELEPORT_CONTAINER:
                return "a container named teleport"
    return None


def _containers(pod: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(container name, restarted) for every init, regular and ephemeral container."""
    spec = _field(pod, "spec")
    status = _field(pod, "status")
    restarts: dict[str, bool] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for s in _items(status, key):
            if isinstance(s, Mapping) and s.get("name"):
                last = _field(s, "lastState")
                restarts[str(s["name"])] = bool(s.get("restartCount")) or "terminated" in last
    out = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _items(spec, key):
            if isinstance(c, Mapping) and c.get("name"):
                out.append((str(c["name"]), restarts.get(str(c["name"]), False)))
    return out


def _scrub_env(obj: Any, redactor: Redactor) -> Any:
    """Values of secret-looking environment variables (`env: [{name, value}]`) replaced;
    `valueFrom` references (to Secrets) stay: they hold no value."""
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if k == "env" and isinstance(v, list):
                out[k] = [_env_var(e, redactor) for e in v]
            else:
                out[k] = _scrub_env(v, redactor)
        return out
    if isinstance(obj, list):
        return [_scrub_env(v, redactor) for v in obj]
    return obj


def _env_var(entry: Any, redactor: Redactor) -> Any:
    if not isinstance(entry, Mapping) or "value" not in entry:
        return entry
    if secret_env_name(str(entry.get("name", ""))) and entry.get("value"):
        return {**entry, "value": redactor.marker("environment secret")}
    return dict(entry)


def events_table(events: list[dict[str, Any]], redactor: Redactor) -> str:
    """Events sorted by time, one a line (`kubectl get events -A --sort-by`)."""
    rows = []
    for e in events:
        meta = _field(e, "metadata")
        obj = _field(e, "involvedObject") or _field(e, "regarding")
        when = (e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
                or meta.get("creationTimestamp") or "")
        rows.append((str(when), str(meta.get("namespace", "")), str(e.get("type", "")),
                     str(e.get("reason", "")),
                     f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
                     str(e.get("count") or 1),
                     redactor.text(str(e.get("message") or e.get("note") or "")
                                   .replace("\n", " "))))
    rows.sort()
    head = ("LAST SEEN", "NAMESPACE", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE")
    return "\n".join("\t".join(r) for r in [head, *rows]) + "\n"


async def collect_kube(settings: Settings, archive: ArchiveWriter, redactor: Redactor,
                       summary: KubeSummary, api: KubeApi | None = None) -> list[Problem]:
    """The whole Kubernetes part; every failure becomes a Problem (never an exception)."""
    problems: list[Problem] = []
    own = api is None
    try:
        if api is None:
            api, summary.context, summary.server = await KubeApi.connect(settings)
        collector = KubeCollector(api, archive, redactor, settings, summary)
        try:
            await collector.collect()
        finally:
            problems.extend(collector.problems)
    except KubeCallError as exc:
        summary.error = f"{exc.code} {exc.text()}"
        problems.append(Problem("TPD500" if exc.code in ("TPD500", "TPD503") else exc.code,
                                "kube API", exc.text()))
        await archive.add("kube/error.txt", f"{exc.code} {exc.text()}\n"
                          f"See: tpdump explain {exc.code}\n", source="tpdump")
        log.error("kubernetes failed", error=exc.text())
    finally:
        if api is not None:
            summary.calls = api.calls
            if own:
                await api.aclose()
    return problems
