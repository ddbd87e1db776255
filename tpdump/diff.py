"""`tpdump diff OLD NEW`: what changed between two dumps of a cluster.

Instances (by host UUID) added, removed, or with another version; objects per kind, by
name (by token when the dumps are obfuscated with the same key), added, removed or
changed; new and gone problem codes; new and gone findings. Values that change on every
dump without meaning anything (revisions, expiry and last-seen times, other timestamps)
are ignored when comparing objects. Heartbeat kinds (node, proxy, ...) are compared as
instances, not as objects."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from tpdump.analyze import DumpView, analyze

# Per-instance heartbeats: the instances section covers them.
HEARTBEAT_KINDS = frozenset({"node", "proxy", "auth_server", "kube_server", "app_server",
                             "db_server", "windows_desktop_service", "instance"})
VOLATILE_KEYS = frozenset({"revision", "expires", "last_seen", "id", "resource_id"})
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def instances(v: DumpView) -> dict[str, dict[str, str]]:
    """uuid -> {hostname, version}."""
    out: dict[str, dict[str, str]] = {}
    disc = v.json("cluster/discovery.json")
    items = disc.get("instances_list") if isinstance(disc, dict) else None
    if not isinstance(items, list):
        items = [doc for _, doc in v.nodes()]
    for x in items:
        if isinstance(x, dict) and x.get("uuid"):
            out[str(x["uuid"])] = {"hostname": str(x.get("hostname") or ""),
                                   "version": str(x.get("version") or "")}
    return out


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        # YAML keys need not be strings (`1: x`, `null: y`): ordered by their text.
        return {k: _normal(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and _TIME.match(value):
        return "<time>"
    return value


def objects(v: DumpView) -> dict[str, dict[str, Any]]:
    """kind -> name -> normalised document."""
    out: dict[str, dict[str, Any]] = {}
    for path in v.files:
        m = re.fullmatch(r"objects/tctl_get_(.+)\.yaml", path)
        if not m or m.group(1) in HEARTBEAT_KINDS:
            continue
        docs: dict[str, Any] = {}
        for _, doc in v.yaml_docs(path):
            if isinstance(doc, dict):
                meta = doc.get("metadata")
                name = str(meta.get("name", "?")) if isinstance(meta, dict) else "?"
                sub = doc.get("sub_kind")
                key = f"{sub}/{name}" if sub and m.group(1) == "cert_authority" else name
                docs[key] = _normal(doc)
        out[m.group(1)] = docs
    return out


def _report(v: DumpView) -> dict[str, Any]:
    r = v.json("report.json")
    return r if isinstance(r, dict) else {}


def diff(old_files: Mapping[str, bytes], new_files: Mapping[str, bytes]) -> dict[str, Any]:
    old, new = DumpView(old_files), DumpView(new_files)
    oi, ni = instances(old), instances(new)

    def label(uuid: str, table: Mapping[str, Mapping[str, str]]) -> str:
        host = table[uuid]["hostname"]
        return f"{host} ({uuid})" if host else uuid

    changed = [{"instance": label(u, ni), "old": oi[u]["version"], "new": ni[u]["version"]}
               for u in sorted(set(oi) & set(ni), key=lambda u: ni[u]["hostname"])
               if oi[u]["version"] != ni[u]["version"]]
    oo, no = objects(old), objects(new)
    obj: dict[str, dict[str, list[str]]] = {}
    for kind in sorted(set(oo) | set(no)):
        a, b = oo.get(kind, {}), no.get(kind, {})
        entry = {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
                 "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k])}
        if any(entry.values()):
            obj[kind] = entry
    op, np_ = _problem_codes(old), _problem_codes(new)
    of = {f["id"]: f for f in _findings(old_files, old)}
    nf = {f["id"]: f for f in _findings(new_files, new)}
    nf = {k: {"severity": str(f.get("severity")), "summary": str(f.get("summary"))}
          for k, f in nf.items()}
    return {
        "instances": {
            "added": sorted(label(u, ni) for u in set(ni) - set(oi)),
            "removed": sorted(label(u, oi) for u in set(oi) - set(ni)),
            "version_changed": changed,
        },
        "objects": obj,
        "problems": {"new": sorted(np_ - op), "gone": sorted(op - np_)},
        "findings": {"new": [{"id": k, "severity": nf[k]["severity"],
                              "summary": nf[k]["summary"]} for k in sorted(set(nf) - set(of))],
                     "gone": sorted(set(of) - set(nf))},
    }


def _problem_codes(view: DumpView) -> set[str]:
    problems = _report(view).get("problems")
    return {str(g["code"]) for g in problems if isinstance(g, dict) and "code" in g} \
        if isinstance(problems, list) else set()


def _findings(files: Mapping[str, bytes], view: DumpView) -> list[dict[str, Any]]:
    """The dump's own findings (report.json) when it has them, else analyzed now."""
    rep = _report(view)
    if isinstance(rep.get("findings"), list):
        return [{**f, "id": str(f["id"])} for f in rep["findings"]
                if isinstance(f, dict) and "id" in f]
    return [f.as_dict() for f in analyze(files)]


def empty(d: Mapping[str, Any]) -> bool:
    i, p, f = d["instances"], d["problems"], d["findings"]
    return not (i["added"] or i["removed"] or i["version_changed"] or d["objects"]
                or p["new"] or p["gone"] or f["new"] or f["gone"])


def render(d: Mapping[str, Any]) -> str:
    out: list[str] = []
    i = d["instances"]
    out.append(f"instances: +{len(i['added'])} -{len(i['removed'])}, "
               f"{len(i['version_changed'])} changed version")
    out.extend(f"  + {x}" for x in i["added"])
    out.extend(f"  - {x}" for x in i["removed"])
    out.extend(f"  ~ {x['instance']}: {x['old']} -> {x['new']}" for x in i["version_changed"])
    out.append(f"objects: {len(d['objects'])} kinds changed")
    for kind, e in d["objects"].items():
        out.extend(f"  + {kind}/{n}" for n in e["added"])
        out.extend(f"  - {kind}/{n}" for n in e["removed"])
        out.extend(f"  ~ {kind}/{n}" for n in e["changed"])
    p = d["problems"]
    out.append(f"problem codes: new {', '.join(p['new']) or 'none'}; "
               f"gone {', '.join(p['gone']) or 'none'}")
    f = d["findings"]
    out.append(f"findings: {len(f['new'])} new, {len(f['gone'])} gone")
    out.extend(f"  + [{x['severity']}] {x['id']}: {x['summary']}" for x in f["new"])
    out.extend(f"  - {x}" for x in f["gone"])
    return "\n".join(out) + "\n"


def cmd_diff(old_path: str, new_path: str, *, as_json: bool = False) -> int:
    """0 when nothing changed, 1 otherwise."""
    from tpdump.inspect import load
    d = diff(load(old_path), load(new_path))
    sys.stdout.write(json.dumps(d, indent=1) + "\n" if as_json else render(d))
    return 0 if empty(d) else 1
