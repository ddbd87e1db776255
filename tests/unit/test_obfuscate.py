"""--obfuscate: keyed, consistent, one-way tokens for host names, addresses, users,
e-mail addresses, cluster names and node UUIDs, in text, paths and documents."""

from __future__ import annotations

import json
import os
import re
import stat
import string
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpdump.errors import UsageError
from tpdump.obfuscate import GENERIC, Obfuscator

KEY = b"k" * 32
HEX = r"[0-9a-f]{16}"
UUID = "0b3c6f3e-1111-4222-8333-444455556666"


def obfuscator(*, uuids: bool = False) -> Obfuscator:
    o = Obfuscator(KEY, uuids=uuids)
    o.learn("cluster", "acme.example.com")
    for host in ("node1", "db-primary", "NODE-2.corp.internal"):
        o.learn("host", host)
    o.learn("user", "alice")
    o.learn("uuid", UUID)
    return o


def whole(value: str, text: str, *, fold: bool = True) -> bool:
    """Whether `value` stands in `text` as a whole word (not glued to [\\w-])."""
    flags = re.IGNORECASE if fold else 0
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text, flags) is not None


# --- tokens ------------------------------------------------------------------------------
def test_same_value_same_token_within_and_across_dumps() -> None:
    a, b = Obfuscator(KEY), Obfuscator(KEY)
    for category, value in [("host", "node1"), ("ip", "10.1.2.3"), ("user", "alice"),
                            ("email", "a@b.org"), ("cluster", "acme"), ("uuid", UUID)]:
        assert a.token(category, value) == a.token(category, value) == b.token(category, value)
    other = Obfuscator(b"x" * 32)
    assert other.token("host", "node1") != a.token("host", "node1")
    assert Obfuscator.random().token("host", "node1") != Obfuscator.random().token("host",
                                                                                   "node1")


def test_token_formats_and_normalisation() -> None:
    o = Obfuscator(KEY)
    assert re.fullmatch(f"host-{HEX}", o.token("host", "node1"))
    assert o.token("host", "NODE1") == o.token("host", "node1.".upper().rstrip(".")) \
        == o.token("host", "node1.")
    fqdn = o.token("host", "node1.acme.example.com")
    assert re.fullmatch(f"host-{HEX}\\.domain-{HEX}", fqdn)
    assert fqdn.startswith(o.token("host", "node1") + ".")  # short name and FQDN agree
    assert re.fullmatch(f"ip-{HEX}", o.token("ip", "10.1.2.3"))
    assert re.fullmatch(f"ip6-{HEX}", o.token("ip", "2001:DB8:0:0::1"))
    assert o.token("ip", "2001:db8::1") == o.token("ip", "2001:DB8:0:0:0:0:0:1")
    assert o.token("ip", "::ffff:10.1.2.3") == o.token("ip", "10.1.2.3")
    assert o.token("host", "10.1.2.3") == o.token("ip", "10.1.2.3")
    assert re.fullmatch(f"user-{HEX}", o.token("user", "alice"))
    assert o.token("user", "alice") != o.token("user", "Alice")  # user names are exact
    email = o.token("email", "Alice@Acme.COM")
    assert re.fullmatch(f"user-{HEX}@example\\.invalid", email)
    assert email == o.token("email", "alice@acme.com") == o.token("user", "alice@acme.com")
    assert re.fullmatch(f"cluster-{HEX}", o.token("cluster", "Acme.example.com."))
    u = o.token("uuid", UUID.upper())
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", u)
    assert u == o.token("uuid", UUID)
    # categories are kept apart
    assert o.token("host", "acme")[5:] != o.token("cluster", "acme")[8:]
    with pytest.raises(ValueError):
        o.token("colour", "blue")


def test_no_collisions_across_100k_hostnames() -> None:
    o = Obfuscator(KEY)
    tokens = {o.token("host", f"node-{i:06d}") for i in range(100_000)}
    assert len(tokens) == 100_000
    assert o.distinct()["host"] == 100_000


# --- key files ---------------------------------------------------------------------------
def test_key_file(tmp_path: Path) -> None:
    key = tmp_path / "obf.key"
    key.write_bytes(b"correct horse battery staple\n")
    o = Obfuscator.from_key_file(key)
    assert o.token("host", "node1") == Obfuscator(b"correct horse battery staple").token(
        "host", "node1")
    assert o.key_id == Obfuscator.from_key_file(str(key)).key_id != Obfuscator(KEY).key_id


@pytest.mark.parametrize("content", [None, b"short\n", b""])
def test_key_file_errors_name_the_file(tmp_path: Path, content: bytes | None) -> None:
    key = tmp_path / "obf.key"
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(UsageError, match=re.escape(str(key))):
        Obfuscator.from_key_file(key)
    with pytest.raises(ValueError):
        Obfuscator(b"short")


