"""SSH floor benchmark (issue 9): what the SSH layer alone costs per node, against which
`tpdump cluster`'s own CPU per node (bench/scale.py) is read.

One simulated cluster (its own process, rtt_ms 50, `init: plain`); an in-process asyncssh
client that uses tpdump's own Transport (the same options, the proxy jump, tpdump's
changes to asyncssh) opens one connection per node through the proxy, 64 at a time, and
per mode:
- `connect`: connect (key exchange, host certificate check, user certificate auth, the
  tunnel channel through the proxy) and close;
- `connect + 1 exec`: the same and one `true` command;
- `connect + 4 execs`: the same and four commands, one after another (a node dump makes
  4 SSH requests: the probe, the batch, the debug socket, and one more);
- `tpdump cluster`: the whole dump of the same nodes (standard profile), for comparison.
Prints CPU ms per node of the client and of the simulator for each, and writes
bench/out/ssh_floor.json."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_of, run, start_cluster  # noqa: E402
from tpdump.config import load_file, resolve  # noqa: E402
from tpdump.discovery import Target  # noqa: E402
from tpdump.transport import Transport  # noqa: E402

OUT = ROOT / "bench" / "out"
MODES = {"connect": 0, "connect + 1 exec": 1, "connect + 4 execs": 4}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _connect_all(state: Path, targets: list[Target], execs: int) -> tuple[float, int]:
    """(CPU seconds of this process, nodes that answered every command)."""
    settings = resolve(load_file(str(state / "tpdump.yaml")), {})
    transport = Transport(settings)
    if await transport.preflight() is not None:
        raise SystemExit("the proxy did not answer")
    limit = anyio.Semaphore(64)
    ok = 0

    async def one(target: Target) -> None:
        nonlocal ok
        async with limit:
            conn, jump = await transport.connect(target)
            try:
                for _ in range(execs):
                    result = await conn.run("true", check=True)
                    assert result.exit_status == 0
                ok += 1
            finally:
                conn.close()
                await conn.wait_closed()
                transport.release(jump)

    started = _cpu()
    async with anyio.create_task_group() as tg:
        for target in targets:
            tg.start_soon(one, target)
    spent = _cpu() - started
    await transport.aclose()
    return spent, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--rtt-ms", type=int, default=50)
    args = ap.parse_args()
    scenario = {"cluster_name": "floor.example.com", "teleport_version": "17.4.2", "seed": 5,
                "groups": [{"name": "web", "count": args.nodes, "services": ["node"],
                            "init": "plain", "rtt_ms": args.rtt_ms, "log_lines": 200}]}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tpdump-floor-") as tmp_name:
        tmp = Path(tmp_name)
        sim, _ = start_cluster(tmp, scenario)
        try:
            state = tmp / "state"
            insts = json.loads((state / "instances.json").read_text())
            targets = []
            for inst in insts:
                host, port = inst["addr"].rsplit(":", 1)
                targets.append(Target(host, int(port)))
            for mode, execs in MODES.items():
                sim_before = cpu_of(sim.pid)
                wall = time.monotonic()
                spent, ok = anyio.run(_connect_all, state, targets, execs)
                rows.append({"mode": mode, "nodes": len(targets), "ok": ok,
                             "wall_s": round(time.monotonic() - wall, 2),
                             "client_cpu_ms_per_node": round(spent * 1000 / len(targets), 2),
                             "simulator_cpu_ms_per_node": round(
                                 (cpu_of(sim.pid) - sim_before) * 1000 / len(targets), 2)})
                print(json.dumps(rows[-1]), flush=True)
            sim_before = cpu_of(sim.pid)
            rc, wall_s, cpu, _ = run([sys.executable, "-m", "tpdump", "cluster", "--config",
                                      str(state / "tpdump.yaml"), "-q", "--concurrency", "64",
                                      "-o", f"{tmp}/out/"])
            rows.append({"mode": "tpdump cluster (standard)", "nodes": len(targets),
                         "ok": len(targets) if rc == 0 else None, "wall_s": round(wall_s, 2),
                         "client_cpu_ms_per_node": round(cpu * 1000 / len(targets), 2),
                         "simulator_cpu_ms_per_node": round(
                             (cpu_of(sim.pid) - sim_before) * 1000 / len(targets), 2)})
            print(json.dumps(rows[-1]), flush=True)
        finally:
            sim.terminate()
            sim.wait()
    print(f"\nSSH floor ({args.nodes} nodes through the proxy, 64 at a time, rtt "
          f"{args.rtt_ms} ms): CPU ms per node")
    print(f"  {'mode':28} {'client':>8} {'simulator':>10} {'wall s':>8} {'ok':>6}")
    for r in rows:
        print(f"  {r['mode']:28} {r['client_cpu_ms_per_node']:8.2f} "
              f"{r['simulator_cpu_ms_per_node']:10.2f} {r['wall_s']:8.2f} {r['ok']!s:>6}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ssh_floor.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
