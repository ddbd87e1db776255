"""Fuzzing every parser of hostile input (hypothesis): tctl output and errors, teleport.yaml,
logs, command lines, the node probe and host facts, the process-state database, Kubernetes
objects, the config file and flags, scenario files and archives. Each parser either returns
a well-typed result or raises the error its callers handle; never anything else.

Deterministic (derandomized, no example database); TPDUMP_FUZZ_EXAMPLES scales the search
(e.g. 20 for a long local run)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import sqlite3
import string
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tpdump import analyze as analyze_mod
from tpdump import config, diff, discovery, inspect, status, tctl
from tpdump.archive import read_archive, verify
from tpdump.collectors import kube, node
from tpdump.collectors.cluster import error_text
from tpdump.collectors.sqlite import dump_process_state
from tpdump.errors import UsageError
from tpdump.hosts import parse_http
from tpdump.redact import Loader, Redactor, dump_yaml
from tpdump.sim import scenario
from tpdump.snapshot import load_index, parse_age, retention

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SCALE = float(os.environ.get("TPDUMP_FUZZ_EXAMPLES", "1"))


def fuzz(n: int) -> settings:
    """Settings of one property: `n` examples (scaled), no deadline, deterministic."""
    return settings(max_examples=max(int(n * SCALE), 1), deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


SECRET = "SEKRETzq8VbN3xKp1Lm7Qw"  # a planted secret: must never come out of a redactor
DEEP = 5000  # deeper than any recursive parser can follow


def _samples(pattern: str) -> list[bytes]:
    found = sorted(DATA.glob(pattern))
    assert found, pattern
    return [p.read_bytes() for p in found]


TELEPORT_YAMLS = _samples("teleport/config/*.yaml")
RESOURCE_YAMLS = _samples("teleport/resources/*.yaml")
STATUS_TEXTS = _samples("tctl/status-*.txt")
RESOURCE_DOCS = [d for raw in RESOURCE_YAMLS
                 for d in yaml.safe_load_all(raw.decode()) if isinstance(d, dict)]
JSON_SAMPLES = [json.dumps(RESOURCE_DOCS, default=str).encode(),
                json.dumps(RESOURCE_DOCS[0], default=str).encode(),
                json.dumps([{"kind": "node", "metadata": {"name": "0b1c"},
                             "spec": {"hostname": "n1", "addr": "10.0.0.1:3022",
                                      "version": "17.1.0"}}]).encode()]
LOG_SAMPLES = [
    b'2025-01-02T03:04:05.123Z INFO [PROC:1] Service is starting. pid:1 service/service.go:1\n'
    b'2025-01-02T03:04:06Z ERROR [NODE] Failed to connect to proxy tunnel. error:[dial tcp '
    b'10.0.0.1:3024: connection refused]\n  continuation line\n',
    b'{"timestamp":"2025-01-02T03:04:05Z","level":"ERROR","message":"reverse tunnel down",'
    b'"token":"' + SECRET.encode() + b'"}\n{"time":"2025-01-02T03:04:06Z","msg":"ok"}\n',
]
# Bytes that mean something to one of the parsers: inserted by the mutator.
TOKENS = [b"\x00", b"\xff", b"\xc3", b"\n", b"\r\n", b":", b": ", b"- ", b"[", b"]", b"{", b"}",
          b"&a ", b"*a", b"!!binary ", b"!!int ", b"!!python/object ", b"2024-02-30", b"\t",
          b"'", b'"', b"---\n", b"<<: ", b"ERROR: ", b"\x1b[31m", b"\\", b"9" * 400, b"nan",
          b"-----BEGIN PRIVATE KEY-----", b"token: ", b"=", b"%", b"#", b"|",
          "\ud800".encode("utf-8", "surrogatepass")]


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A real sample with a few edits: bytes changed, meaningful tokens inserted, parts
    deleted, duplicated or cut off."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 40))]
        elif op == "cut":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[max(0, pos - 64):pos]
    return bytes(data)


def texts(samples: list[bytes]) -> st.SearchStrategy[str]:
    """Random text, and mutated samples decoded as the collectors decode them."""
    return st.one_of(st.text(max_size=300),
                     mutated(samples).map(lambda b: b.decode("utf-8", "surrogateescape")))


def blobs(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=300), mutated(samples))


KEYS = st.sampled_from(["metadata", "spec", "status", "name", "namespace", "labels", "kind",
                        "hostname", "host_id", "version", "addr", "use_tunnel", "services",
                        "containers", "initContainers", "env", "value", "valueFrom", "data",
                        "stringData", "binaryData", "annotations", "lastState",
                        "restartCount", "containerStatuses", "involvedObject", "reason",
                        "message", "token", "password", "app.kubernetes.io/name", "app",
                        "helm.sh/chart", "count", "type", "lastTimestamp"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["teleport", "teleport-cluster"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=5),
    max_leaves=25)
json_objects = st.dictionaries(KEYS, json_values, max_size=6)


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def tolerant(func: Callable[..., Any], *args: Any, allowed: tuple[type[BaseException], ...],
             **kwargs: Any) -> Any:
    """`func(*args)`, or None when it raised one of the errors its callers handle."""
    try:
        return func(*args, **kwargs)
    except allowed:
        return None


# --- tctl: errors, JSON documents, status ------------------------------------------------

TCTL_MESSAGES = [
    ('access denied to perform action "list" on "node"', tctl.TctlFailure.ACCESS_DENIED),
    ('Cannot connect to the auth server. Is the auth server running on "a:3025"?',
     tctl.TctlFailure.CANNOT_CONNECT),
    ('unsupported resource: "foo"', tctl.TctlFailure.UNSUPPORTED),
    ("something else broke", tctl.TctlFailure.OTHER),
]


@fuzz(300)
@given(st.text(max_size=300))
def test_tctl_error_text_is_cleaned_and_classified(stderr: str) -> None:
    """Any stderr gives a cleaned message no longer than itself and a failure class."""
    message = tctl.clean_message(stderr)
    assert isinstance(message, str) and len(message) <= len(stderr)
    assert isinstance(tctl.classify(message), tctl.TctlFailure)


@fuzz(200)
@given(st.sampled_from(TCTL_MESSAGES),
       st.lists(st.sampled_from(["\x1b[31m", "\x1b[0m", "\x1b[1;31m", " ", "\n"]), max_size=4),
       st.text(alphabet=string.digits + " .,;()\n", max_size=30))
def test_tctl_errors_are_classified_through_escapes(
        case: tuple[str, tctl.TctlFailure], escapes: list[str], tail: str) -> None:
    """tctl's coloured `ERROR:` prefix never hides the class of its message."""
    text, expected = case
    stderr = "".join(escapes) + "ERROR: " + "\x1b[0m" + text + tail
    message = tctl.clean_message(stderr)
    assert not message.startswith("ERROR")
    assert tctl.classify(message) is expected


