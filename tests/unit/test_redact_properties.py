"""Properties of secret stripping (hypothesis): redacting twice gives what redacting once
gave; a secret never survives whatever text, line breaks (LF or CRLF) or cuts surround
it; YAML and JSON stay valid and keep their shape."""

from __future__ import annotations

import itertools
import json
import os
import re
import string
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tpdump.redact import MARKER, SECRET_KEYS, Redactor, dump_yaml

# TPDUMP_PROPERTY_EXAMPLES=5000 for a long search; the default keeps the file fast.
EXAMPLES = int(os.environ.get("TPDUMP_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(max_examples=max(EXAMPLES // 4, 10), deadline=None,
               suppress_health_check=[HealthCheck.too_slow])
_MARKERS = re.compile(r"<redacted by tpdump: [^>]*>")

# --- building blocks -------------------------------------------------------------------
# Surrounding text: printable ASCII and some non-ASCII (incl. U+0130, which lower-cases to
# two characters), no line breaks (those are drawn apart).
filler = st.text(alphabet=st.sampled_from(string.ascii_letters + string.digits
                                          + " .:;,=/-_()[]{}#\"'\tİéß€"), max_size=40)
breaks = st.sampled_from(["\n", "\r\n"])
# What may stand between surrounding text and a secret (not a letter: `xBearer` is a word).
seps = st.sampled_from([" ", "\n", "\r\n", "\t", ", ", "; ", " (", " [", "\n\n", " | "])
ALNUM = string.ascii_letters + string.digits
secret_value = st.text(alphabet=ALNUM, min_size=12, max_size=40)
bearer_value = st.builds(lambda a, b, c: a + b + c, st.sampled_from(ALNUM),
                         st.sampled_from(["", "", "bearer", "BEARER", ".Bearer"]),
                         st.text(alphabet=ALNUM + "._~+/=-", min_size=19, max_size=50))
kv_keys = st.sampled_from(["token", "auth_token", "join-token", "token_name", "password",
                           "passwd", "client_secret", "secret", "secret_key", "api_key",
                           "private_key", "bearer_token", "session_token", "password_hash",
                           "Token", "PASSWORD"])
kv_seps = st.sampled_from([": ", "=", ":", " = ", ': "', "='"])
b64_line = st.text(alphabet=ALNUM + "+/", min_size=16, max_size=64)


@st.composite
def pem(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A PEM private key block (LF or CRLF) and its body lines (the secret)."""
    label = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]))
    body = draw(st.lists(b64_line, min_size=1, max_size=6, unique=True))
    nl = draw(breaks)
    block = nl.join([f"-----BEGIN {label}PRIVATE KEY-----", *body,
                     f"-----END {label}PRIVATE KEY-----"])
    return block, body


@st.composite
def line_secret(draw: st.DrawFn) -> tuple[str, str]:
    """(text holding a secret on one line, the secret value)."""
    kind = draw(st.sampled_from(["bearer", "kv", "flag", "cookie"]))
    if kind == "bearer":
        value = draw(bearer_value)
        head = draw(st.sampled_from(["Authorization: ", "authorization=", "", "header "]))
        return f"{head}{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER']))} {value}", value
    value = draw(secret_value)
    if kind == "kv":
        sep = draw(kv_seps)
        close = sep[-1] if sep[-1] in "\"'" else ""
        return f"{draw(kv_keys)}{sep}{value}{close}", value
    if kind == "flag":
        flag = draw(st.sampled_from(["--token", "--auth-token", "--password", "--secret"]))
        return f"teleport start {flag}={value} --roles=node", value
    name = draw(st.sampled_from(["Cookie", "cookie", "Set-Cookie", "set-cookie"]))
    return f"{name}: grv_session={value}; Path=/", value


def visible(out: str) -> str:
    """The output without markers (a secret value cannot hide in a marker's words)."""
    return _MARKERS.sub("", out)


def around(draw: st.DrawFn, secret: str) -> str:
    """`secret` with random text and line breaks before and after it."""
    before = draw(st.lists(filler, max_size=4))
    after = draw(st.lists(filler, max_size=4))
    nl = draw(breaks)
    return nl.join(before) + draw(seps) + secret + draw(seps) + nl.join(after)


# --- (1) consistency and idempotence -------------------------------------------------------
@st.composite
def noisy_text(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            parts.append(draw(line_secret())[0])
        elif choice == 1:
            parts.append(draw(pem())[0])
        else:
            parts.append(draw(filler))
    return "".join(p + draw(seps) for p in parts)


@SETTINGS
@given(noisy_text())
def test_text_is_idempotent(text: str) -> None:
    r = Redactor()
    once = r.text(text)
    assert r.text(once) == once
    assert Redactor().text(text) == once  # no state between calls
    raw = text.encode()
    assert r.data(r.data(raw)) == r.data(raw)


@st.composite
def documents(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    """A mapping with secret keys (and static `tokens`, CA key pairs, provision tokens)
    at random depths; values are scalars, lists or further mappings."""
    names = st.sampled_from(["name", "spec", "labels", "addr", "data_dir", "roles", "ssh",
                             "nodename", "ca_pin", "note", "items", "version"])
    secret_keys = st.sampled_from(sorted(SECRET_KEYS))
    scalars = st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits + " .:-_/#@'\"", max_size=20),
        st.integers(-5, 10**6), st.booleans(), st.none(),
        line_secret().map(lambda t: t[0]))
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            out[draw(secret_keys)] = draw(st.one_of(secret_value, st.integers(1, 10**9),
                                                    st.lists(secret_value, max_size=2)))
        elif kind == 1:
            out["tokens"] = [f"{draw(st.sampled_from(['node', 'proxy,node']))}:"
                             f"{draw(secret_value)}" for _ in range(draw(st.integers(1, 2)))]
        elif kind == 2:
            out["tls"] = [{"cert": "LS0tCERT", "key": draw(secret_value)}]
        elif kind == 3 and depth > 0:
            out[draw(names)] = draw(documents(depth - 1))
        elif kind == 4 and depth > 0:
            out[draw(names)] = draw(st.lists(st.one_of(scalars, documents(depth - 1)),
                                             max_size=3))
        else:
            out[draw(names)] = draw(scalars)
    if draw(st.booleans()) and depth == 2:
        out.update({"kind": "token", "metadata": {"name": draw(secret_value)}})
    return out


def secrets_in(doc: Any, key: str = "") -> list[str]:
    """The secret values put into a generated document."""
    found: list[str] = []
    if isinstance(doc, dict):
        if doc.get("kind") == "token":
            found.append(doc["metadata"]["name"])
        for k, v in doc.items():
            found.extend(secrets_in(v, k))
    elif isinstance(doc, list):
        for v in doc:
            found.extend(secrets_in(v, key))
    elif isinstance(doc, str | int) and not isinstance(doc, bool) and \
            (key.lower() in SECRET_KEYS or key == "key"):
        found.append(str(doc).rpartition(":")[2] if key == "tokens" else str(doc))
    return [s for s in found if len(s) >= 6]


def public_in(doc: Any, key: str = "") -> list[str]:
    """The strings of a generated document that are not secrets (keys included)."""
    if isinstance(doc, dict):
        return [str(k) for k in doc] + [s for k, v in doc.items() for s in public_in(v, k)]
    if isinstance(doc, list):
        return [s for v in doc for s in public_in(v, key)]
    return [] if key.lower() in SECRET_KEYS or key == "key" else [str(doc)]


def assert_no_secret(docs: list[Any], out: str, also: tuple[str, ...] = ()) -> None:
    """No secret value of `docs` is in `out` (unless one of them, or other text of the
    input, `also`, holds it in the open)."""
    public = [*also, *(p for d in docs for p in public_in(d))]
    for value in (v for d in docs for v in secrets_in(d)):
        if not any(value in p for p in public):
            assert value not in visible(out)


@SETTINGS
@given(st.lists(documents(), min_size=1, max_size=2))
def test_document_and_yaml_text_are_idempotent(docs: list[dict[str, Any]]) -> None:
    r = Redactor()
    for doc in docs:
        once = r.document(doc)
        assert r.document(once) == once
    text = dump_yaml(docs)
    once_text, parsed = r.yaml_text(text)
    assert parsed
    assert r.yaml_text(once_text) == (once_text, True)


@SETTINGS
@given(st.lists(st.one_of(documents().map(lambda d: ("json", d)),
                          filler.map(lambda t: ("text", t)),
                          line_secret().map(lambda t: ("text", t[0]))), max_size=8),
       st.booleans())
def test_json_lines_is_idempotent(lines: list[tuple[str, Any]], ascii_only: bool) -> None:
    raw = "\n".join(json.dumps(v, ensure_ascii=ascii_only) if kind == "json" else v
                    for kind, v in lines).encode()
    r = Redactor()
    once = r.json_lines(raw)
    assert r.json_lines(once) == once


# --- (2) no leak, wherever the secret lands ------------------------------------------------
@SETTINGS
@given(st.data())
def test_line_secret_never_survives(data: st.DataObject) -> None:
    secret, value = data.draw(line_secret())
    text = around(data.draw, secret)
    assume(value not in text.replace(secret, ""))
    r = Redactor()
    assert value not in visible(r.text(text))
    assert value not in visible(r.data(text.encode()).decode())
    yaml_out, _ = r.yaml_text(text)
    assert value not in visible(yaml_out)


@SETTINGS
@given(st.data())
def test_private_key_never_survives(data: st.DataObject) -> None:
    block, body = data.draw(pem())
    text = around(data.draw, block)
    assume(not any(line in text.replace(block, "") for line in body))
    out = visible(Redactor().text(text))
    for line in body:
        assert line not in out


@SETTINGS
@given(st.data())
def test_cut_or_reversed_private_key_never_survives(data: st.DataObject) -> None:
    """A log tail cut anywhere inside a key (the BEGIN line is gone, as when a read keeps
    the newest bytes and drops the first partial line), or a key whose lines come in
    reverse order (journalctl -r output turned around line by line): no body line, nor
    its last 16 characters, survive."""
    block, body = data.draw(pem())
    nl = "\r\n" if "\r\n" in block else "\n"
    lines = [f"2026-01-02T10:00:0{i}Z INFO line {i}" for i in range(3)]
    lines += block.split(nl) + [f"2026-01-02T10:00:1{i}Z INFO after {i}" for i in range(3)]
    text = nl.join(lines) + nl
    cut = data.draw(st.integers(0, len(text) - 1))
    tail = text[cut:]
    if data.draw(st.booleans()):  # drop a partial first line, as _Buffer.value does
        tail = tail[tail.find("\n") + 1:]
    reversed_text = nl.join(reversed(text.split(nl)))
    for candidate in (tail, reversed_text):
        out = visible(Redactor().text(candidate))
        for line in body:
            assert line not in out and line[-16:] not in out


@SETTINGS
@given(st.lists(st.one_of(filler, line_secret().map(lambda t: t[0])), min_size=2,
                max_size=8),
       st.data())
def test_redacting_line_chunks_equals_redacting_the_whole(lines: list[str],
                                                          data: st.DataObject) -> None:
    """Line-local secrets: redacting chunks cut at line boundaries gives the same bytes
    as redacting the whole (so the same redaction applies however a log is buffered)."""
    assume(all("\n" not in line and "\r" not in line for line in lines))
    nl = data.draw(breaks)
    raw = (nl.join(lines) + nl).encode()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(lines) - 1), max_size=3)))
    offsets = [0]
    for c in cuts:
        offsets.append(len((nl.join(lines[:c]) + nl).encode()))
    offsets.append(len(raw))
    chunks = [raw[a:b] for a, b in itertools.pairwise(offsets)]
    assert b"".join(Redactor().data(c) for c in chunks) == Redactor().data(raw)


