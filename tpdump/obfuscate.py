"""Obfuscation of identifiers (SPEC §8, layer 2: `--obfuscate`).

Host names, IP addresses, user names, e-mail addresses, cluster names and, when asked,
node UUIDs are replaced by one-way tokens: a keyed HMAC-SHA256 of the category and the
normalised value. The same value gives the same token in every file of a dump, and in
every dump made with the same key (`--obfuscation-key FILE`); without a key file each
dump draws a fresh random key, so its tokens cannot be linked to any other dump.

Token formats (all are valid host-name labels, so they fit in paths, YAML plain scalars,
JSON strings and URLs, and none of them parses as an address):

    host      node1                   -> host-3fa9c2e1d4b7a6f0
              node1.acme.example.com  -> host-3fa9c2e1d4b7a6f0.domain-9b1e…  (first label
                                         and parent domain hashed apart: the short name
                                         and the FQDN of one machine share the host part)
    ip        10.1.2.3                -> ip-…     (IPv4)
              fd00::1                 -> ip6-…    (IPv6, after compression; an
                                                   IPv4-mapped one as its IPv4 address)
    user      alice                   -> user-…   (a user name that is an e-mail address
                                                   is obfuscated as an e-mail)
    email     Alice@Acme.com          -> user-…@example.invalid
    cluster   acme                    -> cluster-…
    domain    acme.example.com        -> domain-… (the parent domain of a host name)
    uuid      (only with uuids=True)  -> a version-8 UUID: 2b7c…-…-8…-b…-…

IPv4 addresses become strings rather than addresses from a reserved range: the only
IPv4 ranges that can never be routed (240.0.0.0/4, the documentation /24s) hold at most
2^28 values, too few to keep 10^6 values apart, and a token that looks like an address
could be mistaken for a real one by whoever reads the dump.

Hex length: 16 hex digits (64 bits). By the birthday bound, among n values of one
category the chance of any collision is about n^2 / 2^65: 2.7e-8 for n = 10^6 (12 digits
would give 1.8e-3, not negligible for a large cluster's logs).

What is detected in free text:
  * learnt values (`learn()`: the cluster name, node host names, user names, node UUIDs
    from discovery), anywhere they stand as a whole word (not inside a longer run of
    letters, digits, '_' and '-'), longest first; host, cluster and domain names
    case-insensitively, user names exactly;
  * host names under a learnt domain (a cluster name with a dot is also a domain): any
    `label.…acme.example.com` becomes a host token;
  * AWS-style host names that carry an address (`ip-10-1-2-3[.ec2.internal]`);
  * e-mail addresses (a dotted domain with an alphabetic TLD; SSH algorithm names such as
    `…@openssh.com` are kept);
  * IPv4 addresses: four octets 0-255 without leading zeros, not part of a longer dotted
    run of numbers (`1.2.3.4.5`) and not glued to letters (`v1.2.3.4`); so versions such
    as 17.4.2 and times are left alone;
  * IPv6 addresses: a run of hex groups and colons that `ipaddress` accepts and that
    holds a digit; times (10:00:31) and MAC addresses (00:1a:2b:3c:4d:5e) are not valid
    IPv6 addresses and are left alone.

What is kept: loopback (127.0.0.0/8, ::1), unspecified addresses (0.0.0.0, ::), IPv4
netmasks (255.255.255.0, …): they identify nothing. Learnt values shorter than three
characters, all digits, or generic (localhost, root, ubuntu, auth, proxy, …) are not
looked for in free text (they would mangle ordinary words and identify nothing).
Existing tokens are never obfuscated again. Original values never reach the archive;
`mapping()` / `write_mapping()` give the user a token -> value table to keep.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import string
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tpdump.errors import UsageError

CATEGORIES = ("host", "ip", "user", "email", "cluster", "domain", "uuid")
MIN_KEY_BYTES = 16
HEX_DIGITS = 16
MIN_LEARNT_LEN = 3
# Case-insensitive categories; user names are compared exactly (Teleport user names are).
_FOLDED = frozenset({"host", "cluster", "domain", "email", "uuid"})
# When one value was learnt in several categories, the first of these wins (whatever
# the order of learn() calls, so that tokens do not depend on it).
_PRIORITY = ("uuid", "email", "cluster", "host", "user", "domain")

# Names that identify nothing and are ordinary words in logs and configs.
GENERIC = frozenset({
    "localhost", "localhost.localdomain", "localdomain", "ip6-localhost", "ip6-loopback",
    "example", "invalid", "local", "root", "nobody", "daemon", "teleport", "ubuntu", "debian",
    "centos", "fedora", "ec2-user", "admin", "administrator", "user", "users", "host",
    "hosts", "node", "nodes", "auth", "proxy", "kube", "app", "apps", "db", "ssh", "web",
    "server", "agent", "cluster", "domain", "main", "default", "test", "api", "none", "null",
    "true", "false", "unknown", "bin", "sys", "system", "-teleport-internal-join",
    "tpdump", "redacted", "access", "editor", "auditor", "systemd", "journald",
})
# Domains of e-mail-like names that are not e-mail addresses (SSH algorithm names).
_KEPT_EMAIL_DOMAINS = frozenset({"openssh.com", "libssh.org", "ssh.com"})

# Values of these keys in documents are identifiers of that category, even when they
# were not learnt (audit events, heartbeats).
KEY_HINTS: dict[str, str] = {
    "hostname": "host", "host_name": "host", "nodename": "host", "node_name": "host",
    "cluster_name": "cluster", "username": "user", "user_name": "user", "user": "user",
    "login": "user", "email": "email",
}

_HEX = f"[0-9a-f]{{{HEX_DIGITS}}}"
_TOKEN = re.compile(
    rf"(?:host|ip|ip6|user|cluster|domain)-{_HEX}|"
    r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)
# What a value of an identifier key must look like to be taken whole as a name.
_NAME = re.compile(r"\w[\w.@+-]*")
# A whole token, as text() emits it.
_TOKEN_FULL = re.compile(rf"(?:{_TOKEN.pattern})(?:\.domain-{_HEX})?(?:@example\.invalid)?")
# The patterns start with a literal or a character class, and boundaries are checked in
# Python on the (few) candidates: a leading look-behind would stop the regex engine from
# skipping ahead to where a match can start (3-4x slower on logs).
_EMAIL_AT = re.compile(r"@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?![\w-]|\.[\w-])")
_EMAIL_LOCAL = frozenset(string.ascii_letters + string.digits + "._%+-")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
_AWS_HOST = re.compile(
    r"ip-(?<![\w-]ip-)\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}"
    r"(?:\.(?:[a-z0-9-]+\.)?(?:compute|ec2)\.internal)?(?![\w-]|\.[\w-])"
)
_IPV4 = re.compile(r"[0-9]\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
# Every textual IPv6 address holds "::" or at least six colons in a row of hex groups.
_IPV6_HINT = re.compile(r"::|:(?:[0-9A-Fa-f]{1,4}:){5}")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")


class _Patterns(NamedTuple):
    version: int
    folded: re.Pattern[str] | None  # lower-cased learnt values, searched in s.lower()
    folded_source: str
    exact: re.Pattern[str] | None  # user names, searched in s
    domains: re.Pattern[str] | None  # "." + a learnt domain
    category: dict[str, str]  # learnt value (lower-cased unless a user name) -> category


def _glued(ch: str) -> bool:
    """Whether a character continues a word (a learnt value next to it is not whole)."""
    return ch.isalnum() or ch in "_-"


class Obfuscator:
    """Consistent, keyed, one-way replacement of identifiers; safe to share between
    threads (the archive writer and collectors call it concurrently)."""

    def __init__(self, key: bytes, *, uuids: bool = False) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"obfuscation key must be at least {MIN_KEY_BYTES} bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.uuids = uuids
        self.counts: Counter[str] = Counter()  # replacements made, by category
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], str] = {}  # (category, normalised) -> token
        self._raw: dict[tuple[str, str], tuple[str, str]] = {}  # as found -> token, category
        self._mapping: dict[str, str] = {}  # token -> normalised value
        self._learnt: dict[str, set[str]] = {}  # normalised value -> categories
        self._domains: set[str] = set()
        self._version = 0
        self._compiled: _Patterns | None = None
        self._unicode_fallback: tuple[int, re.Pattern[str]] | None = None

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], *, uuids: bool = False) -> Obfuscator:
        """A key read from a file (trailing line breaks and blanks are not part of it)."""
        try:
            key = Path(path).read_bytes().rstrip(b"\r\n\t ")
        except OSError as exc:
            raise UsageError(f"obfuscation key file {os.fspath(path)}: cannot read it: "
                             f"{exc.strerror or exc}") from exc
        if len(key) < MIN_KEY_BYTES:
            raise UsageError(f"obfuscation key file {os.fspath(path)}: the key is {len(key)} "
                             f"bytes long, at least {MIN_KEY_BYTES} are needed (e.g. "
                             f"`head -c 32 /dev/urandom > {os.fspath(path)}`)")
        return cls(key, uuids=uuids)

    @classmethod
    def random(cls, *, uuids: bool = False) -> Obfuscator:
        """A fresh key for one dump: its tokens link to no other dump."""
        return cls(secrets.token_bytes(32), uuids=uuids)

    @property
    def key_id(self) -> str:
        """A fingerprint of the key (for the report: dumps with equal key_id share tokens)."""
        return self._digest("key-id", "")[:12]

    # --- tokens ------------------------------------------------------------------
    def _digest(self, category: str, value: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{category}\0{value}".encode("utf-8", "surrogatepass"))
        return mac.hexdigest()

    def token(self, category: str, value: str) -> str:
        """The token for `value` of `category` (one of CATEGORIES); counted as one
        replacement."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown obfuscation category {category!r}")
        tally: Counter[str] = Counter()
        token = self._tok(category, value, tally)
        self._add(tally)
        return token

    def _tok(self, category: str, value: str, tally: Counter[str]) -> str:
        hit = self._raw.get((category, value))
        if hit is None:
            cat, norm = _normalise(category, value)
            token = self._tokens.get((cat, norm))
            if token is None:
                token = self._make(cat, norm)
                with self._lock:
                    token = self._tokens.setdefault((cat, norm), token)
                    self._mapping.setdefault(token, norm)
            hit = self._raw[(category, value)] = (token, "ip" if cat == "ip6" else cat)
        tally[hit[1]] += 1
        return hit[0]

    def _add(self, tally: Counter[str]) -> None:
        if tally:
            with self._lock:
                self.counts.update(tally)

    def _make(self, category: str, norm: str) -> str:
        if category == "host":
            label, _, parent = norm.partition(".")
            token = f"host-{self._digest('host', label)[:HEX_DIGITS]}"
            if parent:
                token += f".domain-{self._digest('domain', parent)[:HEX_DIGITS]}"
            return token
        if category == "email":
            return f"user-{self._digest('email', norm)[:HEX_DIGITS]}@example.invalid"
        if category == "uuid":
            h = self._digest("uuid", norm)
            variant = "89ab"[int(h[16], 16) & 3]
            return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"
        return f"{category}-{self._digest(category, norm)[:HEX_DIGITS]}"

    # --- known identifiers ---------------------------------------------------------
    def learn(self, category: str, value: str) -> bool:
        """Register an exact value (from discovery) to be replaced wherever it occurs in
        text. Returns False when it will not be looked for in free text (too short,
        generic, a UUID while uuids=False, an address or e-mail address: those are found
        by pattern anyway)."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown obfuscation category {category!r}")
        category, norm = _normalise(category, value)
        if category in ("ip", "ip6", "email") or (category == "uuid" and not self.uuids):
            return False
        if len(norm) < MIN_LEARNT_LEN or norm.isdigit() or norm.lower() in GENERIC \
                or _TOKEN_FULL.fullmatch(norm):
            return False
        with self._lock:
            cats = self._learnt.setdefault(norm, set())
            domain = category in ("cluster", "domain") and "." in norm
            if category in cats and (not domain or norm in self._domains):
                return True
            cats.add(category)
            if domain:
                self._domains.add(norm)
            self._version += 1
        return True

    def _patterns(self) -> _Patterns:
        """The regexes of the learnt values, rebuilt on first use after learn()."""
        compiled = self._compiled
        if compiled is not None and compiled.version == self._version:
            return compiled
        with self._lock:
            version = self._version
            learnt = {v: set(c) for v, c in self._learnt.items()}
            domains = set(self._domains)
        category = {v: next(c for c in _PRIORITY if c in cats) for v, cats in learnt.items()}
        folded = [v for v, c in category.items() if c in _FOLDED]
        exact = [v for v, c in category.items() if c not in _FOLDED]
        folded_source = _trie(folded)
        compiled = _Patterns(
            version,
            re.compile(rf"{folded_source}(?![\w-])") if folded else None,
            folded_source,
            re.compile(rf"{_trie(exact)}(?![\w-])") if exact else None,
            re.compile(rf"\.(?i:{_trie(domains)})(?![\w-]|\.[\w-])") if domains else None,
            category,
        )
        self._compiled = compiled
        return compiled

    # --- text ----------------------------------------------------------------------
    def text(self, s: str) -> str:
        """`s` with every identifier found replaced by its token."""
        if not s:
            return s
        pat = self._patterns()
        tally: Counter[str] = Counter()
        if "@" in s:
            s = _splice(s, self._emails(s, tally))
        if pat.domains is not None and "." in s:
            s = _splice(s, self._under_domains(pat.domains, s, tally))
        if pat.folded is not None:
            low = s.lower()
            if len(low) == len(s):
                s = _splice(s, self._known(pat.folded, low, s, pat.category, tally))
            else:  # some character lower-cases to two: offsets would not match
                s = _splice(s, self._known(self._fallback(pat), s, s, pat.category, tally))
        if pat.exact is not None:
            s = _splice(s, self._known(pat.exact, s, s, pat.category, tally))
        if "ip-" in s:
            s = _splice(s, self._aws_hosts(s, tally))
        if ":" in s:
            s = _splice(s, self._ipv6(s, tally))
        if "." in s:
            s = _splice(s, self._ipv4(s, tally))
        self._add(tally)
        return s

    def data(self, raw: bytes) -> bytes:
        """text() over bytes that may not be UTF-8 (foreign bytes pass unchanged)."""
        return self.text(raw.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape")

    def _fallback(self, pat: _Patterns) -> re.Pattern[str]:
        fallback = self._unicode_fallback
        if fallback is None or fallback[0] != pat.version:
            fallback = (pat.version, re.compile(rf"(?i:{pat.folded_source})(?![\w-])"))
            self._unicode_fallback = fallback
        return fallback[1]

    def _known(self, regex: re.Pattern[str], hay: str, s: str, category: dict[str, str],
               tally: Counter[str]) -> Iterator[tuple[int, int, str]]:
        pos = 0
        while (m := regex.search(hay, pos)) is not None:
            a, b = m.span()
            if a > 0 and _glued(s[a - 1]):
                pos = a + 1  # inside a longer word; a shorter value may start further on
                continue
            found = hay[a:b]
            cat = category.get(found) or category.get(found.lower())
            if cat is not None:
                yield a, b, self._tok(cat, s[a:b], tally)
            pos = b

    def _emails(self, s: str, tally: Counter[str]) -> Iterator[tuple[int, int, str]]:
        last = 0
        for m in _EMAIL_AT.finditer(s):
            at = a = m.start()
            while a > last and s[a - 1] in _EMAIL_LOCAL:
                a -= 1
            while a < at and s[a] == ".":
                a += 1
            domain = m.group(1).lower()
            kept = a == at or domain in _KEPT_EMAIL_DOMAINS or (a > 0 and s[a - 1] == "@") \
                or _TOKEN.search(s, a, at) is not None
            if not kept:  # an SSH algorithm name, x@y@z, a token already (or before @)
                yield a, m.end(), self._tok("email", s[a:m.end()], tally)
            last = m.end()  # the next local part starts after this domain

    def _under_domains(self, dom: re.Pattern[str], s: str,
                       tally: Counter[str]) -> Iterator[tuple[int, int, str]]:
        last = 0
        for m in dom.finditer(s):
            start = m.start()
            while start > last and (s[start - 1].isalnum() or s[start - 1] in ".-"):
                start -= 1
            while start < m.start() and s[start] in ".-":
                start += 1
            if start == m.start() or (start > 0 and s[start - 1] in "_@"):
                continue  # the domain alone, or the domain of an e-mail-like name
            yield start, m.end(), self._tok("host", s[start:m.end()], tally)
            last = m.end()

    def _aws_hosts(self, s: str, tally: Counter[str]) -> Iterator[tuple[int, int, str]]:
        for m in _AWS_HOST.finditer(s):
            octets = m.group().split(".", 1)[0].split("-")[1:]
            if all(int(o) <= 255 for o in octets):
                yield m.start(), m.end(), self._tok("host", m.group(), tally)

    def _ipv4(self, s: str, tally: Counter[str]) -> Iterator[tuple[int, int, str]]:
        n = len(s)
        pos = 0
        while (m := _IPV4.search(s, pos)) is not None:
            a, b = m.span()
            pos = a + 1  # when refused: an address may start inside (a1.10.1.2.3)
            if a > 0 and (s[a - 1].isalnum() or (s[a - 1] == "." and _numeric_label(s, a - 1))):
                continue  # v1.2.3.4, or the tail of 1.2.3.4.5
            if b < n and (s[b].isalnum() or (s[b] == "." and b + 1 < n and s[b + 1].isdigit())):
                continue
            value = m.group()
            if ("ip", value) not in self._raw and not _is_ipv4_to_hide(value):
                continue
            yield a, b, self._tok("ip", value, tally)
            pos = b

    def _ipv6(self, s: str, tally: Counter[str]) -> Iterator[tuple[int, int, str]]:
        n = len(s)
        last = 0
        for m in _IPV6_HINT.finditer(s):
            if m.start() < last:
                continue
            a, b = m.start(), m.end()
            while a > last and s[a - 1] in _HEX_COLON:
                a -= 1
            while b < n and (s[b] in _HEX_COLON or s[b] == "."):
                b += 1
            last = b
            value = s[a:b].rstrip(".")
            if value.endswith(":") and not value.endswith("::"):
                value = value[:-1]
            b = a + len(value)
            if (a > 0 and (s[a - 1].isalnum() or s[a - 1] in "_.")) or \
                    (b < n and (s[b].isalnum() or s[b] == "_")) or \
                    (b + 1 < n and s[b] == ":" and (s[b + 1].isalnum() or s[b + 1] in "_.:")):
                continue  # glued to a word, or one more group after all (1:…:8:x)
            if ("ip", value) not in self._raw:
                addr = _ipv6_to_hide(value)
                if addr is None:
                    continue
                if addr.ipv4_mapped is not None:  # the same host as the IPv4 address
                    yield a, b, self._tok("ip", str(addr.ipv4_mapped), tally)
                    continue
            yield a, b, self._tok("ip", value, tally)

    # --- paths and documents -----------------------------------------------------
    def path(self, p: str) -> str:
        """An archive path with each component obfuscated like text (so that
        `nodes/<uuid>/…` and files named after hosts match the tokens inside files)."""
        return "/".join(self.text(part) for part in p.split("/"))

    def document(self, doc: Any) -> Any:
        """A copy of a JSON/YAML-like structure with strings obfuscated, dict keys
        included; values of identifier keys (KEY_HINTS) are tokens even when unlearnt."""
        if isinstance(doc, Mapping):
            out: dict[Any, Any] = {}
            for k, v in doc.items():
                hint = KEY_HINTS.get(k.lower()) if isinstance(k, str) else None
                key = self.text(k) if isinstance(k, str) else k
                if hint is not None and isinstance(v, str):
                    out[key] = self._hinted(hint, v)
                else:
                    out[key] = self.document(v)
            return out
        if isinstance(doc, list | tuple):
            return [self.document(v) for v in doc]
        if isinstance(doc, str):
            return self.text(doc)
        return doc

    def _hinted(self, category: str, value: str) -> str:
        new = self.text(value)
        if new != value or not _NAME.fullmatch(value) or value.lower() in GENERIC \
                or _TOKEN.search(value) or _is_address(value):
            return new  # found by pattern, not a name, kept on purpose, or a token already
        return self.token(category, value)

    # --- mapping -------------------------------------------------------------------
    def mapping(self) -> dict[str, str]:
        """{token: original value} of every token handed out (normalised values)."""
        with self._lock:
            return dict(self._mapping)

    def distinct(self) -> Counter[str]:
        """How many distinct values were obfuscated, by category."""
        out: Counter[str] = Counter()
        with self._lock:
            for category, _ in self._tokens:
                out["ip" if category == "ip6" else category] += 1
        return out

    def write_mapping(self, path: str | os.PathLike[str]) -> None:
        """The mapping as JSON, readable by the owner only (it undoes the obfuscation:
        it stays with the user and never goes into the archive)."""
        data = json.dumps(dict(sorted(self.mapping().items())), indent=1,
                          ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(data)
        finally:
            os.close(fd)


def _normalise(category: str, value: str) -> tuple[str, str]:
    """(category, normalised value); host names that are addresses become "ip", user
    names that are e-mail addresses "email"; IPv6 tokens are "ip6" internally."""
    v = value.strip()
    if category in ("ip", "host"):
        try:
            addr = ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            if category == "ip":
                return "ip", v.lower()
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                return "ip", str(addr.ipv4_mapped)  # the same host as the IPv4 address
            return ("ip" if addr.version == 4 else "ip6"), addr.compressed
    if category == "user" and _EMAIL.fullmatch(v):
        category = "email"
    if category in ("host", "cluster", "domain"):
        v = v.rstrip(".")
    if category in _FOLDED:
        v = v.lower()
    return category, v


def _is_netmask(addr: ipaddress.IPv4Address) -> bool:
    inverted = ~int(addr) & 0xFFFFFFFF
    return addr.packed[0] == 255 and inverted & (inverted + 1) == 0


def _is_ipv4_to_hide(value: str) -> bool:
    """A dotted quad that is an address (octets 0-255, no leading zeros) worth hiding:
    not loopback, unspecified or a netmask."""
    for octet in value.split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return False
    if value.startswith("127.") or value == "0.0.0.0":
        return False
    return not (value.startswith("255.") and _is_netmask(ipaddress.IPv4Address(value)))


def _ipv6_to_hide(value: str) -> ipaddress.IPv6Address | None:
    """The IPv6 address `value` if it is one worth hiding (it holds a digit: a run of
    hex words like `abc::def` is more likely a name)."""
    if ("::" not in value and value.count(":") < 6) or not any(c.isdigit() for c in value):
        return None  # 10:00:31, 00:1a:2b:3c:4d:5e
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        return None
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return addr if _is_ipv4_to_hide(str(mapped)) else None
    if addr.is_loopback or addr.is_unspecified:
        return None
    return addr


def _numeric_label(s: str, end: int) -> bool:
    """Whether the dotted label ending at `end` is all digits (1.2.3.4.5 is a run of
    numbers; in node1.10.1.2.3 or x.10.1.2.3 the address stands on its own)."""
    start = end
    while start > 0 and s[start - 1].isdigit():
        start -= 1
    return start < end and (start == 0 or not _glued(s[start - 1]))


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def _splice(s: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """`s` with the (start, end, replacement) spans, in order and apart, replaced."""
    out: list[str] = []
    pos = 0
    for start, end, replacement in spans:
        out.append(s[pos:start])
        out.append(replacement)
        pos = end
    if not out:
        return s
    out.append(s[pos:])
    return "".join(out)


def _trie(words: Iterable[str]) -> str:
    """One regex alternation for many literal words, as a compressed trie (so that the
    regex engine looks at each character once instead of once per word); where a word
    is a prefix of another the longer is tried first."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _trie_node(root)


def _trie_node(node: dict[str, Any]) -> str:
    alternatives: list[str] = []
    for ch in sorted(k for k in node if k):
        literal, child = ch, node[ch]
        while len(child) == 1 and "" not in child:  # a chain without branches
            (nxt, child), = child.items()
            literal += nxt
        alternatives.append(re.escape(literal) + _trie_node(child))
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"
    return f"(?:{body})?" if "" in node else body