@fuzz(20)
@given(st.binary(max_size=200), st.one_of(st.binary(max_size=200), st.sampled_from(
    [f"\x1b[31mERROR: \x1b[0m{m}\n".encode() for m, _ in TCTL_MESSAGES])),
    st.sampled_from([0, 0, 1, 2, 127, 255]))
def test_tctl_run_of_any_output_and_exit(stdout: bytes, stderr: bytes, rc: int) -> None:
    """A tctl that prints anything and exits with any status gives a TctlResult: ok
    exactly on exit 0 (stderr then is warnings), else a class and a clean message."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "out").write_bytes(stdout)
        (d / "err").write_bytes(stderr)
        script = d / "tctl"
        script.write_text(f'#!/bin/sh\ncat "{d}/out"; cat "{d}/err" >&2; exit {rc}\n')
        script.chmod(0o755)
        client = tctl.Tctl(str(script), auth_server=None, identity=None, concurrency=1,
                           timeout=20)
        result = anyio.run(client.run, "get", "node", "--format=json")
    assert result.ok == (rc == 0) and result.returncode == rc and result.stdout == stdout
    if not result.ok:
        assert result.failure is not None and result.message
        assert not result.message.startswith("ERROR:")


@fuzz(300)
@given(blobs(JSON_SAMPLES))
@example(nested(DEEP).encode())
@example(b'{"a": ' + nested(DEEP).encode() + b"}")
@example(b'[{"spec": ' + nested(600).encode() + b"}]")
@example(b"\xff")
def test_tctl_json_is_documents_or_value_error(raw: bytes) -> None:
    """`tctl get --format=json` output: a list of objects, or ValueError (TPD107)."""
    docs = tolerant(discovery.parse_json_docs, raw, allowed=(ValueError,))
    if docs is not None:
        assert isinstance(docs, list) and all(isinstance(d, dict) for d in docs)
        Redactor().document(docs)  # what write_objects does with them next


@fuzz(100)
@given(st.lists(json_objects, min_size=1, max_size=3))
def test_tctl_documents_render_as_yaml_that_parses_back(docs: list[dict[str, Any]]) -> None:
    """objects/tctl_get_<kind>.yaml of any documents is YAML that loads back to them."""
    redacted = [Redactor().document(d) for d in docs]
    text = dump_yaml(redacted)
    assert list(yaml.safe_load_all(text)) == redacted


@fuzz(200)
@given(st.lists(st.binary(max_size=40), max_size=5),
       st.sampled_from(["GITHUB_TOKEN", "DB_PASSWORD", "X_SECRET", "TELEPORT_AUTH"]))
def test_process_environment_of_any_bytes(items: list[bytes], name: str) -> None:
    """/proc/PID/environ of any bytes gives text; a secret-named variable's value is gone."""
    raw = b"\0".join([*items, f"{name}={SECRET}".encode(), *items])
    out = Redactor().environ(raw)
    assert isinstance(out, str) and SECRET not in out


@fuzz(100)
@given(st.lists(json_objects, max_size=4),
       st.dictionaries(st.sampled_from(list(discovery.HEARTBEAT_KINDS)),
                       st.lists(json_objects, max_size=3), max_size=3),
       st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3),
       st.lists(st.text(alphabet="ab*?[]!-", max_size=5), max_size=2))
@example([{"metadata": {"name": "x"}, "spec": {"services": 5}}], {}, {}, [])
@example([], {"node": [{"metadata": {"name": "n"}, "spec": {"addr": "h:99999999"}}]}, {}, [])
def test_discovery_merges_any_records(inventory: list[dict[str, Any]],
                                      heartbeats: dict[str, list[dict[str, Any]]],
                                      targets: dict[str, str], patterns: list[str]) -> None:
    """Any inventory and heartbeat records merge into instances with a valid SSH target."""
    instances = discovery.merge(inventory, heartbeats)
    for inst in instances:
        assert isinstance(inst.uuid, str) and inst.uuid
        assert all(isinstance(s, str) for s in inst.services)
        discovery.assign_target(inst, targets)
        if inst.target is not None:
            assert 0 < inst.target.port < 65536
        json.dumps(inst.to_json())
    chosen, dropped = discovery.select(instances, patterns, [])
    assert len(chosen) + dropped == len(instances)