@SETTINGS
@given(st.data())
def test_private_key_split_across_chunks_never_survives(data: st.DataObject) -> None:
    """Even if a key is split over two separately redacted chunks at a line boundary,
    neither chunk leaks its lines."""
    block, body = data.draw(pem())
    nl = "\r\n" if "\r\n" in block else "\n"
    text = around(data.draw, block)
    assume(not any(line in text.replace(block, "") for line in body))
    lines = text.split(nl)
    cut = data.draw(st.integers(0, len(lines)))
    first, second = nl.join(lines[:cut]), nl.join(lines[cut:])
    r = Redactor()
    out = visible(r.text(first) + nl + r.text(second))
    for line in body:
        assert line not in out


@SETTINGS
@given(secret_value, st.sampled_from(["--token", "--auth-token", "--password", "--secret",
                                      "--client-secret", "--api-key"]), st.booleans())
def test_cmdline_never_keeps_a_secret_flag_value(value: str, flag: str, joined: bool) -> None:
    argv = ["/usr/local/bin/teleport", "start", "-c", "/etc/teleport.yaml"]
    argv += [f"{flag}={value}"] if joined else [flag, value]
    out = Redactor().cmdline([*argv, "--roles=node"])
    assert value not in " ".join(out) and out[-1] == "--roles=node"


