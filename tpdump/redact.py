"""Strips secrets before any byte reaches the archive (SPEC §8, layer 1: always on).

Structured documents (YAML/JSON resources, teleport.yaml) are redacted by key, so they
stay valid; free text (logs, command lines, unparsable files) by pattern. Every removal
leaves a marker naming what was removed, and is counted by category for the report.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, AnyStr

import yaml

MARKER = "<redacted by tpdump: {}>"
_MARKER_HEAD = MARKER.split("{", 1)[0]
# libyaml when PyYAML has it (10x faster than the pure-Python parser and emitter).
Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# key name (lower case) -> category. Applies wherever the key appears in a document.
SECRET_KEYS: dict[str, str] = {
    "auth_token": "join token",
    "token": "join token",
    "token_name": "join token",
    "join_token": "join token",
    "private_key": "private key",
    "priv": "private key",
    "private_key_pem": "private key",
    "password": "password",
    "passwd": "password",
    "password_hash": "password hash",
    "pass_hash": "password hash",
    "client_secret": "client secret",
    "secret": "secret",
    "secret_key": "secret",
    "api_key": "secret",
    "api_token": "secret",
    "bearer_token": "bearer token",
    "session_token": "secret",
    "totp_secret": "secret",
    "cookie": "cookie",
    "tokens": "join token",
}
# In key-pair objects (CA key sets) the private half is called just "key".
_KEYPAIR_SIBLINGS = frozenset({"cert", "public_key", "key_type", "pub"})

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
_PEM_BYTES = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# A private key's lines left without their BEGIN line (a log tail cut inside the block,
# or a block whose lines came out in reverse order): the END line and the base64 lines
# around it.
_PEM_END = re.compile(r"-----END ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")
_PEM_BODY = re.compile(r"[ \t]*(?:[A-Za-z0-9+/=]+|(?:Proc-Type|DEK-Info):[^\n]*)[ \t\r]*")
# The token is not a run that ends in the word "bearer" before a blank (in `BEARER
# authorization=Bearer tok` the token is the last word).
_BEARER = re.compile(
    r"(?i)\b(bearer)\s+(?![A-Za-z0-9\-._~+/=]*?\bbearer\s)[A-Za-z0-9\-._~+/=]{8,}")
# The value starts with a non-blank (so that `cookie: "<marker>"` in YAML is left alone).
_COOKIE = re.compile(r"(?i)\b((?:set-)?cookie)(\s*[:=]\s*)([^\s\"\\][^\r\n\"\\]*)")
_KV = re.compile(
    r"(?i)(?P<key>[\"']?\b(?:auth[_-]?token|join[_-]?token|token[_-]?name|token|password[_-]?hash|"
    r"pass[_-]?hash|password|passwd|client[_-]?secret|secret[_-]?key|secret|api[_-]?key|"
    r"private[_-]?key[_-]?pem|private[_-]?key|bearer[_-]?token|session[_-]?token)[\"']?)"
    r"(?P<sep>\s*[:=]\s*)(?P<val>\"[^\"\n]*\"?|'[^'\n]*'?|[^\s,;&}\]\"'\\]+)"
)
# A cheap first look: text without any of these words cannot match the patterns above
# ("priv" for private_key and "PRIVATE KEY"; in JSON documents also '"key"', the private
# half of key pairs).
_HINT_WORDS = ("bearer", "cookie", "token", "passw", "pass_hash", "pass-hash", "secret",
               "api_key", "api-key", "apikey", "priv")
_HINT_TEXT = re.compile("|".join(_HINT_WORDS), re.IGNORECASE)
_HINT_JSON = (*(w.encode() for w in _HINT_WORDS), b'"key"')
# A crypt(3) password hash (/etc/shadow, htpasswd): `$id$[params$]salt$hash`. Looked for
# only when one of its prefixes is in the text (a cheap `in` test on megabytes of logs).
_CRYPT_IDS = ("$1$", "$2a$", "$2b$", "$2x$", "$2y$", "$5$", "$6$", "$7$", "$y$", "$gy$",
              "$argon2", "$sha1$", "$md5")
_CRYPT = re.compile(
    r"\$(?:1|2[abxy]|5|6|7|y|gy|sha1|md5|argon2(?:id|i|d))\$[^\s:'\"$]*(?:\$[^\s:'\"]*)?")
# A line with a non-blank that is not `{…}`: in a JSON-lines log, part of a text run.
_NOT_JSON_LINE = re.compile(rb"(?m)^(?![ \t]*\{[^\n]*\}[ \t\r]*$)(?=[^\n]*\S)[^\n]*")


def _hint_lines_bytes(raw: bytes) -> list[tuple[int, int]]:
    """_hint_lines for bytes (bytes.lower() only folds ASCII: offsets stay put)."""
    return _spans(raw, _find_all(raw.lower(), _HINT_JSON), b"\n")


def _hint_lines(value: str) -> list[tuple[int, int]]:
    """(start, end) of every line holding a hint word, found with str.find (C speed)."""
    low = value.lower()
    if len(low) != len(value):
        # Some characters lower-case to two (U+0130 "İ"): offsets in `low` would not be
        # offsets in `value`; the (slower) regex finds the words in place.
        return _spans(value, [m.start() for m in _HINT_TEXT.finditer(value)], "\n")
    return _spans(value, _find_all(low, _HINT_WORDS), "\n")


def _find_all(low: AnyStr, words: Iterable[AnyStr]) -> list[int]:
    """Every offset of every word in `low`."""
    hits: list[int] = []
    for word in words:
        i = low.find(word)
        while i >= 0:
            hits.append(i)
            i = low.find(word, i + 1)
    return hits


def _spans(value: AnyStr, hits: list[int], nl: AnyStr) -> list[tuple[int, int]]:
    """The lines (start, end) holding the hits, each once, in order."""
    spans: list[tuple[int, int]] = []
    for hit in sorted(hits):
        if spans and hit < spans[-1][1]:
            continue
        start = value.rfind(nl, 0, hit) + 1
        end = value.find(nl, hit)
        spans.append((start, len(value) if end < 0 else end))
    return spans


# Command-line flags whose value is a secret (`--token=X` or `--token X`).
SECRET_FLAGS = ("--token", "--auth-token", "--join-token", "--password", "--secret",
                "--client-secret", "--api-key")


# Environment variables whose value is a secret, by a word in their name.
_SECRET_ENV_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE",
                     "API_KEY", "APIKEY", "ACCESS_KEY", "AUTH", "COOKIE", "SESSION")
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]+:)[^@\s/]+@")


def secret_env_name(name: str) -> bool:
    """Whether an environment variable's value is treated as a secret (by its name)."""
    upper = name.upper()
    return any(word in upper for word in _SECRET_ENV_WORDS)