@fuzz(300)
@given(texts(STATUS_TEXTS))
@example("Cluster: x\nauthority\nno dashes here\nhost  never\n")
@example("Cluster   x\n\nVersion\n")
def test_tctl_status_parses_or_is_none(text: str) -> None:
    """`tctl status`: a ClusterStatus (that serialises to JSON) or None."""
    parsed = status.parse_status(text)
    if parsed is not None:
        assert parsed.layout in ("v16", "v17")
        json.dumps(parsed.to_json())


@fuzz(100)
@given(st.text(max_size=200), st.sampled_from(["token", "password", "client_secret"]))
def test_tctl_error_file_never_keeps_a_secret(noise: str, key: str) -> None:
    """The `.error` file of a failed call strips a secret printed in tctl's message."""
    result = tctl.TctlResult(("get", "x"), 1, b"", "", 0.1, tctl.TctlFailure.OTHER,
                             f"{noise}\n{key}={SECRET} {noise}")
    assert SECRET not in error_text(result, Redactor())


# --- teleport.yaml ---------------------------------------------------------------------

@fuzz(300)
@given(texts(TELEPORT_YAMLS))
@example("teleport:\n  data_dir: 2024-02-30\n")
@example("teleport: {nodename: !!int abc}\n")
@example("teleport:\n  data_dir: 2024-01-01\n  auth_server: {a: 1}\n")
@example(nested(DEEP))
def test_config_facts_of_any_teleport_yaml(text: str) -> None:
    """teleport.yaml facts: a JSON-serialisable dict; configured addresses are strings."""
    facts = node.config_facts(text)
    assert isinstance(facts, dict)
    assert "config_error" in facts or isinstance(facts["configured_services"], list)
    json.dumps(facts, default=str)
    assert all(isinstance(a, str) for a in node.configured_addresses(facts))


@fuzz(200)
@given(texts(TELEPORT_YAMLS))
@example("a: 2024-02-30\ntoken: x\n")
@example("a: !!int abc\npassword: x\n")
def test_teleport_yaml_redaction_of_any_text(text: str) -> None:
    """yaml_text never fails; when it says parsed, its output is YAML that still parses;
    a second pass finds nothing more to remove."""
    out, parsed = Redactor().yaml_text(text)
    assert isinstance(out, str)
    if parsed:
        list(yaml.compose_all(out, Loader=Loader))
    again = Redactor()
    again.yaml_text(out)
    assert not again.counts, again.counts


@fuzz(150)
@given(mutated(TELEPORT_YAMLS), st.sampled_from(["auth_token", "token", "password"]),
       st.sampled_from([": ", ":  ", ": '"]))
def test_teleport_yaml_planted_secret_never_survives(raw: bytes, key: str, sep: str) -> None:
    """A secret under a secret key, appended to any (even broken) teleport.yaml, is gone."""
    text = raw.decode("utf-8", "surrogateescape") + f"\n{key}{sep}{SECRET}\n"
    out, _ = Redactor().yaml_text(text)
    assert SECRET not in out


# --- logs --------------------------------------------------------------------------------

@fuzz(300)
@given(blobs(LOG_SAMPLES))
@example(b'{"token": ' + nested(DEEP).encode() + b"}\n")
@example(b'{"token2": ' + nested(900).encode() + b"}\n")
@example(b'{"password": "x", "a": ' + nested(400).encode() + b"}\n")
def test_json_lines_of_any_bytes(raw: bytes) -> None:
    """JSON-lines redaction of any bytes gives bytes, never an error, and leaves nothing
    for a second pass to remove."""
    out = Redactor().json_lines(raw)
    assert isinstance(out, bytes)
    again = Redactor()
    again.json_lines(out)
    assert not again.counts, again.counts


@fuzz(200)
@given(st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b), max_size=4),
       st.sampled_from(["token", "password", "auth_token", "session_token"]))
def test_json_log_planted_secret_never_survives(noise: list[bytes], key: str) -> None:
    """A secret in a JSON log line never survives, whatever lines surround it."""
    line = json.dumps({"level": "info", key: SECRET}).encode()
    raw = b"\n".join([*noise, line, *noise]) + b"\n"
    assert SECRET.encode() not in Redactor().json_lines(raw)
    assert SECRET.encode() not in Redactor().data(raw)


@fuzz(300)
@given(blobs(LOG_SAMPLES), st.floats(min_value=0, max_value=4e9), st.integers(0, 50))
def test_log_window_keeps_the_newest_lines(data: bytes, since: float, max_lines: int) -> None:
    """within_window keeps at most max_lines, a tail of the input's lines."""
    out, dropped = node.within_window(data, since, max_lines)
    kept = out.split(b"\n")[:-1]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    assert len(kept) <= max_lines
    assert kept == lines[len(lines) - len(kept):]
    assert dropped == (len(kept) < len(lines))
    for line in lines:
        t = node.line_time(line)
        assert t is None or math.isfinite(t)


