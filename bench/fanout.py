"""Fan-out benchmark: N simulated nodes at concurrency C with rtt_ms, against the ideal
ceil(N/C) x t1 (t1 = one node's dump time, measured in the same run). Prints a table and
writes bench/out/fanout.json. The simulator runs in its own process."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_of, report_of, run, start_cluster  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--rtt-ms", type=int, default=50)
    ap.add_argument("--init", default="plain", choices=["plain", "systemd"])
    args = ap.parse_args()
    n, c = args.nodes, args.concurrency
    with tempfile.TemporaryDirectory(prefix="tpdump-bench-") as tmp_s:
        tmp = Path(tmp_s)
        scenario = {"cluster_name": "bench.example.com", "teleport_version": "17.4.2",
                    "seed": 1, "groups": [{"name": "web", "count": n, "services": ["node"],
                                           "init": args.init, "rtt_ms": args.rtt_ms}],
                    "secrets": {"plant": True}}
        sim, sim_start = start_cluster(tmp, scenario, timeout=300)
        try:
            base = [sys.executable, "-m", "tpdump", "cluster", "--config",
                    str(tmp / "state" / "tpdump.yaml"), "-q", "--node-timeout", "60",
                    "--item-timeout", "30", "--connect-timeout", "30"]
            # t1: one node's dump time, the best of three one-node runs
            t1s = []
            for i in range(3):
                rc1, wall1, _, _ = run([*base, "--nodes", f"web-{i + 1}", "-o",
                                        f"{tmp}/one{i}/"])
                t1s.append(report_of(tmp / f"one{i}")["node_results"][0]["seconds"])
            t1 = min(t1s)
            sim_cpu0 = cpu_of(sim.pid)
            rc, wall, cpu, rss = run([*base, "--concurrency", str(c), "-o", f"{tmp}/all/"])
            sim_cpu = cpu_of(sim.pid) - sim_cpu0
            full = report_of(tmp / "all")
            archive = sorted((tmp / "all").glob("*.tar.gz"))[-1]
            size = archive.stat().st_size
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    ideal = math.ceil(n / c) * t1
    ok = full["nodes"]["ok"]
    node_phase = full["seconds"]
    rows = {
        "nodes": n, "concurrency": c, "rtt_ms": args.rtt_ms,
        "sim_start_s": round(sim_start, 2),
        "t1_node_s": round(t1, 3), "t1_runs_s": t1s, "t1_run_wall_s": round(wall1, 2),
        "ideal_s": round(ideal, 2), "wall_s": round(wall, 2),
        "ratio_wall_to_ideal": round(wall / ideal, 3),
        "report_seconds": node_phase,
        "nodes_ok": ok, "exit": rc,
        "coordinator_cpu_ms_per_node": round(cpu * 1000 / n, 2),
        "simulator_cpu_ms_per_node": round(sim_cpu * 1000 / n, 2),
        "peak_rss_mb": round(rss / 1e6, 1),
        "archive_mb": round(size / 1e6, 2),
        "archive_mb_per_s": round(size / 1e6 / wall, 2),
        "tctl_calls": full["tctl_calls"],
    }
    width = max(len(k) for k in rows)
    print(f"tpdump fan-out benchmark ({n} nodes, concurrency {c}, rtt {args.rtt_ms} ms)")
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fanout.json").write_text(json.dumps(rows, indent=1))
    return 0 if rc in (0, 1) and rc1 in (0, 1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
