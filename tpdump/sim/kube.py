"""The Kubernetes API stand-in: enough of the real REST API for the real `kubectl`.

HTTPS on 127.0.0.1 (its own CA, a server certificate for 127.0.0.1) with a bearer token,
both written to `DIR/kubeconfig` (kubectl never sends a token over plain HTTP). It serves the
legacy discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>/<v>`), lists
and gets of every resource type it announces, pod logs (`timestamps`, `previous`,
`tailLines`, `limitBytes`), and the real `Status` errors: 401 without the token, 403 for the
scenario's `kube.denied_resources`, 404 for unknown paths and objects, 400 for a previous log
of a container that never restarted. `/openapi/*` answers 404 so that kubectl falls back.

The objects are what the Teleport Helm charts create: `teleport-cluster` (auth and proxy
Deployments) in the first namespace of `kube.namespaces`, `teleport-kube-agent` (a
StatefulSet) in the others (and in any namespace whose name contains `agent`), plus a
namespace without Teleport (`default`, an nginx Deployment). Secrets hold canary values when
the scenario plants secrets.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import ssl
import tempfile
import uuid
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
CREATED = "2026-11-26T09:00:00Z"
STARTED = "2026-11-26T09:58:00Z"
LOG_DAY = "2026-11-26T09"
RV = "48213"
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
RO_VERBS = ["get", "list", "watch"]
HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_NAME = "sim-worker-1"
CURRENT_LOG_LINES = 30
PREVIOUS_LOG_LINES = 12


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


def status(code: int, reason: str, message: str, details: Obj | None = None) -> web.Response:
    """The real `Status` error body of the API server."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return web.json_response(body, status=code)


