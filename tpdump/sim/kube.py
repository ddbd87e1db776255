"""The Kubernetes API stand-in: enough of the real REST API for the real `kubectl`.

HTTPS on 127.0.0.1 (its own CA, a server certificate for 127.0.0.1) with a bearer token,
both written to `DIR/kubeconfig` (kubectl never sends a token over plain HTTP). It serves the
legacy discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>/<v>`), lists
(in etcd key order, `labelSelector` with equality- and set-based terms, paging with `limit`
and `continue`) and gets of every resource type it announces, pod logs (`timestamps`,
`previous`, `tailLines`, `sinceSeconds`, `sinceTime`, `limitBytes`), and the real `Status`
errors: 401 without the token, 403 for the scenario's `kube.denied_resources`, 404 for unknown
paths and objects, 400 for a previous log of a container that never restarted, for a selector
or continue token that does not parse, 410 Expired for a continue token of another
resourceVersion, 422 for invalid log options. `/openapi/*` answers 404 so that kubectl falls
back.

Times are relative to the simulator's start (t0): objects were created 50 minutes before it,
the current containers' logs end a minute before it, restarted containers restarted 2 minutes
before it (their previous instance ended 10 minutes before it), so that `sinceSeconds` and
event ages behave as on a live cluster.

The objects are what the Teleport Helm charts create: `teleport-cluster` (auth and proxy
Deployments) in the first namespace of `kube.namespaces`, `teleport-kube-agent` (a
StatefulSet) in the others (and in any namespace whose name contains `agent`), plus a
namespace without Teleport (`default`, an nginx Deployment). Secrets hold canary values when
the scenario plants secrets.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import json
import re
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tpdump.sim.cluster import SimCluster

Obj = dict[str, Any]

K8S_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.4",
               "gitCommit": "a78aa47129b8539636eb86a9d00e31b2720fe06b",
               "gitTreeState": "clean", "buildDate": "2024-12-10T17:14:10Z",
               "goVersion": "go1.22.10", "compiler": "gc", "platform": "linux/amd64"}
SA_USER = "system:serviceaccount:tpdump:tpdump"
RV = "48213"
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
RO_VERBS = ["get", "list", "watch"]
HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_NAME = "sim-worker-1"
PREVIOUS_LOG_LINES = 12
SCHEDULER_INSTANCE = "default-scheduler-sim-control-plane"
# Every time is relative to t0, the simulator's start (SimCluster.started, whole seconds).
AGE_S = 50 * 60          # every object was created 50 minutes before t0
RESTART_S = 120          # restarted containers (re)started 2 minutes before t0 ...
PREV_START_S = 12 * 60   # ... their previous instance ran from 12 to 10 minutes before t0
PREV_END_S = 10 * 60
LAST_LINE_S = 60         # the current containers' last log line: a minute before t0
NS = 1_000_000_000
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CONTINUE_VERSION = "meta.k8s.io/v1"
EXPIRED_MESSAGE = ("The provided continue parameter is too old to display a consistent list "
                   "result. You can start a new list without the continue parameter, or use "
                   "the continue value from the response to get a consistent snapshot.")


# The types of the `all` category (`kubectl get all`).
CATEGORY_ALL = {("", "pods"), ("", "services"), ("", "replicationcontrollers"),
                ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
                ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs")}


@dataclass(frozen=True)
class RType:
    """One resource type as discovery announces it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = tuple(ALL_VERBS)
    short: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def resource(self) -> Obj:
        out: Obj = {"name": self.plural, "singularName": self.kind.lower(),
                    "namespaced": self.namespaced, "kind": self.kind, "verbs": list(self.verbs)}
        if self.short:
            out["shortNames"] = list(self.short)
        if (self.group, self.plural) in CATEGORY_ALL:
            out["categories"] = ["all"]
        return out


TYPES: tuple[RType, ...] = (
    RType("", "v1", "bindings", "Binding", verbs=("create",)),
    RType("", "v1", "componentstatuses", "ComponentStatus", False, ("get", "list"), ("cs",)),
    RType("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    RType("", "v1", "endpoints", "Endpoints", short=("ep",)),
    RType("", "v1", "events", "Event", short=("ev",)),
    RType("", "v1", "limitranges", "LimitRange", short=("limits",)),
    RType("", "v1", "namespaces", "Namespace", False,
          ("create", "delete", "get", "list", "patch", "update", "watch"), ("ns",)),
    RType("", "v1", "nodes", "Node", False, short=("no",)),
    RType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",)),
    RType("", "v1", "persistentvolumes", "PersistentVolume", False, short=("pv",)),
    RType("", "v1", "pods", "Pod", short=("po",)),
    RType("", "v1", "podtemplates", "PodTemplate"),
    RType("", "v1", "replicationcontrollers", "ReplicationController", short=("rc",)),
    RType("", "v1", "resourcequotas", "ResourceQuota", short=("quota",)),
    RType("", "v1", "secrets", "Secret"),
    RType("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    RType("", "v1", "services", "Service", short=("svc",)),
    RType("apps", "v1", "controllerrevisions", "ControllerRevision"),
    RType("apps", "v1", "daemonsets", "DaemonSet", short=("ds",)),
    RType("apps", "v1", "deployments", "Deployment", short=("deploy",)),
    RType("apps", "v1", "replicasets", "ReplicaSet", short=("rs",)),
    RType("apps", "v1", "statefulsets", "StatefulSet", short=("sts",)),
    RType("batch", "v1", "cronjobs", "CronJob", short=("cj",)),
    RType("batch", "v1", "jobs", "Job"),
    RType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    RType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    RType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    RType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    RType("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    RType("networking.k8s.io", "v1", "ingresses", "Ingress", short=("ing",)),
    RType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    RType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",)),
    RType("coordination.k8s.io", "v1", "leases", "Lease"),
    RType("events.k8s.io", "v1", "events", "Event", short=("ev",)),
    RType("cert-manager.io", "v1", "certificaterequests", "CertificateRequest", short=("cr",)),
    RType("cert-manager.io", "v1", "certificates", "Certificate", short=("cert", "certs")),
    RType("cert-manager.io", "v1", "clusterissuers", "ClusterIssuer", False),
    RType("cert-manager.io", "v1", "issuers", "Issuer"),
)
# Subresources announced in the APIResourceLists (kubectl api-resources leaves them out).
SUBRESOURCES: dict[tuple[str, str], list[Obj]] = {
    ("", "v1"): [
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
         "verbs": ["get"]},
        {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "patch", "update"]},
    ],
    ("apps", "v1"): [
        {"name": "deployments/scale", "singularName": "", "namespaced": True, "kind": "Scale",
         "group": "autoscaling", "version": "v1", "verbs": ["get", "patch", "update"]},
    ],
}
GROUP_VERSIONS: tuple[tuple[str, str], ...] = tuple(
    dict.fromkeys((t.group, t.version) for t in TYPES if t.group))
BY_PATH: dict[tuple[str, str, str], RType] = {(t.group, t.version, t.plural): t for t in TYPES}


def stamp(sec: int) -> str:
    """RFC 3339 in whole seconds (`metav1.Time`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))


def stamp_frac(ns: int, digits: int) -> str:
    """RFC 3339 with `digits` fractional digits: 6 for `metav1.MicroTime`, 9 for the
    timestamps of pod logs."""
    sec, frac = divmod(ns, NS)
    return f"{stamp(sec)[:-1]}.{frac // 10 ** (9 - digits):0{digits}d}Z"


def parse_time(text: str) -> int | None:
    """An RFC 3339 time (`2026-11-26T10:00:00Z`, fractions and offsets allowed) in
    nanoseconds since the epoch; None if it is not one."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)",
                        text):
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    frac = re.search(r"\.(\d+)", text)
    nanos = int(frac.group(1).ljust(9, "0")) if frac else 0
    return int(when.replace(microsecond=0).timestamp()) * NS + nanos


