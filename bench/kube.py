"""Kubernetes benchmark: `tpdump kube` against the simulator's Kubernetes API stand-in
(HTTPS on loopback, in its own process). Prints objects per second and pod-log bytes per
second, with tpdump's CPU and peak memory, and writes bench/out/kube.json."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import report_of, run  # noqa: E402
from tpdump.sim.cli import start_in_subprocess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespaces", type=int, default=4)
    ap.add_argument("--pods", type=int, default=60, help="pods per Teleport namespace")
    ap.add_argument("--log-lines", type=int, default=2000, help="lines per container log")
    ap.add_argument("--runs", type=int, default=2, help="best of this many runs")
    args = ap.parse_args()
    namespaces = ["teleport-cluster"] + [f"teleport-agent-{i}" for i in
                                         range(1, args.namespaces)]
    scenario = {"cluster_name": "bench.example.com", "seed": 5,
                "groups": [{"name": "web", "count": 1, "services": ["node"]}],
                "secrets": {"plant": True},
                "kube": {"enabled": True, "namespaces": namespaces, "pods": args.pods,
                         "log_lines": args.log_lines, "denied_resources": ["leases"]}}
    with tempfile.TemporaryDirectory(prefix="tpdump-bench-kube-") as tmp:
        scen = Path(tmp) / "scenario.yaml"
        scen.write_text(yaml.safe_dump(scenario))
        proc = start_in_subprocess(str(scen), str(Path(tmp) / "state"), timeout=120)
        try:
            best = None
            for i in range(args.runs):
                out = Path(tmp) / f"out{i}"
                code, wall, cpu, rss = run([
                    sys.executable, "-m", "tpdump", "kube", "--kubeconfig",
                    str(Path(tmp) / "state" / "kubeconfig"), "-o", f"{out}/", "-q",
                    "--kube-log-lines", str(args.log_lines), "--kube-log-bytes", "64MB"])
                if code not in (0, 1):
                    print(f"tpdump kube exited {code}", file=sys.stderr)
                    return 1
                kube = report_of(out)["kube"]
                archive = sorted(out.glob("*.tar.gz"))[-1].stat().st_size
                row = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rss_mb":
                       round(rss / 2**20, 1), "objects": kube["objects"],
                       "types": kube["types"], "logs": kube["logs"],
                       "log_bytes": kube["log_bytes"], "api_calls": kube["api_calls"],
                       "archive_bytes": archive}
                if best is None or wall < best["wall_s"]:
                    best = row
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    assert best is not None
    best["objects_per_s"] = round(best["objects"] / best["wall_s"], 1)
    best["log_mb_per_s"] = round(best["log_bytes"] / best["wall_s"] / 1e6, 2)
    best.update(namespaces=len(namespaces), pods_per_namespace=args.pods,
                log_lines=args.log_lines)
    print("Kubernetes part against the API stand-in (best of "
          f"{args.runs}; stand-in in its own process)")
    print(f"{'namespaces':>10} {'pods/ns':>7} {'types':>5} {'objects':>7} {'logs':>5} "
          f"{'log MB':>7} {'calls':>6} {'wall s':>7} {'obj/s':>7} {'log MB/s':>8} "
          f"{'CPU s':>6} {'RSS MB':>6}")
    print(f"{best['namespaces']:>10} {args.pods:>7} {best['types']:>5} "
          f"{best['objects']:>7} {best['logs']:>5} {best['log_bytes'] / 1e6:>7.1f} "
          f"{best['api_calls']:>6} {best['wall_s']:>7.2f} {best['objects_per_s']:>7.1f} "
          f"{best['log_mb_per_s']:>8.2f} {best['cpu_s']:>6.2f} {best['rss_mb']:>6.1f}")
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "kube.json").write_text(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
