"""Scale benchmark (issue 9): `tpdump cluster` against 100, 1,000, 5,000 and 10,000
simulated nodes (the simulator in its own process), concurrency 256, rtt_ms 50.

For each size: wall time against the ideal ceil(N/C) x t1 (t1 = one node's dump time,
best of three one-node runs against the same cluster), the coordinator's CPU per node
(whole process, and the marginal cost between sizes), peak RSS, archive MB/s, SSH
requests and round trips per node, and the auth-server (tctl) calls. Prints a table,
writes bench/out/scale.json and the plot bench/out/scale.svg."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_of, report_of, run, start_cluster  # noqa: E402

OUT = ROOT / "bench" / "out"


def tctl_calls(state: Path) -> int:
    path = state / "tctl_calls.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) \
        if path.exists() else 0


def one_size(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    c = args.concurrency
    scenario = {"cluster_name": "scale.example.com", "teleport_version": "17.4.2", "seed": 9,
                "groups": [{"name": "web", "count": n, "services": ["node"],
                            "init": args.init, "rtt_ms": args.rtt_ms,
                            "log_lines": args.log_lines}],
                "secrets": {"plant": True}}
    sim, sim_start = start_cluster(tmp, scenario, timeout=600)
    try:
        base = [sys.executable, "-m", "tpdump", "cluster", "--config",
                str(tmp / "state" / "tpdump.yaml"), "-q", "--node-timeout", "120",
                "--item-timeout", "60", "--connect-timeout", "60", "--timeout", "3600",
                "--profile", args.profile]
        ones = []
        for i in range(3):
            run([*base, "--nodes", f"web-{i + 1}", "-o", f"{tmp}/one{i}/"])
            ones.append(report_of(tmp / f"one{i}")["node_results"][0])
        best = min(ones, key=lambda x: x["seconds"])
        t1 = best["seconds"]
        calls0 = tctl_calls(tmp / "state")
        sim_cpu0 = cpu_of(sim.pid)
        rc, wall, cpu, rss = run([*base, "--concurrency", str(c), "-o", f"{tmp}/all/"])
        sim_cpu = cpu_of(sim.pid) - sim_cpu0
        calls = tctl_calls(tmp / "state") - calls0
        report = report_of(tmp / "all")
        archive = sorted(p for p in (tmp / "all").iterdir() if p.name.endswith(".tar.gz"))[-1]
        size = archive.stat().st_size
    finally:
        sim.terminate()
        sim.wait(timeout=60)
    load_path = tmp / "state" / "load.json"
    load = json.loads(load_path.read_text())["summary"] if load_path.exists() else {}
    nodes = report["node_results"]
    requests = [x["requests"] for x in nodes if x.get("requests") is not None]
    ideal = math.ceil(n / c) * t1
    rtt = args.rtt_ms / 1000
    return {
        "nodes": n, "concurrency": c, "rtt_ms": args.rtt_ms, "profile": args.profile,
        "log_lines": args.log_lines, "sim_start_s": round(sim_start, 1),
        "t1_s": round(t1, 3), "ideal_s": round(ideal, 2), "wall_s": round(wall, 2),
        "wall_over_ideal": round(wall / ideal, 3), "exit": rc,
        "nodes_ok": report["nodes"]["ok"],
        "coordinator_cpu_s": round(cpu, 2),
        "coordinator_cpu_ms_per_node": round(cpu * 1000 / n, 2),
        "simulator_cpu_ms_per_node": round(sim_cpu * 1000 / n, 2),
        "peak_rss_mb": round(rss / 1e6, 1),
        "archive_mb": round(size / 1e6, 2),
        "archive_mb_per_s": round(size / 1e6 / wall, 2),
        "requests_per_node": round(statistics.mean(requests), 2) if requests else None,
        "requests_one_node": best.get("requests"),
        # Sequential round trips of one node (the best one-node run): its dump time over
        # the round-trip time, and the part that is the SSH connection through the proxy.
        "round_trips_one_node": round(t1 / rtt, 1) if rtt else None,
        "round_trips_connect": round(best["connect_seconds"] / rtt, 1)
        if rtt and best.get("connect_seconds") else None,
        "tctl_calls": calls,
        # Load on the nodes as the simulator saw it (the one-node runs included).
        "max_connections_per_node": load.get("max_connections_per_node"),
        "max_open_channels_per_node": load.get("max_open_channels_per_node"),
        "max_channels_per_node": load.get("max_channels_per_node"),
        "execs_niced_share": round(load["execs_niced"] / load["execs"], 3)
        if load.get("execs") else None,
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Two panels, N on a log axis: wall and ideal seconds; coordinator CPU ms/node and
    peak RSS (MB / 100)."""
    w, h, pad = 900, 380, 60
    xs = [r["nodes"] for r in rows]
    lo, hi = math.log10(min(xs)), math.log10(max(xs))

    def px(n: float, panel: int) -> float:
        x0 = pad + panel * (w // 2)
        span = w // 2 - pad - 20
        return x0 + (0 if hi == lo else (math.log10(n) - lo) / (hi - lo) * span)

    def py(v: float, vmax: float) -> float:
        return h - pad - (v / vmax) * (h - 2 * pad) if vmax else h - pad

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>']
    panels = [
        ("wall time (s) against ideal", [("wall_s", "#c0392b", "wall"),
                                         ("ideal_s", "#7f8c8d", "ideal ceil(N/C)×t1")]),
        ("per node and memory", [("coordinator_cpu_ms_per_node", "#2980b9",
                                  "coordinator CPU ms/node"),
                                 ("peak_rss_mb", "#27ae60", "peak RSS MB")]),
    ]
    for i, (title, series) in enumerate(panels):
        vmax = max(max(r[k] for r in rows) for k, _, _ in series) * 1.1
        x0 = pad + i * (w // 2)
        parts.append(f'<text x="{x0}" y="20" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{x0}" y1="{h - pad}" x2="{x0 + w // 2 - pad - 20}" '
                     f'y2="{h - pad}" stroke="black"/>')
        parts.append(f'<line x1="{x0}" y1="{pad}" x2="{x0}" y2="{h - pad}" stroke="black"/>')
        for n in xs:
            parts.append(f'<text x="{px(n, i) - 12}" y="{h - pad + 16}">{n}</text>')
        for frac in (0, 0.5, 1):
            v = vmax * frac
            parts.append(f'<text x="{x0 - 45}" y="{py(v, vmax) + 4}">{v:.0f}</text>')
        for j, (key, colour, label) in enumerate(series):
            pts = " ".join(f"{px(r['nodes'], i):.1f},{py(r[key], vmax):.1f}" for r in rows)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                         f'stroke-width="2"/>')
            for r in rows:
                parts.append(f'<circle cx="{px(r["nodes"], i):.1f}" '
                             f'cy="{py(r[key], vmax):.1f}" r="3" fill="{colour}"/>')
            parts.append(f'<text x="{x0 + 10}" y="{40 + 16 * j}" fill="{colour}">{label}</text>')
        parts.append(f'<text x="{x0 + 120}" y="{h - 15}">nodes (log scale)</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="100,1000,5000,10000")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--rtt-ms", type=int, default=50)
    ap.add_argument("--log-lines", type=int, default=200)
    ap.add_argument("--init", default="plain", choices=["plain", "systemd"])
    ap.add_argument("--profile", default="standard")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="tpdump-scale-") as tmp:
            row = one_size(n, args, Path(tmp))
        rows.append(row)
        print(json.dumps(row), flush=True)
    for a, b in itertools.pairwise(rows):
        b["marginal_cpu_ms_per_node"] = round(
            (b["coordinator_cpu_s"] - a["coordinator_cpu_s"]) * 1000 / (b["nodes"] - a["nodes"]),
            2)
    cols = ["nodes", "t1_s", "ideal_s", "wall_s", "wall_over_ideal",
            "coordinator_cpu_ms_per_node", "marginal_cpu_ms_per_node",
            "simulator_cpu_ms_per_node", "peak_rss_mb", "archive_mb", "archive_mb_per_s",
            "requests_per_node", "round_trips_one_node", "round_trips_connect", "tctl_calls",
            "max_open_channels_per_node", "execs_niced_share", "nodes_ok"]
    print(f"\ntpdump scale benchmark (concurrency {args.concurrency}, rtt {args.rtt_ms} ms, "
          f"profile {args.profile}, {args.log_lines} log lines per node)")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "–")) for c in cols))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, OUT / "scale.svg")
    print(f"\nwrote {OUT / 'scale.json'} and {OUT / 'scale.svg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
