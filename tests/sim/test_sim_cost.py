"""The simulator's cheap paths answer exactly what the straightforward code answered: log
lines from per-node templates, the shlex fast path, `find` sizes, contents built once."""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import shlex
from pathlib import Path

import pytest
import yaml

from tpdump.sim import vfs
from tpdump.sim.cluster import SimCluster, SimNode
from tpdump.sim.hostile import Stream
from tpdump.sim.logs import (
    _ERRORS,
    _MESSAGES,
    _QUOTE_RE,
    _SECRETS,
    _TUNNEL_MESSAGES,
    LINE_INTERVAL_S,
    Attrs,
    _go_quote,
    log_bytes,
    log_lines,
    secret_positions,
    stamp_ms,
    stamp_s,
)
from tpdump.sim.scenario import parse_scenario
from tpdump.sim.shell import (
    PROBE_MARK,
    BatchStep,
    ExecResult,
    batch_file,
    parse_probe_header,
    run_argv,
    run_command,
    split_words,
)

SCENARIO = """
cluster_name: cost.example.com
teleport_version: "17.4.2"
seed: 3
groups:
  - {name: sd, count: 2, diag: true, log_lines: 300}
  - {name: pl, count: 2, init: plain, diag: true, log_lines: 250, log_error_rate: 0.4}
  - {name: js, count: 1, init: plain, log_format: json, log_lines: 200, tunnel: true}
  - {name: one, count: 1, init: plain, log_lines: 1}
  - {name: none, count: 1, init: plain, log_lines: 0}
  - {name: garb, count: 1, init: plain, fault: garbage, log_lines: 200}
  - {name: garbjs, count: 1, init: plain, fault: garbage, log_format: json, log_lines: 120}
secrets: {plant: %s}
"""


def _cluster(plant: bool = True) -> SimCluster:
    scen = parse_scenario(yaml.safe_load(SCENARIO % ("true" if plant else "false")),
                          Path("/tmp"))
    return SimCluster(scen, 241 if plant else 242)


# --- the log generator as it was first written: one line at a time, in full --------------


def _ref_text(ts: float, level: str, component: str, message: str, attrs: Attrs,
              caller: str) -> str:
    fields = " ".join(f"{k}:{_go_quote(v) if _QUOTE_RE.search(v) or not v else v}"
                      for k, v in attrs)
    comp = ("[" + component.upper() + "]").ljust(12)
    body = f"{message} {fields}" if fields else message
    return f"{stamp_ms(ts)} {level.upper()} {comp}{body} {caller}"


def _ref_json(ts: float, level: str, component: str, message: str, attrs: Attrs,
              caller: str) -> str:
    doc: dict[str, str] = {
        "timestamp": dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "level": "warning" if level == "warn" else level,
        "caller": caller, "message": message, "component": component,
    }
    for k, v in attrs:
        doc.setdefault(k, v)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _ref_lines(node: SimNode, end: float, seed: int, cluster_name: str,
               proxy_ip: str) -> list[tuple[float, str, bytes]]:
    g = node.inst.group
    n = g.log_lines
    rnd = random.Random(f"{seed}:{node.uuid}:log")
    end += g.clock_offset_s
    json_fmt = node.config.log_format == "json"
    garbage = g.fault == "garbage"
    values = {"pid": str(node.pid), "version": node.inst.version, "cluster": cluster_name,
              "addr": node.heartbeat_addr or "tunnel", "data_dir": node.config.data_dir,
              "proxy": f"{cluster_name}:3080", "proxy_ip": proxy_ip or "127.0.0.1"}
    secret_at = secret_positions(n) if node.canaries else {}
    normal = _MESSAGES + (_TUNNEL_MESSAGES if g.tunnel else [])
    out: list[tuple[float, str, bytes]] = []
    for i in range(n):
        ts = end - (n - i) * LINE_INTERVAL_S + rnd.random()
        kind = secret_at.get(i)
        if kind is not None and kind in node.canaries:
            level, comp, msg, attrs, caller = _SECRETS[kind]
            fill = dict(values, canary=node.canaries[kind])
        else:
            pick = _ERRORS if rnd.random() < g.log_error_rate else normal
            level, comp, msg, attrs, caller = rnd.choice(pick)
            fill = dict(values, sid=f"{rnd.getrandbits(64):016x}")
        real_attrs = tuple((k, v.format(**fill)) for k, v in attrs)
        make = _ref_json if json_fmt else _ref_text
        raw = make(ts, level, comp, msg, real_attrs, caller).encode() + b"\n"
        if garbage and i % 97 == 5:
            raw = raw[:20] + b"\xff\xfe\x00\xc3" + raw[20:]
        out.append((ts, level, raw))
    if garbage and out:
        ts, level, raw = out[-1]
        out[-1] = (ts, level, raw[: len(raw) // 2])
    return out


@pytest.mark.parametrize("plant", [True, False])
def test_log_lines_match_the_line_by_line_generator(plant: bool) -> None:
    cluster = _cluster(plant)
    for node in cluster.nodes:
        for end in (cluster.started, cluster.started + 12.3456789, 1_700_000_000.9999996):
            want = _ref_lines(node, end, 3, "cost.example.com", "10.1.2.3")
            got = log_lines(node, end, 3, "cost.example.com", "10.1.2.3")
            assert [(x.ts, x.level, x.raw) for x in got] == want, node.hostname
            assert log_bytes(node, end, 3, "cost.example.com", "10.1.2.3") == b"".join(
                raw for _, _, raw in want)


def test_stamps_match_datetime() -> None:
    rnd = random.Random(7)
    base = 1_790_000_000
    samples = [base + rnd.random() * 10_000_000 for _ in range(20_000)]
    samples += [base + k + f for k in range(50) for f in
                (0.0, 0.9999994, 0.9999995, 0.9999996, 0.4999995, 0.0000005, 1e-9)]
    samples += [0.0, 0.5, 86399.9999997]
    for ts in samples:
        assert stamp_s(ts) == dt.datetime.fromtimestamp(ts, dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"), ts


def test_split_words_is_shlex_split() -> None:
    rnd = random.Random(11)
    alphabet = "ab -_/.=:'\"\\ \t\n\x0b\x1c\u00a0\u3000x9%$"
    cases = ["", " ", "r 1 2 systemctl status --no-pager", "  a  b  ", "a\tb", "'a b' c",
             'a "b\\" c"', "a\\ b", "x'", "e\u2003f"]
    cases += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(12)))
              for _ in range(20_000)]
    for line in cases:
        try:
            want: list[str] | type[ValueError] = shlex.split(line)
        except ValueError:
            want = ValueError
        try:
            got: list[str] | type[ValueError] = split_words(line)
        except ValueError:
            got = ValueError
        assert got == want, repr(line)