@fuzz(300)
@given(blobs(LOG_SAMPLES), st.booleans())
def test_newest_last_reorders_without_loss(data: bytes, truncated: bool) -> None:
    """newest_last only reorders entries (drops at most a cut last line)."""
    out = node.newest_last(data, truncated)
    assert len(out) <= len(data) + 1
    if data.endswith(b"\n"):
        assert sorted(out.split(b"\n")) == sorted(data.split(b"\n"))


@fuzz(300)
@given(texts(LOG_SAMPLES))
@example('{"level": ' + nested(DEEP) + "}")
@example("0001-01-01T00:00:00+01:00 ERROR [X] y")
def test_log_digest_and_time_parsers(text: str) -> None:
    """The analyzer's log readers give well-typed results for any line."""
    digest = analyze_mod.log_digest(text.encode("utf-8", "surrogateescape"))
    assert digest["errors"] <= digest["lines"]
    json.dumps(digest)
    for line in text.splitlines() or [text]:
        t = analyze_mod.parse_time(line)
        assert t is None or math.isfinite(t)
        v = analyze_mod.parse_version(line)
        assert v is None or all(isinstance(n, int) for n in v)


@fuzz(200)
@given(blobs(LOG_SAMPLES))
def test_tunnel_lines_from_any_log(data: bytes) -> None:
    """keep_tunnel_lines keeps at most 50 lines, each about a tunnel."""
    holder = type("H", (), {})()
    node.NodeCollector.keep_tunnel_lines(holder, data)
    assert len(holder.log_tail) <= 50
    assert all("tunnel" in line.lower() for line in holder.log_tail)


# --- command lines ---------------------------------------------------------------------

@fuzz(300)
@given(st.binary(max_size=200))
def test_cmdline_round_trips(raw: bytes) -> None:
    """/proc/PID/cmdline splits into arguments that join back to the same bytes."""
    argv = node.split_cmdline(raw)
    assert b"\0".join(a.encode("utf-8", "surrogateescape") for a in argv) == raw.rstrip(b"\0")
    assert isinstance(node.config_path(argv), str)
    diag = node.diag_addr_from(argv)
    assert diag is None or isinstance(diag, str)


@fuzz(200)
@given(st.lists(st.text(max_size=20), max_size=5), st.sampled_from(
    ["--token", "--auth-token", "--join-token", "--password", "--secret"]), st.booleans())
def test_cmdline_secret_flag_never_survives(noise: list[str], flag: str, joined: bool) -> None:
    """A secret flag's value in a command line is always replaced."""
    argv = ["teleport", "start", *noise, *([f"{flag}={SECRET}"] if joined else [flag, SECRET])]
    raw = "\0".join(argv).encode("utf-8", "surrogateescape")
    assert SECRET not in "".join(Redactor().cmdline(node.split_cmdline(raw)))


@fuzz(300)
@given(st.text(max_size=40))
@example("host:99999999999")
@example("host:-1")
@example("host:٣٠٢٥")
@example("host: 1_0")
def test_hostport_is_a_valid_port_or_none(addr: str) -> None:
    """split_hostport gives a usable TCP port or None."""
    hp = node.split_hostport(addr)
    if hp is not None:
        assert isinstance(hp[0], str) and 0 < hp[1] < 65536
    parsed = discovery._split_addr(addr)
    if parsed is not None:
        assert 0 < parsed[1] < 65536


# --- the probe, host facts, HTTP answers -------------------------------------------------

@fuzz(300)
@given(st.binary(max_size=300), st.text(alphabet="0123456789abcdef", min_size=1, max_size=32))
def test_probe_output_of_any_bytes(output: bytes, boundary: str) -> None:
    """parse_probe never returns more bytes than it was given."""
    sections = node.parse_probe(output, boundary)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in sections.items())
    assert sum(len(v) for v in sections.values()) <= len(output)


@fuzz(200)
@given(st.dictionaries(st.text(alphabet=string.ascii_letters + " 0123456789", min_size=1,
                                 max_size=12).map(str.strip).filter(bool),
                       st.binary(max_size=80), max_size=6))
def test_probe_sections_round_trip(sections: dict[str, bytes]) -> None:
    """Sections framed as the probe frames them come back whole."""
    boundary = "b0undary"
    out = b"noise" + b"".join(f"\n--{boundary} {k}\n".encode() + v for k, v in sections.items())
    assert node.parse_probe(out, boundary) == sections


@fuzz(200)
@given(st.one_of(st.text(max_size=200), st.lists(st.tuples(
    st.sampled_from(["f", "d", "l", "s", "x", ""]), st.integers(-1, 2**70).map(str),
    st.one_of(st.floats().map(repr), st.sampled_from(["1e300", "nan", "-inf", "1.5"])),
    st.text(max_size=20)), max_size=6).map(
        lambda rows: "\n".join(" ".join(r) for r in rows))), st.integers(1, 10))
@example("f 10 1e300 /var/lib/teleport/x\nf 1 nan /y\n", 10)
def test_data_dir_listing_of_any_find_output(text: str, limit: int) -> None:
    """`find -printf` output of any content lists at most `limit` entries, each of which
    can be printed (its time as ISO UTC or `?`)."""
    entries = node.parse_find(text, "/var/lib/teleport", limit)
    assert len(entries) <= limit
    for e in entries:
        stamp = node.utc_stamp(e.mtime)
        assert stamp == "?" or stamp.endswith("Z")