# --- detection in text ----------------------------------------------------------------------
@pytest.mark.parametrize("text, hidden", [
    ("from 10.1.2.3:3025", "10.1.2.3"),
    ("addr=192.168.0.254,", "192.168.0.254"),
    ("cidr 10.0.0.0/8", "10.0.0.0"),
    ("(172.16.5.4)", "172.16.5.4"),
    ("host_10.1.2.3.txt", "10.1.2.3"),
    ("at 8.8.8.8.", "8.8.8.8"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("peer fe80::1%eth0 up", "fe80::1"),
    ("v6 2001:0db8:0000:0000:0000:ff00:0042:8329 ok", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("mapped ::ffff:10.9.8.7", "10.9.8.7"),
    ("mail Alice.Smith+ops@Acme-Corp.com.", "Alice.Smith+ops@Acme-Corp.com"),
    ("<bob@mail.example.org>", "bob@mail.example.org"),
    ("aws ip-10-0-1-7.ec2.internal", "ip-10-0-1-7"),
    ("aws ip-10-0-1-7.eu-west-1.compute.internal", "10-0-1-7"),
])
def test_patterns_hide(text: str, hidden: str) -> None:
    out = Obfuscator(KEY).text(text)
    assert hidden not in out and hidden.lower() not in out
    assert out != text


@pytest.mark.parametrize("text", [
    "teleport v17.4.2 go1.22.5",           # versions
    "1.2.3.4.5 and 01.2.3.4 and 1.2.3.400",  # not addresses
    "v1.2.3.4",                             # a version with four parts
    "2026-01-02T10:00:31.123Z 10:00:31",    # times
    "mac 00:1a:2b:3c:4d:5e",                # MAC addresses are not IPv6
    "std::vector abc::def ::",              # no digit / unspecified
    "127.0.0.1 ::1 0.0.0.0 :: 255.255.255.0 255.255.0.0 ::ffff:127.0.0.1",  # identify nothing
    "hmac-sha2-256-etm@openssh.com curve25519-sha256@libssh.org",  # SSH algorithm names
    "user@localhost alice@node",            # no dotted domain: not e-mail addresses
    "ip-10-0-1-700 ip-1-2-3",              # not AWS host names
    "sha256:0f3c1d2e ff:ee",
])
def test_patterns_keep(text: str) -> None:
    assert Obfuscator(KEY).text(text) == text


def test_learnt_values_whole_words_only() -> None:
    o = obfuscator()
    out = o.text("node1 NODE1 node1.log /var/node1/x node1:3022 xnode1 node1x node1-b "
                 "node10 db-primary db-primary-2 alice Alice alice_b")
    words = out.split()
    host = o.token("host", "node1")
    assert words[:3] == [host, host, f"{host}.log"]
    assert words[3] == f"/var/{host}/x" and words[4] == f"{host}:3022"
    assert words[5:9] == ["xnode1", "node1x", "node1-b", "node10"]
    assert words[9:11] == [o.token("host", "db-primary"), "db-primary-2"]
    assert words[11:] == [o.token("user", "alice"), "Alice", "alice_b"]


def test_longest_learnt_value_wins() -> None:
    o = Obfuscator(KEY)
    for value in ("srv", "srv-1", "srv-1.prod"):
        assert o.learn("host", value)
    assert o.text("srv-1.prod srv-1 srv srv-12") == " ".join(
        o.token("host", v) for v in ("srv-1.prod", "srv-1", "srv")) + " srv-12"


def test_hosts_under_a_learnt_cluster_domain() -> None:
    o = obfuscator()
    out = o.text("dial proxy.acme.example.com:443 and a.b.ACME.example.com. then "
                 "acme.example.com; not acme.example.com.evil.org nor notacme.example.com")
    assert out.split()[1] == o.token("host", "proxy.acme.example.com") + ":443"
    assert out.split()[3] == o.token("host", "a.b.acme.example.com") + "."
    assert o.token("cluster", "acme.example.com") + ";" in out
    # not a host under the domain; the learnt name is still hidden where it stands whole
    assert f"not {o.token('cluster', 'acme.example.com')}.evil.org" in out
    assert "notacme.example.com" in out and "proxy" not in out


def test_generic_short_and_numeric_values_are_not_learnt() -> None:
    o = Obfuscator(KEY)
    assert not o.learn("host", "localhost")
    assert not o.learn("user", "root")
    assert not o.learn("host", "db")
    assert not o.learn("host", "1234")
    assert not o.learn("ip", "10.1.2.3")  # found by pattern anyway
    assert not o.learn("host", o.token("host", "x-node"))  # a token
    assert o.learn("host", "proxy-7")
    assert o.text("root on localhost db 1234 proxy-7") == \
        f"root on localhost db 1234 {o.token('host', 'proxy-7')}"
    assert {"root", "localhost", "auth", "proxy"} <= GENERIC


def test_uuids_only_when_asked() -> None:
    plain = obfuscator()
    line = f"host_id={UUID} other=9d1f6a5e-0000-4000-8000-000000000000"
    assert plain.text(line) == line
    o = obfuscator(uuids=True)
    out = o.text(line.upper())
    assert UUID not in out.lower() and o.token("uuid", UUID) in out
    assert "9D1F6A5E-0000-4000-8000-000000000000" in out  # not a learnt node


def test_originals_never_appear() -> None:
    o = obfuscator(uuids=True)
    log = (f"2026-01-02T10:00:31Z INFO node1 joined acme.example.com from 10.1.2.3 as "
           f"alice (alice@acme.example.com), host {UUID}, proxy.acme.example.com, "
           f"[fd00::7]:3025 node-2.corp.internal db-primary\n")
    out = o.text(log)
    for original in ("node1", "acme", "10.1.2.3", "alice", UUID, "fd00::7", "node-2",
                     "corp.internal", "db-primary"):
        assert original not in out.lower()
    assert o.text(out) == out


# --- paths, documents ---------------------------------------------------------------------
def test_paths() -> None:
    o = obfuscator(uuids=True)
    out = o.path(f"nodes/{UUID}/node1/logs/10.1.2.3.log")
    assert out == (f"nodes/{o.token('uuid', UUID)}/{o.token('host', 'node1')}/logs/"
                   f"{o.token('ip', '10.1.2.3')}.log")
    assert o.path("cluster/nodes.json") == "cluster/nodes.json"
    assert o.path(out) == out


def test_document_keeps_structure() -> None:
    o = obfuscator()
    doc = {"kind": "node", "version": 3, "ok": True, "none": None,
           "metadata": {"name": UUID, "labels": {"env": "prod", "hostname": "node1"}},
           "spec": {"hostname": "web-7", "addr": "10.1.2.3:3022", "login": "root",
                    "user": "bob", "cluster_name": "acme.example.com",
                    "peers": ["node1", "10.9.9.9", 5]},
           "by_node": {"node1": {"rtt": 1.5}, "db-primary": {"rtt": 2}}}
    out = o.document(doc)
    assert out["version"] == 3 and out["ok"] is True and out["none"] is None
    assert out["metadata"]["name"] == UUID  # uuids not asked
    assert out["metadata"]["labels"] == {"env": "prod", "hostname": o.token("host", "node1")}
    spec = out["spec"]
    assert spec["hostname"] == o.token("host", "web-7")  # identifier key, unlearnt value
    assert spec["addr"] == f"{o.token('ip', '10.1.2.3')}:3022"
    assert spec["login"] == "root" and spec["user"] == o.token("user", "bob")
    assert spec["cluster_name"] == o.token("cluster", "acme.example.com")
    assert spec["peers"][2] == 5 and spec["peers"][0] == o.token("host", "node1")
    assert set(out["by_node"]) == {o.token("host", "node1"), o.token("host", "db-primary")}
    assert out["by_node"][o.token("host", "node1")] == {"rtt": 1.5}
    assert json.loads(json.dumps(out)) == out
    assert "node1" not in json.dumps(out) and "10.1.2.3" not in json.dumps(out)


# --- counts, mapping ----------------------------------------------------------------------
def test_counts_and_mapping(tmp_path: Path) -> None:
    o = obfuscator()
    o.text("node1 node1 10.1.2.3 alice bob@x.org")
    assert o.counts == Counter({"host": 2, "ip": 1, "user": 1, "email": 1})
    assert o.distinct() == Counter({"host": 1, "ip": 1, "user": 1, "email": 1})
    mapping = o.mapping()
    assert mapping[o.token("host", "node1")] == "node1"
    assert mapping[o.token("email", "bob@x.org")] == "bob@x.org"
    path = tmp_path / "mapping.json"
    path.write_text("old")
    path.chmod(0o644)
    o.write_mapping(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == o.mapping()
    fresh = tmp_path / "new.json"
    o.write_mapping(str(fresh))
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_thread_safe() -> None:
    o = obfuscator()
    line = "node1 talks to 10.1.2.3 and db-primary as alice\n" * 50
    expected = Obfuscator(KEY)
    for category, value in (("host", "node1"), ("host", "db-primary"), ("user", "alice")):
        expected.learn(category, value)
    want = expected.text(line)
    errors: list[str] = []

    def work(i: int) -> None:
        for j in range(40):
            if j % 10 == 0:
                o.learn("host", f"extra-{i}-{j}")  # rebuilds the patterns meanwhile
            if o.text(line) != want:
                errors.append("mismatch")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert o.counts["host"] == 8 * 40 * 100 and o.counts["ip"] == 8 * 40 * 50


def test_fast_with_10k_learnt_hosts() -> None:
    o = Obfuscator(KEY)
    hosts = [f"node-{i:05d}-x" for i in range(10_000)]
    for h in hosts:
        o.learn("host", h)
    line = ("2026-01-02T10:00:31Z INFO [NODE] Handling request for {} from 10.1.2.{}:3022 "
            "at proxy.example.com, version 17.4.2 took 12ms\n")
    text = "".join(line.format(hosts[i * 37 % 10_000], i % 250) for i in range(5000))
    started = time.perf_counter()
    o.text("compile")
    out = o.text(text)
    elapsed = time.perf_counter() - started
    assert "node-0" not in out
    assert elapsed < 5, f"{len(text) / 1e6:.1f} MB in {elapsed:.2f} s"  # ~0.1 s here


# --- properties ---------------------------------------------------------------------------
label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
host_names = st.builds(lambda a, b, c: a + b + c, st.sampled_from(string.ascii_lowercase),
                       label, st.sampled_from(["", "-a", ".corp", "-2.lab.internal"]))
user_names = st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_letters),
                       st.text(alphabet=string.ascii_letters + string.digits + "._",
                               min_size=2, max_size=10))
separators = st.sampled_from([" ", "\n", ", ", "/", ":", "=", "(", ")", "\t", ".", "@",
                              " [", "] ", "\"", "'"])
noise = st.text(alphabet=string.ascii_letters + string.digits + " .:/-_@[]%+=", max_size=12)
# TPDUMP_PROPERTY_EXAMPLES=5000 for a long search; the default keeps the file fast.
PROPS = settings(max_examples=int(os.environ.get("TPDUMP_PROPERTY_EXAMPLES", "200")),
                 deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scene(draw: st.DrawFn) -> tuple[Obfuscator, list[tuple[str, str]], str]:
    """An obfuscator with learnt values, and text that mentions them among noise."""
    o = Obfuscator(KEY)
    learnt: list[tuple[str, str]] = []
    for category, strategy in (("host", host_names), ("user", user_names)):
        for value in draw(st.lists(strategy, min_size=1, max_size=4, unique=True)):
            if o.learn(category, value):
                learnt.append((category, value))
    pieces = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and learnt:
            category, value = draw(st.sampled_from(learnt))
            pieces.append(value.upper() if category == "host" and draw(st.booleans())
                          else value)
        elif kind == 1:
            pieces.append(draw(st.sampled_from(["10.1.2.3", "fd00::7", "a@b.org",
                                                "1.2.3.4.5", "17.4.2", "10:00:31"])))
        else:
            pieces.append(draw(noise))
        pieces.append(draw(separators))
    return o, learnt, "".join(pieces)


@PROPS
@given(scene())
def test_no_learnt_value_survives_and_tokens_are_stable(
        s: tuple[Obfuscator, list[tuple[str, str]], str]) -> None:
    o, learnt, text = s
    out = o.text(text)
    for category, value in learnt:
        assert not whole(value, out, fold=category == "host"), (value, out)
    assert o.text(out) == out  # tokens (and what was kept) are not obfuscated again
    doc = o.document({"hostname": text.strip(), "user": text, "n": [text], text: 1})
    assert o.document(doc) == doc
    for token in o.mapping():
        assert o.text(token) == token and o.text(f"see {token}.") == f"see {token}."


@PROPS
@given(st.lists(st.sampled_from(["host", "ip", "user", "email", "cluster", "uuid"]),
                min_size=1, max_size=6), st.lists(label, min_size=1, max_size=6))
def test_tokens_are_never_obfuscated_again(categories: list[str], values: list[str]) -> None:
    o = Obfuscator(KEY, uuids=True)
    for value in values:
        o.learn("host", "h" + value)
        o.learn("user", "u" + value)
    for category in categories:
        for value in values:
            if category == "ip":
                value = f"10.0.{len(value)}.{ord(value[0])}"
            elif category == "email":
                value = f"{value}@{value}.org"
            token = o.token(category, value)
            assert o.text(token) == token
            assert o.path(f"a/{token}/b") == f"a/{token}/b"
            assert o.document({token: [token]}) == {token: [token]}
            hinted = {key: token for key in ("hostname", "user", "email", "cluster_name")}
            assert o.document(hinted) == hinted
