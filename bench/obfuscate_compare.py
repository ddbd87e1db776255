"""Obfuscating one directory of Teleport logs and objects: tpdump against `sos clean`.

Generates a seeded corpus directory (~20 MB): text and JSON-lines Teleport logs from
bench/redact_throughput.py's generator (imported, not copied), an audit-event log, a
teleport.yaml and tctl-style YAML objects (nodes, proxies, users, cluster name), with
host names under the cluster domain acme.example.com, short host names, IPv4/IPv6
addresses, user names and e-mail addresses. Addresses are folded into a pool (default
2,000: one cluster's nodes and clients): the generator draws every address afresh, and
sos's address map is quadratic in the number of distinct addresses.

* tpdump: every file read, `Redactor.data` then `Obfuscator.data` (what a run's archive
  writer applies), paths through `Obfuscator.path`, written to an output directory; the
  cluster name, host names and users learnt first, as a run does after discovery.
  Timed in-process, wall and CPU (learning and pattern compilation included).
* sos clean (`/usr/bin/sos`): on a fresh copy of the corpus, with its mapping file and
  config in a scratch directory (`--map`, `--no-update`, `--config-file`, `--tmp-dir`),
  so that /etc/sos is only read (its listing is compared before and after). Timed as a
  process: wall and CPU (user + sys from rusage), start-up included. sos 4.0 refuses a
  plain directory ("not an sos directory"): an empty `sos_logs/` at the top makes it one
  (newer sos has `--archive-type`, used when present). sos 4.0 has no `--usernames`:
  user names go to `--keywords`. sos 4.0 matches no name under a domain of three labels
  (`--domains acme.example.com` alone leaves *.acme.example.com): the parent domain
  example.com is passed too. Runs: "domains + users" (what an operator gives it) and, unless
  --no-host-keywords, also with every short host name as a keyword (what tpdump knows
  from discovery).

Leftovers: every occurrence, in the output, of an identifier of the corpus (e-mail,
name under the cluster domain, the cluster domain, short host name, user name, IPv4),
found by one scan that counts a string once in its most specific category. IPv6
addresses and MAC addresses are counted apart: sos clean 4.0 does not look for IPv6,
tpdump not for MACs.

    .venv/bin/python bench/obfuscate_compare.py [--mb 20] [--hosts 1000] [--ips 2000]

Writes bench/out/obfuscate_compare.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tpdump.obfuscate import Obfuscator  # noqa: E402
from tpdump.redact import Redactor  # noqa: E402


def _load_throughput() -> Any:
    """bench/redact_throughput.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "redact_throughput", Path(__file__).with_name("redact_throughput.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throughput = _load_throughput()

SOS = "/usr/bin/sos"
SOS_TIMEOUT = 150
DOMAIN = "acme.example.com"
# sos 4.0 looks a name's labels up in its list of domains, label by label: a domain of
# more than two labels never matches; the parent domain makes it catch *.acme.example.com.
SOS_DOMAINS = f"{DOMAIN},example.com"
USERS = ["alice", "bob.smith", "dave"]  # those of redact_throughput.corpus, and:
EMAIL_USERS = ["carol@acme.com"]
KEY = b"tpdump-bench-obfuscate-compare-k"
OUT = ROOT / "bench" / "out" / "obfuscate_compare.json"
MAIN = ("email", "fqdn", "cluster", "host", "user", "ip4")  # the common scope
APART = ("ip6", "mac")


# --- corpus ------------------------------------------------------------------------
def fold_ips(text: str, pool: list[str]) -> str:
    """Every 10.x.y.z replaced by an address of the pool (the same one every time)."""
    return re.sub(r"(?<![\w.])10\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)",
                  lambda m: pool[zlib.crc32(m.group().encode()) % len(pool)], text)


def uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def teleport_yaml(pool: list[str]) -> str:
    return f"""version: v3
teleport:
  nodename: auth-0.{DOMAIN}
  data_dir: /var/lib/teleport
  auth_token: 3c5b5f7d0e1a2b3c4d5e6f708192a3b4
  advertise_ip: {pool[0]}
  auth_server: auth.{DOMAIN}:3025
  log:
    output: stderr
    severity: INFO
    format:
      output: json
auth_service:
  enabled: true
  cluster_name: {DOMAIN}
  listen_addr: 0.0.0.0:3025
  public_addr: auth.{DOMAIN}:3025
  tokens:
    - "node,proxy:8f7e6d5c4b3a29180706a5b4c3d2e1f0"
  authentication:
    type: github
    second_factor: on
proxy_service:
  enabled: true
  public_addr: proxy.{DOMAIN}:443
  web_listen_addr: 0.0.0.0:3080
  tunnel_public_addr: proxy.{DOMAIN}:3024
  acme:
    enabled: true
    email: admin@{DOMAIN}
ssh_service:
  enabled: true
  listen_addr: 0.0.0.0:3022
  labels:
    env: prod
"""


def nodes_yaml(hosts: list[str], pool: list[str], rng: random.Random) -> str:
    docs = []
    for i, host in enumerate(hosts):
        docs.append(f"""kind: node
metadata:
  expires: "2026-11-26T21:{i % 60:02d}:00Z"
  labels:
    env: prod
    region: eu-west-{1 + i % 3}
    teleport.internal/resource-id: {uuid(rng)}
  name: {uuid(rng)}
  revision: {uuid(rng)}
spec:
  addr: {pool[i % len(pool)]}:3022
  hostname: {host}
  public_addrs:
  - {host}.{DOMAIN}:3022
  version: 17.4.2
sub_kind: teleport
version: v2
""")
    return "---\n".join(docs)


def proxies_yaml(pool: list[str], rng: random.Random) -> str:
    return "---\n".join(f"""kind: proxy
metadata:
  name: {uuid(rng)}
spec:
  addr: {pool[-1 - i]}:3080
  hostname: proxy{i}.{DOMAIN}
  public_addr: proxy.{DOMAIN}:443
  version: 17.4.2
version: v2
""" for i in range(9))


def users_yaml() -> str:
    docs = []
    for name in USERS + EMAIL_USERS:
        mail = name if "@" in name else f"{name}@{DOMAIN}"
        docs.append(f"""kind: user
metadata:
  name: {name}
spec:
  created_by:
    time: "2026-01-02T10:00:00Z"
    user:
      name: {USERS[0]}
  github_identities:
  - connector_id: github
    username: {name.split("@")[0]}
  roles:
  - access
  - editor
  traits:
    kubernetes_users:
    - {mail}
    logins:
    - {name.split("@")[0].replace(".", "")}
    - root
version: v2
""")
    return "---\n".join(docs)


def events_jsonl(size: int, hosts: list[str], pool: list[str], rng: random.Random) -> bytes:
    """Audit events (session.start, user.login, exec), about `size` bytes."""
    out: list[bytes] = []
    total = 0
    n = 0
    while total < size:
        n += 1
        user = rng.choice(USERS + EMAIL_USERS)
        host = rng.choice(hosts)
        event = rng.choice(["session.start", "user.login", "exec"])
        rec: dict[str, Any] = {
            "cluster_name": DOMAIN, "code": "T2000I", "event": event,
            "ei": n, "time": f"2026-01-02T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "uid": uuid(rng), "user": user, "login": rng.choice(["root", "ubuntu"]),
            "addr.remote": f"{rng.choice(pool)}:{rng.randrange(1024, 65535)}",
        }
        if event != "user.login":
            rec |= {"server_id": uuid(rng), "server_hostname": host,
                    "server_addr": f"{rng.choice(pool)}:3022",
                    "proxy_hostname": f"proxy{rng.randrange(9)}.{DOMAIN}"}
        else:
            rec |= {"method": "github", "success": True,
                    "identity": {"user": user, "mail": f"{user.split('@')[0]}@{DOMAIN}"}}
        line = json.dumps(rec).encode()
        out.append(line)
        total += len(line) + 1
    return b"\n".join(out) + b"\n"


def make_corpus(root: Path, mb: float, hosts: list[str], pool: list[str],
                rng: random.Random) -> None:
    cfg = root / "config"
    res = root / "resources"
    for d in (cfg, res):
        d.mkdir(parents=True)
    (cfg / "teleport.yaml").write_text(teleport_yaml(pool))
    (res / "nodes.yaml").write_text(nodes_yaml(hosts, pool, rng))
    (res / "proxies.yaml").write_text(proxies_yaml(pool, rng))
    (res / "users.yaml").write_text(users_yaml())
    (res / "cluster_name.yaml").write_text(
        f"kind: cluster_name\nmetadata:\n  name: cluster-name\nspec:\n"
        f"  cluster_id: {uuid(rng)}\n  cluster_name: {DOMAIN}\nversion: v2\n")
    budget = int(mb * 1e6) - sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    events_size = budget // 12
    (root / "audit").mkdir()
    (root / "audit" / "events.jsonl").write_bytes(events_jsonl(events_size, hosts, pool, rng))
    roles = ["auth", "proxy", "node-a", "node-b"]
    half = (budget - events_size) // (2 * len(roles))
    for role in roles:
        d = root / "logs" / role
        d.mkdir(parents=True)
        text, js = throughput.corpus(half, hosts, rng)
        (d / "teleport.log").write_text(fold_ips(text, pool))
        (d / "teleport.json.log").write_text(fold_ips(js.decode(), pool))


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- leftovers ----------------------------------------------------------------------
def scanner(users: list[str]) -> re.Pattern[str]:
    """One pass; at a position the first alternative wins (most specific first). Short
    host names by their shape (role-NNNNN-hhhh), kept when they are originals."""
    dom = re.escape(DOMAIN)
    return re.compile(
        r"(?<![\w.%+-])(?:"
        r"(?P<email>[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?![\w-])"
        rf"|(?P<fqdn>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.{dom})(?![\w-])"
        rf"|(?P<cluster>{dom})(?![\w-])"
        r"|(?P<ip6>fd00::[0-9a-f]{1,4})(?![\w:])"
        r"|(?P<ip4>10\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\w]|\.\d)"
        r"|(?P<mac>(?:[0-9a-f]{2}:){5}[0-9a-f]{2})(?![\w:])"
        r"|(?P<host>(?:ip|node|db|web|k8s)-\d{5}-[0-9a-f]{4})(?![\w-]|\.[\w-])"
        rf"|(?P<user>{'|'.join(map(re.escape, users))})(?![\w-]|\.[\w-])"
        r")")


def scan(root: Path, pattern: re.Pattern[str],
         originals: dict[str, Counter[str]] | None = None) -> dict[str, Counter[str]]:
    """{category: Counter(value)} over every file and path under root; with originals,
    only values that are originals of their category."""
    found: dict[str, Counter[str]] = {c: Counter() for c in MAIN + APART}
    for path in files_of(root):
        text = str(path.relative_to(root)) + "\n" + path.read_bytes().decode("utf-8", "replace")
        for m in pattern.finditer(text):
            cat = m.lastgroup
            assert cat is not None
            value = m.group(cat)
            if originals is None or value in originals[cat]:
                found[cat][value] += 1
    return found


def leftover_summary(found: dict[str, Counter[str]]) -> dict[str, Any]:
    by_cat = {c: sum(found[c].values()) for c in MAIN + APART}
    return {
        "total": sum(by_cat[c] for c in MAIN),
        "by_category": by_cat,
        "examples": {c: found[c].most_common(4) for c in MAIN + APART if found[c]},
    }


def print_leftovers(tool: str, left: dict[str, Any]) -> None:
    cats = ", ".join(f"{c} {n}" for c, n in left["by_category"].items() if n)
    print(f"  {tool}: {left['total']} leftovers in the common scope ({cats or 'none'})")
    for cat, examples in left["examples"].items():
        shown = ", ".join(f"{v} ×{n}" for v, n in examples)
        print(f"    {cat}: {shown}")


# --- tpdump -------------------------------------------------------------------------
def run_tpdump(src: Path, dst: Path, hosts: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    cpu0 = time.process_time()
    red = Redactor()
    obf = Obfuscator(KEY)
    obf.learn("cluster", DOMAIN)
    for host in hosts:
        obf.learn("host", host)
    for user in USERS:
        obf.learn("user", user)
    for user in EMAIL_USERS:
        obf.learn("email", user)
    obf.text("compile")
    learnt = time.perf_counter() - started
    t_red = t_obf = 0.0
    size = 0
    for path in files_of(src):
        raw = path.read_bytes()
        size += len(raw)
        t0 = time.perf_counter()
        clean = red.data(raw)
        t1 = time.perf_counter()
        out = obf.data(clean)
        t_red += t1 - t0
        t_obf += time.perf_counter() - t1
        target = dst / obf.path(str(path.relative_to(src)))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(out)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {"bytes": size, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "learn_compile_s": round(learnt, 3),
            "redact_s": round(t_red, 3), "obfuscate_s": round(t_obf, 3),
            "redactions": dict(red.counts), "replacements": dict(obf.counts)}


# --- sos clean ----------------------------------------------------------------------
def sos_help() -> str:
    res = subprocess.run([SOS, "clean", "--help"], capture_output=True, text=True,
                         timeout=60, check=False, stdin=subprocess.DEVNULL)
    return res.stdout + res.stderr


def sos_version() -> str:
    try:
        from importlib.metadata import version
        return version("sos")
    except Exception:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "sosreport"],
                             capture_output=True, text=True, check=False)
        return res.stdout.strip() or "unknown"