class Redactor:
    """Redacts documents and text for one run and counts what it removed."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # documents are also redacted in worker threads

    def marker(self, category: str) -> str:
        with self._lock:
            self.counts[category] += 1
        return MARKER.format(category)

    # --- free text ---------------------------------------------------------------
    def text(self, value: str) -> str:
        """Secrets removed from free text: PEM private keys, crypt(3) password hashes
        (shadow lines, also behind a symlink a hostile node points at), bearer tokens,
        cookies, `secret-key: value` pairs. Only the lines that hold a hint word are looked at
        closely (logs are megabytes; secrets are on few of their lines)."""
        if "PRIVATE KEY-----" in value:
            value = _PEM.sub(lambda m: self.marker("private key"), value)
            if "PRIVATE KEY-----" in value:
                value = self._pem_remains(value)
        if "$" in value and any(prefix in value for prefix in _CRYPT_IDS):
            value = _CRYPT.sub(self._crypt, value)
        spans = _hint_lines(value)
        if not spans:
            return value
        out: list[str] = []
        pos = 0
        for start, end in spans:
            out.append(value[pos:start])
            out.append(self._line(value[start:end]))
            pos = end
        out.append(value[pos:])
        return "".join(out)

    def _line(self, line: str) -> str:
        line = _BEARER.sub(lambda m: f"{m.group(1)} {self.marker('bearer token')}", line)
        line = _KV.sub(self._kv, line)
        return _COOKIE.sub(self._cookie, line)

    def _crypt(self, m: re.Match[str]) -> str:
        if len(m.group(0)) < 12:  # `$1$`, `$y$` alone: a price, a shell variable
            return m.group(0)
        return self.marker("password hash")

    def _cookie(self, m: re.Match[str]) -> str:
        value = m.group(3).strip()
        if value.startswith(_MARKER_HEAD) or not any(c.isalnum() for c in value) or \
                value.lower() in ("true", "false", "null", "~"):
            return m.group(0)  # already redacted, punctuation (`cookie: []`), or a flag
        return f"{m.group(1)}{m.group(2)}{self.marker('cookie')}"

    def _pem_remains(self, value: str) -> str:
        """Key lines that _PEM cannot see: an END line without its BEGIN, with the base64
        lines before it (the head of the block was cut off) and after it (the block's
        lines came reversed), are replaced by one marker."""
        lines = value.split("\n")
        drop = [False] * len(lines)
        for i, line in enumerate(lines):
            if not _PEM_END.search(line):
                continue
            drop[i] = True
            j = i - 1
            while j >= 0 and not drop[j] and _PEM_BODY.fullmatch(lines[j]):
                drop[j] = True
                j -= 1
            j = i + 1
            while j < len(lines) and _PEM_BODY.fullmatch(lines[j]) and lines[j].strip():
                drop[j] = True
                j += 1
        out: list[str] = []
        for i, line in enumerate(lines):
            if not drop[i]:
                out.append(line)
            elif i == 0 or not drop[i - 1]:
                out.append(self.marker("private key"))
        return "\n".join(out)

    def _kv(self, m: re.Match[str]) -> str:
        val = m.group("val")
        bare = val.strip("\"'")
        if not bare.strip("[{(:=") or bare.startswith("<") or \
                bare.lower() in ("true", "false", "null"):
            return m.group(0)  # nothing, syntax (`api_key: []`, `token::`), a marker
        key = m.group("key").strip("\"'").lower().replace("-", "_")
        category = SECRET_KEYS.get(key, "secret")
        quote = val[0] if val[0] in "\"'" else ""
        return f"{m.group('key')}{m.group('sep')}{quote}{self.marker(category)}{quote}"

    def data(self, raw: bytes) -> bytes:
        """Text redaction over bytes that may not be valid UTF-8: decoded with
        surrogateescape so foreign bytes pass through unchanged."""
        return self.text(raw.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape"
        )

    def json_lines(self, raw: bytes) -> bytes:
        """JSON-lines logs: each line that parses is redacted as a document (so it stays
        valid JSON); runs of other lines together by the text patterns (a private key
        printed over several lines is one secret). Only lines with a hint word, and lines
        that do not look like JSON objects, are looked at (found over the whole buffer at
        C speed); the others are copied."""
        lines = dict(_hint_lines_bytes(raw))  # start -> end of the lines to look at
        lines.update((m.start(), m.end()) for m in _NOT_JSON_LINE.finditer(raw))
        if not lines:
            return raw
        out: list[bytes] = []
        pos = 0
        run = (-1, -1)  # consecutive lines that are not JSON: redacted together

        def flush() -> None:
            nonlocal pos, run
            if run[0] >= 0:
                out.append(raw[pos:run[0]])
                out.append(self.data(raw[run[0]:run[1]]))
                pos, run = run[1], (-1, -1)

        for start in sorted(lines):
            end = lines[start]
            line = raw[start:end]
            bare = line.strip()
            doc: Any = None
            is_json = False
            if bare.startswith(b"{") and bare.endswith(b"}"):
                # RecursionError: a line nested deeper than the parser follows is text.
                with contextlib.suppress(ValueError, RecursionError):
                    doc, is_json = json.loads(line.decode("utf-8", "surrogateescape")), True
            if not is_json:
                if run[0] >= 0 and run[1] + 1 == start:
                    run = (run[0], end)
                else:
                    flush()
                    run = (start, end)
                continue
            flush()
            out.append(raw[pos:start])
            out.append(_json_line(self.document(doc)))
            pos = end
        flush()
        out.append(raw[pos:])
        return b"".join(out)

    # --- command lines -----------------------------------------------------------
    def cmdline(self, argv: list[str]) -> list[str]:
        """A process's arguments with secret flag values replaced."""
        out: list[str] = []
        hide_next = False
        for arg in argv:
            if hide_next:
                out.append(self.marker("join token"))
                hide_next = False
                continue
            flag, eq, _ = arg.partition("=")
            if flag in SECRET_FLAGS:
                if eq:
                    out.append(f"{flag}={self.marker('join token')}")
                else:
                    out.append(arg)
                    hide_next = True
                continue
            out.append(self.text(arg))
        return out

    # --- process environments -------------------------------------------------------
    def environ(self, raw: bytes) -> str:
        """`/proc/<pid>/environ` (NUL-separated) as `NAME=value` lines: values of
        secret-looking names are replaced, credentials in URLs (`http://u:pw@proxy`) too,
        and every value passes the text patterns."""
        out = []
        for item in raw.split(b"\0"):
            if not item:
                continue
            name, eq, value = item.decode("utf-8", "replace").partition("=")
            name = name.replace("\n", " ")
            value = value.replace("\n", " ")
            if eq and value and secret_env_name(name):
                value = self.marker("environment secret")
            elif eq:
                value = _URL_CREDENTIALS.sub(
                    lambda m: f"{m.group(1)}{self.marker('password')}@", value)
                value = self.text(value)
            out.append(f"{name}{eq}{value}\n")
        return "".join(out)

    # --- structured documents ----------------------------------------------------
    def document(self, doc: Any) -> Any:
        """A copy of a YAML/JSON document with every secret value replaced by a marker;
        one nested deeper than Python's recursion limit is replaced whole."""
        try:
            return self._document(doc)
        except RecursionError:
            return self.marker("document nested too deeply")

    def _document(self, doc: Any) -> Any:
        if isinstance(doc, Mapping):
            kind = doc.get("kind")
            out = {k: self._value(str(k), v, doc) for k, v in doc.items()}
            if kind == "token" and isinstance(out.get("metadata"), dict):
                # A provision token's name IS the secret.
                meta = dict(out["metadata"])
                if "name" in meta:
                    meta["name"] = self.marker("join token")
                out["metadata"] = meta
            return out
        if isinstance(doc, list):
            return [self._document(v) for v in doc]
        if isinstance(doc, str):
            return self.text(doc)
        return doc

    def _value(self, key: str, value: Any, parent: Mapping[str, Any]) -> Any:
        low = key.lower()
        category = SECRET_KEYS.get(low)
        if low == "key" and _KEYPAIR_SIBLINGS & {str(k).lower() for k in parent}:
            category = "private key"
        if category is not None and _has_content(value) and not _is_marker(value):
            if low == "tokens" and isinstance(value, list):
                return [self._static_token(v) for v in value]
            if isinstance(value, Mapping | list):
                # e.g. `token: {name: ...}` nested forms: keep the shape, hide leaves.
                return _hide_leaves(value, lambda v: v if _is_marker(v) else
                                    self.marker(category))
            return self.marker(category)
        if isinstance(value, str):
            in_context = self._pair(key, value)
            if in_context is not None:
                return in_context
        return self._document(value)

    def _pair(self, key: str, value: str) -> str | None:
        """`value` redacted as the text `key: value` would be, when its key changes what
        the patterns find (`X-Token: abc`, a key `Set-Cookie`); None when it does not."""
        if not _hint_lines(key):
            return None
        head = f"{key}: "
        probe = Redactor().text(head + value)  # a scratch redactor: nothing counted
        if probe == head + Redactor().text(value):
            return None
        redacted = self.text(head + value)
        return redacted[len(head):] if redacted.startswith(head) else self.marker("secret")

    def _static_token(self, value: Any) -> Any:
        # auth_service.tokens entries look like "node,proxy:secret": keep the roles.
        if _is_marker(value):
            return value
        if isinstance(value, str) and ":" in value:
            roles, _, _ = value.rpartition(":")
            return f"{roles}:{self.marker('join token')}"
        return self.marker("join token")

    def yaml_text(self, text: str) -> tuple[str, bool]:
        """Redact a YAML file in place, keeping its text verbatim but for the secret
        values; returns (text, parsed). Unparsable YAML falls back to the text patterns,
        so a malformed file still never leaks what they catch.

        Values under secret keys become markers; other scalars (and keys) in which the
        text patterns find a secret are rewritten as double-quoted scalars holding the
        redacted value, so that a marker (which holds ": ") never lands in a plain
        scalar; the text patterns then only have comments left to act on."""
        try:
            roots = list(yaml.compose_all(text, Loader=Loader))
        except (yaml.YAMLError, UnicodeError):  # malformed, or bytes that are not UTF-8
            return self.text(text), False
        if not any(isinstance(r, yaml.MappingNode | yaml.SequenceNode) for r in roots):
            return self.text(text), False
        spans: list[tuple[int, int, int, str]] = []  # start, priority, end, replacement
        seen: set[int] = set()
        for root in roots:
            if root is not None:
                self._collect(root, text, spans, seen)
        out: list[str] = []
        pos = 0
        for start, _, end, replacement in sorted(spans):
            if start < pos:
                continue
            out.append(text[pos:start])
            out.append(replacement)
            pos = end
        out.append(text[pos:])
        done = "".join(out)
        final = self.text(done)  # secrets in comments
        if final == done or _same_yaml(final, done):
            return final, True
        # The rare file where the text patterns would break the YAML (a pattern across
        # YAML syntax): its documents redacted and dumped afresh (comments are lost), or
        # if even that does not survive the patterns, plain text redaction.
        try:
            docs = list(yaml.load_all(done, Loader=Loader))
        except (yaml.YAMLError, UnicodeError):
            return final, False
        redumped = dump_yaml([self.document(d) for d in docs])
        final = self.text(redumped)
        if final == redumped or _same_yaml(final, redumped):
            return final, True
        # Every string value of the re-dumped documents already went through the text
        # patterns (document() applies them); what they would still change is YAML syntax
        # (`cookie: []`), so the re-dumped text is kept.
        return redumped, True

    def _collect(self, node: yaml.Node, text: str, spans: list[tuple[int, int, int, str]],
                 seen: set[int]) -> None:
        if id(node) in seen:  # an alias of a node already looked at
            return
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            value = str(node.value)
            new = self.text(value)
            if new != value:
                spans.append(_leaf_span(text, node, 1, _yaml_quote(new)))
        elif isinstance(node, yaml.MappingNode):
            keys = {str(k.value).lower() for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
            if _scalar_at(node, "kind") == "token":
                # A provision token's name IS the secret (as in document()).
                name = _node_at(_node_at(node, "metadata"), "name")
                if isinstance(name, yaml.ScalarNode) and name.value and \
                        not _is_marker(name.value):
                    spans.append(_leaf_span(text, name, 0,
                                            f'"{self.marker("join token")}"'))
            for key_node, value in node.value:
                self._collect(key_node, text, spans, seen)
                key = str(key_node.value).lower() if isinstance(key_node, yaml.ScalarNode) else ""
                category = SECRET_KEYS.get(key)
                if key == "key" and _KEYPAIR_SIBLINGS & keys:
                    category = "private key"
                if category is None:
                    if isinstance(key_node, yaml.ScalarNode) and \
                            isinstance(value, yaml.ScalarNode) and value.value != "" and \
                            not value.tag.endswith((":null", ":bool")) and id(value) not in seen:
                        in_context = self._pair(str(key_node.value), str(value.value))
                        if in_context is not None:
                            seen.add(id(value))
                            spans.append(_leaf_span(text, value, 1, _yaml_quote(in_context)))
                    self._collect(value, text, spans, seen)
                    continue
                for leaf in _scalar_leaves(value):
                    if leaf.value in ("", None) or leaf.tag.endswith(":null") or \
                            leaf.tag.endswith(":bool") or _is_marker(leaf.value):
                        continue
                    if key == "tokens" and ":" in str(leaf.value):
                        roles = str(leaf.value).rpartition(":")[0]
                        new = _yaml_quote(f"{roles}:{self.marker('join token')}")
                    else:
                        new = f'"{self.marker(category)}"'
                    spans.append(_leaf_span(text, leaf, 0, new))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                self._collect(item, text, spans, seen)


_ANCHOR = re.compile(r"&[^\s,\[\]{}]+")
_TAG = re.compile(r"![^\s,\[\]{}]*")
_YAML_ESCAPE = re.compile('[\x00-\x1f"\\\\\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff]')
_YAML_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _yaml_quote(value: str) -> str:
    """A YAML double-quoted scalar for `value` (valid in block and flow context)."""
    return '"' + _YAML_ESCAPE.sub(
        lambda m: _YAML_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), value) + '"'


