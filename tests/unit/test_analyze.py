"""The analyzers on hand-made dump files: thresholds, evidence, isolation, and reading the
files of an archive still being written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import tpdump.analyze as an
from tpdump.analyze import DumpView, _classify, analyze, log_digest, parse_time

NOW = parse_time("2026-11-27T00:00:00Z") or 0.0


def node(uuid: str, host: str, **kw: Any) -> tuple[str, bytes]:
    doc = {"uuid": uuid, "hostname": host, "services": ["node"], "status": "ok",
           "code": None, "reason": None, "clock_offset_s": 0.01, **kw}
    return f"nodes/{uuid}/node.json", json.dumps(doc, indent=1).encode()


def discovery(*insts: tuple[str, str, str, list[str]]) -> tuple[str, bytes]:
    items = [{"uuid": u, "hostname": h, "version": v, "services": s} for u, h, v, s in insts]
    return "cluster/discovery.json", json.dumps({"instances_list": items}, indent=1).encode()


def ids(files: dict[str, bytes]) -> dict[str, list[str]]:
    return {f.id: f.targets for f in analyze(files, NOW)}


def test_version_skew_thresholds() -> None:
    """One major behind is supported; two is not; newer than auth never is."""
    files = dict([discovery(("a", "auth-1", "v17.4.2", ["auth"]),
                            ("b", "one-behind", "v16.1.0", ["node"]),
                            ("c", "two-behind", "v15.0.0", ["node"]),
                            ("d", "newer", "v17.5.0", ["node"]),
                            ("e", "same", "v17.4.2", ["node"]))])
    found = ids(files)
    assert found == {"version_skew_behind": ["two-behind"], "version_skew_newer": ["newer"]}
    f = {x.id: x for x in analyze(files, NOW)}["version_skew_behind"]
    ev = f.evidence[0]
    assert ev.path == "cluster/discovery.json" and '"v15.0.0"' in ev.text
    assert files[ev.path].decode().splitlines()[ev.line - 1].strip() == ev.text


def test_clock_offset_thresholds() -> None:
    files = dict([node("a", "fine", clock_offset_s=4.9), node("b", "warn", clock_offset_s=-6),
                  node("c", "crit", clock_offset_s=61)])
    found = {f.id + "/" + f.severity: f.targets for f in analyze(files, NOW)}
    assert found == {"clock_offset/warning": ["warn"], "clock_offset/critical": ["crit"]}
    # thresholds are data: a stricter table flags the first one too
    strict = {**an.THRESHOLDS, "clock_warning_s": 1}
    assert sum(len(f.targets) for f in analyze(files, NOW, strict)) == 3


def test_heartbeats_expired_and_stale() -> None:
    inv = [{"kind": "instance", "metadata": {"name": "u1", "expires": "2026-11-26T23:00:00Z"},
            "spec": {"hostname": "gone", "last_seen": "2026-11-26T22:00:00Z"}},
           {"kind": "instance", "metadata": {"name": "u2", "expires": "2026-11-27T01:00:00Z"},
            "spec": {"hostname": "quiet", "last_seen": "2026-11-26T23:40:00.5Z"}},
           {"kind": "instance", "metadata": {"name": "u3", "expires": "2026-11-27T01:00:00Z"},
            "spec": {"hostname": "fine", "last_seen": "2026-11-26T23:59:00.123456789Z"}}]
    files = {"cluster/inventory.json": json.dumps(inv, indent=1).encode()}
    assert ids(files) == {"heartbeat_expired": ["gone"], "heartbeat_stale": ["quiet"]}


def test_rbac_presets_and_sso_mappings_are_not_oddities() -> None:
    preset = {"teleport.internal/resource-type": "preset"}
    roles = [{"kind": "role", "metadata": {"name": "admin", "labels": preset},
              "spec": {"allow": {"rules": [{"resources": ["*"], "verbs": ["*"]}]}}},
             {"kind": "role", "metadata": {"name": "sso-only"}, "spec": {"allow": {}}},
             {"kind": "role", "metadata": {"name": "held"}, "spec": {"allow": {}}},
             {"kind": "role", "metadata": {"name": "lonely"},
              "spec": {"allow": {"rules": [{"resources": ["*"], "verbs": ["read"]}]}}}]
    users = [{"kind": "user", "metadata": {"name": "u"}, "spec": {"roles": ["held"]}}]
    github = [{"kind": "github", "metadata": {"name": "gh"},
               "spec": {"teams_to_roles": [{"team": "x", "roles": ["sso-only"]}]}}]
    files = {"objects/tctl_get_role.yaml": yaml.safe_dump_all(roles).encode(),
             "objects/tctl_get_user.yaml": yaml.safe_dump_all(users).encode(),
             "objects/tctl_get_github.yaml": yaml.safe_dump_all(github).encode()}
    assert ids(files) == {"rbac_role_unused": ["lonely"]}


def test_yaml_docs_line_numbers() -> None:
    v = DumpView({"x.yaml": b"a: 1\n---\nb: 2\nc: 3\n---\n\n---\nd: 4\n"}, NOW)
    assert list(v.yaml_docs("x.yaml")) == [(1, {"a": 1}), (3, {"b": 2, "c": 3}), (8, {"d": 4})]


def test_error_burst_needs_share_and_count() -> None:
    line = "2026-11-26T23:{:02d}:00.000Z {} [NODE:1]    {} error:x caller.go:1"
    lines = [line.format(i % 60, "ERROR" if i % 4 == 0 else "INFO",
                         "Boom happened." if i % 8 == 0 else "Other thing.") for i in range(100)]
    files = dict([node("a", "n1")])
    files["nodes/a/logs/teleport.log"] = "\n".join(lines).encode()
    (f,) = analyze(files, NOW)
    assert f.id == "log_error_burst" and f.details["errors"] == 25
    assert f.details["top"] == [{"message": "Boom happened.", "count": 13},
                                {"message": "Other thing.", "count": 12}]
    assert f.evidence[0].line == 1
    few = dict([node("a", "n1")])
    few["nodes/a/logs/teleport.log"] = "\n".join(lines[:60]).encode()  # 15 errors < 20
    assert analyze(few, NOW) == []


def test_a_failing_analyzer_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(v: DumpView, t: Any) -> list[an.Finding]:
        raise RuntimeError("bad input")
    monkeypatch.setattr(an, "ANALYZERS", {"boom": boom, "clock_offset": an.clock_offset})
    found = analyze(dict([node("a", "n", clock_offset_s=100)]), NOW)
    assert [f.id for f in found] == ["clock_offset", "analyzer_failed_boom"]


def test_dump_time_files_give_the_findings_of_the_finished_archive(tmp_path: Path) -> None:
    """The writer's on_emit keeps what the analyzers read as it is archived (after the
    transform: an obfuscated name stays obfuscated): a digest for each log with ERROR
    lines only, the wanted files, nothing bulky; the dump-time analysis of those finds
    exactly what analyzing the finished archive finds, in both formats."""
    import anyio

    from tpdump.archive import ArchiveWriter, read_archive

    line = "2026-11-26T23:{:02d}:00.000Z {} [NODE:1]    {} host:web-7 caller.go:1"
    burst = "\n".join(line.format(i % 60, "ERROR" if i % 3 == 0 else "INFO",
                                   "Dial failed." if i % 2 else "Cache stale.")
                       for i in range(90)) + "\n"
    calm = "\n".join(line.format(i % 60, "INFO", "Fine.") for i in range(90)) + "\n"
    one_error = calm + line.format(1, "ERROR", "Once.") + "\n"
    files = {"nodes/a/logs/teleport.log": burst, "nodes/b/logs/teleport.log": calm,
             "nodes/c/teleport.service/log.txt": one_error,
             "nodes/c/version.txt": "Teleport v17.4.2\n",
             "nodes/c/data_dir.txt": "x" * 5000,
             "cluster/discovery.json": discovery(("x", "auth-1", "v17.4.2", ["auth"]),
                                                 ("b", "n2", "v15.0.0", ["node"]))[1],
             "objects/tctl_get_role.yaml": "kind: role\n" * 100}
    node_files = dict([node("a", "n1"), node("b", "n2"), node("c", "n3")])

    async def write(writer: ArchiveWriter, seen: an.DumpTimeFiles
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for path, text in files.items():
                await writer.add(path, text, source="test", priority="log")
            await writer.settle()
            out = (await an.at_dump_time(seen, node_files, NOW),
                   await an.at_dump_time(None, node_files, NOW))
            await writer.finish_input()
        return out

    for fmt in ("tar.gz", "zip"):
        seen = an.DumpTimeFiles()
        writer = ArchiveWriter(tmp_path / f"d-{fmt.replace('.', '-')}", "root", fmt=fmt,
                               transform=lambda _p, data: data.replace(b"web-7", b"host-x"),
                               on_emit=seen)
        writer.open()
        at_dump, nothing_seen = anyio.run(write, writer, seen)
        writer.close()
        kept = seen.files()
        assert sorted(kept) == sorted([
            "nodes/a/logs/teleport.log" + an.DIGEST,
            "nodes/c/teleport.service/log.txt" + an.DIGEST, "nodes/c/version.txt",
            "cluster/discovery.json", "objects/tctl_get_role.yaml"])
        digest = json.loads(kept["nodes/a/logs/teleport.log" + an.DIGEST])
        assert digest["errors"] == 30 and digest["lines"] == 90
        assert "host-x" in digest["evidence"][1] and "web-7" not in digest["evidence"][1]
        assert kept["objects/tctl_get_role.yaml"] == files["objects/tctl_get_role.yaml"].encode()
        archived = {**read_archive(writer.path), **node_files}
        assert at_dump == [f.as_dict() for f in analyze(archived, NOW)]
        assert {f["id"] for f in at_dump} == {"log_error_burst", "version_skew_behind"}
        assert [f["id"] for f in nothing_seen] == []  # nothing is read back from the archive


def test_a_stopped_analysis_returns_nothing() -> None:
    assert analyze({}, 0.0, stop=lambda: True) == []


def test_a_failing_on_emit_costs_the_archive_nothing(tmp_path: Path) -> None:
    import anyio

    from tpdump.archive import ArchiveWriter, read_archive

    def broken(path: str, data: bytes) -> None:
        raise RuntimeError("observer bug")

    writer = ArchiveWriter(tmp_path / "d.tar.gz", "root", on_emit=broken)
    writer.open()

    async def write() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            await writer.add("nodes/a/logs/teleport.log", b"x\n", source="test")
            await writer.add("nodes/a/version.txt", b"v\n", source="test")
            await writer.finish_input()

    anyio.run(write)
    writer.close()
    got = read_archive(writer.path)
    assert got["nodes/a/logs/teleport.log"] == b"x\n" and got["nodes/a/version.txt"] == b"v\n"


def test_dump_time_analysis_stops_when_interrupted() -> None:
    """An interrupt during the analysis: the report gets an info finding at once."""
    import time

    import anyio

    def slow(v: DumpView, t: Any) -> list[an.Finding]:
        time.sleep(1.5)
        return []

    async def main() -> tuple[list[dict[str, Any]], float]:
        started = time.monotonic()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(an, "ANALYZERS", {"slow": slow})
            got = await an.at_dump_time(None, {}, NOW, budget=10, stop=lambda: True)
        return got, time.monotonic() - started

    got, seconds = anyio.run(main)
    assert [f["id"] for f in got] == ["analyzers_skipped"] and seconds < 1.0


def _reference_digest(data: bytes) -> dict[str, Any]:
    """log_digest as first written: every line classified in full."""
    total, errors, first_ev = 0, 0, None
    msgs: Counter[str] = Counter()
    first = last = ""
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        c = _classify(line)
        if c is None:
            continue
        total += 1
        if c[0] != "ERROR":
            continue
        errors += 1
        msgs[c[2]] += 1
        first = first or c[1]
        last = c[1]
        if first_ev is None:
            first_ev = [i, line.strip()[:300]]
    return {"lines": total, "errors": errors, "first": first, "last": last,
            "top": [{"message": m, "count": n} for m, n in msgs.most_common(5)],
            "evidence": first_ev}


_LOG_LINE = st.one_of(
    st.builds(lambda p, t, lvl, sp, comp, msg: f"{p}{t}{sp}{lvl}{sp}[{comp}]{sp}{msg}",
              st.sampled_from(["", "Jan 01 h teleport[7]: ", "x "]),
              st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01.5", "2026-1-1T0Z"]),
              st.sampled_from(["ERROR", "WARN", "INFO", "DEBUG", "error"]),
              st.sampled_from([" ", "\t", "  ", "\u00a0"]),
              st.text("ABC:1", max_size=5), st.text("ab .!?\u2028é", max_size=30)),
    st.builds(lambda lvl, msg: json.dumps({"level": lvl, "timestamp": "t", "message": msg}),
              st.sampled_from(["error", "info", "ERROR"]), st.text(max_size=20)),
    st.text(max_size=40))


@given(st.lists(_LOG_LINE, max_size=30), st.sampled_from(["\n", "\r\n", "\r", "\x85"]))
@settings(max_examples=300, deadline=None)
def test_log_digest_is_the_full_classification_of_every_line(lines: list[str],
                                                               sep: str) -> None:
    """The fast digest (messages worked out for ERROR lines only) says exactly what
    classifying every line in full says."""
    data = sep.join(lines).encode("utf-8", "surrogatepass")
    assert log_digest(data) == _reference_digest(data)