@FEW
@given(st.data())
def test_json_log_with_a_multiline_private_key(data: st.DataObject) -> None:
    """A key printed over several lines among JSON lines (a panic, a stray print) is one
    secret: none of its lines survive json_lines."""
    block, body = data.draw(pem())
    before = [json.dumps({"level": "info", "msg": m}) for m in data.draw(st.lists(filler,
                                                                                  max_size=3))]
    head = data.draw(st.sampled_from(["", "panic: bad key ", "stray output: "]))
    assume(not any(line in text for line in body for text in before))
    raw = "\n".join([*before, head + block, json.dumps({"msg": "after"})]).encode()
    out = Redactor().json_lines(raw).decode()
    for line in body:
        assert line not in out
    assert out.splitlines()[-1] == '{"msg": "after"}'


# --- (3) valid YAML and JSON out -------------------------------------------------------------
@SETTINGS
@given(st.lists(documents(), min_size=1, max_size=2),
       st.sampled_from(["dump_yaml", "block", "flow", "canonical-ish"]))
def test_yaml_text_stays_valid_with_the_same_shape(docs: list[dict[str, Any]],
                                                   style: str) -> None:
    """Whatever the layout, yaml_text's output parses, has the same keys, and equals the
    structured redaction of the same documents (secret values are markers)."""
    if style == "dump_yaml":
        text = dump_yaml(docs)
    else:
        flow = {"block": False, "flow": True, "canonical-ish": None}[style]
        text = yaml.safe_dump_all(docs, default_flow_style=flow, sort_keys=False,
                                  allow_unicode=True, width=60 if style == "flow" else 80)
    r = Redactor()
    out, parsed = r.yaml_text(text)
    assert parsed
    loaded = list(yaml.safe_load_all(out))
    assert loaded == [Redactor().document(d) for d in docs]
    assert_no_secret(docs, out)


