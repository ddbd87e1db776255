"""`tpdump sim`: run a simulated cluster from a scenario and write its state directory.

`main(argv)` runs until SIGTERM/SIGINT; `start_in_subprocess()` is the helper that the demo
and the tests use to get a running simulator and its state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tpdump.sim.auth import AuthServer
from tpdump.sim.cluster import NODE_SSH_PORT, SimCluster
from tpdump.sim.kube import KubeServer
from tpdump.sim.objects import Objects
from tpdump.sim.scenario import Scenario, ScenarioError, load_scenario
from tpdump.sim.ssh import SSHCluster
from tpdump.sim.vfs import FSBuilder
from tpdump.transport import tune_asyncssh

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SSH_LOGIN = "tpdump"
NET_CANDIDATES = 200


def main(argv: list[str]) -> int:
    """`tpdump sim --scenario FILE --state-dir DIR`; 0 after a clean stop, 2 on a bad scenario."""
    parser = argparse.ArgumentParser(prog="tpdump sim",
                                     description="Run a simulated Teleport cluster.")
    parser.add_argument("--scenario", required=True, help="scenario YAML file (SPEC §14)")
    parser.add_argument("--state-dir", required=True,
                        help="directory for tpdump.yaml, tctl, keys, ready, ...")
    args = parser.parse_args(argv)
    # The simulator's CPU is benchmark noise: asyncssh checks the log level before it
    # formats a packet's log, and sends no ignore packets under AEAD ciphers (as Go's
    # x/crypto/ssh in Teleport never does), as in tpdump.
    tune_asyncssh()
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"tpdump sim: {exc}", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "ready").unlink(missing_ok=True)
    try:
        asyncio.run(run(scenario, state_dir))
    except OSError as exc:
        print(f"tpdump sim: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def raise_nofile_limit() -> None:
    """Lift the open-files soft limit to the hard limit (each node has a listener)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def choose_net(state_dir: Path) -> int:
    """The second octet of this simulator's 127.x.0.0/16: free, derived from the state dir."""
    start = int(hashlib.sha256(str(state_dir).encode()).hexdigest(), 16) % NET_CANDIDATES
    for i in range(NET_CANDIDATES):
        net = 20 + (start + i) % NET_CANDIDATES
        if _free(f"127.{net}.255.2", 3023) and _free(f"127.{net}.0.1", NODE_SSH_PORT):
            return net
    raise OSError("no free 127.x.0.0/16 network for the simulator")


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def run(scenario: Scenario, state_dir: Path) -> None:
    """Start everything, write the state directory (`ready` last), serve until signalled."""
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    cluster = SimCluster(scenario, choose_net(state_dir))
    objects = Objects(cluster)
    fsb = FSBuilder(cluster)
    auth = AuthServer(cluster, objects)
    ssh = SSHCluster(cluster, fsb, state_dir / "journals")
    # Built before write_state: its canaries (Secrets, pod logs) go into canaries.txt.
    kube = KubeServer(cluster) if scenario.kube.enabled else None
    old_watcher = _use_pidfd_child_watcher(loop)
    try:
        await auth.start()
        await ssh.start()
        if kube is not None:
            await kube.start()
            kubeconfig = state_dir / "kubeconfig"
            kubeconfig.write_text(kube.kubeconfig())
            kubeconfig.chmod(0o600)
        else:
            (state_dir / "kubeconfig").unlink(missing_ok=True)
        write_state(cluster, state_dir)
        print(f"tpdump sim: {len(cluster.nodes)} instances of {scenario.cluster_name} ready "
              f"(proxy {cluster.proxy_addr[0]}:{cluster.proxy_addr[1]}, state {state_dir})",
              file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        (state_dir / "ready").unlink(missing_ok=True)
        (state_dir / "sim.pid").unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # what tpdump asked of the nodes (benchmarks)
            (state_dir / "load.json").write_text(json.dumps(
                {"summary": ssh.load.summary(), "nodes": ssh.load.by_node}, indent=1))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ssh.close(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(auth.close(), 2)
        if kube is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(kube.close(), 2)
        if old_watcher is not None:
            asyncio.set_child_watcher(old_watcher)


def _use_pidfd_child_watcher(
        loop: asyncio.AbstractEventLoop) -> asyncio.AbstractChildWatcher | None:
    """Python 3.11 waits for each child process (journalctl, journal-remote) in a thread
    of its own; a pidfd in the event loop is cheaper (3.12 does that by itself). The
    watcher it replaced (to put back), or None when it left things as they were."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return None
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return None
    old = asyncio.get_child_watcher()
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    asyncio.set_child_watcher(watcher)
    return old


def tctl_wrapper(state_dir: Path, auth_addr: str, version: str) -> str:
    """The `bin/tctl` shell script: the stdlib-only stand-in, run without site-packages."""
    script = PROJECT_ROOT / "tpdump" / "sim" / "tctl.py"
    q = shlex.quote
    return (
        "#!/bin/sh\n"
        "# tctl stand-in of the tpdump simulated cluster (tpdump/sim/tctl.py)\n"
        f"TPDUMP_SIM_STATE_DIR={q(str(state_dir))}\n"
        f"TPDUMP_SIM_AUTH={q(auth_addr)}\n"
        f"TPDUMP_SIM_VERSION={q(version)}\n"
        "export TPDUMP_SIM_STATE_DIR TPDUMP_SIM_AUTH TPDUMP_SIM_VERSION\n"
        f'exec {q(sys.executable)} -I -S {q(str(script))} "$@"\n'
    )


def write_state(cluster: SimCluster, state_dir: Path) -> None:
    """Write every state file of docs/contracts.md; `ready` is written last."""
    scen = cluster.scenario
    keys_dir = state_dir / "keys"
    known_hosts = state_dir / "known_hosts"
    cluster.keys.write(keys_dir, known_hosts)
    auth = f"{cluster.auth_addr[0]}:{cluster.auth_addr[1]}"
    bin_dir = state_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    tctl = bin_dir / "tctl"
    tctl.write_text(tctl_wrapper(state_dir, auth, scen.teleport_version))
    tctl.chmod(0o755)
    identity = state_dir / "identity"
    identity.write_bytes(cluster.keys.user_key.export_private_key()
                         + cluster.keys.user_cert.export_certificate())
    identity.chmod(0o600)
    (state_dir / "tctl_calls.jsonl").touch()
    config = {
        "cluster_name": scen.cluster_name,
        "auth_server": auth,
        "identity": str(identity),
        "tctl": str(tctl),
        "proxy": f"{cluster.proxy_addr[0]}:{cluster.proxy_addr[1]}",
        "ssh_user": SSH_LOGIN,
        "ssh_key": str(keys_dir / "id_ed25519"),
        "known_hosts": str(known_hosts),
    }
    if scen.kube.enabled:
        config["kubeconfig"] = str(state_dir / "kubeconfig")
    import yaml

    (state_dir / "tpdump.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    instances = [
        {"uuid": n.uuid, "hostname": n.hostname, "group": n.inst.group.name,
         "services": list(n.services), "fault": n.fault, "addr": n.heartbeat_addr,
         "version": n.inst.version, "tunnel": n.inst.group.tunnel, "init": n.inst.group.init,
         "ip": n.ip, "ssh": n.has_ssh, "external": n.external}
        for n in cluster.nodes
    ]
    (state_dir / "instances.json").write_text(json.dumps(instances, indent=1) + "\n")
    (state_dir / "canaries.txt").write_text("".join(c + "\n" for c in cluster.canaries.items))
    (state_dir / "sim.pid").write_text(f"{os.getpid()}\n")
    (state_dir / "ready").write_text(f"{time.time():.3f}\n")


def start_in_subprocess(scenario_path: str | os.PathLike[str], state_dir: str | os.PathLike[str],
                        timeout: float = 30) -> subprocess.Popen[bytes]:
    """Start `python -m tpdump.sim` in its own process and wait for `DIR/ready`.

    The simulator's stderr goes to `DIR/sim.log`. Raises RuntimeError (with that log) if it
    dies or is not ready within `timeout` seconds. Stop it with `proc.terminate()`.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    ready = state / "ready"
    ready.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    log_path = state / "sim.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tpdump.sim", "--scenario", str(Path(scenario_path).resolve()),
             "--state-dir", str(state)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}: "
                               f"{log_path.read_text(errors='replace').strip()}")
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"simulator not ready after {timeout}s: "
                       f"{log_path.read_text(errors='replace').strip()}")
