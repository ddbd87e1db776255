"""Profile benchmark (issue 6): one simulated cluster (default 1,000 nodes, rtt_ms 50, 10 %
`init: systemd`, 90 % `init: plain`, diag on, no faults), started once, then
`tpdump cluster --profile P` for standard, speed, complete and small in turn. Per profile:
wall s, tpdump CPU s, simulator CPU s, peak RSS, archive bytes, nodes ok/total, exit code.
Checks: complete/speed wall >= 2 and `small` gives the smallest archive. Prints a table and
writes bench/out/profiles.json. The simulator runs in its own process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_of, wait_measured  # noqa: E402
from tpdump.config import PROFILES  # noqa: E402
from tpdump.sim.cli import start_in_subprocess  # noqa: E402

ORDER = ("standard", "speed", "complete", "small")
RUN_TIMEOUT = 900  # --timeout given to every run
KILL_AFTER = RUN_TIMEOUT + 120  # the benchmark's own guard against a hung run


def run(cmd: list[str]) -> tuple[int, float, float, int, str]:
    """Run a command; (exit, wall s, CPU s of the process, peak RSS bytes, stderr tail)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        guard = threading.Timer(KILL_AFTER, proc.kill)
        guard.start()
        try:
            cpu, peak = wait_measured(proc)
        finally:
            guard.cancel()
        wall = time.monotonic() - started
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    return proc.returncode, wall, cpu, peak, tail