def status(code: int, reason: str, message: str, details: Obj | None = None) -> web.Response:
    """The real `Status` error body of the API server."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return web.json_response(body, status=code)


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> web.Response:
    """The real 422 `Invalid` Status; causes are (field, reason, message) with reason
    `FieldValueInvalid` or `FieldValueForbidden`."""
    texts = [f"{f}: {m}" if f else m for f, _, m in causes]
    text = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return status(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                  {"name": name, "kind": kind,
                   "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]})


class KubeWorld:
    """Every object of the simulated Kubernetes cluster, deterministic from the scenario."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        scen = cluster.scenario
        self.spec = scen.kube
        self.seed = scen.seed
        self.version = scen.teleport_version
        self.plant = scen.secrets.plant
        self.t0 = int(cluster.started)
        self.created = self.t0 - AGE_S
        self.token = self._secret_text("kube_token", 0, f"sim-kube-token-{self._hex('tok')}")
        self.namespaces: list[str] = list(dict.fromkeys(
            [*SYSTEM_NAMESPACES, *self.spec.namespaces]))
        # (group, plural) -> namespace ("" for cluster-scoped) -> objects
        self.store: dict[tuple[str, str], dict[str, list[Obj]]] = {}
        # (namespace, pod) -> container -> restartCount
        self.restarts: dict[tuple[str, str], dict[str, int]] = {}
        # (namespace, pod) -> when its current container started (epoch seconds)
        self.started: dict[tuple[str, str], int] = {}
        self.bearers: dict[tuple[str, str], str] = {}
        self._build()

    # ---- helpers ------------------------------------------------------------------------

    def _hex(self, *parts: object, n: int = 16) -> str:
        text = ":".join(str(p) for p in (self.seed, *parts))
        return hashlib.sha256(text.encode()).hexdigest()[:n]

    def _hash(self, *parts: object, n: int = 10) -> str:
        digest = hashlib.sha256(":".join(str(p) for p in (self.seed, *parts)).encode()).digest()
        return "".join(HASH_CHARS[b % len(HASH_CHARS)] for b in digest[:n])

    def _uid(self, *parts: object) -> str:
        return str(uuid.UUID(self._hex("uid", *parts, n=32)))

    def _secret_text(self, kind: str, n: int, fallback: str) -> str:
        """A canary (recorded in the cluster's canaries) when secrets are planted."""
        if not self.plant:
            return fallback
        return self.cluster.canaries.make(kind, n)

    def _secret_b64(self, kind: str, n: int) -> str:
        """The base64 `data` value of a Secret key; a canary (both forms recorded) if planted."""
        value = self._secret_text(kind, n, f"sim-{kind}-{self._hex(kind, n)}")
        encoded = base64.b64encode(value.encode()).decode()
        if self.plant:
            self.cluster.canaries.items.append(encoded)
        return encoded

    def add(self, group: str, plural: str, ns: str, obj: Obj) -> Obj:
        rtype = next(t for t in TYPES if t.group == group and t.plural == plural)
        full: Obj = {"apiVersion": rtype.api_version, "kind": rtype.kind, **obj}
        self.store.setdefault((group, plural), {}).setdefault(ns, []).append(full)
        return full

    def meta(self, kind: str, name: str, ns: str, labels: dict[str, str] | None = None,
             owner: Obj | None = None, **extra: Any) -> Obj:
        m: Obj = {"name": name}
        if ns:
            m["namespace"] = ns
        m.update({"uid": self._uid(kind, ns, name), "resourceVersion": str(40000 + len(name)),
                  "creationTimestamp": stamp(self.created)})
        if labels:
            m["labels"] = dict(labels)
        if owner is not None:
            m["ownerReferences"] = [{
                "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}]
        m.update(extra)
        return m

    def items(self, group: str, plural: str, ns: str | None) -> list[Obj]:
        """Objects of a type in one namespace, or in all of them (ns None), in the order of
        the real API server (of etcd's keys): by `list_key`."""
        by_ns = self.store.get((group, plural), {})
        objs = [o for n in by_ns for o in by_ns[n]] if ns is None else by_ns.get(ns, [])
        return sorted(objs, key=lambda o: list_key(o, ns is None))

    # ---- the world ----------------------------------------------------------------------

    def _build(self) -> None:
        cluster_ns = next((n for n in self.spec.namespaces if "agent" not in n), None)
        for ns in self.namespaces:
            self.add("", "namespaces", "", {
                "metadata": self.meta("Namespace", ns, "",
                                      {"kubernetes.io/metadata.name": ns}),
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
            self.add("", "configmaps", ns, {
                "metadata": self.meta("ConfigMap", "kube-root-ca.crt", ns),
                "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIC/jCCAeagAwIBAgIBADAN"
                                   "BgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwprdWJl\n"
                                   "-----END CERTIFICATE-----\n"}})
            self.add("", "serviceaccounts", ns, {
                "metadata": self.meta("ServiceAccount", "default", ns)})
        self.add("", "nodes", "", {
            "metadata": self.meta("Node", NODE_NAME, "", {"kubernetes.io/hostname": NODE_NAME,
                                                          "kubernetes.io/os": "linux"}),
            "status": {"nodeInfo": {"kubeletVersion": K8S_VERSION["gitVersion"]},
                       "conditions": [{"type": "Ready", "status": "True"}]}})
        self.add("coordination.k8s.io", "leases", "kube-node-lease", {
            "metadata": self.meta("Lease", NODE_NAME, "kube-node-lease"),
            "spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": 40,
                     "renewTime": stamp_frac((self.t0 - 5) * NS, 6)}})
        self.add("", "services", "default", {
            "metadata": self.meta("Service", "kubernetes", "default",
                                  {"component": "apiserver", "provider": "kubernetes"}),
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}})
        self._deployment("default", "nginx", {"app": "nginx"}, "nginx", "nginx:1.27.3",
                         [], [{"containerPort": 80, "protocol": "TCP"}], 1, restarted=False)
        for ns in self.spec.namespaces:
            if ns == cluster_ns:
                self._teleport_cluster(ns)
            else:
                self._kube_agent(ns)

    def _chart_labels(self, chart: str, component: str | None) -> dict[str, str]:
        labels = {"app.kubernetes.io/instance": chart, "app.kubernetes.io/managed-by": "Helm",
                  "app.kubernetes.io/name": chart, "app.kubernetes.io/version": self.version,
                  "helm.sh/chart": f"{chart}-{self.version}",
                  "teleport.dev/majorVersion": self.version.split(".")[0]}
        if component:
            labels["app.kubernetes.io/component"] = component
        return labels

    def _container(self, name: str, image: str, args: list[str], ports: list[Obj]) -> Obj:
        c: Obj = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                  "terminationMessagePath": "/dev/termination-log",
                  "terminationMessagePolicy": "File"}
        if args:
            c["args"] = args
        if ports:
            c["ports"] = ports
        if name == "teleport":
            c["livenessProbe"] = {"failureThreshold": 6, "httpGet": {
                "path": "/healthz", "port": "diag", "scheme": "HTTP"},
                "initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 1}
            c["readinessProbe"] = {"failureThreshold": 12, "httpGet": {
                "path": "/readyz", "port": "diag", "scheme": "HTTP"},
                "initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 1}
            c["volumeMounts"] = [
                {"mountPath": "/etc/teleport", "name": "config", "readOnly": True},
                {"mountPath": "/var/lib/teleport", "name": "data"}]
        return c

    def _pod(self, ns: str, name: str, labels: dict[str, str], owner: Obj, container: Obj,
             service_account: str, restarts: int, extra_spec: Obj) -> None:
        cname = container["name"]
        c0 = self.created
        started = self.t0 - RESTART_S if restarts else c0 + 6
        cstatus: Obj = {
            "name": cname, "image": container["image"],
            "imageID": f"{container['image'].split(':')[0]}@sha256:{self._hex('img', cname, n=64)}",
            "containerID": f"containerd://{self._hex('cid', ns, name, n=64)}",
            "ready": True, "started": True, "restartCount": restarts,
            "state": {"running": {"startedAt": stamp(started)}}, "lastState": {}}
        if restarts:
            cstatus["lastState"] = {"terminated": {
                "exitCode": 1, "reason": "Error",
                "startedAt": stamp(self.t0 - PREV_START_S),
                "finishedAt": stamp(self.t0 - PREV_END_S),
                "containerID": f"containerd://{self._hex('cid-prev', ns, name, n=64)}"}}
        ip = f"10.244.0.{10 + len(self.restarts) % 240}"
        pod = self.add("", "pods", ns, {
            "metadata": self.meta("Pod", name, ns, labels, owner),
            "spec": {"containers": [container], "dnsPolicy": "ClusterFirst",
                     "enableServiceLinks": True, "nodeName": NODE_NAME,
                     "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": service_account, "serviceAccount": service_account,
                     "terminationGracePeriodSeconds": 60 if cname == "teleport" else 30,
                     **extra_spec},
            "status": {
                "phase": "Running", "hostIP": "172.18.0.2", "podIP": ip,
                "podIPs": [{"ip": ip}], "qosClass": "BestEffort", "startTime": stamp(c0 + 1),
                "conditions": [{"type": t, "status": "True", "lastTransitionTime": stamp(at)}
                               for t, at in (("PodReadyToStartContainers", c0 + 4),
                                             ("Initialized", c0 + 1),
                                             ("Ready", started + 6),
                                             ("ContainersReady", started + 6),
                                             ("PodScheduled", c0))],
                "containerStatuses": [cstatus]}})
        self.restarts[(ns, name)] = {cname: restarts}
        self.started[(ns, name)] = started
        if self.plant:
            self.bearers[(ns, name)] = self.cluster.canaries.make(
                "kube_bearer", len(self.bearers) + 1)
        self._event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {NODE_NAME}",
                    "Normal", c0, c0, 0)
        for i, (reason, msg) in enumerate((
                ("Pulled", f'Container image "{container["image"]}" already present on '
                           "machine"),
                ("Created", f"Created container {cname}"),
                ("Started", f"Started container {cname}"))):
            self._event(pod, reason, msg, "Normal", c0 + 3 + i,
                        started if restarts else c0 + 3 + i, restarts + 1, cname)
        if restarts:
            self._event(pod, "BackOff",
                        f"Back-off restarting failed container {cname} in pod {name}_{ns}"
                        f"({pod['metadata']['uid']})", "Warning", c0 + 300,
                        self.t0 - RESTART_S - 1, restarts, cname)

    def _event(self, obj: Obj, reason: str, message: str, etype: str, first: int, last: int,
               count: int, container: str | None = None) -> None:
        """A core `Event` and its `events.k8s.io` twin, as the API server returns them.

        The scheduler's events (count 0) are new-style: `eventTime` (MicroTime), `action`,
        no `count`, null `firstTimestamp`/`lastTimestamp`, empty `source`. The kubelet's are
        old-style: `firstTimestamp`, `lastTimestamp`, `count`, `source`, null `eventTime`.
        """
        md = obj["metadata"]
        ns, name = md["namespace"], md["name"]
        ev_name = f"{name}.{self._hex('ev', ns, name, reason, n=16)}"
        involved: Obj = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                         "name": name, "namespace": ns,
                         "resourceVersion": md["resourceVersion"], "uid": md["uid"]}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        ev_meta = self.meta("Event", ev_name, ns, creationTimestamp=stamp(first))
        if not count:
            when = stamp_frac(first * NS + int(self._hex("evt", ns, name, n=5), 16) * 100, 6)
            self.add("", "events", ns, {
                "metadata": ev_meta, "involvedObject": involved, "reason": reason,
                "message": message, "source": {}, "firstTimestamp": None,
                "lastTimestamp": None, "type": etype, "eventTime": when, "action": "Binding",
                "reportingComponent": "default-scheduler",
                "reportingInstance": SCHEDULER_INSTANCE})
            self.add("events.k8s.io", "events", ns, {
                "metadata": ev_meta, "eventTime": when, "reportingController":
                "default-scheduler", "reportingInstance": SCHEDULER_INSTANCE,
                "action": "Binding", "reason": reason, "regarding": involved, "note": message,
                "type": etype, "deprecatedSource": {}, "deprecatedFirstTimestamp": None,
                "deprecatedLastTimestamp": None})
            return
        source = {"component": "kubelet", "host": NODE_NAME}
        self.add("", "events", ns, {
            "metadata": ev_meta, "involvedObject": involved, "reason": reason,
            "message": message, "source": source, "firstTimestamp": stamp(first),
            "lastTimestamp": stamp(last), "count": count, "type": etype, "eventTime": None,
            "reportingComponent": "kubelet", "reportingInstance": NODE_NAME})
        self.add("events.k8s.io", "events", ns, {
            "metadata": ev_meta, "eventTime": None, "reportingController": "kubelet",
            "reportingInstance": NODE_NAME, "reason": reason, "regarding": involved,
            "note": message, "type": etype, "deprecatedSource": source,
            "deprecatedFirstTimestamp": stamp(first), "deprecatedLastTimestamp": stamp(last),
            "deprecatedCount": count})

    def _deployment(self, ns: str, name: str, labels: dict[str, str], cname: str, image: str,
                    args: list[str], ports: list[Obj], replicas: int, restarted: bool,
                    service_account: str = "default", extra_spec: Obj | None = None) -> None:
        selector = {k: v for k, v in labels.items()
                    if k in ("app", "app.kubernetes.io/instance", "app.kubernetes.io/name",
                             "app.kubernetes.io/component")}
        container = self._container(cname, image, args, ports)
        template = {"metadata": {"labels": labels},
                    "spec": {"containers": [container], "serviceAccountName": service_account,
                             **(extra_spec or {})}}
        ready = {"replicas": replicas, "readyReplicas": replicas,
                 "availableReplicas": replicas}
        dep = self.add("apps", "deployments", ns, {
            "metadata": self.meta("Deployment", name, ns, labels, None,
                                  annotations={"deployment.kubernetes.io/revision": "1"}),
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                     "strategy": {"type": "RollingUpdate"}, "template": template},
            "status": {**ready, "updatedReplicas": replicas, "observedGeneration": 1}})
        pth = self._hash("rs", ns, name)
        rs_labels = {**labels, "pod-template-hash": pth}
        rs = self.add("apps", "replicasets", ns, {
            "metadata": self.meta("ReplicaSet", f"{name}-{pth}", ns, rs_labels, dep),
            "spec": {"replicas": replicas,
                     "selector": {"matchLabels": {**selector, "pod-template-hash": pth}},
                     "template": {**template, "metadata": {"labels": rs_labels}}},
            "status": {**ready, "fullyLabeledReplicas": replicas, "observedGeneration": 1}})
        for i in range(replicas):
            pod = f"{name}-{pth}-{self._hash('pod', ns, name, i, n=5)}"
            self._pod(ns, pod, rs_labels, rs, container, service_account,
                      3 if restarted and i == 0 else 0, extra_spec or {})

    def _teleport_yaml(self, role: str) -> str:
        scen = self.cluster.scenario
        if role == "agent":
            return (f"version: v3\nteleport:\n  join_params:\n    method: token\n"
                    f"    token_name: /etc/teleport-secrets/auth-token\n"
                    f"  proxy_server: {scen.cluster_name}:443\n  log:\n    severity: INFO\n"
                    f"    output: stderr\nkubernetes_service:\n  enabled: true\n"
                    f"  kube_cluster_name: sim-kube\nauth_service:\n  enabled: false\n"
                    f"proxy_service:\n  enabled: false\nssh_service:\n  enabled: false\n")
        return ("version: v3\nteleport:\n  log:\n    severity: INFO\n    output: stderr\n"
                "    format:\n      output: text\n"
                + (f"auth_service:\n  enabled: true\n  cluster_name: {scen.cluster_name}\n"
                   f"  authentication:\n    type: local\n    second_factor: \"on\"\n"
                   "kubernetes_service:\n  enabled: true\n  listen_addr: 0.0.0.0:3026\n"
                   "proxy_service:\n  enabled: false\n" if role == "auth" else
                   f"proxy_service:\n  enabled: true\n  public_addr: {scen.cluster_name}:443\n"
                   "  kube_listen_addr: 0.0.0.0:3026\nauth_service:\n  enabled: false\n")
                + "ssh_service:\n  enabled: false\n")

    def _teleport_cluster(self, ns: str) -> None:
        chart = "teleport-cluster"
        image = f"public.ecr.aws/gravitational/teleport-distroless:{self.version}"
        n_auth = self.spec.pods if self.spec.pods < 2 else max(1, self.spec.pods // 3)
        n_proxy = self.spec.pods - n_auth
        for comp, count, ports in (
                ("auth", n_auth, [3000, 3025, 3026]), ("proxy", n_proxy, [3000, 3080, 3023])):
            name = f"{chart}-{comp}" if comp == "auth" else f"{chart}-proxy"
            labels = self._chart_labels(chart, comp)
            sa = chart if comp == "auth" else f"{chart}-proxy"
            self.add("", "serviceaccounts", ns, {
                "metadata": self.meta("ServiceAccount", sa, ns, labels)})
            self.add("", "configmaps", ns, {
                "metadata": self.meta("ConfigMap", name, ns, labels),
                "data": {"teleport.yaml": self._teleport_yaml(comp)}})
            port_names = {3000: "diag", 3025: "auth", 3026: "kube", 3080: "tls", 3023: "sshproxy"}
            cports = [{"containerPort": p, "name": port_names[p], "protocol": "TCP"}
                      for p in ports]
            self._deployment(
                ns, name, labels, "teleport", image,
                ["--diag-addr=0.0.0.0:3000"]
                + (["--apply-on-startup=/etc/teleport/apply-on-startup.yaml"]
                   if comp == "auth" else []),
                cports, count, restarted=comp == "proxy", service_account=sa,
                extra_spec={"automountServiceAccountToken": False,
                            "volumes": [{"configMap": {"name": name}, "name": "config"},
                                        {"emptyDir": {}, "name": "data"}]})
            self.add("policy", "poddisruptionbudgets", ns, {
                "metadata": self.meta("PodDisruptionBudget", name, ns, labels),
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {
                    "app.kubernetes.io/component": comp, "app.kubernetes.io/instance": chart,
                    "app.kubernetes.io/name": chart}}},
                "status": {"currentHealthy": count, "desiredHealthy": 1,
                           "disruptionsAllowed": max(0, count - 1), "expectedPods": count,
                           "observedGeneration": 1}})
        for svc, stype, sports in (
                (chart, "LoadBalancer", [("tls", 443, 3080)]),
                (f"{chart}-auth", "ClusterIP", [("auth", 3025, 3025), ("kube", 3026, 3026)])):
            comp = "proxy" if svc == chart else "auth"
            self.add("", "services", ns, {
                "metadata": self.meta("Service", svc, ns, self._chart_labels(chart, comp)),
                "spec": {"type": stype, "clusterIP": f"10.96.{len(svc)}.{len(ns)}",
                         "selector": {"app.kubernetes.io/component": comp,
                                      "app.kubernetes.io/instance": chart,
                                      "app.kubernetes.io/name": chart},
                         "ports": [{"name": pn, "port": p, "protocol": "TCP", "targetPort": t}
                                   for pn, p, t in sports]},
                "status": {"loadBalancer": {}}})
        labels = self._chart_labels(chart, None)
        self.add("", "secrets", ns, {
            "metadata": self.meta("Secret", f"{chart}-tls", ns, labels),
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": self._secret_b64("kube_tls_crt", 1),
                     "tls.key": self._secret_b64("kube_tls_key", 1)}})
        self.add("", "secrets", ns, {
            "metadata": self.meta("Secret", f"sh.helm.release.v1.{chart}.v1", ns,
                                  {"name": chart, "owner": "helm", "status": "deployed",
                                   "version": "1"}),
            "type": "helm.sh/release.v1",
            "data": {"release": self._secret_b64("kube_helm_release", 1)}})
        self.add("rbac.authorization.k8s.io", "roles", ns, {
            "metadata": self.meta("Role", f"{chart}-operator", ns, labels),
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch"]}]})
        self.add("rbac.authorization.k8s.io", "rolebindings", ns, {
            "metadata": self.meta("RoleBinding", f"{chart}-operator", ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": f"{chart}-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": chart, "namespace": ns}]})
        self.add("coordination.k8s.io", "leases", ns, {
            "metadata": self.meta("Lease", "431e83f4.teleport.dev", ns),
            "spec": {"holderIdentity": f"{chart}-operator_{self._uid('lease', ns)}",
                     "leaseDurationSeconds": 15, "leaseTransitions": 1,
                     "renewTime": stamp_frac((self.t0 - 4) * NS, 6)}})
        self.add("cert-manager.io", "certificates", ns, {
            "metadata": self.meta("Certificate", chart, ns, labels),
            "spec": {"secretName": f"{chart}-tls",
                     "dnsNames": [self.cluster.scenario.cluster_name,
                                  f"*.{self.cluster.scenario.cluster_name}"],
                     "issuerRef": {"kind": "Issuer", "name": chart}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "reason": "Ready",
                                       "message": "Certificate is up to date and has not "
                                                  "expired"}],
                       "notAfter": stamp(self.created + 90 * 86400)}})
        self.add("cert-manager.io", "issuers", ns, {
            "metadata": self.meta("Issuer", chart, ns, labels),
            "spec": {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory"}}})

    def _kube_agent(self, ns: str) -> None:
        chart = "teleport-kube-agent"
        labels = {**self._chart_labels(chart, None), "app": chart}
        image = f"public.ecr.aws/gravitational/teleport-distroless:{self.version}"
        container = self._container(
            "teleport", image, ["--diag-addr=0.0.0.0:3000"],
            [{"containerPort": 3000, "name": "diag", "protocol": "TCP"}])
        for kind, plural in (("ServiceAccount", "serviceaccounts"), ("ConfigMap", "configmaps")):
            obj: Obj = {"metadata": self.meta(kind, chart, ns, labels)}
            if kind == "ConfigMap":
                obj["data"] = {"teleport.yaml": self._teleport_yaml("agent")}
            self.add("", plural, ns, obj)
        self.add("", "secrets", ns, {
            "metadata": self.meta("Secret", f"{chart}-join-token", ns, labels),
            "type": "Opaque", "data": {"auth-token": self._secret_b64("kube_join_token", 1)}})
        sts = self.add("apps", "statefulsets", ns, {
            "metadata": self.meta("StatefulSet", chart, ns, labels),
            "spec": {"replicas": self.spec.pods, "serviceName": chart,
                     "selector": {"matchLabels": {"app": chart}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container],
                                           "serviceAccountName": chart}}},
            "status": {"replicas": self.spec.pods, "readyReplicas": self.spec.pods,
                       "availableReplicas": self.spec.pods, "currentReplicas": self.spec.pods,
                       "updatedReplicas": self.spec.pods, "observedGeneration": 1,
                       "currentRevision": f"{chart}-{self._hash('cr', ns)}"}})
        self.add("apps", "controllerrevisions", ns, {
            "metadata": self.meta("ControllerRevision", f"{chart}-{self._hash('cr', ns)}", ns,
                                  labels, sts), "revision": 1})
        for i in range(self.spec.pods):
            name = f"{chart}-{i}"
            self.add("", "secrets", ns, {
                "metadata": self.meta("Secret", f"{name}-state", ns, labels),
                "type": "Opaque",
                "data": {"state": self._secret_b64("kube_agent_state", i + 1)}})
            self._pod(ns, name, {**labels, "statefulset.kubernetes.io/pod-name": name,
                                 "apps.kubernetes.io/pod-index": str(i)},
                      sts, container, chart, 1 if i == self.spec.pods - 1 else 0,
                      {"hostname": name, "subdomain": chart})
        self.add("rbac.authorization.k8s.io", "roles", ns, {
            "metadata": self.meta("Role", chart, ns, labels),
            "rules": [{"apiGroups": [""], "resources": ["secrets"],
                       "verbs": ["create", "get", "update", "patch"]}]})
        self.add("rbac.authorization.k8s.io", "rolebindings", ns, {
            "metadata": self.meta("RoleBinding", chart, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": chart},
            "subjects": [{"kind": "ServiceAccount", "name": chart, "namespace": ns}]})

    # ---- logs -----------------------------------------------------------------------------

    def log_entries(self, ns: str, pod: str, container: str,
                    previous: bool) -> list[tuple[int, str]]:
        """The container's log as (time in ns since the epoch, line) entries, oldest first.

        The first line is a second after the container started; the others are 2 s apart
        and end a minute before t0 (the current container) or a second before the previous
        container terminated, 10 minutes before t0.
        """
        n = min(PREVIOUS_LOG_LINES, self.spec.log_lines) if previous else self.spec.log_lines
        if previous:
            start, end = self.t0 - PREV_START_S, self.t0 - PREV_END_S - 1
        else:
            start, end = self.started[(ns, pod)], self.t0 - LAST_LINE_S
        bearer = self.bearers.get((ns, pod), f"sim-bearer-{self._hex('b', ns, pod)}")
        out: list[tuple[int, str]] = []
        for i in range(n):
            if 2 * (n - 1) <= end - start - 1:
                sec = start + 1 if i == 0 else end - 2 * (n - 1 - i)
                when = sec * NS + int(self._hex("ts", ns, pod, previous, i, n=8), 16) % NS
            else:  # long logs: evenly spread, still in order
                when = (start + 1) * NS + i * ((end - start - 1) * NS // (n - 1))
                sec = when // NS
            short = stamp_frac(when, 3)
            if container != "teleport":
                t = time.gmtime(sec)
                msg = (f"10.244.0.1 - - [{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                       f"{time.strftime('%H:%M:%S', t)} +0000] "
                       f'"GET / HTTP/1.1" 200 615 "-" "kube-probe/1.31"')
            elif i == 0:
                msg = (f"{short} INFO [PROC:1]    Starting Teleport v{self.version} with a "
                       f"config file located at \"/etc/teleport/teleport.yaml\" "
                       f"common/teleport.go:683")
            elif previous and i == n - 1:
                msg = (f"{short} ERRO [PROC:1]    Critical service exited with error. "
                       f"error:[connection to auth server lost] service/supervisor.go:339")
            elif i == 5:
                msg = (f"{short} DEBU [HTTP:PROX] Forwarding request headers "
                       f"Authorization:[Bearer {bearer}] web/apiserver.go:1482")
            elif i % 7 == 3:
                msg = (f"{short} WARN [KUBERNETE] Failed to refresh kubernetes cluster "
                       f"details. error:[context deadline exceeded] kube/proxy/server.go:412")
            else:
                msg = (f"{short} INFO [AUDIT]     cert.create code:TC000I "
                       f"event_id:{self._uid('ev', pod, previous, i)} "
                       f"identity:[user:sim-{i % 5} roles:[access]] events/emitter.go:288")
            out.append((when, msg))
        return out

    def log_lines(self, ns: str, pod: str, container: str, previous: bool) -> list[str]:
        """The container's log as `<RFC3339Nano timestamp> <line>` entries (9 fractional
        digits)."""
        return [f"{stamp_frac(when, 9)} {msg}"
                for when, msg in self.log_entries(ns, pod, container, previous)]


def make_tls(name: str) -> tuple[bytes, bytes, bytes]:
    """A fresh CA, and a server certificate for 127.0.0.1/localhost that it signed:
    (CA cert PEM, server cert PEM, server key PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} kubernetes CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True,
              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class KubeServer:
    """The aiohttp server of one KubeWorld, HTTPS on 127.0.0.1 (free port unless given)."""

    def __init__(self, cluster: SimCluster, port: int = 0) -> None:
        self.world = KubeWorld(cluster)
        self.denied = set(cluster.scenario.kube.denied_resources)
        self._port = port
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.ca_pem, self._cert_pem, self._key_pem = make_tls(cluster.scenario.cluster_name)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="tpdump-sim-kube-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self._cert_pem)
            key.write_bytes(self._key_pem)
            key.chmod(0o600)
            ctx.load_cert_chain(cert, key)
        return ctx

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        app.router.add_route("*", "/{tail:.*}", self._not_allowed)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port,
                           ssl_context=self._ssl_context())
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(self) -> str:
        """The kubeconfig that kubectl and tpdump use for this stand-in."""
        import yaml

        cfg = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "tpdump-sim", "cluster": {
                   "server": self.url,
                   "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
               "users": [{"name": "tpdump", "user": {"token": self.world.token}}],
               "contexts": [{"name": "tpdump-sim", "context": {
                   "cluster": "tpdump-sim", "user": "tpdump", "namespace": "default"}}],
               "current-context": "tpdump-sim"}
        return yaml.safe_dump(cfg, sort_keys=False)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization", "") != f"Bearer {self.world.token}":
            return status(401, "Unauthorized", "Unauthorized")
        resp: web.StreamResponse = await handler(request)
        return resp

    async def _not_allowed(self, request: web.Request) -> web.Response:
        return status(405, "MethodNotAllowed",
                      "the server does not allow this method on the requested resource")

    async def _dispatch(self, request: web.Request) -> web.Response:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response(K8S_VERSION)
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                      "serverAddressByClientCIDRs": [
                                          {"clientCIDR": "0.0.0.0/0",
                                           "serverAddress": "172.18.0.2:6443"}]})
        if parts == ["apis"]:
            return web.json_response(self._group_list())
        if parts[:2] == ["api", "v1"]:
            return self._resource_path("", "v1", parts[2:], request)
        if parts[:1] == ["apis"] and len(parts) >= 3 and (parts[1], parts[2]) in GROUP_VERSIONS:
            return self._resource_path(parts[1], parts[2], parts[3:], request)
        if parts[:1] == ["apis"] and len(parts) == 2 and any(
                g == parts[1] for g, _ in GROUP_VERSIONS):
            return web.json_response(self._group(parts[1]))
        return status(404, "NotFound", "the server could not find the requested resource", {})

    def _group(self, group: str) -> Obj:
        versions = [{"groupVersion": f"{g}/{v}", "version": v}
                    for g, v in GROUP_VERSIONS if g == group]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[0]}

    def _group_list(self) -> Obj:
        groups = [self._group(g) for g in dict.fromkeys(g for g, _ in GROUP_VERSIONS)]
        for g in groups:
            del g["kind"], g["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> Obj:
        gv = f"{group}/{version}" if group else version
        resources = [t.resource() for t in TYPES if (t.group, t.version) == (group, version)]
        resources += SUBRESOURCES.get((group, version), [])
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": sorted(resources, key=lambda r: str(r["name"]))}

    def _is_denied(self, rtype: RType) -> bool:
        names = {rtype.plural, rtype.kind.lower()}
        if rtype.group:
            names |= {f"{rtype.plural}.{rtype.group}", f"{rtype.kind.lower()}.{rtype.group}"}
        return bool(names & self.denied)

    def _resource_path(self, group: str, version: str, rest: list[str],
                       request: web.Request) -> web.Response:
        if not rest:
            return web.json_response(self._resource_list(group, version))
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        rtype = BY_PATH.get((group, version, rest[0]))
        if rtype is None or len(rest) > 3 or (ns is not None and not rtype.namespaced):
            return status(404, "NotFound", "the server could not find the requested resource",
                          {})
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        verb = "get" if name else ("watch" if request.query.get("watch") in ("1", "true")
                                   else "list")
        if sub is not None and not (rtype.plural == "pods" and sub == "log" and ns):
            return status(404, "NotFound", "the server could not find the requested resource",
                          {})
        if sub is None and self._is_denied(rtype):
            return self._forbidden(rtype, verb, ns, name)
        if sub == "log" and ns is not None and name is not None:
            return self._logs(ns, name, request)
        if verb not in rtype.verbs:
            return status(405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource")
        if verb == "watch":
            return status(405, "MethodNotAllowed", "watch is not supported by the tpdump "
                                                   "simulator")
        if rtype.namespaced and ns is None and name is not None:
            return status(404, "NotFound", "the server could not find the requested resource",
                          {})
        items = self.world.items(group, rtype.plural, ns if rtype.namespaced else "")
        if name is not None:
            for obj in items:
                if obj["metadata"]["name"] == name:
                    return web.json_response(obj)
            return status(404, "NotFound", f'{rtype.plural}{"." + group if group else ""} '
                                           f'"{name}" not found',
                          {"name": name, **({"group": group} if group else {}),
                           "kind": rtype.plural})
        return self._list(rtype, items, ns is None and rtype.namespaced, request)

    def _list(self, rtype: RType, items: list[Obj], all_ns: bool,
              request: web.Request) -> web.Response:
        """A `{Kind}List`: `labelSelector`, then paging (`limit`, `continue`) as the real
        API server does it (see `encode_continue`)."""
        q = request.query
        selector = q.get("labelSelector", "")
        try:
            match = parse_selector(selector)
        except ValueError as exc:
            return status(400, "BadRequest", str(exc))
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            return status(400, "BadRequest",
                          f'strconv.ParseInt: parsing "{q.get("limit")}": invalid syntax')
        start = 0
        token = q.get("continue", "")
        if token:
            if q.get("resourceVersion", "") not in ("", "0"):
                return status(400, "BadRequest", "specifying resource version is not allowed "
                                                 "when using continue")
            try:
                start_key = decode_continue(token)
            except ValueError as exc:
                return status(400, "BadRequest", f"invalid continue token: {exc}")
            if start_key is None:
                return status(410, "Expired", EXPIRED_MESSAGE)
            start = next((i for i, o in enumerate(items)
                          if list_key(o, all_ns) >= start_key), len(items))
        page: list[Obj] = []
        meta: Obj = {"resourceVersion": RV}
        for i in range(start, len(items)):
            if not match(items[i]):
                continue
            if limit > 0 and len(page) == limit:
                # More objects remain: the continue token starts after the last one returned.
                meta["continue"] = encode_continue(list_key(page[-1], all_ns) + "\x00")
                if not selector:
                    # Unknown, and so left out, when the list has a selector.
                    meta["remainingItemCount"] = len(items) - i
                break
            page.append(items[i])
        return web.json_response({
            "kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
            "metadata": meta, "items": page})

    def _forbidden(self, rtype: RType, verb: str, ns: str | None,
                   name: str | None) -> web.Response:
        res = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
        what = f'{res} "{name}"' if name else res
        where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
        msg = (f'{what} is forbidden: User "{SA_USER}" cannot {verb} resource '
               f'"{rtype.plural}" in API group "{rtype.group}"{where}')
        details: Obj = {"kind": rtype.plural}
        if name:
            details = {"name": name, **({"group": rtype.group} if rtype.group else {}),
                       "kind": rtype.plural}
        elif rtype.group:
            details = {"group": rtype.group, "kind": rtype.plural}
        return status(403, "Forbidden", msg, details)

    def _logs(self, ns: str, pod: str, request: web.Request) -> web.Response:
        containers = self.world.restarts.get((ns, pod))
        if containers is None:
            return status(404, "NotFound", f'pods "{pod}" not found',
                          {"name": pod, "kind": "pods"})
        q = request.query
        container = q.get("container", "")
        if not container:
            if len(containers) > 1:
                return status(400, "BadRequest",
                              f"a container name must be specified for pod {pod}, choose one "
                              f"of: [{' '.join(containers)}]")
            container = next(iter(containers))
        if container not in containers:
            return status(400, "BadRequest",
                          f"container {container} is not valid for pod {pod}")
        previous = q.get("previous", "false").lower() in ("1", "true")
        if previous and containers[container] == 0:
            return status(400, "BadRequest", f'previous terminated container "{container}" '
                                             f'in pod "{pod}" not found')
        try:
            tail = int(q["tailLines"]) if "tailLines" in q else -1
            limit = int(q["limitBytes"]) if "limitBytes" in q else -1
            since_s = int(q["sinceSeconds"]) if "sinceSeconds" in q else None
        except ValueError:
            return status(400, "BadRequest", "invalid log options")
        since_ns: int | None = None
        if "sinceTime" in q:
            since_ns = parse_time(q["sinceTime"])
            if since_ns is None:
                return status(400, "BadRequest",
                              f'parsing time "{q["sinceTime"]}" as '
                              '"2006-01-02T15:04:05Z07:00": cannot parse')
        if since_s is not None:
            if since_ns is not None:
                return invalid("PodLogOptions", pod, [(
                    "", "FieldValueForbidden",
                    "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be "
                    "specified")])
            if since_s < 1:
                return invalid("PodLogOptions", pod, [(
                    "sinceSeconds", "FieldValueInvalid",
                    f"Invalid value: {since_s}: must be greater than 0")])
            since_ns = time.time_ns() - since_s * NS
        entries = self.world.log_entries(ns, pod, container, previous)
        # As the kubelet: the last tailLines lines, of them those since sinceTime/sinceSeconds,
        # then at most limitBytes bytes.
        if tail >= 0:
            entries = entries[len(entries) - tail:] if tail else []
        if since_ns is not None:
            entries = [e for e in entries if e[0] >= since_ns]
        stamps = q.get("timestamps", "false").lower() in ("1", "true")
        lines = [f"{stamp_frac(when, 9)} {msg}" if stamps else msg for when, msg in entries]
        body = "".join(line + "\n" for line in lines).encode()
        if limit > 0:
            body = body[:limit]
        return web.Response(body=body, content_type="text/plain", charset="utf-8")


def list_key(obj: Obj, all_ns: bool) -> str:
    """The object's etcd key below the list's prefix (`ns/name` across namespaces, else
    `name`): lists are in this order and continue tokens point into it."""
    md = obj["metadata"]
    return f"{md['namespace']}/{md['name']}" if all_ns and "namespace" in md else str(md["name"])


def encode_continue(start_key: str) -> str:
    """A continue token as the real API server makes it: unpadded URL-safe base64 of
    `{"v":"meta.k8s.io/v1","rv":<list resourceVersion>,"start":"<key after the last item>"}`.
    """
    raw = json.dumps({"v": CONTINUE_VERSION, "rv": int(RV), "start": start_key},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> str | None:
    """The start key of a continue token; None if the token is well-formed but of another
    resourceVersion (the real server: 410 Expired, compacted). ValueError (the real 400
    message) if it is not a token at all."""
    generic = "continue key is not valid"
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        doc = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{generic}: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{generic}: json: cannot unmarshal into Go value of type "
                         "storage.continueToken")
    if doc.get("v") != CONTINUE_VERSION:
        raise ValueError(f"{generic}: server does not recognize this encoded version "
                         f"{doc.get('v', '')}")
    rv, start = doc.get("rv"), doc.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv <= 0:
        raise ValueError(f"{generic}: incorrect encoded start resourceVersion "
                         f"(version {CONTINUE_VERSION})")
    if not isinstance(start, str) or not start:
        raise ValueError(f"{generic}: encoded start key empty (version {CONTINUE_VERSION})")
    if rv != int(RV):
        return None
    return start


_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_EXISTS = re.compile(rf"(?P<neg>!?)\s*(?P<key>{_KEY})")
_EQUALITY = re.compile(rf"(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})")
_SET = re.compile(rf"(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_ORDER = re.compile(rf"(?P<key>{_KEY})\s*(?P<op>[<>])\s*(?P<value>-?\d+)")


def split_selector(selector: str) -> list[str]:
    """The terms of a label selector: split at the commas outside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise ValueError(f"unable to parse requirement: found ')' in {selector!r}")
        cur += ch
    if depth:
        raise ValueError(f"unable to parse requirement: unclosed '(' in {selector!r}")
    return [*terms, cur]


def _requirement(term: str) -> Callable[[dict[str, str]], bool]:
    """One term of a label selector as a predicate on the labels; ValueError if invalid."""
    if m := _SET.fullmatch(term):
        key, op = m["key"], m["op"]
        values = {v.strip() for v in m["values"].split(",")}
        if not m["values"].strip():
            raise ValueError("for 'in', 'notin' operators, values set can't be empty")
        if bad := sorted(v for v in values if not re.fullmatch(_VALUE, v)):
            raise ValueError(f"unable to parse requirement: invalid label value: {bad[0]!r}")
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQUALITY.fullmatch(term):
        key, value = m["key"], m["value"]
        if m["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _ORDER.fullmatch(term):
        key, bound, greater = m["key"], int(m["value"]), m["op"] == ">"

        def order(labels: dict[str, str]) -> bool:
            value = labels.get(key, "")
            if not re.fullmatch(r"-?\d+", value):
                return False
            return int(value) > bound if greater else int(value) < bound
        return order
    if m := _EXISTS.fullmatch(term):
        key, negated = m["key"], bool(m["neg"])
        return lambda labels: (key in labels) != negated
    raise ValueError(f"unable to parse requirement: {term!r}")


def parse_selector(selector: str) -> Callable[[Obj], bool]:
    """A label selector (`labelSelector`) as a predicate on objects: comma-joined terms
    `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`.
    ValueError (the 400 message) if it does not parse."""
    if not selector.strip():
        return lambda obj: True
    reqs = [_requirement(t.strip()) for t in split_selector(selector)]

    def match(obj: Obj) -> bool:
        labels: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
        return all(r(labels) for r in reqs)
    return match