def etc_sos_listing() -> list[tuple[str, int, int]]:
    base = Path("/etc/sos")
    if not base.exists():
        return []
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in base.rglob("*"))


def sos_command(target: Path, scratch: Path, opts: str, keywords: list[str]) -> list[str]:
    cmd = [SOS, "clean", str(target), "--batch", "-q",
           "--config-file", str(scratch / "sos.conf"), "--tmp-dir", str(scratch / "tmp"),
           "--map", str(scratch / "map.json"), "--no-update", "--domains", SOS_DOMAINS,
           "-t", "2"]
    if "--usernames" in opts:
        cmd += ["--usernames", ",".join(USERS + EMAIL_USERS)]
    else:
        keywords = USERS + EMAIL_USERS + keywords
    if keywords:
        cmd += ["--keywords", ",".join(keywords)]
    if "--keep-binary-files" in opts:
        cmd.append("--keep-binary-files")
    if "--archive-type" in opts:
        cmd += ["--archive-type", "data-dir"]
    return cmd


def sos_scratch(work: Path, name: str) -> Path:
    scratch = work / name
    (scratch / "tmp").mkdir(parents=True)
    (scratch / "sos.conf").write_text("")  # nothing from /etc/sos/sos.conf
    (scratch / "map.json").write_text("{}\n")  # not /etc/sos/cleaner/default_mapping
    return scratch


