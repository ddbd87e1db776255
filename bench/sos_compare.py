"""tpdump vs `sos collect` on the same real-systemd nodes (tests/lab/nspawn.py).

Boots N (default 10) systemd-nspawn nodes with the Teleport stand-in service, then
times, against the same nodes:

* `tpdump cluster` through the lab's real sshd jump host as the unprivileged `tpdlab`
  (discovery from the tctl stand-in of a simulated cluster whose single group's
  heartbeats point at the nodes: `external_addrs`); run twice, before and after sos;
* `sos collect` (Debian sosreport 4.0) straight to each node's sshd as root (it needs root
  SSH by key; a second user certificate with principal `root`), `--only-plugins
  systemd,logs,host,process` (the plugins closest to what tpdump collects), `-j N`,
  `--no-local --batch`. It runs inside `unshare --mount` with a tmpfs over root's home
  and a scratch `~/.ssh` (config + the lab's @cert-authority known_hosts), so the
  invoking user's ~/.ssh is never touched; the ControlPersist ssh masters it leaves are
  found afterwards (processes in that private mount namespace) and killed by PID.

Prints boot/readiness times, both wall times and the ratio (target: tpdump <= 0.2 x sos),
archive sizes, node counts, and which planted canaries each archive contains. Writes
bench/out/sos_compare.json. Exits 1 (after saying why) when something cannot run.
Run as root: `python bench/sos_compare.py [--nodes 10]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.nspawn import (  # noqa: E402
    LabError,
    NspawnLab,
    missing_requirements,
    start_nspawn_lab,
)
from tpdump.sim.cli import start_in_subprocess  # noqa: E402

SOS = "/usr/bin/sos"
SOS_PLUGINS = "systemd,logs,host,process"
CANARY = re.compile(rb"NSPAWNCANARY-[a-z]+-\d+")
SOS_TIMEOUT = 900


def timed(argv: list[str], timeout: float, **kw: object) -> tuple[int, float, str]:
    """Run argv; (exit code, wall seconds, combined output tail)."""
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired:
        return -1, time.monotonic() - t0, f"timed out after {timeout} s"
    out = (res.stdout + res.stderr).decode(errors="replace")
    return res.returncode, time.monotonic() - t0, out[-3000:]


def scan_tar(data: bytes, mode: str, depth: int = 0) -> set[str]:
    """Canary strings in every file of a (possibly nested) tar archive."""
    found: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
        for m in tar:
            if not m.isfile():
                continue
            f = tar.extractfile(m)
            if f is None:
                continue
            body = f.read()
            if depth < 2 and m.name.endswith((".tar.xz", ".tar.gz", ".tar")):
                sub = {".tar.xz": "r:xz", ".tar.gz": "r:gz", ".tar": "r:"}
                ext = next(e for e in sub if m.name.endswith(e))
                with contextlib.suppress(tarfile.TarError, EOFError):
                    found |= scan_tar(body, sub[ext], depth + 1)
                continue
            found |= {c.decode() for c in CANARY.findall(body)}
    return found


def kill_namespace_procs(mntns: str) -> list[int]:
    """Kill (by PID) the processes left in the private mount namespace `mntns` that sos
    ran in: the ControlPersist ssh masters. Only processes in that namespace, which only
    this script's `unshare` created, are signalled."""
    if not mntns:
        return []

    def members() -> list[int]:
        pids = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{p}/ns/mnt") == mntns:
                        pids.append(int(p))
        return pids

    victims = members()
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for _ in range(40):
        if not members():
            break
        time.sleep(0.05)
    for pid in members():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def run_sos(lab: NspawnLab, work: Path, jobs: int) -> dict[str, object]:
    assert lab.root_key_path is not None and lab.root_cert_path is not None
    scratch = work / "sos-ssh"
    scratch.mkdir(mode=0o700)
    shutil.copyfile(lab.known_hosts, scratch / "known_hosts")
    (scratch / "config").write_text(
        "Host *\n"
        f"  IdentityFile {lab.root_key_path}\n"
        f"  CertificateFile {lab.root_cert_path}\n"
        "  IdentitiesOnly yes\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  BatchMode yes\n")
    for f in scratch.iterdir():
        f.chmod(0o600)
    out = work / "sos-out"
    out.mkdir()
    mntns_file = work / "sos-mntns"
    home = pwd.getpwuid(0).pw_dir
    nodes = ",".join(n.ip for n in lab.nodes)
    sos_argv = [SOS, "collect", "--batch", "--no-local", "--nodes", nodes,
                "--ssh-user", "root", "-i", str(lab.root_key_path), "-p", "3022",
                "-j", str(jobs), "--only-plugins", SOS_PLUGINS, "--tmp-dir", str(out),
                "--timeout", str(SOS_TIMEOUT)]
    script = (
        "set -e\n"
        f"mount -t tmpfs -o mode=0700,size=16m tpdnlab-sos-home {shlex.quote(home)}\n"
        f"mkdir -m 0700 {shlex.quote(home)}/.ssh\n"
        f"cp {shlex.quote(str(scratch))}/known_hosts {shlex.quote(str(scratch))}/config "
        f"{shlex.quote(home)}/.ssh/\n"
        f"readlink /proc/self/ns/mnt > {shlex.quote(str(mntns_file))}\n"
        f"exec {shlex.join(sos_argv)}\n")
    argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script]
    rc, wall, tail = timed(argv, SOS_TIMEOUT + 60, cwd=str(work))
    mntns = mntns_file.read_text().strip() if mntns_file.exists() else ""
    killed = kill_namespace_procs(mntns)
    archives = sorted(out.glob("sos-collector-*.tar.*"))
    result: dict[str, object] = {"exit": rc, "wall_s": round(wall, 2),
                                 "ssh_masters_killed": len(killed), "argv": sos_argv}
    if archives:
        data = archives[-1].read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            reports = [m.name for m in tar if re.search(r"/sosreport-[^/]+\.tar\.\w+$", m.name)]
        result.update(archive=str(archives[-1]), archive_bytes=len(data),
                      node_reports=len(reports),
                      canaries=sorted(scan_tar(data, "r:*")))
    else:
        result["error"] = tail
    return result