def _leaf_span(text: str, leaf: yaml.ScalarNode, priority: int,
               replacement: str) -> tuple[int, int, int, str]:
    """The span of a scalar to replace, minus what must stay: its anchor (aliases refer
    to it; its tag goes, the replacement is a string) and the line breaks after a block
    scalar (they end the line it is on)."""
    start, end = leaf.start_mark.index, leaf.end_mark.index
    if start == end:  # an empty value (`key:`): the replacement needs a blank before it
        replacement = " " + replacement
    seg = text[start:end]
    end = start + len(seg.rstrip(" \t\r\n"))
    anchor = ""
    while True:
        m = _ANCHOR.match(seg) or _TAG.match(seg)
        if m is None or m.end() == 0:
            break
        if m.group().startswith("&"):
            anchor = m.group() + " "
        rest = seg[m.end():]
        seg = rest.lstrip(" \t")
        if len(seg) == len(rest):
            break  # not followed by blanks: part of a plain scalar after all
    return start, priority, end, anchor + replacement


def _same_yaml(text: str, before: str) -> bool:
    """Whether `text` parses to the same YAML events as `before` (what the text patterns
    changed was in comments only)."""
    def events(t: str) -> list[tuple[Any, ...]]:
        return [(type(e).__name__, getattr(e, "value", None), getattr(e, "anchor", None),
                 getattr(e, "tag", None)) for e in yaml.parse(t, Loader=Loader)]
    try:
        return events(text) == events(before)
    except (yaml.YAMLError, UnicodeError):
        return False