def probe_plain_dir(work: Path, opts: str) -> str:
    """What sos clean says about a plain directory (no sos_logs)."""
    scratch = sos_scratch(work, "sos-probe")
    plain = scratch / "plain"
    plain.mkdir()
    (plain / "teleport.log").write_text(f"host1.{DOMAIN} 10.0.0.1\n")
    cmd = [a for a in sos_command(plain, scratch, opts, []) if a != "-q"]  # -q hides why
    if "--archive-type" in opts:
        cmd = cmd[:cmd.index("--archive-type")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                         stdin=subprocess.DEVNULL)
    if res.returncode == 0:
        return "accepted"
    lines = (res.stdout + res.stderr).strip().splitlines()
    why = [line.strip() for line in lines if "nvalid" in line or "rror" in line]
    return f"refused (exit {res.returncode}): {' '.join(why or lines[-1:])}"


def sos_startup(work: Path, opts: str) -> float:
    """Wall time of sos clean over an empty sos directory: its fixed cost."""
    scratch = sos_scratch(work, "sos-empty")
    target = scratch / "empty"
    (target / "sos_logs").mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run(sos_command(target, scratch, opts, []), capture_output=True, timeout=60,
                   check=False, stdin=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 3)


def run_sos(src: Path, work: Path, name: str, opts: str,
            keywords: list[str]) -> dict[str, Any]:
    scratch = sos_scratch(work, name)
    target = scratch / "corpus"
    shutil.copytree(src, target)
    if "--archive-type" not in opts:
        (target / "sos_logs").mkdir()  # what makes sos 4.0 take a directory
    cmd = sos_command(target, scratch, opts, keywords)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=SOS_TIMEOUT,
                             check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {SOS_TIMEOUT} s", "wall_s": SOS_TIMEOUT}
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    out = res.stdout + res.stderr
    m = re.search(r"obfuscated archive is available at\s*\n\s*(\S+)", out)
    shown = " ".join(a if len(a) < 60 else a[:40] + "…" for a in cmd)
    result: dict[str, Any] = {"command": shown, "exit": res.returncode,
                              "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    if res.returncode != 0 or m is None:
        result["error"] = out[-1500:]
        return result
    result["output"] = m.group(1)
    return result


def sos_output_dir(path: Path, work: Path) -> Path:
    """The cleaned directory (an archive is extracted under work first)."""
    if path.is_dir():
        return path
    dest = work / (path.name + ".extracted")
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(path), "-C", str(dest)], check=True)
    return dest


