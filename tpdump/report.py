"""The run's report: `report.json` (the data, with a schema version) and, made only from
it, `report.txt` and `readme.html`."""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tpdump import __version__
from tpdump.errors import CODES, ExitCode, Problem
from tpdump.results import NodeResult, NodeStatus

SCHEMA_VERSION = 1
_SHOW_TARGETS = 5
# Node states that make a dump incomplete.
_BAD_NODE = {NodeStatus.FAILED, NodeStatus.PARTIAL, NodeStatus.INTERRUPTED,
             NodeStatus.NOT_STARTED}


@dataclass
class RunFacts:
    """Everything the report says about a run besides per-node results."""

    cluster: str
    started: float
    finished: float
    command: str
    settings: dict[str, Any]
    interrupted: bool = False
    deadline_reached: bool = False
    fatal: str | None = None
    problems: list[Problem] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    redactions: Mapping[str, int] = field(default_factory=dict)
    truncated_files: list[str] = field(default_factory=list)
    archive_bytes: int = 0
    tctl_calls: int = 0
    kube: dict[str, Any] | None = None
    obfuscation: dict[str, Any] | None = None
    archive: dict[str, Any] | None = None


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_problems(nodes: Iterable[NodeResult]) -> list[Problem]:
    out = []
    for n in nodes:
        if n.code and n.status is not NodeStatus.OK:
            out.append(Problem(n.code, n.instance.name, n.detail or n.reason))
    return out


def aggregate(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    """Problems grouped by code: count, title, severity, targets (first few), a sample."""
    groups: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        groups[p.code].append(p)
    out = []
    for code, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        known = CODES.get(code)
        targets = [p.target for p in items]
        out.append({
            "code": code,
            "title": known.title if known else code,
            "severity": known.severity if known else "error",
            "count": len(items),
            "targets": targets,
            "sample": items[0].message,
        })
    return out


def build(facts: RunFacts, nodes: list[NodeResult]) -> dict[str, Any]:
    """report.json's content."""
    status_counts = Counter(n.status.value for n in nodes)
    problems = [*facts.problems, *node_problems(nodes)]
    grouped = aggregate(problems)
    errors = [g for g in grouped if g["severity"] == "error"]
    bad_kinds = [k for k, v in facts.objects.items()
                 if v["status"] != "ok" and v.get("code") != "TPD102"]
    complete = (not facts.interrupted and not facts.deadline_reached and facts.fatal is None
                and not any(n.status in _BAD_NODE for n in nodes) and not bad_kinds
                and not errors)
    if facts.fatal is not None:
        verdict, exit_code = "FAILED", ExitCode.FATAL
    elif facts.interrupted:
        verdict, exit_code = "INTERRUPTED", ExitCode.INTERRUPTED
    elif complete:
        verdict, exit_code = "complete", ExitCode.COMPLETE
    else:
        verdict, exit_code = "INCOMPLETE", ExitCode.INCOMPLETE
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "tpdump", "version": __version__},
        "cluster": facts.cluster,
        "command": facts.command,
        "started": _ts(facts.started),
        "finished": _ts(facts.finished),
        "seconds": round(facts.finished - facts.started, 3),
        "verdict": verdict,
        "exit_code": int(exit_code),
        "interrupted": facts.interrupted,
        "deadline_reached": facts.deadline_reached,
        "fatal": facts.fatal,
        "nodes": {"total": len(nodes), **{s.value: status_counts.get(s.value, 0)
                                          for s in NodeStatus}},
        "objects": facts.objects,
        "problems": grouped,
        "redactions": dict(sorted(facts.redactions.items())),
        "truncated_files": facts.truncated_files,
        "archive_bytes": facts.archive_bytes,
        "tctl_calls": facts.tctl_calls,
        "kube": facts.kube,
        "obfuscation": facts.obfuscation,
        "archive": facts.archive,
        "settings": facts.settings,
        "node_results": [
            {"uuid": n.instance.uuid, "hostname": n.instance.hostname, "dir": n.dir,
             "status": n.status.value, "code": n.code, "reason": n.reason or None,
             "seconds": None if n.seconds is None else round(n.seconds, 3)}
            for n in nodes
        ],
    }


