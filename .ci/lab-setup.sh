#!/usr/bin/env bash
# Host setup for the labs under tests/lab/ (idempotent; run as root by .ci/run before the
# tests, and safe to run by hand).
#
# * openssh-server/-client  real sshd/ssh for the sshd lab, the nspawn nodes and jump host
# * systemd-container       systemd-nspawn (+ machinectl) for the real-systemd nspawn lab
# * systemd-journal-remote  systemd-journal-remote (journal files for the simulator)
# * sosreport               `sos collect`, the peer measured by bench/sos_compare.py
# * iproute2, util-linux    ip (netns, veth, bridge), unshare, nsenter
# * passwd, procps          useradd/usermod; pkill (the Teleport unit's ExecReload)
# * python3                 /usr/bin/python3 runs the Teleport stand-in inside the nodes
# * kubectl                 the real client the Kubernetes API stand-in is tested with
# * chromium                the headless browser of the web UI tests (tests/web/, driven
#                           by Playwright with executable_path=/usr/bin/chromium)
#
# Also adds the host-wide safety route `unreachable 10.200.0.0/16` (the labs' range; the
# more specific per-lab bridge routes still win) and /run/sshd.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
  echo "lab-setup: not root, nothing done (the labs need root)" >&2
  exit 0
fi

# package -> a file that shows it is installed
declare -A probe=(
  [openssh-server]=/usr/sbin/sshd
  [openssh-client]=/usr/bin/ssh
  [systemd-container]=/usr/bin/systemd-nspawn
  [systemd-journal-remote]=/lib/systemd/systemd-journal-remote
  [sosreport]=/usr/bin/sos
  [iproute2]=/usr/bin/ip
  [util-linux]=/usr/bin/nsenter
  [passwd]=/usr/sbin/useradd
  [procps]=/usr/bin/pkill
  [python3]=/usr/bin/python3
  [chromium]=/usr/bin/chromium
)
need=()
for pkg in "${!probe[@]}"; do
  [ -e "${probe[$pkg]}" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  avail=()
  for pkg in "${need[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      avail+=("$pkg")
    else
      echo "lab-setup: package $pkg not found by apt-cache; skipped" >&2
    fi
  done
  if [ ${#avail[@]} -gt 0 ]; then
    # --no-install-recommends keeps sosreport from pulling a tree of helpers.
    apt-get install -y -qq --no-install-recommends "${avail[@]}" >/dev/null
  fi
fi

# kubectl (the real client the Kubernetes stand-in is checked with): the image's `kubectl`
# package where the registry has it, else Debian's kubernetes-client.
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get update -qq
  for pkg in kubectl kubernetes-client; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null && break
    fi
  done
fi

mkdir -p /run/sshd
chmod 0755 /run/sshd

# Safety net for every lab that uses 10.200.0.0/16 (idempotent).
if command -v ip >/dev/null 2>&1; then
  if ! ip route show type unreachable 2>/dev/null | grep -q '^unreachable 10\.200\.0\.0/16'; then
    ip route add unreachable 10.200.0.0/16 2>/dev/null || true
  fi
fi

# Installing systemd-container on a host without systemd as PID 1 must not have started
# anything; nothing to enable here.
echo "lab-setup: ok"