@SETTINGS
@given(st.lists(st.one_of(documents().map(lambda d: ("json", d)),
                          filler.filter(lambda t: not t.lstrip().startswith("{"))
                          .map(lambda t: ("text", t)),
                          line_secret().map(lambda t: ("text", t[0]))), max_size=8),
       st.booleans(), st.sampled_from(["\n", "\r\n"]))
def test_json_lines_stay_json(lines: list[tuple[str, Any]], ascii_only: bool,
                              nl: str) -> None:
    """Every input line that is a JSON object comes out as a JSON object equal to its
    structured redaction, in the same order; no secret survives anywhere."""
    raw = nl.join(json.dumps(v, ensure_ascii=ascii_only) if kind == "json" else v
                  for kind, v in lines).encode()
    out = Redactor().json_lines(raw).decode()
    objects = []
    for line in out.split("\n"):
        if line.strip().startswith("{"):
            objects.append(json.loads(line))
    assert objects == [Redactor().document(v) for kind, v in lines if kind == "json"]
    assert_no_secret([v for kind, v in lines if kind == "json"], out,
                     tuple(v for kind, v in lines if kind == "text"))


def test_examples_found_by_the_properties() -> None:
    """Cases the properties found (fixed in redact.py), kept as plain examples."""
    r = Redactor()
    # the hint words missed private_key/pass_hash; U+0130 shifted line offsets
    assert "abc123" not in r.text("private_key=abc123")
    assert "abc123" not in r.text("İ" * 30 + " hello\nxx token=abc123\n")
    # YAML: a block scalar under a secret key, a plain scalar holding `--token=`, a
    # `cookie:` key, an anchor used under a secret key: all stay valid YAML
    for src in ("a: 1\nprivate_key: |\n  line1\n  line2\nnext: 2\n",
                "args: --token=abcdef\n", "cookie: abc\nx: 1\n",
                "a: &x abc\ntoken: *x\nb: *x\n", "- token: |\n    abc\n- x\n"):
        out, parsed = r.yaml_text(src)
        assert parsed and "abc" not in out.replace("abc:", "")
        yaml.safe_load(out)
    # redacting a static token twice kept "node:<redacted by tpdump:<redacted …>"
    once = r.document({"tokens": ["node:abc"]})
    assert r.document(once) == once == {"tokens": [f"node:{MARKER.format('join token')}"]}
    # json_lines: private_key not hinted; a lone \ud800 escape made it crash
    out = r.json_lines(b'{"private_key": "abc"}\n{"msg": "\\ud800", "token": "x"}')
    assert b"abc" not in out and json.loads(out.splitlines()[1])["msg"] == "\ud800"
    # yaml_text did not apply the provision-token rule that document() applies
    assert "abcsecret" not in r.yaml_text("kind: token\nmetadata:\n  name: abcsecret\n")[0]
    # the first "bearer" took `authorization=Bearer` for its token (and a token that
    # holds the word must still go)
    assert "a0000000000000000000" not in r.text("BEARER authorization=Bearer a0000000000000000000")
    assert "canaryBEARER123456" not in r.text("Authorization: Bearer canaryBEARER123456")
    # a key gives its value the context (`X-Token: abc`, `0 Cookie: …` parsed as a key)
    assert r.document({"X-Token": "abc123"}) == {"X-Token": MARKER.format("join token")}
    out, parsed = r.yaml_text("0 Cookie: grv_session=000000000000; Path=/\n")
    assert parsed and "000000000000" not in out
    # YAML syntax after a secret-ish key is not a secret, and redacting again is stable
    for src in ("api_key: []\n", "cookie: []\n", "token::\n", "set-cookie::\n",
                "-----BEGIN RSA PRIVATE KEY-----:\n"):
        out, parsed = r.yaml_text(src)
        assert parsed and r.yaml_text(out) == (out, True)
        yaml.safe_load(out)
