"""The report: errors aggregated by code, the verdict and exit code, the three renderings."""

from tpdump.discovery import Instance
from tpdump.errors import ExitCode, Problem
from tpdump.report import RunFacts, aggregate, build, render_html, render_text, summary_lines
from tpdump.results import NodeResult, NodeStatus


def node(name: str, status: NodeStatus, code: str | None = None) -> NodeResult:
    r = NodeResult(Instance(uuid=f"uuid-{name}", hostname=name, services={"node"}))
    r.status = status
    if code:
        r.fail(code, "x", f"detail of {name}")
    return r


def facts(**kw: object) -> RunFacts:
    base = {"cluster": "acme", "started": 1.7e9, "finished": 1.7e9 + 5, "command": "tpdump",
            "settings": {}}
    base.update(kw)
    return RunFacts(**base)  # type: ignore[arg-type]


def test_aggregate_groups_by_code() -> None:
    """27 refused nodes are one line with 27 targets."""
    problems = [Problem("TPD200", f"n{i}", "refused") for i in range(27)]
    problems.append(Problem("TPD203", "bad", "key"))
    groups = aggregate(problems)
    assert groups[0]["code"] == "TPD200" and groups[0]["count"] == 27
    assert groups[1]["count"] == 1


def test_verdicts_and_exit_codes() -> None:
    """complete → 0, a failed node → 1, interrupted → 130, fatal → 3."""
    ok = [node("a", NodeStatus.OK)]
    assert build(facts(), ok)["exit_code"] == ExitCode.COMPLETE
    bad = [*ok, node("b", NodeStatus.FAILED, "TPD200")]
    report = build(facts(), bad)
    assert report["verdict"] == "INCOMPLETE" and report["exit_code"] == 1
    assert build(facts(interrupted=True), ok)["exit_code"] == 130
    assert build(facts(fatal="TPD100: down"), [])["exit_code"] == 3


def test_no_ssh_and_unsupported_kinds_do_not_make_it_incomplete() -> None:
    """Warnings (no SSH service, kinds the version lacks) leave the dump complete."""
    nodes = [node("a", NodeStatus.OK), node("auth", NodeStatus.SKIPPED, "TPD207")]
    objects = {"windows_desktop_service": {"status": "failed", "code": "TPD102",
                                           "class": "unsupported", "message": "x"}}
    assert build(facts(objects=objects), nodes)["verdict"] == "complete"


def test_renderings_mention_codes_and_targets() -> None:
    """report.txt, the summary and readme.html carry the codes, counts and explanations."""
    nodes = [node(f"web-{i}", NodeStatus.FAILED, "TPD200") for i in range(8)]
    report = build(facts(redactions={"join token": 3}), nodes)
    summary = "\n".join(summary_lines(report))
    assert "TPD200 8 targets: connection refused (web-0" in summary and "+3" in summary
    text = render_text(report)
    assert "join token: 3" in text and "INCOMPLETE" in text
    page = render_html(report)
    assert "nothing listens" in page and "<script" not in page and "http" not in page.lower()


def test_findings_in_report_json_text_and_html() -> None:
    """report.json gains `findings` (empty by default: older readers still work); the text
    and the page show each finding with its evidence; the page has its two pictures."""
    nodes = [node("web-1", NodeStatus.OK), node("web-2", NodeStatus.FAILED, "TPD200")]
    assert build(facts(), nodes)["findings"] == []
    finding = {"id": "clock_offset", "severity": "critical", "summary": "1 agents' clocks off",
               "targets": ["web-1"], "details": {},
               "evidence": [{"path": "nodes/uuid-web-1/node.json", "line": 17,
                             "text": '"clock_offset_s": 120.0,'}]}
    report = build(facts(findings=[finding]), nodes)
    assert report["findings"] == [finding]
    assert "findings: 1 critical" in "\n".join(summary_lines(report))
    text = render_text(report)
    assert "[critical] clock_offset: 1 agents' clocks off" in text
    assert 'nodes/uuid-web-1/node.json:17: "clock_offset_s": 120.0,' in text
    page = render_html(report)
    assert "<svg id='cluster-picture'" in page and "<svg id='timeline'" in page
    assert "id='findings-table'" in page and "clock_offset" in page
    assert "href='nodes/uuid-web-1/node.json'" in page
    assert "<script" not in page and "http" not in page.lower()


def test_node_json_is_the_record_one_item_a_line() -> None:
    """node.json (written by the fast encoder, by hand) parses back to the node's record,
    with one line per item."""
    import json

    from tpdump.collectors.node import node_json
    from tpdump.discovery import Instance
    from tpdump.results import ItemResult, NodeResult

    r = NodeResult(Instance("5f0c6a4e-1111-4222-8333-944445555666", "web-1", "17.4.2",
                            {"node"}), requests=4)
    r.facts.update({"tools": ["ss", "df"], "diag": {"status": {"/readyz": 200}},
                    "odd": "quote \" \u2028 é"})
    r.items += [ItemResult("teleport.yaml", "ok", "nodes/x/teleport.yaml", 10, 0.1),
                ItemResult("diag", "failed", None, 0, 1.5, "TPD202", "no answer")]
    text = node_json(r)
    assert json.loads(text) == json.loads(json.dumps(r.to_json(), default=str))
    assert sum('"name": ' in line for line in text.splitlines()) == 2


def test_brief_node_json_keeps_every_line_where_it_is() -> None:
    """The analyzers' brief node.json (no facts, no items) has each of its keys on the
    line the archive's node.json has it: evidence line numbers stay right."""
    import json

    from tpdump.collectors.node import node_json
    from tpdump.discovery import Instance
    from tpdump.results import ItemResult, NodeResult

    r = NodeResult(Instance("5f0c6a4e-1111-4222-8333-944445555666", "web-1"),
                   clock_offset_s=12.5, code="TPD202", reason="collection timed out")
    r.facts["tools"] = ["ss"]
    r.items.append(ItemResult("diag", "failed", None, 0, 1.5, "TPD202", "no answer"))
    full, brief = node_json(r).splitlines(), node_json(r, brief=True).splitlines()
    assert "facts" not in json.loads("\n".join(brief))
    for n, line in enumerate(brief[1:-1], start=1):
        assert full[n].rstrip(",") == line.rstrip(","), (n, line)
