"""Helpers of the simulator tests: start/stop a simulator, talk to it (tctl, SSH)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from tpdump.sim.cli import start_in_subprocess

PROBE = (Path(__file__).resolve().parents[2] / "tpdump" / "collectors" / "probe.sh").read_text()
UNITS = Path(__file__).resolve().parents[1] / "data" / "teleport" / "systemd"
AUTH_UNIT = UNITS / "gravitational-teleport__examples__systemd__production__auth__teleport.service"
UPDATE_SERVICE = (UNITS / "gravitational-teleport__lib__autoupdate__agent__testdata__"
                  "teleport-update.service.golden")
UPDATE_TIMER = (UNITS / "gravitational-teleport__lib__autoupdate__agent__testdata__"
                "teleport-update.timer.golden")
OVERRIDE = "[Service]\nLimitNOFILE=65536\nEnvironment=TELEPORT_UNSTABLE_X=1\n"
SYSLOG_YAML = """version: v3
teleport:
  nodename: ignored
  data_dir: /var/lib/teleport
  diag_addr: 0.0.0.0:3001
  log:
    output: syslog
    severity: DEBUG
ssh_service:
  enabled: yes
proxy_service:
  enabled: no
auth_service:
  enabled: no
"""

# Nodes for the per-node items of issue 3 (systemd, journald, diag, debug socket, ...).
NODE_SCENARIO = f"""
cluster_name: nodes.example.com
teleport_version: "17.4.2"
seed: 5
groups:
  - name: auth
    count: 1
    services: [auth, node]
    log_lines: 120
    files:
      /etc/systemd/system/teleport.service: {AUTH_UNIT}
  - name: web
    count: 2
    diag: true
    readyz: degraded
    log_lines: 400
    files:
      /etc/systemd/system/teleport.service.d/override.conf: override.conf
      /etc/systemd/system/teleport-update.service: {UPDATE_SERVICE}
      /etc/systemd/system/teleport-update.timer: {UPDATE_TIMER}
  - {{name: edge, count: 1, tunnel: true, diag: true, readyz: starting, log_format: json,
      log_lines: 300, version: "16.4.9"}}
  - {{name: proxy, count: 1, services: [proxy, node], diag: true, log_lines: 50}}
  - {{name: plain, count: 1, init: plain, log_format: json, log_lines: 250}}
  - name: sys
    count: 1
    log_lines: 200
    log_error_rate: 0.3
    files:
      /etc/teleport.yaml: syslog.yaml
  - {{name: hang, count: 1, fault: hang, diag: true}}
  - {{name: slow, count: 1, fault: slow, delay_s: 0.4, diag: true, log_lines: 20}}
  - {{name: garbage, count: 1, fault: garbage, diag: true, log_lines: 30}}
secrets:
  plant: true
"""

MAIN_SCENARIO = """
cluster_name: acme.example.com
teleport_version: "17.4.2"
seed: 11
auth:
  denied_kinds: [lock, session_recording_config]
  alerts: ["Your license expires in 3 days"]
  ca_rotation: update_clients
  ca_expiry_days: 30
  objects: [extra.yaml]
groups:
  - {name: auth, count: 1, services: [auth, node], diag: true}
  - {name: web, count: 3, services: [node, app]}
  - {name: db, count: 2, services: [node, db], init: plain, log_format: json, log_lines: 300}
  - {name: edge, count: 1, tunnel: true, version: "16.4.9"}
  - {name: far, count: 1, rtt_ms: 150}
  - {name: refused, count: 1, fault: refused}
  - {name: blackhole, count: 1, fault: blackhole}
  - {name: slow, count: 1, fault: slow, delay_s: 0.4}
  - {name: hang, count: 1, fault: hang}
  - {name: flood, count: 1, fault: flood}
  - {name: denied, count: 1, fault: auth_denied}
  - {name: drop, count: 1, fault: drop_mid}
  - {name: spoof, count: 1, fault: bad_hostkey}
  - {name: garbage, count: 1, fault: garbage, init: plain, log_lines: 200}
  - {name: kube, count: 1, services: [kube]}
secrets:
  plant: true
"""

EXTRA_OBJECTS = """
kind: role
version: v7
metadata:
  name: extra-role
spec:
  allow:
    logins: [extra]
---
kind: github
version: v3
metadata:
  name: extra-github
spec:
  client_id: extra
"""


@dataclass
class Sim:
    """A running simulator and what its state directory says."""

    state: Path
    proc: subprocess.Popen[bytes]
    config: dict[str, Any]
    instances: list[dict[str, Any]]

    def tctl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.state / "bin" / "tctl"), *args], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def inst(self, hostname: str) -> dict[str, Any]:
        return next(i for i in self.instances if i["hostname"] == hostname)

    def calls(self) -> list[dict[str, Any]]:
        lines = (self.state / "tctl_calls.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def client_options(self, **extra: Any) -> dict[str, Any]:
        key = asyncssh.read_private_key(self.config["ssh_key"])
        cert = asyncssh.read_certificate(self.config["ssh_key"] + "-cert.pub")
        opts: dict[str, Any] = {"username": self.config["ssh_user"],
                                "client_keys": [(key, cert)],
                                "known_hosts": self.config["known_hosts"],
                                "connect_timeout": 5}
        opts.update(extra)
        return opts

    def proxy_addr(self) -> tuple[str, int]:
        host, _, port = self.config["proxy"].rpartition(":")
        return host, int(port)

    def node_host(self, hostname: str) -> str:
        inst = self.inst(hostname)
        return inst["addr"].rpartition(":")[0] if inst["addr"] else inst["uuid"]


def start_sim(tmp: Path, scenario: str, extra_files: dict[str, str] | None = None) -> Sim:
    tmp.mkdir(parents=True, exist_ok=True)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    path = tmp / "scenario.yaml"
    path.write_text(textwrap.dedent(scenario))
    state = tmp / "state"
    proc = start_in_subprocess(path, state, timeout=30)
    config = yaml.safe_load((state / "tpdump.yaml").read_text())
    instances = json.loads((state / "instances.json").read_text())
    return Sim(state, proc, config, instances)


def stop_sim(sim: Sim) -> int:
    sim.proc.terminate()
    try:
        return sim.proc.wait(10)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        return sim.proc.wait(5)