@fuzz(300)
@given(st.one_of(st.binary(max_size=30), st.floats().map(lambda f: repr(f).encode())))
@example(b"nan")
@example(b"inf\n")
@example(b"1e999")
@example(b"\xff")
def test_probe_numbers_are_finite(raw: bytes) -> None:
    """The node's clock and uptime are finite numbers or None (node.json stays JSON)."""
    value = node.parse_number(raw)
    assert value is None or math.isfinite(value)


@fuzz(300)
@given(st.text(max_size=300), st.sets(st.text(alphabet=string.digits, min_size=1,
                                                max_size=5), max_size=3))
def test_host_fact_parsers(text: str, pids: set[str]) -> None:
    """ss, limits and meminfo parsers give well-typed facts for any text."""
    conns = node.parse_connections(text, pids)
    assert len(conns) <= len(text.splitlines())
    assert all(isinstance(c["role"], str) for c in conns)
    limits = node.parse_limits(text)
    assert all(isinstance(v, str) for v in limits.values())
    mem = node.parse_meminfo(text)
    assert set(mem) <= {"memtotal_kb", "memavailable_kb"}
    assert all(isinstance(v, int) for v in mem.values())
    json.dumps([conns, limits, mem])


@fuzz(300)
@given(st.one_of(st.binary(max_size=200), st.builds(
    lambda status, headers, body: b"HTTP/1.1 " + status + b"\r\n" + headers + b"\r\n\r\n" + body,
    st.sampled_from([b"200 OK", b"x", b"-5 no", b""]),
    st.sampled_from([b"Transfer-Encoding: chunked", b"Content-Length: 3",
                     b"Content-Length: -1", b"Content-Length: 99999999999999999999", b""]),
    st.binary(max_size=100))))
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n")
def test_http_answers_of_any_bytes(raw: bytes) -> None:
    """parse_http: (status, body no longer than the input) or ValueError."""
    got = tolerant(parse_http, raw, allowed=(ValueError,))
    if got is not None:
        assert isinstance(got[0], int) and len(got[1]) <= len(raw)


METRIC_NAMES = st.sampled_from(["teleport_reverse_tunnels_connected", "process_cpu_seconds",
                                "teleport_connected_resources", "tunnel", "x_tunnel_y", ""])


