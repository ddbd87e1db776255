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
from tpdump.analyze import render as render_findings
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
    findings: list[dict[str, Any]] = field(default_factory=list)


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
        "findings": facts.findings,
        "settings": facts.settings,
        "node_results": [
            {"uuid": n.instance.uuid, "hostname": n.instance.hostname, "dir": n.dir,
             "status": n.status.value, "code": n.code, "reason": n.reason or None,
             "seconds": None if n.seconds is None else round(n.seconds, 3),
             "started_at": n.started_at, "services": sorted(n.instance.services),
             "connect_seconds": None if n.connect_seconds is None else round(
                 n.connect_seconds, 3),
             "requests": n.requests}
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
    sev = Counter(f["severity"] for f in report.get("findings") or [])
    if sev:
        lines.append("findings: " + " · ".join(f"{sev[s]} {s}" for s in
                                               ("critical", "warning", "info") if sev[s])
                     + " (see report.txt or tpdump analyze)")
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
    out.append("")
    out.append("Findings (tpdump analyze):")
    out.extend(render_findings(report.get("findings") or []))
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
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:76em;margin:0 auto;padding:0 1.2em 3em}
nav{position:sticky;top:0;background:#1d2430;padding:.5em 1.2em;z-index:2}
nav a{color:#dfe6ee;margin-right:1.2em;text-decoration:none;font-weight:500}
nav a:hover{color:#fff;text-decoration:underline}
h1{font-size:1.6em;margin:.8em 0 .3em}h2{font-size:1.2em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}
.verdict{display:inline-block;padding:.25em .8em;border-radius:.3em;font-weight:700;color:#fff;
font-size:1.1em}
.complete{background:#1f7a3a}.INCOMPLETE,.INTERRUPTED{background:#b26b00}.FAILED{background:#b3261e}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:.4em;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.6em}.card span{color:#5b6573}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border-bottom:1px solid #eee;
padding:.3em .5em;text-align:left;vertical-align:top}code{background:#f1f3f5;padding:0 .2em}
.critical,.error{color:#b3261e;font-weight:600}.warning{color:#8a5a00;font-weight:600}
.info{color:#2b5c9e}svg{background:#fff;border:1px solid #e3e6ea;border-radius:.4em}
.legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:.8em;
height:.8em;margin-right:.3em;border-radius:2px;vertical-align:-.05em}
pre.ev{margin:.2em 0;white-space:pre-wrap;word-break:break-all;font-size:12px;
background:#f6f8fa;padding:.3em .5em}
"""

_STATUS_COLORS = {"ok": "#2e9d57", "partial": "#e0a100", "failed": "#d0392b",
                  "skipped": "#9aa4b1", "interrupted": "#8e44ad", "not started": "#c7ccd3"}
_MAX_TIMELINE = 400
_MAX_PICTURE = 5000


def _legend() -> str:
    return "<p class='legend'>" + "".join(
        f"<span><i style='background:{c}'></i>{html.escape(s)}</span>"
        for s, c in _STATUS_COLORS.items()) + "</p>"


def cluster_svg(nodes: list[Mapping[str, Any]]) -> str:
    """Instances by service (one row per service), one square per instance, colored by
    collection status; each square names its instance on hover."""
    e = html.escape
    by_service: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for n in nodes[:_MAX_PICTURE]:
        for svc in n.get("services") or ["unknown"]:
            by_service[svc].append(n)
    per_row, size, gap, label = 50, 12, 2, 110
    y, parts = 10, []
    for svc in sorted(by_service):
        items = by_service[svc]
        rows = -(-len(items) // per_row)
        parts.append(f"<text x='8' y='{y + 10}' font-size='12' fill='#1d2430'>"
                     f"{e(svc)} ({len(items)})</text>")
        for i, n in enumerate(items):
            x = label + (i % per_row) * (size + gap)
            yy = y + (i // per_row) * (size + gap)
            color = _STATUS_COLORS.get(str(n.get("status")), "#666")
            parts.append(f"<rect x='{x}' y='{yy}' width='{size}' height='{size}' rx='2' "
                         f"fill='{color}'><title>{e(str(n.get('hostname') or n.get('uuid')))}"
                         f": {e(str(n.get('status')))}</title></rect>")
        y += rows * (size + gap) + 10
    width = label + per_row * (size + gap) + 10
    return (f"<svg id='cluster-picture' width='{width}' "
            f"height='{max(y, 30)}' role='img' aria-label='instances by service and status'>"
            + "".join(parts) + "</svg>")


def timeline_svg(nodes: list[Mapping[str, Any]]) -> str:
    """One bar per collected node: when its collection started and how long it took."""
    e = html.escape
    timed = sorted((n for n in nodes if isinstance(n.get("started_at"), (int, float))
                    and isinstance(n.get("seconds"), (int, float))),
                   key=lambda n: float(n["started_at"]))[:_MAX_TIMELINE]
    if not timed:
        return ("<svg id='timeline' width='400' "
                "height='30'><text x='8' y='20' font-size='12'>no node was collected"
                "</text></svg>")
    t0 = min(float(n["started_at"]) for n in timed)
    t1 = max(float(n["started_at"]) + float(n["seconds"]) for n in timed)
    span = max(t1 - t0, 0.001)
    label, plot, bar = 150, 620, 10
    parts = []
    for i, n in enumerate(timed):
        x = label + (float(n["started_at"]) - t0) / span * plot
        w = max(1.0, float(n["seconds"]) / span * plot)
        y = 10 + i * (bar + 3)
        name = str(n.get("hostname") or n.get("uuid"))
        color = _STATUS_COLORS.get(str(n.get("status")), "#666")
        parts.append(f"<text x='{label - 6}' y='{y + 9}' font-size='10' text-anchor='end'>"
                     f"{e(name[:22])}</text><rect x='{x:.1f}' y='{y}' width='{w:.1f}' "
                     f"height='{bar}' fill='{color}'><title>{e(name)}: "
                     f"{float(n['seconds']):.1f} s ({e(str(n.get('status')))})</title></rect>")
    h = 10 + len(timed) * (bar + 3) + 24
    ticks = "".join(
        f"<line x1='{label + plot * k / 4:.0f}' x2='{label + plot * k / 4:.0f}' y1='5' "
        f"y2='{h - 20}' stroke='#e3e6ea'/><text x='{label + plot * k / 4:.0f}' y='{h - 6}' "
        f"font-size='10' text-anchor='middle'>{span * k / 4:.3g} s</text>" for k in range(5))
    return (f"<svg id='timeline' width='{label + plot + 30}' "
            f"height='{h}' role='img' aria-label='per-node collection times'>{ticks}"
            + "".join(parts) + "</svg>")


def _cut(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n] + " …"


def _findings_html(findings: list[Mapping[str, Any]]) -> str:
    e = html.escape
    if not findings:
        return "<p id='no-findings'>No findings: every analyzer stayed silent.</p>"
    rows = []
    for f in findings:
        ev = "".join(f"<pre class='ev'><a href='{e(x['path'])}'>{e(x['path'])}</a>:"
                     f"{x['line']}: {e(_cut(x['text']))}</pre>" for x in f["evidence"][:5])
        targets = ", ".join(f["targets"][:20]) + (" …" if len(f["targets"]) > 20 else "")
        rows.append(f"<tr><td class='{e(f['severity'])}'>{e(f['severity'])}</td>"
                    f"<td><code>{e(f['id'])}</code></td><td>{e(f['summary'])}<br>"
                    f"<small>{e(targets)}</small>{ev}</td></tr>")
    return ("<table id='findings-table'><tr><th>severity</th><th>finding</th><th>what, "
            "where, evidence</th></tr>" + "".join(rows) + "</table>")


def _glance(report: Mapping[str, Any]) -> str:
    n = report["nodes"]
    sev = Counter(f["severity"] for f in report.get("findings") or [])
    kinds = report["objects"]
    ok_kinds = sum(1 for v in kinds.values() if v["status"] == "ok")
    cards = [(n["total"], "instances"), (n["ok"], "collected ok"),
             (n["partial"], "partial"), (n["failed"], "failed"),
             (sev.get("critical", 0), "critical findings"),
             (sev.get("warning", 0), "warnings"), (f"{ok_kinds}/{len(kinds)}", "object kinds")]
    return "<div class='cards'>" + "".join(
        f"<div class='card'><b>{html.escape(str(v))}</b><span>{html.escape(k)}</span></div>"
        for v, k in cards) + "</div>"


def _status_sentence(report: Mapping[str, Any]) -> str:
    n = report["nodes"]
    v = report["verdict"]
    crit = sum(1 for f in report.get("findings") or [] if f["severity"] == "critical")
    what = ("Everything was collected." if v == "complete" else
            "Some things could not be collected (see Problems)." if v == "INCOMPLETE" else
            "The run was interrupted: what was collected before is here." if v == "INTERRUPTED"
            else "The run failed.")
    health = (f" {crit} critical findings about the cluster." if crit else
              " No critical finding about the cluster.")
    return (f"Dump {v}: {n['ok']} of {n['total']} instances collected. {what}{health}")


def render_html(report: Mapping[str, Any]) -> str:
    """readme.html: self-contained (no external assets, no scripts)."""
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
    node_rows = []
    for x in report["node_results"][:5000]:
        d = e(x["dir"])
        files = f"<a href='{d}/node.json'>node.json</a>"
        if x["status"] != "ok" and x["code"]:
            files += f" · <a href='{d}/error.txt'>error.txt</a>"
        color = _STATUS_COLORS.get(x["status"], "#666")
        node_rows.append(
            f"<tr id='{e(x['uuid'])}'><td><a href='{d}/'>{e(x['hostname'] or x['uuid'])}"
            f"</a></td><td><i style='display:inline-block;width:.7em;height:.7em;"
            f"background:{color};border-radius:2px'></i> {e(x['status'])}</td>"
            f"<td>{e(', '.join(x.get('services') or []))}</td>"
            f"<td>{'' if x['seconds'] is None else format(x['seconds'], '.1f') + ' s'}</td>"
            f"<td>{files}</td><td>{e(x['code'] or '')} {e(x['reason'] or '')}</td></tr>")
    findings = report.get("findings") or []
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tpdump: {e(report['cluster'])}</title>
<style>{_CSS}</style></head><body>
<nav><a href="#status">Status</a><a href="#picture">Cluster</a><a href="#timeline-h">Timeline</a>
<a href="#findings">Findings ({len(findings)})</a><a href="#problems">Problems</a>
<a href="#nodes">Nodes</a><a href="#read">How to read</a></nav>
<main>
<h1>Teleport support dump: {e(report['cluster'])}</h1>
<section id="status">
<p><span class="verdict {e(v)}">{e(v)}</span> taken {e(report['started'])} in
{report['seconds']:.1f} s by tpdump {e(report['tool']['version'])}.</p>
<p id="status-text"><b>{e(_status_sentence(report))}</b></p>
{_glance(report)}
<p>{n['total']} instances: {n['ok']} ok, {n['partial']} partial, {n['failed']} failed,
{n['skipped']} without SSH service{', ' + str(n['interrupted'] + n['not started'])
 + ' not finished' if n['interrupted'] or n['not started'] else ''}.</p>
{'<p class="error">FATAL: ' + e(report['fatal']) + '</p>' if report['fatal'] else ''}
</section>
<h2 id="picture">The cluster: instances by service and status</h2>
{_legend()}
{cluster_svg(report['node_results'])}
<h2 id="timeline-h">Collection timeline (per node: start and duration)</h2>
{timeline_svg(report['node_results'])}
<h2 id="findings">Findings</h2>
<p>What the analyzers noticed about the cluster (<code>tpdump analyze</code> on the archive
prints the same). Evidence is the archive file, its line number and the line.</p>
{_findings_html(findings)}
<h2 id="problems">Problems (collection)</h2>
<table><tr><th>code</th><th>severity</th><th>what</th><th>count</th><th>targets</th>
<th>explanation</th></tr>{''.join(rows) or '<tr><td colspan=6>none</td></tr>'}</table>
{_kube_html(report.get("kube"))}
<h2>What this is</h2>
<p>A support dump of a Teleport cluster: the configuration, logs and state of every agent
tpdump could reach, and the cluster's objects from the auth API, for a support engineer.
Secrets (private keys, join tokens, passwords, client secrets, bearer tokens) were removed
before anything was written. <code>report.txt</code> is the plain-text report,
<code>report.json</code> the same as data, <code>manifest.json</code> lists every file with
its SHA-256.</p>
<h2>Secrets removed</h2><ul>{red}</ul>
{_obfuscation_html(report.get("obfuscation"))}
<h2 id="read">How to read it</h2>
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
<h2 id="nodes">Nodes</h2>
<table><tr><th>node</th><th>status</th><th>services</th><th>time</th><th>files</th>
<th>reason</th></tr>{''.join(node_rows)}</table>
</main></body></html>
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