# --- main ---------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size")
    parser.add_argument("--hosts", type=int, default=1000, help="short host names")
    parser.add_argument("--ips", type=int, default=2000, help="distinct IPv4 addresses")
    parser.add_argument("--no-host-keywords", action="store_true",
                        help="skip the sos run given the host names as keywords")
    args = parser.parse_args()
    rng = random.Random(5)
    hosts = [f"{rng.choice(['ip', 'node', 'db', 'web', 'k8s'])}-{i:05d}-"
             f"{rng.getrandbits(16):04x}" for i in range(args.hosts)]
    pool = sorted({f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                   for _ in range(args.ips)})
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"),
                              "cpus": os.cpu_count(), "hosts": len(hosts), "ips": len(pool),
                              "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="tpdump-obfcmp-") as tmp:
        work = Path(tmp)
        src = work / "corpus"
        t0 = time.perf_counter()
        make_corpus(src, args.mb, hosts, pool, rng)
        files = files_of(src)
        size = sum(f.stat().st_size for f in files)
        print(f"corpus: {size / 1e6:.1f} MB in {len(files)} files, {len(hosts)} host names, "
              f"{len(pool)} IPv4 addresses ({time.perf_counter() - t0:.1f} s to generate)")
        pattern = scanner(USERS)
        originals = scan(src, pattern)
        result["corpus"] = {"bytes": size, "files": len(files),
                            "identifiers": {c: sum(v.values()) for c, v in originals.items()},
                            "distinct": {c: len(v) for c, v in originals.items()}}
        print("identifiers in the corpus (occurrences / distinct): " + ", ".join(
            f"{c} {sum(v.values())}/{len(v)}" for c, v in originals.items()))

        tp = run_tpdump(src, work / "tpdump-out", hosts)
        tp["leftovers"] = leftover_summary(scan(work / "tpdump-out", pattern, originals))
        result["tpdump"] = tp
        runs: list[tuple[str, dict[str, Any]]] = [("tpdump (Redactor + Obfuscator)", tp)]

        sos: dict[str, Any] = {}
        if not os.access(SOS, os.X_OK):
            print(f"sos clean: {SOS} not found, skipped")
            sos["error"] = "not installed"
        else:
            opts = sos_help()
            sos["version"] = sos_version()
            sos["options_missing"] = [o for o in ("--usernames", "--keep-binary-files",
                                                  "--archive-type") if o not in opts]
            sos["plain_directory"] = probe_plain_dir(work, opts)
            sos["startup_s"] = sos_startup(work, opts)
            print(f"sos {sos['version']}: plain directory -> {sos['plain_directory']}; "
                  f"options it lacks: {', '.join(sos['options_missing']) or 'none'}; "
                  f"start-up (empty sos directory) {sos['startup_s']:.2f} s")
            before = etc_sos_listing()
            variants = [("sos clean (domains + users)", "sos-users", [])]
            if not args.no_host_keywords:
                variants.append(("sos clean (+ host names as keywords)", "sos-hosts", hosts))
            for label, name, keywords in variants:
                run = run_sos(src, work, name, opts, keywords)
                sos[name] = run
                if "error" in run:
                    print(f"{label}: failed: {run['error']}")
                    continue
                out_dir = sos_output_dir(Path(run["output"]), work)
                run["leftovers"] = leftover_summary(scan(out_dir, pattern, originals))
                run["bytes"] = size
                runs.append((label, run))
            sos["etc_sos_unchanged"] = etc_sos_listing() == before
        result["sos"] = sos

    print()
    print(f"{'tool':<38} {'MB':>6} {'wall s':>8} {'CPU s':>7} {'MB/s':>7} {'leftovers':>10} "
          f"{'ip6 left':>9} {'mac left':>9}")
    for label, run in runs:
        left = run["leftovers"]
        run["mb_per_s"] = round(size / run["wall_s"] / 1e6, 2)
        print(f"{label:<38} {size / 1e6:6.1f} {run['wall_s']:8.2f} {run['cpu_s']:7.2f} "
              f"{run['mb_per_s']:7.2f} "
              f"{left['total']:10d} {left['by_category']['ip6']:9d} "
              f"{left['by_category']['mac']:9d}")
    print(f"  tpdump: learn + compile {tp['learn_compile_s']:.2f} s, Redactor.data "
          f"{tp['redact_s']:.2f} s, Obfuscator.data {tp['obfuscate_s']:.2f} s")
    ratios = {}
    for name in ("sos-users", "sos-hosts"):
        run = sos.get(name)
        if run and "leftovers" in run:
            ratios[name] = round(tp["wall_s"] / run["wall_s"], 4)
            ratios[name + " (CPU)"] = round(tp["cpu_s"] / run["cpu_s"], 4)
            print(f"  ratio tpdump / {name}: wall {ratios[name]:.3f} "
                  f"(sos {run['wall_s'] / tp['wall_s']:.1f}x slower), "
                  f"CPU {ratios[name + ' (CPU)']:.3f}")
    result["ratio_tpdump_over_sos"] = ratios
    print("\nleftovers (original identifiers still present):")
    for label, run in runs:
        print_leftovers(label, run["leftovers"])
    print("\nscope: tpdump obfuscates host names (learnt and under the cluster domain), "
          "IPv4/IPv6, user names, e-mail addresses, cluster names, and strips secrets "
          "first; sos clean obfuscates host names under --domains, IPv4, MACs, "
          "--keywords (here the user names), no IPv6 and no secrets.")
    if "etc_sos_unchanged" in sos:
        print(f"/etc/sos unchanged by the sos runs: {sos['etc_sos_unchanged']}")
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at start {result['loadavg_start']}, at the end "
          f"{result['loadavg_end']} ({os.cpu_count()} CPUs; other load skews the times)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
