"""deploy/systemd run for real: the snapshot service and timer installed in a
systemd-nspawn node (real systemd, PID 1), started once by systemd, as the unprivileged
user and with the hardening the unit declares."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.lab.nspawn import NspawnLab

ROOT = Path(__file__).resolve().parents[2]
NODE = 3


def sh(lab: NspawnLab, script: str, timeout: float = 60) -> str:
    res = lab.run_in_node(NODE, ["sh", "-c", script], timeout=timeout)
    assert res.returncode == 0, (script, res.stdout.decode()[-2000:],
                                 res.stderr.decode()[-2000:])
    return res.stdout.decode()


def test_snapshot_service_and_timer_run_under_systemd(nspawn_lab: NspawnLab) -> None:
    lab = nspawn_lab
    service = (ROOT / "deploy/systemd/tpdump-snapshot.service").read_text()
    timer = (ROOT / "deploy/systemd/tpdump-snapshot.timer").read_text()
    # The unit as shipped, with the installed `tpdump` being this checkout's Python, and a
    # node-scope dump (the lab node runs the Teleport stand-in service) so that the run
    # needs no cluster credentials.
    assert "ExecStart=/usr/local/bin/tpdump snapshot --config /etc/tpdump/tpdump.yaml" \
        in service
    service = service.replace("/usr/local/bin/tpdump snapshot",
                              f"{sys.executable} -m tpdump snapshot --scope node")
    sh(lab, "id tpdump >/dev/null 2>&1 || useradd --system --home-dir /var/lib/tpdump "
            "--shell /usr/sbin/nologin tpdump; mkdir -p /etc/tpdump; "
            "printf 'cluster_name: nlab-deploy\\n' > /etc/tpdump/tpdump.yaml; "
            "chown root:tpdump /etc/tpdump/tpdump.yaml; chmod 0640 /etc/tpdump/tpdump.yaml")
    lab.run_in_node(NODE, ["sh", "-c", "cat > /etc/systemd/system/tpdump-snapshot.service"],
                    input=service.encode())
    lab.run_in_node(NODE, ["sh", "-c", "cat > /etc/systemd/system/tpdump-snapshot.timer"],
                    input=timer.encode())
    # This checkout's Python may live where the unit's hardening hides it, as it should
    # for a real install under /usr or /opt: in a home directory (pyenv; ProtectHome=yes)
    # or under /tmp (a CI checkout; PrivateTmp=yes: bound back in, read-only). A drop-in
    # relaxes only that.
    places = [os.path.realpath(sys.executable), sys.prefix, str(ROOT)]
    relax = []
    if any(p.startswith(("/root/", "/home/")) for p in places):
        relax.append("ProtectHome=read-only")
    for place in (str(ROOT), sys.prefix):
        if place.startswith(("/tmp/", "/var/tmp/")):
            relax.append(f"BindReadOnlyPaths={place}")
    if relax:
        body = "\\n".join(["[Service]", *relax])
        sh(lab, "mkdir -p /etc/systemd/system/tpdump-snapshot.service.d && printf "
                f"'{body}\\n' > /etc/systemd/system/tpdump-snapshot.service.d/test.conf")
    sh(lab, "systemctl daemon-reload")
    # Started by systemd, as systemd runs it (oneshot: `start` returns when it ended).
    res = lab.run_in_node(NODE, ["systemctl", "start", "tpdump-snapshot.service"],
                          timeout=150)
    status = sh(lab, "systemctl show -p Result -p ExecMainStatus -p User "
                     "tpdump-snapshot.service")
    journal = sh(lab, "journalctl -u tpdump-snapshot.service --no-pager -n 40 || true")
    assert res.returncode == 0, (status, journal)
    assert "Result=success" in status, (status, journal)
    index = json.loads(sh(lab, "cat /var/lib/tpdump/snapshots/index.json"))
    entries = index["entries"]
    assert len(entries) == 1, index
    listing = sh(lab, "ls -ln /var/lib/tpdump/snapshots/")
    uid = sh(lab, "id -u tpdump").strip()
    assert any(line.split()[2] == uid and line.endswith(".tar.gz")
               for line in listing.splitlines() if line.startswith("-")), listing
    # The timer is accepted and scheduled.
    sh(lab, "systemctl enable --now tpdump-snapshot.timer")
    timers = sh(lab, "systemctl list-timers --all --no-pager tpdump-snapshot.timer")
    assert "tpdump-snapshot.timer" in timers and "tpdump-snapshot.service" in timers
    sh(lab, "systemctl disable --now tpdump-snapshot.timer")