def test_find_sizes_are_content_lengths_and_contents_are_built_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = _cluster()
    fsb = vfs.FSBuilder(cluster)
    built: list[tuple[str, int]] = []
    real_log, real_db = fsb._log, fsb._db  # the lru caches in front of them are replaced

    def count_log(index: int) -> bytes:
        built.append(("log", index))
        return real_log(index)

    def count_db(index: int) -> bytes:
        built.append(("db", index))
        return real_db(index)

    monkeypatch.setattr(fsb, "log", functools.lru_cache(maxsize=4)(count_log))
    monkeypatch.setattr(fsb, "db", functools.lru_cache(maxsize=4)(count_db))
    for node in cluster.nodes:
        fs = fsb.fs(node)
        out = run_command("find / -maxdepth 20 -printf '%y %s %p\\n'", fs, node, 0.0, cluster)
        assert isinstance(out, ExecResult)
        listed = {}
        for line in out.stdout.decode("utf-8", "surrogateescape").splitlines():
            kind, size, path = line.split(" ", 2)
            listed[path] = (kind, int(size))
        for path, ent in fs.entries.items():
            if ent.kind == "file" and not isinstance(ent.data, Stream):
                assert listed[path] == ("f", len(ent.content())), path
                if not ent.readable:
                    continue
                # the batch's head and tail of it: the same bytes, nothing built again
                head, _ = batch_file(BatchStep("f", "0", 64, (path,)), fs)
                tail, _ = batch_file(BatchStep("t", "0", 64, (path,)), fs)
                data = ent.content()
                assert head == data[:64]
                assert tail == data[max(0, len(data) - 64):]
    assert len(built) == len(set(built))  # every log and database made once


def test_probe_header_values_are_shlex_words() -> None:
    for raw in ("''", "'a b'", "'x'y'", "'", "'a'\"b\"", "'/srv/root dir'", "plain",
                "'it'\"'\"'s'", "' '"):
        script = f"B=bnd\nR={raw}\nCAP=10\n{PROBE_MARK}\n"
        try:
            words = shlex.split(raw)
        except ValueError:
            with pytest.raises(ValueError):
                parse_probe_header(script)
            continue
        assert parse_probe_header(script) == ("bnd", words[0] if words else "", 10), raw


def test_batch_run_steps_are_the_joined_command() -> None:
    cluster = _cluster()
    for node in cluster.nodes[:3]:
        fs = vfs.FSBuilder(cluster).fs(node)
        for args in (("hostname",), ("echo", "a b", "", "c'd"), ("uname", "-a"),
                     ("/bin/sh", "-c", "cat /etc/hostname"), ("nice", "-n", "10", "true"),
                     ("df", "-Pk", "/var/lib/teleport"), ("nosuch",), ("",),
                     ("journalctl", "-u", "teleport", "-n", "5")):
            assert run_argv(list(args), fs, node, 5.0, cluster) == run_command(
                shlex.join(args), fs, node, 5.0, cluster), args