def _json_line(doc: Any) -> bytes:
    text = json.dumps(doc, ensure_ascii=False)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a `\ud800` escape in the input
        return json.dumps(doc).encode("ascii")


def _node_at(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value of `key` in a mapping node (None if not a mapping or absent)."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v  # type: ignore[no-any-return]
    return None


def _scalar_at(node: yaml.Node, key: str) -> str | None:
    value = _node_at(node, key)
    return str(value.value) if isinstance(value, yaml.ScalarNode) else None


def _scalar_leaves(node: yaml.Node) -> list[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        return [node]
    if isinstance(node, yaml.MappingNode):
        return [leaf for _, v in node.value for leaf in _scalar_leaves(v)]
    if isinstance(node, yaml.SequenceNode):
        return [leaf for v in node.value for leaf in _scalar_leaves(v)]
    return []


def _has_content(value: Any) -> bool:
    """Whether a value under a secret key may hold a secret (a flag like `secret: true`
    does not; yaml_text leaves booleans alone too)."""
    if value is None or isinstance(value, bool):
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def _is_marker(value: Any) -> bool:
    """A value redacted before (whole, or a static token's secret part): kept as it is,
    so that redacting twice gives what redacting once gave."""
    return isinstance(value, str) and value.endswith(">") and _MARKER_HEAD in value


def _hide_leaves(value: Any, make: Callable[[Any], Any]) -> Any:
    if isinstance(value, Mapping):
        return {k: _hide_leaves(v, make) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_leaves(v, make) for v in value]
    return make(value) if _has_content(value) else value


class _Dumper(_BaseDumper):  # type: ignore[misc,valid-type]  # chosen at import
    """Block-style YAML with multi-line strings kept readable."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(docs: list[Any]) -> str:
    """Documents as tctl prints them: YAML documents separated by `---`."""
    parts = [
        yaml.dump(d, Dumper=_Dumper, default_flow_style=False, sort_keys=False,
                  allow_unicode=True, width=120)
        for d in docs
    ]
    return "---\n".join(parts)