@st.composite
def metrics_text(draw: st.DrawFn) -> bytes:
    """Prometheus text exposition with random names, labels, values and comments."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(METRIC_NAMES | st.text(max_size=12))
        labels = draw(st.dictionaries(st.text(alphabet=string.ascii_letters, min_size=1,
                                              max_size=6), st.text(max_size=10), max_size=3))
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        value = draw(st.sampled_from(["1", "0", "NaN", "+Inf", "-1e308", "x"]))
        lines.append(draw(st.sampled_from(["# HELP ", "# TYPE ", ""])) + f"{name}{{{body}}} "
                     f"{value}")
    return "\n".join(lines).encode("utf-8", "surrogateescape")


@fuzz(200)
@given(st.one_of(metrics_text(), st.binary(max_size=200)),
       st.sampled_from(["token", "password", "api_key"]))
def test_metrics_text_of_any_content(body: bytes, key: str) -> None:
    """/metrics of any content: redacted (a secret label value never survives) and its
    tunnel samples are lines of it about tunnels."""
    planted = body + f'\nteleport_x{{{key}="{SECRET}"}} 1\n'.encode()
    clean = Redactor().data(planted)
    assert SECRET.encode() not in clean
    tunnels = node.tunnel_metrics(clean)
    lines = clean.decode("utf-8", "replace").splitlines()
    assert all(t in lines and "tunnel" in t and not t.startswith("#") for t in tunnels)


# --- the process-state database ----------------------------------------------------------

def _sqlite_bytes(build: Callable[[sqlite3.Connection], None]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.db")
        conn = sqlite3.connect(path)
        build(conn)
        conn.commit()
        conn.close()
        return Path(path).read_bytes()


def _real_state(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, modified INTEGER, expires DATETIME, "
                 "value BLOB, revision TEXT)")
    conn.execute("CREATE TABLE meta (version INTEGER, name TEXT)")
    conn.execute("INSERT INTO meta VALUES (1, 'x')")
    for i in range(40):
        conn.execute("INSERT INTO kv VALUES (?, ?, NULL, ?, ?)",
                     (f"/tokens/t{i}", i, f"{SECRET}-{i}".encode(), str(i)))
        conn.execute("INSERT INTO kv VALUES (?, ?, NULL, ?, ?)",
                     (f"/states/s{i}", i, json.dumps({"state": i, "token": "j0in"}), str(i)))


REAL_STATE = _sqlite_bytes(_real_state)


@st.composite
def corrupted_state(draw: st.DrawFn) -> bytes:
    """The real database with bytes changed past its 100-byte header (or in it)."""
    data = bytearray(REAL_STATE)
    for _ in range(draw(st.integers(1, 12))):
        pos = draw(st.integers(16, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(16, len(data))):]
    return bytes(data)


def _quoted_table(conn: sqlite3.Connection) -> None:
    conn.execute('CREATE TABLE "x""); SELECT 1; --" (a)')
    conn.execute("CREATE TABLE kv (key TEXT, value BLOB)")
    conn.execute("INSERT INTO kv VALUES (?, ?)", ("/tokens/a", SECRET.encode()))


def _undecodable_text(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE kv (key TEXT, value BLOB)")
    conn.execute("INSERT INTO kv VALUES (CAST(X'2F73746174657321FF' AS TEXT), ?)",
                 (SECRET.encode(),))


@fuzz(150)
@given(st.one_of(st.binary(max_size=200),
                 st.binary(max_size=400).map(lambda b: b"SQLite format 3\0" + b),
                 corrupted_state()))
@example(_sqlite_bytes(_quoted_table))
@example(_sqlite_bytes(_undecodable_text))
def test_process_state_of_any_bytes(data: bytes) -> None:
    """The process-state dump is SQL text without the planted secrets, or ValueError."""
    sql = tolerant(dump_process_state, data, Redactor(), allowed=(ValueError,))
    if sql is not None:
        assert isinstance(sql, str) and SECRET not in sql


def test_process_state_examples_dump_whole() -> None:
    """A hostile table name or a key that is not UTF-8 does not cost the whole dump."""
    for data in (_sqlite_bytes(_quoted_table), _sqlite_bytes(_undecodable_text)):
        sql = dump_process_state(data, Redactor())
        assert "INSERT INTO" in sql and SECRET not in sql


# --- Kubernetes objects ------------------------------------------------------------------

RTYPES = [kube.ResourceType("", "v1", "secrets", "Secret"),
          kube.ResourceType("", "v1", "configmaps", "ConfigMap"),
          kube.ResourceType("", "v1", "pods", "Pod"),
          kube.ResourceType("apps", "v1", "deployments", "Deployment")]


def _collector(api: Any = None) -> kube.KubeCollector:
    return kube.KubeCollector(api, None, Redactor(), config.resolve({}, {}),  # type: ignore[arg-type]
                              kube.KubeSummary())


@fuzz(100)
@given(json_objects)
@example({"metadata": [1]})
@example({"metadata": "x", "spec": [1], "status": "y"})
@example({"spec": {"containers": 5}, "status": {"containerStatuses": [{"name": "a",
                                                                        "lastState": 5}]}})
@example({"metadata": {"annotations": [["a"]], "labels": 5}})
@example({"metadata": {"annotations": "ab"}})
@example({"metadata": "x", "involvedObject": "y"})
def test_kube_objects_of_any_shape(obj: dict[str, Any]) -> None:
    """Namespace detection, container lists, events and cleaning accept any API object."""
    reason = kube.teleport_reason(obj)
    assert reason is None or isinstance(reason, str)
    assert all(isinstance(n, str) and isinstance(r, bool) for n, r in kube._containers(obj))
    assert isinstance(kube.events_table([obj], Redactor()), str)
    collector = _collector()
    for rtype in RTYPES:
        cleaned = collector.clean(rtype, obj)
        assert isinstance(cleaned, dict)
        yaml.safe_dump(cleaned)


@fuzz(100)
@given(json_objects, st.sampled_from(["data", "stringData"]))
def test_kube_secret_values_never_survive(obj: dict[str, Any], key: str) -> None:
    """A Secret's values never reach the output, whatever else the object holds."""
    obj = {**obj, key: {"k": SECRET, "j": {"nested": SECRET}}}
    out = _collector().clean(RTYPES[0], obj)
    assert SECRET not in json.dumps(out)


@fuzz(100)
@given(json_objects, st.sampled_from(["AUTH_TOKEN", "DB_PASSWORD", "MY_SECRET", "API_KEY"]))
def test_kube_env_secret_never_survives(obj: dict[str, Any], name: str) -> None:
    """A secret-named environment variable's value never reaches the output."""
    pod = {**obj, "spec": {"containers": [{"name": "c", "env": [{"name": name,
                                                                  "value": SECRET}]}]}}
    out = _collector().clean(RTYPES[2], pod)
    assert SECRET not in json.dumps(out)


@fuzz(40)
@given(st.lists(json_objects, max_size=5))
def test_kube_namespace_detection_of_any_pods(pods: list[dict[str, Any]]) -> None:
    """Finding Teleport's namespaces from any pod list gives namespace -> reason."""
    class Api:
        async def list_all(self, path: str, query: Any = ()) -> tuple[dict[str, Any],
                                                                       list[dict[str, Any]]]:
            return {}, pods

    found = anyio.run(_collector(Api()).namespaces)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in found.items())


@fuzz(200)
@given(st.integers(0, 599), blobs(JSON_SAMPLES))
@example(500, nested(DEEP).encode())
def test_kube_status_errors_of_any_body(code: int, body: bytes) -> None:
    """An API error body of any content becomes a KubeCallError with a code."""
    err = kube._status_error(code, body)
    assert err.code.startswith("TPD") and isinstance(err.text(), str)


@fuzz(200)
@given(st.text(max_size=200), st.sampled_from(["config.yaml", "x.yml", "plain"]))
@example("a: 2024-02-30\ntoken: x\n", "config.yaml")
def test_kube_configmap_values_of_any_text(value: str, key: str) -> None:
    """ConfigMap values of any text are redacted as YAML or text, never failing."""
    out = _collector().clean(RTYPES[1], {"data": {key: value, "t": f"token: {SECRET}"}})
    assert SECRET not in json.dumps(out)


