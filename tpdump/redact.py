"""Strips secrets before any byte reaches the archive (SPEC §8, layer 1: always on).

Structured documents (YAML/JSON resources, teleport.yaml) are redacted by key, so they
stay valid; free text (logs, command lines, unparsable files) by pattern. Every removal
leaves a marker naming what was removed, and is counted by category for the report.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import yaml

MARKER = "<redacted by tpdump: {}>"
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
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/=]{8,}")
_COOKIE = re.compile(r"(?i)\b((?:set-)?cookie)(\s*[:=]\s*)[^\r\n\"\\]+")
_KV = re.compile(
    r"(?i)(?P<key>[\"']?\b(?:auth[_-]?token|join[_-]?token|token[_-]?name|token|password|passwd|"
    r"client[_-]?secret|secret[_-]?key|secret|api[_-]?key|private[_-]?key|bearer[_-]?token|"
    r"session[_-]?token)[\"']?)(?P<sep>\s*[:=]\s*)(?P<val>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&}\]\"'\\]+)"
)
# A cheap first look: text without any of these words cannot match the patterns above.
_HINT = re.compile(r"(?i)private key|bearer|cookie|token|passw|secret|api[_-]?key")
_HINT_WORDS = ("bearer", "cookie", "token", "passw", "secret", "api_key", "api-key",
               "apikey")


def _hint_lines(value: str) -> list[tuple[int, int]]:
    """(start, end) of every line holding a hint word, found with str.find (C speed)."""
    low = value.lower()
    hits: list[int] = []
    for word in _HINT_WORDS:
        i = low.find(word)
        while i >= 0:
            hits.append(i)
            i = low.find(word, i + 1)
    if not hits:
        return []
    spans: list[tuple[int, int]] = []
    for hit in sorted(hits):
        if spans and hit < spans[-1][1]:
            continue
        start = value.rfind("\n", 0, hit) + 1
        end = value.find("\n", hit)
        spans.append((start, len(value) if end < 0 else end))
    return spans
# Command-line flags whose value is a secret (`--token=X` or `--token X`).
SECRET_FLAGS = ("--token", "--auth-token", "--join-token", "--password", "--secret",
                "--client-secret", "--api-key")


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
        """Secrets removed from free text: PEM private keys, bearer tokens, cookies,
        `secret-key: value` pairs. Only the lines that hold a hint word are looked at
        closely (logs are megabytes; secrets are on few of their lines)."""
        if "PRIVATE KEY-----" in value:
            value = _PEM.sub(lambda m: self.marker("private key"), value)
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
        return _COOKIE.sub(lambda m: f"{m.group(1)}{m.group(2)}{self.marker('cookie')}", line)

    def _kv(self, m: re.Match[str]) -> str:
        val = m.group("val")
        bare = val.strip("\"'")
        if not bare or bare.startswith("<") or bare.lower() in ("true", "false", "null"):
            return m.group(0)
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
        valid JSON); other lines by the text patterns."""
        out = []
        for line in raw.split(b"\n"):
            text = line.decode("utf-8", "surrogateescape")
            if not _HINT.search(text):
                out.append(line)
                continue
            try:
                doc = json.loads(text)
            except ValueError:
                out.append(self.text(text).encode("utf-8", "surrogateescape"))
                continue
            out.append(json.dumps(self.document(doc), ensure_ascii=False).encode(
                "utf-8", "surrogateescape"))
        return b"\n".join(out)

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

    # --- structured documents ----------------------------------------------------
    def document(self, doc: Any) -> Any:
        """A copy of a YAML/JSON document with every secret value replaced by a marker."""
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
            return [self.document(v) for v in doc]
        if isinstance(doc, str):
            return self.text(doc)
        return doc

    def _value(self, key: str, value: Any, parent: Mapping[str, Any]) -> Any:
        low = key.lower()
        category = SECRET_KEYS.get(low)
        if low == "key" and _KEYPAIR_SIBLINGS & {str(k).lower() for k in parent}:
            category = "private key"
        if category is not None and _has_content(value):
            if low == "tokens" and isinstance(value, list):
                return [self._static_token(v) for v in value]
            if isinstance(value, Mapping | list):
                # e.g. `token: {name: ...}` nested forms: keep the shape, hide leaves.
                return _hide_leaves(value, lambda: self.marker(category))
            return self.marker(category)
        return self.document(value)

    def _static_token(self, value: Any) -> Any:
        # auth_service.tokens entries look like "node,proxy:secret": keep the roles.
        if isinstance(value, str) and ":" in value:
            roles, _, _ = value.rpartition(":")
            return f"{roles}:{self.marker('join token')}"
        return self.marker("join token")

    def yaml_text(self, text: str) -> tuple[str, bool]:
        """Redact a YAML file in place, keeping its text verbatim but for the secret
        values; returns (text, parsed). Unparsable YAML falls back to the text patterns,
        so a malformed file still never leaks what they catch."""
        try:
            roots = list(yaml.compose_all(text, Loader=Loader))
        except (yaml.YAMLError, UnicodeError):  # malformed, or bytes that are not UTF-8
            return self.text(text), False
        spans: list[tuple[int, int, str]] = []
        for root in roots:
            if root is not None:
                self._collect(root, spans)
        if not spans and not any(isinstance(r, yaml.MappingNode | yaml.SequenceNode)
                                 for r in roots):
            return self.text(text), False
        out: list[str] = []
        pos = 0
        for start, end, replacement in sorted(spans):
            if start < pos:
                continue
            out.append(text[pos:start])
            out.append(replacement)
            pos = end
        out.append(text[pos:])
        return self.text("".join(out)), True

    def _collect(self, node: yaml.Node, spans: list[tuple[int, int, str]]) -> None:
        if isinstance(node, yaml.MappingNode):
            keys = {str(k.value).lower() for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
            for key_node, value in node.value:
                key = str(key_node.value).lower() if isinstance(key_node, yaml.ScalarNode) else ""
                category = SECRET_KEYS.get(key)
                if key == "key" and _KEYPAIR_SIBLINGS & keys:
                    category = "private key"
                if category is None:
                    self._collect(value, spans)
                    continue
                for leaf in _scalar_leaves(value):
                    if leaf.value in ("", None) or leaf.tag.endswith(":null") or \
                            leaf.tag.endswith(":bool"):
                        continue
                    if key == "tokens" and ":" in str(leaf.value):
                        roles = str(leaf.value).rpartition(":")[0]
                        new = f'"{roles}:{self.marker("join token")}"'
                    else:
                        new = f'"{self.marker(category)}"'
                    spans.append((leaf.start_mark.index, leaf.end_mark.index, new))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                self._collect(item, spans)


def _scalar_leaves(node: yaml.Node) -> list[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        return [node]
    if isinstance(node, yaml.MappingNode):
        return [leaf for _, v in node.value for leaf in _scalar_leaves(v)]
    if isinstance(node, yaml.SequenceNode):
        return [leaf for v in node.value for leaf in _scalar_leaves(v)]
    return []


def _has_content(value: Any) -> bool:
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def _hide_leaves(value: Any, make: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _hide_leaves(v, make) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_leaves(v, make) for v in value]
    return make() if _has_content(value) else value


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