class KubeWorld:
    """Every object of the simulated Kubernetes cluster, deterministic from the scenario."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        scen = cluster.scenario
        self.spec = scen.kube
        self.seed = scen.seed
        self.version = scen.teleport_version
        self.plant = scen.secrets.plant
        self.token = self._secret_text("kube_token", 0, f"sim-kube-token-{self._hex('tok')}")
        self.namespaces: list[str] = list(dict.fromkeys(
            [*SYSTEM_NAMESPACES, *self.spec.namespaces]))
        # (group, plural) -> namespace ("" for cluster-scoped) -> objects
        self.store: dict[tuple[str, str], dict[str, list[Obj]]] = {}
        # (namespace, pod) -> container -> restartCount
        self.restarts: dict[tuple[str, str], dict[str, int]] = {}
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
                  "creationTimestamp": CREATED})
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
        """Objects of a type in one namespace, or in all of them (ns None)."""
        by_ns = self.store.get((group, plural), {})
        if ns is None:
            return [o for n in sorted(by_ns) for o in by_ns[n]]
        return list(by_ns.get(ns, []))

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
                     "renewTime": "2026-11-26T10:00:30.000000Z"}})
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
        cstatus: Obj = {
            "name": cname, "image": container["image"],
            "imageID": f"{container['image'].split(':')[0]}@sha256:{self._hex('img', cname, n=64)}",
            "containerID": f"containerd://{self._hex('cid', ns, name, n=64)}",
            "ready": True, "started": True, "restartCount": restarts,
            "state": {"running": {"startedAt": STARTED}}, "lastState": {}}
        if restarts:
            cstatus["lastState"] = {"terminated": {
                "exitCode": 1, "reason": "Error", "startedAt": "2026-11-26T09:40:00Z",
                "finishedAt": "2026-11-26T09:57:58Z",
                "containerID": f"containerd://{self._hex('cid-prev', ns, name, n=64)}"}}
        ip = f"10.244.0.{10 + len(self.restarts) % 240}"
        self.add("", "pods", ns, {
            "metadata": self.meta("Pod", name, ns, labels, owner),
            "spec": {"containers": [container], "dnsPolicy": "ClusterFirst",
                     "enableServiceLinks": True, "nodeName": NODE_NAME,
                     "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": service_account, "serviceAccount": service_account,
                     "terminationGracePeriodSeconds": 60 if cname == "teleport" else 30,
                     **extra_spec},
            "status": {
                "phase": "Running", "hostIP": "172.18.0.2", "podIP": ip,
                "podIPs": [{"ip": ip}], "qosClass": "BestEffort", "startTime": CREATED,
                "conditions": [{"type": t, "status": "True",
                                "lastTransitionTime": STARTED}
                               for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                         "ContainersReady", "PodScheduled")],
                "containerStatuses": [cstatus]}})
        self.restarts[(ns, name)] = {cname: restarts}
        if self.plant:
            self.bearers[(ns, name)] = self.cluster.canaries.make(
                "kube_bearer", len(self.bearers) + 1)
        for reason, msg in (("Scheduled", f"Successfully assigned {ns}/{name} to {NODE_NAME}"),
                            ("Pulled", f'Container image "{container["image"]}" already '
                                       "present on machine"),
                            ("Created", f"Created container {cname}"),
                            ("Started", f"Started container {cname}")):
            self._event(ns, "Pod", name, reason, msg, "Normal")
        if restarts:
            self._event(ns, "Pod", name, "BackOff",
                        f"Back-off restarting failed container {cname} in pod {name}_{ns}"
                        f"({self._uid('Pod', ns, name)})", "Warning", count=restarts)

    def _event(self, ns: str, kind: str, name: str, reason: str, message: str, etype: str,
               count: int = 1) -> None:
        ev_name = f"{name}.{self._hex('ev', ns, name, reason)}"
        involved = {"apiVersion": "v1", "kind": kind, "name": name, "namespace": ns,
                    "uid": self._uid(kind, ns, name)}
        component = "default-scheduler" if reason == "Scheduled" else "kubelet"
        self.add("", "events", ns, {
            "metadata": self.meta("Event", ev_name, ns), "involvedObject": involved,
            "reason": reason, "message": message, "type": etype, "count": count,
            "source": {"component": component}, "firstTimestamp": STARTED,
            "lastTimestamp": STARTED, "reportingComponent": component,
            "reportingInstance": NODE_NAME})
        self.add("events.k8s.io", "events", ns, {
            "metadata": self.meta("Event", ev_name, ns), "regarding": involved,
            "reason": reason, "note": message, "type": etype,
            "deprecatedCount": count, "deprecatedSource": {"component": component},
            "deprecatedFirstTimestamp": STARTED, "deprecatedLastTimestamp": STARTED,
            "reportingController": component, "reportingInstance": NODE_NAME,
            "eventTime": None})

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
                     "renewTime": "2026-11-26T10:00:31.000000Z"}})
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
                       "notAfter": "2027-02-24T09:00:00Z"}})
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

    def log_lines(self, ns: str, pod: str, container: str, previous: bool) -> list[str]:
        """The container's log as `<RFC3339Nano timestamp> <line>` entries."""
        n = PREVIOUS_LOG_LINES if previous else CURRENT_LOG_LINES
        minute = 40 if previous else 58
        bearer = self.bearers.get((ns, pod), f"sim-bearer-{self._hex('b', ns, pod)}")
        out: list[str] = []
        for i in range(n):
            sec = i * 2
            frac = int(self._hex("ts", ns, pod, previous, i, n=8), 16) % 1_000_000_000
            ts = f"{LOG_DAY}:{minute + sec // 60:02d}:{sec % 60:02d}.{frac:09d}Z"
            short = ts[:23] + "Z"
            if container != "teleport":
                msg = (f'10.244.0.1 - - [26/Nov/2026:10:{minute:02d}:{sec % 60:02d} +0000] '
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
            out.append(f"{ts} {msg}")
        return out


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
        selector = request.query.get("labelSelector", "")
        if selector:
            items = [o for o in items if _matches(o, selector)]
        return web.json_response({
            "kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": RV}, "items": items})

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
        lines = self.world.log_lines(ns, pod, container, previous)
        if q.get("timestamps", "false").lower() not in ("1", "true"):
            lines = [line.split(" ", 1)[1] for line in lines]
        try:
            tail = int(q["tailLines"]) if "tailLines" in q else -1
            limit = int(q["limitBytes"]) if "limitBytes" in q else -1
        except ValueError:
            return status(400, "BadRequest", "invalid log options")
        if tail >= 0:
            lines = lines[len(lines) - tail:] if tail else []
        body = "".join(line + "\n" for line in lines).encode()
        if limit > 0:
            body = body[:limit]
        return web.Response(body=body, content_type="text/plain", charset="utf-8")


def _matches(obj: Obj, selector: str) -> bool:
    """Equality-based label selectors (`a=b,c!=d,e`)."""
    labels: dict[str, str] = obj.get("metadata", {}).get("labels", {}) or {}
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True
