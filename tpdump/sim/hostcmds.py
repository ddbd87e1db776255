"""`ss` and `df` on a simulated node, in the exact layout of iproute2 and GNU coreutils.

`ss` output is not a terminal under SSH exec, so iproute2 prints its "compact" layout
(misc/ss.c render_calc_width: each column as wide as its widest cell plus its left
delimiter, no spreading to a screen width). Recv-Q/Send-Q are printed `%-6d`.
"""

from __future__ import annotations

import hashlib

from tpdump.sim.cluster import AUTH_PORT, NODE_SSH_PORT, SimCluster, SimNode

PROXY_TUNNEL_PORT = 3024

# (alignment, left delimiter) of the columns printed for `ss -Htnp state established`:
# Recv-Q, Send-Q, local address, local port, peer address, peer port, process.
_SS_COLUMNS = (("l", ""), ("l", " "), ("r", " "), ("l", ""), ("r", " "), ("l", ""),
               ("l", ""))


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


def connections(node: SimNode, cluster: SimCluster) -> list[tuple[str, int, str, int, int]]:
    """The teleport process's established TCP connections: (local ip, local port, peer ip,
    peer port, fd), deterministic per node."""
    auth_ip, _ = cluster.auth_addr
    proxy_ip = cluster.proxy_addr[0]
    seed = cluster.scenario.seed
    out: list[tuple[str, int, str, int, int]] = []
    fd = 9
    services = set(node.services)
    if "auth" in services:
        # agents connected to this auth server
        others = [n for n in cluster.nodes if n is not node and "auth" not in n.services]
        for other in others[:4]:
            fd += 1
            out.append((auth_ip, AUTH_PORT, other.ip, 32768 + _h(seed, other.uuid, "a") % 28000,
                        fd))
    elif node.inst.group.tunnel:
        fd += 1
        out.append((node.ip, 32768 + _h(seed, node.uuid, "t") % 28000, proxy_ip,
                    PROXY_TUNNEL_PORT, fd))
    else:
        fd += 1
        out.append((node.ip, 32768 + _h(seed, node.uuid, "c") % 28000, auth_ip, AUTH_PORT, fd))
    if node.has_ssh and not node.inst.group.tunnel:
        # the session the proxy relays (this collector's own connection)
        fd += 3
        out.append((node.ip, NODE_SSH_PORT, proxy_ip, 32768 + _h(seed, node.uuid, "s") % 28000,
                    fd))
    return out


def ss_output(rows: list[tuple[str, int, str, int, int]], pid: int, comm: str = "teleport",
              header: bool = False, process: bool = True) -> bytes:
    """`ss [-H] -tn[p] state established` for these connections of process `pid`.

    The process cell is printed with its own leading space (` users:((...))`) and no column
    delimiter, as ss.c does; without -p it is empty (padded only when a header widens it)."""
    cells = [[f"{0:<6d}", f"{0:<6d}", f"{lip}:", str(lport), f"{pip}:", str(pport),
              f' users:(("{comm}",pid={pid},fd={fd}))' if process else ""]
             for lip, lport, pip, pport, fd in rows]
    if header:
        cells.insert(0, ["Recv-Q", "Send-Q", "Local Address:", "Port", "Peer Address:", "Port",
                         "Process"])
    if not cells:
        return b""
    widths = [max(len(r[i]) for r in cells) for i in range(len(_SS_COLUMNS))]
    lines = []
    for r in cells:
        parts = []
        for i, cell in enumerate(r):
            align, delim = _SS_COLUMNS[i]
            if not widths[i]:
                continue
            text = cell.rjust(widths[i]) if align == "r" else cell.ljust(widths[i])
            parts.append((delim if i else "") + text)
        lines.append("".join(parts) + "\n")
    return "".join(lines).encode()


def df_row(node: SimNode, path: str) -> tuple[str, int, int, int, str]:
    """(source, 1024-blocks, used, available, mount point) of the file system of `path`."""
    if path == "/proc" or path.startswith("/proc/"):
        return "proc", 0, 0, 0, "/proc"
    if path == "/run" or path.startswith("/run/"):
        return "tmpfs", 814828, 1204 + node.inst.index % 700, 814828 - 1204 - \
            node.inst.index % 700, "/run"
    total = 30830568
    used = 4_200_000 + _h(node.uuid, "df") % 9_000_000
    reserved = total // 20
    return "/dev/nvme0n1p1", total, used, total - used - reserved, "/"


def df_output(rows: list[tuple[str, int, int, int, str]]) -> bytes:
    """`df -Pk` for these rows, as coreutils 9.1 lays out its table."""
    header = ["Filesystem", "1024-blocks", "Used", "Available", "Capacity", "Mounted on"]
    table = [header]
    for source, size, used, avail, target in rows:
        if used + avail:
            u100 = used * 100
            total = used + avail
            pct = f"{u100 // total + (1 if u100 % total else 0)}%"
        else:
            pct = "-"
        table.append([source, str(size), str(used), str(avail), pct, target])
    min_width = [14, 5, 5, 5, 4, 0]
    widths = [max(min_width[i], *(len(r[i]) for r in table)) for i in range(6)]
    out = []
    for r in table:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)] + [r[5]]
        out.append(" ".join(cells) + "\n")
    return "".join(out).encode()