def read_archive(out: Path) -> tuple[dict[str, Any], Counter[tuple[str, str, str]], int]:
    """report.json, a count of (item, status, code) of every item not ok across node.json
    files, and the total bytes of every file tpdump wrote in `out` (all parts)."""
    files = sorted(p for p in out.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in files)
    archives = [p for p in files if p.name.endswith(".tar.gz")]
    if not archives:
        raise RuntimeError(f"no archive in {out}: {[p.name for p in files]}")
    report: dict[str, Any] | None = None
    items: Counter[tuple[str, str, str]] = Counter()
    with tarfile.open(archives[-1]) as tar:
        for m in tar:
            if not (m.name.endswith("/report.json") or m.name.endswith("/node.json")):
                continue
            f = tar.extractfile(m)
            if f is None:
                continue
            doc = json.loads(f.read())
            if m.name.endswith("/report.json") and "node_results" in doc:
                report = doc
            elif m.name.endswith("/node.json"):
                for it in doc.get("items", []):
                    if it.get("status") != "ok":
                        items[(it["name"], it["status"], it.get("code") or "-")] += 1
    if report is None:
        raise RuntimeError("no report.json in the archive")
    return report, items, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rtt-ms", type=int, default=50)
    ap.add_argument("--log-lines", type=int, default=3000)
    # 10 %: the simulator builds every systemd node's journal with the real
    # systemd-journal-remote (4 at a time, 64 kept, so rebuilt on every run); at 50 % it
    # used more CPU than tpdump and timed out journals in every profile and the script took 11 min
    ap.add_argument("--systemd-share", type=float, default=0.1,
                    help="share of nodes with init: systemd (the rest: plain)")
    ap.add_argument("--connect-timeout", type=float, default=None,
                    help="override every profile's connect timeout (default: the profile's)")
    ap.add_argument("--profiles", default=",".join(ORDER))
    args = ap.parse_args()
    n = args.nodes
    n_sysd = round(n * args.systemd_share)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    overrides = ["--timeout", str(RUN_TIMEOUT)]
    if args.connect_timeout is not None:
        overrides += ["--connect-timeout", str(args.connect_timeout)]
    t_script = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tpdump-bench-profiles-") as tmp_s:
        tmp = Path(tmp_s)
        groups = []
        for name, init, count in (("sd", "systemd", n_sysd), ("pl", "plain", n - n_sysd)):
            if count:
                groups.append({"name": name, "count": count, "services": ["node"],
                               "init": init, "rtt_ms": args.rtt_ms, "diag": True,
                               "log_lines": args.log_lines})
        scenario = {"cluster_name": "bench.example.com", "teleport_version": "17.4.2",
                    "seed": 1, "groups": groups, "secrets": {"plant": True}}
        (tmp / "scenario.yaml").write_text(yaml.safe_dump(scenario))
        t0 = time.monotonic()
        sim = start_in_subprocess(str(tmp / "scenario.yaml"), str(tmp / "state"), timeout=300)
        sim_start = time.monotonic() - t0
        try:
            for prof in profiles:
                out = tmp / f"out-{prof}"
                out.mkdir()
                cmd = [sys.executable, "-m", "tpdump", "cluster", "--config",
                       str(tmp / "state" / "tpdump.yaml"), "-q", "--profile", prof,
                       *overrides, "-o", f"{out}/"]
                sim_cpu0 = cpu_of(sim.pid)
                rc, wall, cpu, rss, err = run(cmd)
                sim_cpu = cpu_of(sim.pid) - sim_cpu0
                row: dict[str, Any] = {
                    "profile": prof, "exit": rc, "wall_s": round(wall, 2),
                    "tpdump_cpu_s": round(cpu, 2), "sim_cpu_s": round(sim_cpu, 2),
                    "peak_rss_mb": round(rss / 1e6, 1)}
                try:
                    report, items, size = read_archive(out)
                except (RuntimeError, OSError, tarfile.TarError) as exc:
                    row.update(archive_bytes=None, nodes_ok=0, nodes_total=n,
                               error=str(exc), stderr_tail=err)
                else:
                    nodes = report["nodes"]
                    bad = Counter((r["status"], r["code"] or "-", r["reason"] or "-")
                                  for r in report["node_results"] if r["status"] != "ok")
                    row.update(
                        archive_bytes=size, nodes_ok=nodes["ok"], nodes_total=nodes["total"],
                        verdict=report["verdict"], report_seconds=report["seconds"],
                        node_statuses={k: v for k, v in nodes.items()
                                       if k != "total" and v},
                        node_failures=[{"status": s, "code": c, "reason": r, "count": k}
                                       for (s, c, r), k in bad.most_common()],
                        problems=[{k: g[k] for k in ("code", "title", "count", "sample")}
                                  for g in report["problems"]],
                        items_not_ok=[{"item": i, "status": s, "code": c, "count": k}
                                      for (i, s, c), k in items.most_common()],
                        settings={k: report["settings"].get(k) for k in (
                            "concurrency", "connect_timeout", "node_timeout",
                            "item_timeout", "timeout")})
                    if rc not in (0, 1):
                        row["stderr_tail"] = err
                rows.append(row)
                print(f"  ran {prof}: {row['wall_s']} s, exit {rc}", file=sys.stderr,
                      flush=True)
        finally:
            sim.terminate()
            sim.wait(timeout=60)
    total = time.monotonic() - t_script

    print(f"tpdump profile benchmark ({n} nodes: {n_sysd} systemd + {n - n_sysd} plain, "
          f"rtt {args.rtt_ms} ms, log_lines {args.log_lines}, diag on, no faults; "
          f"simulator start {sim_start:.1f} s)")
    print(f"  overrides on every profile: {' '.join(overrides)}"
          + ("" if args.connect_timeout is not None else " (connect timeout: profile's)"))
    head = ("profile", "conc", "wall s", "tpdump CPU s", "sim CPU s", "peak RSS MB",
            "archive bytes", "nodes ok", "exit")
    table = [head]
    for r in rows:
        table.append((r["profile"], str(PROFILES.get(r["profile"], {}).get("concurrency", "?")),
                      f"{r['wall_s']:.2f}", f"{r['tpdump_cpu_s']:.2f}",
                      f"{r['sim_cpu_s']:.2f}", f"{r['peak_rss_mb']:.1f}",
                      f"{r['archive_bytes']:,}" if r["archive_bytes"] is not None else "-",
                      f"{r['nodes_ok']}/{r['nodes_total']}", str(r["exit"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    by = {r["profile"]: r for r in rows}
    summary: dict[str, Any] = {}
    if "speed" in by and "complete" in by:
        ratio = by["complete"]["wall_s"] / by["speed"]["wall_s"]
        summary["complete_over_speed_wall"] = round(ratio, 2)
        print(f"  complete / speed wall time: {ratio:.2f} (target >= 2: "
              f"{'met' if ratio >= 2 else 'NOT met'})")
    sized = {p: r["archive_bytes"] for p, r in by.items() if r["archive_bytes"] is not None}
    if "small" in sized and len(sized) > 1:
        smallest = min(sized, key=lambda p: sized[p])
        summary["small_is_smallest"] = smallest == "small"
        print(f"  smallest archive: {smallest} ({sized[smallest]:,} bytes): small is "
              f"smallest: {'yes' if smallest == 'small' else 'NO'}")
    for r in rows:
        if r.get("node_failures"):
            print(f"  {r['profile']}: nodes not ok:")
            for f in r["node_failures"][:5]:
                print(f"    {f['count']:>5}  {f['status']}  {f['code']}  {f['reason']}")
        if r.get("error"):
            print(f"  {r['profile']}: {r['error']}")
    print(f"  whole benchmark: {total:.1f} s")

    result = {"nodes": n, "systemd_nodes": n_sysd, "plain_nodes": n - n_sysd,
              "rtt_ms": args.rtt_ms, "log_lines": args.log_lines, "overrides": overrides,
              "sim_start_s": round(sim_start, 2), "total_s": round(total, 1), **summary,
              "runs": rows}
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profiles.json").write_text(json.dumps(result, indent=1))
    return 0 if all(r["exit"] in (0, 1) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