def run_tpdump(lab: NspawnLab, state: Path, out: Path) -> dict[str, object]:
    argv = [sys.executable, "-m", "tpdump", "cluster", "--config", str(state / "tpdump.yaml"),
            "--proxy", lab.proxy, "--ssh-user", lab.login, "--ssh-key", str(lab.key_path),
            "--known-hosts", str(lab.known_hosts), "-o", f"{out}/", "-q"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    rc, wall, tail = timed(argv, 600, env=env, cwd=str(ROOT))
    result: dict[str, object] = {"exit": rc, "wall_s": round(wall, 2)}
    archives = sorted(out.glob("*.tar.gz"))
    if not archives:
        result["error"] = tail
        return result
    data = archives[-1].read_bytes()
    report = None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar:
            if m.name.endswith("/report.json"):
                f = tar.extractfile(m)
                report = json.loads(f.read()) if f else None
    result.update(archive=str(archives[-1]), archive_bytes=len(data),
                  canaries=sorted(scan_tar(data, "r:gz")))
    if report:
        result.update(nodes_ok=report["nodes"]["ok"], nodes_total=report["nodes"]["total"],
                      verdict=report["verdict"], report_seconds=report["seconds"])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=0, help="sos collect -j (default: --nodes)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    n = args.nodes
    why = missing_requirements()
    if not os.access(SOS, os.X_OK):
        why.append(f"{SOS} not found (apt-get install -y sosreport; .ci/lab-setup.sh)")
    if why:
        print("sos_compare: cannot run: " + "; ".join(why))
        return 1
    work = Path(tempfile.mkdtemp(prefix="tpdump-sos-compare-"))
    rows: dict[str, object] = {"nodes": n}
    lab: NspawnLab | None = None
    sim = None
    try:
        t0 = time.monotonic()
        try:
            lab = start_nspawn_lab(work / "lab", n, allow_root=True)
        except LabError as e:
            print(f"sos_compare: the nspawn lab did not start: {e}")
            return 1
        rows["lab_boot_s"] = round(time.monotonic() - t0, 2)
        rows["lab_timings_s"] = {k: round(v, 3) for k, v in lab.timings.items()}
        scenario = {
            "cluster_name": lab.cluster_name, "teleport_version": "17.4.2", "seed": 3,
            "groups": [{"name": "lab", "count": n, "services": ["node"],
                        "external_addrs": [node.addr for node in lab.nodes]}],
        }
        (work / "scenario.yaml").write_text(yaml.safe_dump(scenario))
        t1 = time.monotonic()
        sim = start_in_subprocess(str(work / "scenario.yaml"), str(work / "state"), timeout=120)
        rows["sim_start_s"] = round(time.monotonic() - t1, 2)

        tp1 = run_tpdump(lab, work / "state", work / "tpdump-1")
        sos = run_sos(lab, work, args.jobs or n)
        tp2 = run_tpdump(lab, work / "state", work / "tpdump-2")
        rows.update(tpdump_run1=tp1, sos=sos, tpdump_run2=tp2)
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(timeout=15)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(timeout=5)
        if lab is not None:
            lab.stop()
            rows["lab_stop_s"] = round(lab.timings.get("stop", 0.0), 2)

    planted = sorted(c for node in (lab.nodes if lab else []) for c in node.canaries)
    print(f"tpdump vs sos collect on {n} real-systemd nspawn nodes "
          f"(sos plugins: {SOS_PLUGINS}; sos -j {args.jobs or n})")
    print(f"  lab boot to ready           {rows['lab_boot_s']} s "
          f"(nodes up {rows['lab_timings_s'].get('nodes_up')} s)")  # type: ignore[union-attr]
    ok = True
    for key, label in (("tpdump_run1", "tpdump cluster (run 1)"), ("sos", "sos collect"),
                       ("tpdump_run2", "tpdump cluster (run 2)")):
        r = rows[key]
        assert isinstance(r, dict)
        extra = ""
        if key == "sos":
            extra = (f"node reports {r.get('node_reports', 0)}/{n}, "
                     f"ssh masters killed {r.get('ssh_masters_killed')}")
        else:
            extra = f"nodes ok {r.get('nodes_ok', 0)}/{r.get('nodes_total', n)}, " \
                    f"verdict {r.get('verdict')}"
        print(f"  {label:<27} {r['wall_s']:>7} s  exit {r['exit']}  "
              f"archive {int(r.get('archive_bytes', 0)) / 1e3:.0f} kB  {extra}")
        leaked = [c for c in r.get("canaries", []) if c in planted]
        print(f"  {'':<27} planted canaries in archive: {len(leaked)}/{len(planted)}"
              + (f" ({', '.join(sorted({c.rsplit('-', 1)[0] for c in leaked}))})"
                 if leaked else ""))
        if "error" in r:
            ok = False
            print(f"  {'':<27} FAILED: {r['error'][-1500:]}")
    sos_wall = rows["sos"]["wall_s"]  # type: ignore[index]
    tp_walls = [rows[k]["wall_s"] for k in ("tpdump_run1", "tpdump_run2")]  # type: ignore[index]
    worst = max(tp_walls)
    ratio = worst / sos_wall if sos_wall else float("nan")
    rows["ratio_tpdump_worst_to_sos"] = round(ratio, 3)
    verdict = "met" if ratio <= 0.2 and ok else "NOT met"
    print(f"  ratio tpdump / sos          {ratio:.3f} (slower tpdump run; target <= 0.2: "
          f"{verdict})")
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sos_compare.json").write_text(json.dumps(rows, indent=1, default=str))
    if args.keep:
        print(f"  work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