def _targets_line(group: Mapping[str, Any]) -> str:
    targets = group["targets"]
    shown = ", ".join(targets[:_SHOW_TARGETS])
    more = f", … +{len(targets) - _SHOW_TARGETS}" if len(targets) > _SHOW_TARGETS else ""
    return f"({shown}{more})"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The few lines printed on screen at the end of a run (also the top of report.txt)."""
    n = report["nodes"]
    lines = [
        f"tpdump {report['verdict']}: cluster {report['cluster']}, "
        f"{report['seconds']:.1f} s"]
    if n["total"] or not report.get("kube"):
        lines.append(
        f"nodes: {n['total']} total · {n['ok']} ok · {n['partial']} partial · "
        f"{n['failed']} failed · {n['skipped']} skipped (no SSH)"
        + (f" · {n['interrupted'] + n['not started']} not finished"
           if n["interrupted"] or n["not started"] else ""))
    kinds = report["objects"]
    ok_kinds = sum(1 for v in kinds.values() if v["status"] == "ok")
    if kinds:
        lines.append(f"objects: {ok_kinds}/{len(kinds)} kinds")
    kube = report.get("kube")
    if kube:
        lines.append(kube_line(kube))
    arch = report.get("archive") or {}
    if arch.get("cuts"):
        lines.append(f"size cap: {len(arch['cuts'])} files cut to fit --max-size "
                     f"({arch['cut_bytes']} bytes left out; see report.txt)")
    if report["fatal"]:
        lines.append(f"FATAL: {report['fatal']}")
    for g in report["problems"]:
        unit = "targets" if g["count"] != 1 else "target"
        lines.append(f"  {g['code']} {g['count']} {unit}: {g['title']} {_targets_line(g)}"
                     f" — tpdump explain {g['code']}")
    return lines


def kube_line(kube: Mapping[str, Any]) -> str:
    if kube.get("error"):
        return f"kube: FAILED: {kube['error']}"
    failed = len(kube["types_failed"])
    return (f"kube: {len(kube['namespaces'])} namespaces ({', '.join(sorted(kube['namespaces']))})"
            f" · {kube['types']} types ({failed} not listed) · {kube['objects']} objects · "
            f"{kube['logs']} pod logs")


def render_text(report: Mapping[str, Any]) -> str:
    """report.txt."""
    out = [*summary_lines(report), ""]
    out.append(f"started {report['started']}  finished {report['finished']}  "
               f"tool tpdump {report['tool']['version']}")
    out.append(f"command: {report['command']}")
    if report["interrupted"]:
        out.append("The run was INTERRUPTED: everything collected before is in this archive.")
    if report["deadline_reached"]:
        out.append("The run reached its deadline (--timeout): collection was stopped.")
    out.append("")
    out.append("Problems (grouped by code):")
    if not report["problems"]:
        out.append("  none")
    for g in report["problems"]:
        out.append(f"  {g['code']} [{g['severity']}] {g['title']}: {g['count']}")
        out.append(f"    targets: {', '.join(g['targets'][:50])}"
                   + (f", … +{len(g['targets']) - 50}" if len(g["targets"]) > 50 else ""))
        out.append(f"    e.g.: {g['sample']}")
    if report["objects"]:
        out.append("")
        out.append("Objects (tctl get, one kind per call):")
    for kind, v in sorted(report["objects"].items()):
        if v["status"] == "ok":
            out.append(f"  {kind:<28} ok ({v['count']})")
        else:
            out.append(f"  {kind:<28} {v['code']} {v['class']}: {v['message']}")
    kube = report.get("kube")
    if kube:
        out.append("")
        out.append("Kubernetes:")
        out.append(f"  context {kube['context'] or '-'}  server {kube['server'] or '-'}  "
                   f"version {kube['version'] or '-'}  API calls {kube['api_calls']}")
        for ns, why in sorted(kube["namespaces"].items()):
            out.append(f"  namespace {ns}: {why}")
        for name, v in sorted(kube["types_failed"].items()):
            out.append(f"  {name:<28} {v['code']} {v['status']}: {v['message']}")
        out.append(f"  {kube['logs']} pod logs, {kube['log_bytes']} bytes, "
                   f"{kube['logs_truncated']} cut to the newest lines")
    out.append("")
    out.append("Secrets removed (always on), by category:")
    if not report["redactions"]:
        out.append("  none found")
    for cat, count in report["redactions"].items():
        out.append(f"  {cat}: {count}")
    obf = report.get("obfuscation")
    out.append("")
    if obf:
        out.append(f"Obfuscated (--obfuscate, key {obf['key_id']}, {obf['key']}), distinct "
                   "values by category:")
        for cat, count in obf["distinct"].items():
            out.append(f"  {cat}: {count} ({obf['replacements'].get(cat, 0)} replacements)")
    else:
        out.append("Not obfuscated: host names, addresses and user names are as found "
                   "(--obfuscate replaces them).")
    arch = report.get("archive") or {}
    if arch.get("join_command"):
        out.append("")
        out.append(f"The archive is split into parts of at most {arch['split_size']} bytes; "
                   f"join them with: {arch['join_command']}")
    if arch.get("max_size"):
        out.append("")
        cuts = arch["cuts"]
        out.append(f"Size cap (--max-size {arch['max_size']} bytes): {len(cuts)} files cut "
                   f"or dropped, {arch['cut_bytes']} bytes left out"
                   + (":" if cuts else "."))
        for c in cuts[:500]:
            what = "dropped" if c["kept_bytes"] == 0 else \
                f"kept {c['kept_bytes']} of {c['original_bytes']} bytes"
            out.append(f"  {c['path']} ({c['priority']}): {what}; {c['reason']}")
        if len(cuts) > 500:
            out.append(f"  … +{len(cuts) - 500}")
    if report["truncated_files"]:
        out.append("")
        out.append(f"Truncated files ({len(report['truncated_files'])}):")
        out.extend(f"  {p}" for p in report["truncated_files"][:200])
    out.append("")
    out.append("Nodes:")
    for n in report["node_results"]:
        why = f"  {n['code']} {n['reason']}" if n["code"] else ""
        out.append(f"  {n['status']:<11} {n['hostname'] or '-':<30} {n['uuid']}{why}")
    return "\n".join(out) + "\n"


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#1d2430;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.verdict{display:inline-block;padding:.2em .7em;border-radius:.3em;font-weight:600;color:#fff}
.complete{background:#1f7a3a}.INCOMPLETE,.INTERRUPTED{background:#b26b00}.FAILED{background:#b3261e}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:.25em .5em;
text-align:left;vertical-align:top}code{background:#f3f4f6;padding:0 .2em}
.error{color:#b3261e}.warning{color:#8a5a00}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """readme.html: self-contained (no external assets)."""
    e = html.escape
    v = report["verdict"]
    n = report["nodes"]
    rows = []
    for g in report["problems"]:
        known = CODES.get(g["code"])
        rows.append(
            f"<tr><td><code>{e(g['code'])}</code></td><td class='{e(g['severity'])}'>"
            f"{e(g['severity'])}</td><td>{e(g['title'])}</td><td>{g['count']}</td>"
            f"<td>{e(', '.join(g['targets'][:20]))}"
            f"{' …' if len(g['targets']) > 20 else ''}</td>"
            f"<td>{e(known.explanation if known else '')}<br><b>What to do:</b> "
            f"{e(known.remedy if known else '')}</td></tr>")
    red = "".join(f"<li>{e(k)}: {c}</li>" for k, c in report["redactions"].items()) \
        or "<li>none found</li>"
    node_rows = "".join(
        f"<tr><td><a href='{e(x['dir'])}/'>{e(x['hostname'] or x['uuid'])}</a></td>"
        f"<td>{e(x['status'])}</td><td>{e(x['code'] or '')} {e(x['reason'] or '')}</td></tr>"
        for x in report["node_results"][:5000])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tpdump: {e(report['cluster'])}</title>
<style>{_CSS}</style></head><body>
<h1>Teleport support dump: {e(report['cluster'])}</h1>
<p><span class="verdict {e(v)}">{e(v)}</span> taken {e(report['started'])} in
{report['seconds']:.1f} s by tpdump {e(report['tool']['version'])}.</p>
<h2>What this is</h2>
<p>A support dump of a Teleport cluster: the configuration, logs and state of every agent
tpdump could reach, and the cluster's objects from the auth API, for a support engineer.
Secrets (private keys, join tokens, passwords, client secrets, bearer tokens) were removed
before anything was written. <code>report.txt</code> is the plain-text report,
<code>report.json</code> the same as data, <code>manifest.json</code> lists every file with
its SHA-256.</p>
<h2>Status</h2>
<p>{n['total']} instances: {n['ok']} ok, {n['partial']} partial, {n['failed']} failed,
{n['skipped']} without SSH service{', ' + str(n['interrupted'] + n['not started'])
 + ' not finished' if n['interrupted'] or n['not started'] else ''}.</p>
{'<p class="error">FATAL: ' + e(report['fatal']) + '</p>' if report['fatal'] else ''}
<h2>Problems</h2>
<table><tr><th>code</th><th>severity</th><th>what</th><th>count</th><th>targets</th>
<th>explanation</th></tr>{''.join(rows) or '<tr><td colspan=6>none</td></tr>'}</table>
{_kube_html(report.get("kube"))}
<h2>Secrets removed</h2><ul>{red}</ul>
{_obfuscation_html(report.get("obfuscation"))}
<h2>How to read it</h2>
<ul><li><code>cluster/</code>: tctl status, tctl version, the inventory and discovery summary</li>
<li><code>objects/</code>: <code>tctl_get_&lt;kind&gt;.yaml</code>, or <code>.error</code>
when that kind could not be fetched</li>
<li><code>nodes/&lt;host-uuid&gt;/</code>: per instance <code>node.json</code> (status, reason,
timings), <code>teleport.yaml</code>, <code>cmdline</code>, <code>role.&lt;service&gt;</code>,
<code>version.txt</code>, <code>host/</code>, and <code>error.txt</code> when it failed</li>
<li><code>kube/</code>: <code>kubectl_get_&lt;type&gt;.yaml</code> per resource type of the
namespaces where Teleport runs (Secret values removed), <code>kubectl_logs_&lt;ns&gt;_&lt;pod&gt;_
&lt;container&gt;[.previous].log</code>, <code>events.txt</code>, <code>.error</code> files for
what could not be listed</li>
<li><code>tpdump.log</code>: tpdump's own log of this run</li></ul>
<h2>Nodes</h2>
<table><tr><th>node</th><th>status</th><th>reason</th></tr>{node_rows}</table>
</body></html>
"""