# --- tpdump's config file, flags, scenario files -----------------------------------------

CONFIG_KEYS = st.sampled_from([f.replace("_", "-") if i % 2 else f for i, f in
                               enumerate(config._FIELDS)] + ["nope", "Profile", ""])
config_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20),
                          st.floats(allow_nan=True, allow_infinity=True),
                          st.text(max_size=12), st.sampled_from(["5MB", "none", "zip", "json",
                                                                 "small", "all", "1e999"]),
                          st.lists(st.text(max_size=5), max_size=3),
                          st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))


@fuzz(300)
@given(st.dictionaries(CONFIG_KEYS, config_values, max_size=5))
@example({"timeout": float("nan")})
@example({"max_size": "9" * 400})
@example({"node-timeout": float("inf")})
@example({"concurrency": -1})
def test_config_file_values(values: dict[str, Any]) -> None:
    """A config file of any keys and values loads and resolves, or raises UsageError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(values))
        loaded = tolerant(config.load_file, str(path), allowed=(UsageError,))
    if loaded is not None:
        got = tolerant(config.resolve, loaded, {}, allowed=(UsageError,))
        if got is not None:
            _check_settings(got)


def _check_settings(s: config.Settings) -> None:
    for name in ("concurrency", "timeout", "node_timeout", "connect_timeout", "max_output"):
        value = getattr(s, name)
        assert value > 0 and math.isfinite(value), (name, value)
    assert s.max_size is None or s.max_size > 0
    yaml.safe_dump(s.as_dict())


@fuzz(300)
@given(st.dictionaries(st.sampled_from(["concurrency", "timeout", "node_timeout", "max_size",
                                        "split_size", "profile", "format", "log_format",
                                        "skip_items", "include_kinds", "log_window_h",
                                        "obfuscation_key"]), config_values, max_size=4))
@example({"timeout": float("nan")})
@example({"max_size": "1" + "0" * 400 + "GB"})
def test_flag_values(flags: dict[str, Any]) -> None:
    """Any flag values resolve into sane Settings or raise UsageError."""
    got = tolerant(config.resolve, {}, flags, allowed=(UsageError,))
    if got is not None:
        _check_settings(got)


@fuzz(300)
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none()))
@example("9" * 400)
@example("1e999")
@example("0.0000001KB")
def test_sizes_and_ages(value: Any) -> None:
    """parse_size gives a positive whole size, parse_age a positive finite age, or
    UsageError."""
    size = tolerant(config.parse_size, value, "--max-size", allowed=(UsageError,))
    assert size is None or (isinstance(size, int) and size > 0)
    if isinstance(value, str):
        age = tolerant(parse_age, value, allowed=(UsageError,))
        assert age is None or (age > 0 and math.isfinite(age))


@fuzz(50)
@given(st.binary(max_size=300))
@example(b"\xff\xfe not utf-8")
@example(b"a: 2024-02-30\n")
@example(nested(DEEP).encode())
def test_config_file_of_any_bytes(raw: bytes) -> None:
    """Any config file content loads or raises UsageError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(raw)
        loaded = tolerant(config.load_file, str(path), allowed=(UsageError,))
    assert loaded is None or isinstance(loaded, dict)


SCENARIO_KEYS = st.sampled_from(["cluster_name", "teleport_version", "seed", "auth", "groups",
                                 "secrets", "kube", "name", "count", "services", "fault",
                                 "objects", "plant", "delay_s", "version", "files", "x"])
_scenario_leaf = (st.none() | st.booleans() | st.integers(-3, 30) | st.floats()
                  | st.text(max_size=8)
                  | st.sampled_from(["node", "auth", "17.1.0", "a", "systemd", "down"]))
_scenario_inner = (_scenario_leaf | st.lists(_scenario_leaf, max_size=3)
                   | st.dictionaries(SCENARIO_KEYS, _scenario_leaf, max_size=4))
scenario_values = (_scenario_inner | st.lists(_scenario_inner, max_size=3)
                   | st.dictionaries(SCENARIO_KEYS, _scenario_inner, max_size=4))


@fuzz(150)
@given(st.dictionaries(SCENARIO_KEYS, scenario_values, max_size=5))
def test_scenario_of_any_structure(data: dict[str, Any]) -> None:
    """A scenario document of any structure parses or raises ScenarioError."""
    with tempfile.TemporaryDirectory() as tmp:
        got = tolerant(scenario.parse_scenario, data, Path(tmp),
                       allowed=(scenario.ScenarioError,))
    assert got is None or isinstance(got, scenario.Scenario)


DEMO_SCENARIO = (ROOT / "tpdump" / "sim" / "scenarios" / "demo.yaml").read_bytes()


