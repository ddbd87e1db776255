"""Throughput of the secret stripping and the obfuscation over a synthetic Teleport log
corpus (~50 MB: text log and JSON-lines log, with a few secrets, addresses and host
names), written to a temporary directory. Prints MB/s (1 MB = 10^6 bytes of input) for
Redactor.text, Redactor.data, Redactor.json_lines and Obfuscator.text with 10,000 learnt
host names.

    .venv/bin/python bench/redact_throughput.py [--mb 50] [--hosts 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tpdump.obfuscate import Obfuscator  # noqa: E402
from tpdump.redact import Redactor  # noqa: E402

COMPONENTS = ["auth", "proxy", "node", "reversetunnel", "upload", "keygen", "cache", "sshd"]
MESSAGES = [
    "Creating (exec) session {sid}.",
    "Handling request for {host} from {ip}:{port}.",
    "Agent connected to proxy {fqdn}:443 from {ip6}.",
    "Heartbeat for {uuid} sent to {ip}:3025.",
    "User {user} logged in from {ip}, roles [access editor].",
    "Cache \"auth\" first init succeeded, version 17.4.2, took 1.2.3.4.5 ms.",
    "Connection to {host}.acme.example.com closed at 10:00:31, mac 00:1a:2b:3c:4d:5e.",
    "Certificate for {user}@acme.example.com issued, valid until 2026-01-02T10:00:00Z.",
]
SECRETS = [
    "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    "Failed to join: token=3c5b5f7d0e1a2b3c4d5e6f708192a3b4 is expired.",
    "Cookie: __Host-grv_csrf=8f7e6d5c4b3a29180706; session=abcdef0123456789",
]
PEM = ("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(["MIIEowIBAAKCAQEAx" * 4] * 8)
       + "\n-----END RSA PRIVATE KEY-----")


def corpus(size: int, hosts: list[str], rng: random.Random) -> tuple[str, bytes]:
    """(text log, JSON-lines log), each about `size` bytes."""
    text: list[str] = []
    lines: list[bytes] = []
    total_text = total_json = 0
    n = 0
    while total_text < size or total_json < size:
        n += 1
        fields = {
            "sid": f"{rng.getrandbits(128):032x}",
            "host": rng.choice(hosts),
            "fqdn": f"proxy{rng.randrange(9)}.acme.example.com",
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "ip6": f"fd00::{rng.randrange(65536):x}",
            "port": rng.randrange(1024, 65535),
            "uuid": f"{rng.getrandbits(128):032x}",
            "user": rng.choice(["alice", "bob.smith", "carol@acme.com", "dave"]),
        }
        msg = rng.choice(MESSAGES).format(**fields)
        if n % 997 == 0:
            msg = rng.choice(SECRETS)
        stamp = f"2026-01-02T10:{n // 3600 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z"
        comp = rng.choice(COMPONENTS)
        if total_text < size:
            line = f"{stamp} INFO [{comp.upper()}] {msg} pid:{1000 + n % 7} " \
                   f"{comp}/service.go:{n % 900}"
            if n % 20011 == 0:
                line += "\n" + PEM
            text.append(line)
            total_text += len(line) + 1
        if total_json < size:
            rec = {"timestamp": stamp, "level": "info", "component": comp, "message": msg,
                   "caller": f"{comp}/service.go:{n % 900}", "addr.remote": fields["ip"]}
            if n % 5003 == 0:
                rec["token"] = fields["sid"]
            data = json.dumps(rec).encode()
            lines.append(data)
            total_json += len(data) + 1
    return "\n".join(text) + "\n", b"\n".join(lines) + b"\n"


def measure(name: str, size: int, fn: Callable[[], object], rounds: int = 1) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    rate = size / best / 1e6
    print(f"{name:<48} {size / 1e6:7.1f} MB {best:8.2f} s {rate:9.1f} MB/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size (text + JSON)")
    parser.add_argument("--hosts", type=int, default=10_000, help="learnt host names")
    args = parser.parse_args()
    rng = random.Random(1)
    hosts = [f"{rng.choice(['ip', 'node', 'db', 'web', 'k8s'])}-{i:05d}-"
             f"{rng.getrandbits(16):04x}" for i in range(args.hosts)]
    half = int(args.mb * 1e6 / 2)
    with tempfile.TemporaryDirectory(prefix="tpdump-bench-") as tmp:
        text_path, json_path = Path(tmp) / "teleport.log", Path(tmp) / "teleport.json.log"
        text_src, json_src = corpus(half, hosts, rng)
        text_path.write_text(text_src)
        json_path.write_bytes(json_src)
        text_raw = text_path.read_bytes()
        text = text_raw.decode()
        json_raw = json_path.read_bytes()
        print(f"corpus: {len(text_raw) / 1e6:.1f} MB text log + {len(json_raw) / 1e6:.1f} MB "
              f"JSON lines in {tmp}")
        measure("Redactor.text (text log)", len(text_raw), lambda: Redactor().text(text), 2)
        measure("Redactor.data (text log)", len(text_raw), lambda: Redactor().data(text_raw), 2)
        measure("Redactor.json_lines (JSON log)", len(json_raw),
                lambda: Redactor().json_lines(json_raw), 2)

        obf = Obfuscator.random()
        obf.learn("cluster", "acme.example.com")
        started = time.perf_counter()
        for host in hosts:
            obf.learn("host", host)
        obf.text("warm-up: compiles the pattern of learnt names")
        print(f"{'learn + compile ' + str(len(hosts)) + ' host names':<48} "
              f"{time.perf_counter() - started:17.2f} s")
        for user in ("alice", "bob.smith", "dave"):
            obf.learn("user", user)
        measure(f"Obfuscator.text, {len(hosts)} hosts (text log)", len(text_raw),
                lambda: obf.text(text), 2)
        measure(f"Obfuscator.data, {len(hosts)} hosts (JSON log)", len(json_raw),
                lambda: obf.data(json_raw), 2)
        both = Redactor()
        measure("Redactor.data + Obfuscator.data (text log)", len(text_raw),
                lambda: obf.data(both.data(text_raw)))
        print(f"obfuscated (occurrences): {dict(obf.counts)}")


if __name__ == "__main__":
    main()