def _obfuscation_html(obf: Mapping[str, Any] | None) -> str:
    e = html.escape
    if not obf:
        return ("<h2>Obfuscation</h2><p>Off: host names, addresses and user names are as "
                "found.</p>")
    items = "".join(f"<li>{e(k)}: {v} distinct ({obf['replacements'].get(k, 0)} "
                    f"replacements)</li>" for k, v in obf["distinct"].items())
    return (f"<h2>Obfuscation</h2><p>On (key {e(obf['key_id'])}, {e(obf['key'])}): "
            f"identifiers were replaced by one-way tokens; the same value has the same "
            f"token everywhere in this dump.</p><ul>{items or '<li>none found</li>'}</ul>")


def _kube_html(kube: Mapping[str, Any] | None) -> str:
    if not kube:
        return ""
    e = html.escape
    rows = "".join(f"<tr><td><code>{e(k)}</code></td><td>{e(v['code'])}</td>"
                   f"<td>{e(v['message'])}</td></tr>"
                   for k, v in sorted(kube["types_failed"].items()))
    ns = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>"
                 for k, v in sorted(kube["namespaces"].items()))
    return (f"<h2>Kubernetes</h2><p>{e(kube_line(kube))}</p><ul>{ns}</ul>"
            + (f"<table><tr><th>type</th><th>code</th><th>why</th></tr>{rows}</table>"
               if rows else ""))


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=1, default=str)