@fuzz(150)
@given(blobs([DEMO_SCENARIO]))
@example(b"\xff\xfe")
@example(b"seed: 2024-02-30\n")
def test_scenario_file_of_any_bytes(raw: bytes) -> None:
    """A scenario file of any bytes loads or raises ScenarioError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_bytes(raw)
        tolerant(scenario.load_scenario, path, allowed=(scenario.ScenarioError,))


@fuzz(150)
@given(st.one_of(
    st.binary(max_size=120),
    st.builds(lambda v: json.dumps({"entries": v}).encode(), json_values),
    st.builds(lambda es: json.dumps({"entries": es}).encode(), st.lists(st.fixed_dictionaries(
        {"files": st.just([{"name": "tpdump-x.tar.gz"}])},
        optional={"started": json_values | st.sampled_from(["nan", "1e999", "x", "1.5"]),
                  "bytes": json_values | st.sampled_from(["1.5", "x", "7"])}), max_size=4))))
@example(b'{"entries": [{"files": [], "started": "x"}]}')
@example(b'{"entries": [{"files": [], "bytes": "1.5"}]}')
@example(nested(DEEP).encode())
def test_snapshot_index_of_any_content(raw: bytes) -> None:
    """A damaged DIR/index.json lists the good entries; retention still runs over it."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "index.json").write_bytes(raw)
        entries = load_index(d)
        assert all(isinstance(e, dict) for e in entries)
        assert isinstance(retention(d, keep=1, max_age=3600.0, max_total_size=10), list)


# --- archives ----------------------------------------------------------------------------

def _archive_files() -> dict[str, bytes]:
    files = {"report.txt": b"tpdump report\n\ncomplete\n", "nodes/a/node.json": b'{"x": 1}',
             "report.json": json.dumps({"started": "2025-01-02T03:04:05Z"}).encode()}
    manifest = {"files": [{"path": p, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                          for p, d in files.items()]}
    return {**files, "manifest.json": json.dumps(manifest).encode()}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"tpdump-x/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"tpdump-x/{name}", data)
    return buf.getvalue()


ARCHIVES = [_tar_gz(_archive_files()), _zip(_archive_files())]


@st.composite
def corrupted_archive(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(ARCHIVES)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(2, len(data))):]
    return bytes(data)


@fuzz(200)
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"PK" + b),
                 st.binary(max_size=200).map(lambda b: b"\x1f\x8b" + b), corrupted_archive()))
def test_archive_reading_of_any_bytes(data: bytes) -> None:
    """`tpdump inspect` on any file: exit 0/1 with verified checksums, or UsageError
    (TPD401)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tar.gz"
        path.write_bytes(data)
        files = tolerant(inspect.load, str(path), allowed=(UsageError,))
        if files is None:
            return
        assert all(isinstance(v, bytes) for v in files.values())
        assert files == read_archive(path)
        assert all(isinstance(p, str) for p in verify(files))
        rc = inspect.inspect(str(path), list_files=True, out=io.StringIO())
        assert rc in (0, 1)


manifests = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda v: json.dumps({"files": v}).encode(), json_values),
    st.builds(lambda v: json.dumps({"files": [v]}).encode(), json_objects))


@fuzz(150)
@given(manifests)
@example(b'{"files": 5}')
@example(b'{"files": "abc"}')
@example(b'{"files": [1]}')
@example(b"[1]")
@example(nested(DEEP).encode())
def test_verify_and_list_any_manifest(manifest: bytes) -> None:
    """Any manifest.json gives a list of problems, and `inspect --list` still lists."""
    files = {"manifest.json": manifest, "report.txt": b"r"}
    assert all(isinstance(p, str) for p in verify(files))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.zip"
        path.write_bytes(_zip(files))
        out = io.StringIO()
        assert inspect.inspect(str(path), list_files=True, out=out) in (0, 1)
        assert "report.txt" in out.getvalue()


DUMP_PATHS = ["report.json", "manifest.json", "cluster/discovery.json",
              "cluster/inventory.json", "objects/tctl_get_cert_authority.yaml",
              "objects/tctl_get_role.yaml", "objects/tctl_get_user.yaml",
              "nodes/a/node.json", "nodes/a/diag/readyz.json", "nodes/a/tunnel.json",
              "nodes/a/teleport.service/log.txt", "nodes/a/logs/x.log",
              "nodes/a/logs/x.log#log-digest", "objects/tctl_get_github.yaml"]
dump_contents = st.one_of(
    st.binary(max_size=120), mutated(LOG_SAMPLES), mutated(RESOURCE_YAMLS),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda v: json.dumps(v).encode(), json_objects))


@fuzz(150)
@given(st.dictionaries(st.sampled_from(DUMP_PATHS), dump_contents, max_size=6))
@example({"report.json": nested(DEEP).encode()})
@example({"nodes/a/node.json": b"{}", "nodes/a/logs/x.log#log-digest": b"[1]"})
@example({"nodes/a/node.json": b"{}", "nodes/a/logs/x.log#log-digest":
          b'{"errors": 50, "lines": 50, "evidence": [1, "x"]}'})
@example({"objects/tctl_get_role.yaml": b"a: 2024-02-30\n"})
def test_analyze_and_diff_any_dump(files: dict[str, bytes]) -> None:
    """Every analyzer and diff run over any dump content without failing."""
    findings = analyze_mod.analyze(files, now=1.7e9)
    failed = [f.summary for f in findings if f.id.startswith("analyzer_failed")]
    assert not failed, failed
    json.dumps([f.as_dict() for f in findings])
    for old, new in ((files, {}), ({}, files)):
        assert isinstance(diff.render(diff.diff(old, new)), str)


@pytest.mark.parametrize("raw", [nested(DEEP).encode(), b"\xff"])
def test_analyze_view_of_unreadable_report(raw: bytes) -> None:
    """A report.json nested beyond reason or not UTF-8 is ignored, not fatal."""
    assert isinstance(analyze_mod.DumpView({"report.json": raw}).now, float)
