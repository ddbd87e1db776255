"""Per-node items of issue 3 on simulated nodes: systemd, journald, ss/df, diag endpoints,
the debug socket, the process-state database, logs and canaries, faults on the new ops.

Where a real tool exists on this machine (journalctl, systemd-journal-remote, systemctl
--root, ss, df, systemd-analyze, sqlite3) the simulator's answer is checked against it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import socket
import sqlite3
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import asyncssh
import pytest
from simharness import AUTH_UNIT, OVERRIDE, UNITS, Sim

from tpdump.sim.hostcmds import ss_output
from tpdump.sim.systemctl import format_timestamp, format_timestamp_relative

pytestmark = pytest.mark.anyio

PREFIX = ["nice", "-n", "10", "ionice", "-c", "3"]
DEFAULT_UNIT = (UNITS / "gravitational-teleport__examples__systemd__teleport.service").read_text()


@asynccontextmanager
async def node(sim: Sim, hostname: str) -> AsyncIterator[asyncssh.SSHClientConnection]:
    host, port = sim.proxy_addr()
    async with asyncssh.connect(host, port, **sim.client_options()) as proxy, \
            asyncssh.connect(sim.node_host(hostname), 3022, tunnel=proxy,
                             **sim.client_options()) as conn:
        yield conn


async def run(conn: asyncssh.SSHClientConnection, *argv: str,
              prefix: list[str] | None = None) -> asyncssh.SSHCompletedProcess:
    """What the core does: shlex.join of the argv, behind the nice/ionice prefix."""
    cmd = shlex.join([*(PREFIX if prefix is None else prefix), *argv])
    return await conn.run(cmd, check=False, encoding=None)


def out(r: asyncssh.SSHCompletedProcess) -> str:
    assert isinstance(r.stdout, bytes)
    return r.stdout.decode("utf-8", "surrogateescape")


async def http(conn: asyncssh.SSHClientConnection, target: tuple[str, int] | str,
               path: str, method: str = "GET", body: bytes = b"") -> tuple[int, dict[str, str],
                                                                            bytes]:
    """One HTTP/1.1 request with `Connection: close` through a forwarded channel."""
    if isinstance(target, str):
        reader, writer = await conn.open_unix_connection(target)
    else:
        reader, writer = await conn.open_connection(*target)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        data = bytearray()
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s, 16)
            if size == 0:
                break
            data += rest[:size]
            rest = rest[size + 2:]
        rest = bytes(data)
    else:
        assert len(rest) == int(headers["content-length"])
    return status, headers, rest


# --- systemd ------------------------------------------------------------------------------


async def test_systemctl_listings(node_sim: Sim) -> None:
    """list-units / list-unit-files / list-timers in systemd 252's layout."""
    async with node(node_sim, "web-1") as conn:
        units = await run(conn, "systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "--no-pager", "teleport*")
        files = await run(conn, "systemctl", "list-unit-files", "--plain", "--no-legend",
                          "--no-pager", "teleport*")
        timers = await run(conn, "systemctl", "list-timers", "--all", "--no-pager", "teleport*")
    assert units.exit_status == files.exit_status == timers.exit_status == 0
    assert out(units) == (
        "teleport-update.service loaded inactive dead    Teleport auto-update service\n"
        "teleport.service        loaded active   running Teleport Service\n"
        "teleport-update.timer   loaded active   waiting Teleport update timer unit\n")
    assert out(files) == ("teleport-update.service static  -\n"
                          "teleport.service        enabled enabled\n"
                          "teleport-update.timer   enabled enabled\n")
    lines = out(timers).split("\n")
    assert re.fullmatch(r"NEXT +LEFT +LAST +PASSED +UNIT +ACTIVATES", lines[0])
    ts = r"\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.fullmatch(rf"{ts} .+ left +{ts} .+ ago +teleport-update\.timer "
                        r"teleport-update\.service", lines[1])
    assert lines[2:] == ["", "1 timers listed.", ""]
    # the NEXT column starts each field where the header says
    assert lines[1].index("teleport-update.timer") == lines[0].index("UNIT")


async def test_list_unit_files_equals_real_systemctl(node_sim: Sim, tmp_path: Path) -> None:
    """`systemctl --root=<materialised node> list-unit-files` prints what the node says."""
    from test_sim_ssh import mirror

    async with node(node_sim, "web-2") as conn:
        async with conn.start_sftp_client() as sftp:
            await mirror(sftp, "/etc/systemd", tmp_path)
        sim_plain = out(await run(conn, "systemctl", "list-unit-files", "--plain",
                                  "--no-legend", "--no-pager", "teleport*"))
        sim_legend = out(await run(conn, "systemctl", "list-unit-files", "--no-pager",
                                   "teleport*"))
    for args, want in ((["--plain", "--no-legend"], sim_plain), ([], sim_legend)):
        real = await anyio.run_process(["systemctl", f"--root={tmp_path}", "list-unit-files",
                                        *args, "--no-pager", "teleport*"], check=False)
        assert real.returncode == 0, real.stderr
        assert real.stdout.decode() == want


async def test_systemctl_cat_prints_unit_and_dropin(node_sim: Sim) -> None:
    """`systemctl cat`: `# path` headers, the files, a blank line before each drop-in."""
    async with node(node_sim, "web-1") as conn:
        r = await run(conn, "systemctl", "cat", "--no-pager", "teleport.service")
        both = await run(conn, "systemctl", "cat", "--no-pager", "teleport.service",
                         "teleport-update.timer")
        missing = await run(conn, "systemctl", "cat", "--no-pager", "nope.service")
    want = ("# /etc/systemd/system/teleport.service\n" + DEFAULT_UNIT + "\n"
            "# /etc/systemd/system/teleport.service.d/override.conf\n" + OVERRIDE)
    assert r.exit_status == 0 and out(r) == want
    assert out(both).startswith(want + "\n# /etc/systemd/system/teleport-update.timer\n")
    assert missing.exit_status == 1 and missing.stderr == b"No files found for nope.service.\n"


async def test_systemctl_status_shapes(node_sim: Sim) -> None:
    """`status`: the 252 layout, Drop-In lines, Main PID = the pid file, CGroup = cmdline."""
    async with node(node_sim, "web-1") as conn:
        st = await run(conn, "systemctl", "status", "--no-pager", "--full", "-n", "0",
                       "teleport.service")
        timer = await run(conn, "systemctl", "status", "--no-pager", "--full", "-n", "0",
                          "teleport-update.timer")
        svc = await run(conn, "systemctl", "status", "--no-pager", "--full", "-n", "0",
                        "teleport-update.service")
        nope = await run(conn, "systemctl", "status", "--no-pager", "nope.service")
        async with conn.start_sftp_client() as sftp:
            async with sftp.open("/run/teleport.pid", "rb") as f:
                pid = (await f.read()).decode().strip()
            async with sftp.open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = (await f.read()).decode().rstrip("\0").split("\0")
    text = out(st).split("\n")
    assert st.exit_status == 0
    assert text[0] == "● teleport.service - Teleport Service"
    assert text[1] == ("     Loaded: loaded (/etc/systemd/system/teleport.service; enabled; "
                       "preset: enabled)")
    assert text[2:4] == ["    Drop-In: /etc/systemd/system/teleport.service.d",
                         "             └─override.conf"]
    assert re.fullmatch(r"     Active: active \(running\) since \w{3} \d{4}-\d\d-\d\d "
                        r"\d\d:\d\d:\d\d UTC; \d+ days ago", text[4])
    assert text[5] == f"   Main PID: {pid} (teleport)"
    assert re.fullmatch(r"      Tasks: \d+ \(limit: \d+\)", text[6])
    assert re.fullmatch(r"     Memory: \d+\.\dM", text[7])
    assert re.fullmatch(r"        CPU: (\d+h )?\d+min [\d.]+m?s", text[8])
    assert text[9:11] == ["     CGroup: /system.slice/teleport.service",
                          f"             └─{pid} {' '.join(argv)}"]
    t = out(timer).split("\n")
    assert timer.exit_status == 0 and t[0] == "● teleport-update.timer - Teleport update timer unit"
    assert re.fullmatch(r"    Trigger: .+ UTC; .+ left", t[3])
    assert t[4] == "   Triggers: ○ teleport-update.service"
    s = out(svc).split("\n")
    assert svc.exit_status == 3 and s[0].startswith("○ teleport-update.service")
    assert s[1].endswith("/etc/systemd/system/teleport-update.service; static)")
    assert s[3] == "TriggeredBy: ● teleport-update.timer"
    assert "ExecStart=/usr/local/bin/teleport-update update (code=exited, status=0/SUCCESS)" \
        in s[4]
    assert nope.exit_status == 4 and nope.stderr == b"Unit nope.service could not be found.\n"


async def test_unit_exec_start_is_the_cmdline(node_sim: Sim) -> None:
    """A unit placed by `files:` decides cmdline, diag address and open-files limit."""
    async with node(node_sim, "auth-1") as auth, node(node_sim, "web-1") as web:
        async with auth.start_sftp_client() as sftp:
            pid = (await (await sftp.open("/run/teleport.pid", "rb")).read()).decode().strip()
            argv = (await (await sftp.open(f"/proc/{pid}/cmdline", "rb")).read()).split(b"\0")
            limits = (await (await sftp.open(f"/proc/{pid}/limits", "rb")).read()).decode()
        status, _, body = await http(auth, ("127.0.0.1", 3434), "/healthz")
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await http(auth, ("127.0.0.1", 3000), "/healthz")
        async with web.start_sftp_client() as sftp:
            wpid = (await (await sftp.open("/run/teleport.pid", "rb")).read()).decode().strip()
            wlimits = (await (await sftp.open(f"/proc/{wpid}/limits", "rb")).read()).decode()
    assert [a.decode() for a in argv[:-1]] == [
        "/usr/local/bin/teleport", "start", "--roles=auth", "--config=/etc/teleport.yaml",
        "--diag-addr=127.0.0.1:3434", "--pid-file=/run/teleport.pid"]
    assert AUTH_UNIT.read_text().count("--diag-addr=127.0.0.1:3434") == 1
    assert (status, body) == (200, b'{"status":"ok"}')
    assert refused.value.code == asyncssh.OPEN_CONNECT_FAILED
    assert re.search(r"^Max open files +1024 +524288 +files", limits, re.M)  # systemd default
    assert re.search(r"^Max open files +65536 +65536 +files", wlimits, re.M)  # the drop-in


async def test_plain_node_has_no_systemd(node_sim: Sim) -> None:
    """An `init: plain` node: no systemctl/journalctl; the wrappers say so as they would."""
    async with node(node_sim, "plain-1") as conn:
        r = await run(conn, "systemctl", "list-units")
        j = await run(conn, "journalctl", "-u", "teleport.service", prefix=["nice", "-n", "10"])
        bare = await run(conn, "journalctl", prefix=[])
    assert r.exit_status == 127
    assert r.stderr == b"ionice: failed to execute systemctl: No such file or directory\n"
    assert j.exit_status == 127 and j.stderr == "nice: ‘journalctl’: No such file or " \
                                                "directory\n".encode()
    assert bare.stderr == b"sh: 1: journalctl: not found\n"


# --- journald -----------------------------------------------------------------------------


async def test_journal_read_by_real_journalctl(node_sim: Sim) -> None:
    """The journal is a real journal file: short-iso-precise and JSON, -n and --since."""
    now = time.time()
    base = ["journalctl", "--no-pager", "-u", "teleport.service"]
    async with node(node_sim, "web-1") as conn:
        text = await run(conn, *base, "-o", "short-iso-precise", "-n", "5")
        window = await run(conn, *base, "-o", "json", "--since", f"@{int(now - 600)}")
        allj = await run(conn, *base, "-o", "json", "--since", "@0", "-n", "100000")
        bad = await run(conn, "journalctl", "--vacuum-size=1", prefix=[])
    assert text.exit_status == 0
    lines = out(text).splitlines()
    assert len(lines) == 5
    pat = (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000 web-1 teleport\[\d+\]: "
           r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \[[A-Z0-9:]+\] *\S.*")
    assert all(re.fullmatch(pat, line) for line in lines), lines
    docs = [json.loads(line) for line in out(window).splitlines()]
    assert docs and all(int(d["__REALTIME_TIMESTAMP"]) >= (int(now) - 600) * 1_000_000
                        for d in docs)
    assert 60 <= len(docs) <= 100  # one line every ~7.3 s over 600 s
    everything = [json.loads(line) for line in out(allj).splitlines()]
    assert len(everything) == 401  # 400 teleport lines and systemd's "Started"
    first = everything[0]
    assert first["_PID"] == "1" and first["MESSAGE"] == \
        "Started teleport.service - Teleport Service."
    d = everything[-1]
    assert d["_SYSTEMD_UNIT"] == "teleport.service" and d["SYSLOG_IDENTIFIER"] == "teleport"
    assert d["_TRANSPORT"] == "stdout" and d["PRIORITY"] == "6" and d["_HOSTNAME"] == "web-1"
    assert abs(int(d["__REALTIME_TIMESTAMP"]) / 1e6 - now) < 120  # ends near now
    assert bad.exit_status == 1 and b"not simulated" in bad.stderr


async def test_journal_file_is_a_systemd_journal(node_sim: Sim) -> None:
    """The file made by systemd-journal-remote opens with journalctl --file and verifies."""
    async with node(node_sim, "edge-1") as conn:
        r = await run(conn, "journalctl", "--no-pager", "-u", "teleport.service", "-o", "json",
                      "-n", "3")
    assert r.exit_status == 0
    journal = node_sim.state / "journals" / f"{node_sim.inst('edge-1')['uuid']}.journal"
    check = await anyio.run_process(["journalctl", f"--file={journal}", "--verify"],
                                    check=False)
    assert check.returncode == 0, check.stderr
    # edge-1 logs JSON: each MESSAGE is Teleport's JSON line
    for line in out(r).splitlines():
        msg = json.loads(json.loads(line)["MESSAGE"])
        assert set(msg) >= {"timestamp", "level", "caller", "message", "component"}


async def test_syslog_output_sets_priority(node_sim: Sim) -> None:
    """`log.output: syslog` gives per-level PRIORITY (3 for errors); stderr gives 6 always."""
    async with node(node_sim, "sys-1") as conn:
        r = await run(conn, "journalctl", "--no-pager", "-u", "teleport.service", "-o", "json",
                      "-p", "err")
    docs = [json.loads(line) for line in out(r).splitlines()]
    assert docs and {d["PRIORITY"] for d in docs} == {"3"}
    assert all(" ERROR [" in d["MESSAGE"] for d in docs)
    assert {d["_TRANSPORT"] for d in docs} == {"syslog"}


async def test_plain_log_file_ranged_read(node_sim: Sim) -> None:
    """`log.output` file: stat size is the content size; a read from an offset is its tail."""
    async with node(node_sim, "plain-1") as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/var/lib/teleport/teleport.log", "rb") as f:
            size = (await f.stat()).size
            assert size is not None
            whole = await f.read(size + 10, 0)
            tail = await f.read(4096, size - 1000)
        assert (await sftp.stat("/var/lib/teleport/teleport.log")).size == size
    assert isinstance(whole, bytes) and len(whole) == size
    assert tail == whole[-1000:]
    lines = whole.decode().splitlines()
    assert len(lines) == 250 and all(json.loads(line)["component"] for line in lines)


async def test_log_canaries_are_planted_and_listed(node_sim: Sim) -> None:
    """Bearer, cookie and token= canaries appear in real Teleport-shaped log messages."""
    canaries = set((node_sim.state / "canaries.txt").read_text().split())
    async with node(node_sim, "web-2") as conn:
        r = await run(conn, "journalctl", "--no-pager", "-u", "teleport.service", "-o",
                      "short-iso-precise", "--since", "@0", "-n", "100000")
    text = out(r)
    found = {c for c in canaries if c in text}
    kinds = {c.split("-")[1] for c in found}
    assert kinds == {"bearer", "cookie", "log_token"}
    assert re.search(r'header:"Authorization: Bearer CANARY-bearer-\d+-\w+"', text)
    assert re.search(r'header:"Cookie: session=CANARY-cookie-\d+-\w+"', text)
    assert re.search(r"\?token=CANARY-log_token-\d+-\w+", text)


# --- ss and df ----------------------------------------------------------------------------


def parse_ss(text: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in text.splitlines():
        f = line.split()
        rows.append((f[2], f[3], f[4]))
    return rows


async def test_ss_and_df(node_sim: Sim) -> None:
    """ss: the teleport pid's connections to auth (3025) / proxy tunnel (3024); df -Pk."""
    auth_ip = node_sim.config["auth_server"].split(":")[0]
    proxy_ip = node_sim.config["proxy"].split(":")[0]
    async with node(node_sim, "web-1") as web, node(node_sim, "edge-1") as edge:
        ws = out(await run(web, "ss", "-Htnp", "state", "established"))
        es = out(await run(edge, "ss", "-Htnp", "state", "established"))
        df = await run(web, "df", "-Pk", "/var/lib/teleport")
        nodf = await run(web, "df", "-Pk", "/nope")
    web_ip = node_sim.inst("web-1")["ip"]
    rows = parse_ss(ws)
    assert rows[0][0].startswith(f"{web_ip}:") and rows[0][1] == f"{auth_ip}:3025"
    assert rows[1][0] == f"{web_ip}:3022" and rows[1][1].startswith(f"{proxy_ip}:")
    assert all(re.fullmatch(r'users:\(\("teleport",pid=\d+,fd=\d+\)\)', r[2]) for r in rows)
    assert parse_ss(es)[0][1] == f"{proxy_ip}:3024"
    lines = out(df).splitlines()
    assert lines[0] == "Filesystem     1024-blocks    Used Available Capacity Mounted on" \
        or re.fullmatch(r"Filesystem +1024-blocks +Used +Available +Capacity Mounted on",
                        lines[0])
    f = lines[1].split()
    assert len(f) == 6 and f[5] == "/" and f[4].endswith("%")
    assert int(f[1]) > int(f[2]) + int(f[3])  # 5 % reserved
    assert nodf.exit_status == 1 and nodf.stderr == b"df: /nope: No such file or directory\n"


def test_ss_layout_equals_real_ss() -> None:
    """Real `ss -Htnp` on real loopback sockets lays out lines as ss_output() does."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.251.7.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    clients = [socket.create_connection(("127.251.7.1", port), source_address=(src, 0))
               for src in ("127.251.1.42", "127.251.12.2")]
    accepted = [srv.accept()[0] for _ in clients]
    try:
        def real(flags: str) -> str:
            return subprocess.run(["ss", flags, "state", "established", "src",
                                   "127.251.0.0/16"], capture_output=True, text=True,
                                  timeout=10, check=True).stdout

        rows = []
        pid, comm = 0, ""
        for line in real("-Htnp").splitlines():
            f = line.split()
            m = re.fullmatch(r'users:\(\("([^"]+)",pid=(\d+),fd=(\d+)\)\)', f[4])
            assert m
            comm, pid = m.group(1), int(m.group(2))
            lip, lport = f[2].rsplit(":", 1)
            pip, pport = f[3].rsplit(":", 1)
            rows.append((lip, int(lport), pip, int(pport), int(m.group(3))))
        assert len(rows) == 4
        for flags in ("-Htnp", "-tnp", "-Htn", "-tn"):
            want = ss_output(rows, pid, comm, header="H" not in flags, process="p" in flags)
            assert want.decode() == real(flags), flags
    finally:
        for s in clients + accepted + [srv]:
            s.close()


def test_df_layout_equals_real_df() -> None:
    """coreutils df -Pk lays out its table as df_output() does (same numbers)."""
    from tpdump.sim.hostcmds import df_output

    real = subprocess.run(["df", "-Pk", "/", "/proc"], capture_output=True, text=True,
                          timeout=10, check=True).stdout
    rows = []
    for line in real.splitlines()[1:]:
        f = line.split()
        rows.append((f[0], int(f[1]), int(f[2]), int(f[3]), f[5]))
    assert df_output(rows).decode() == real


def test_relative_times_equal_systemd_analyze() -> None:
    """format_timestamp(_relative) print what systemd's own formatter prints."""
    for delta in (3 * 86400 + 1800, 9 * 3600 + 5, 26 * 3600, 40 * 86400, 400 * 86400):
        now = time.time()
        ts = int(now) - delta
        real = subprocess.run(["systemd-analyze", "timestamp", f"@{ts}"], capture_output=True,
                              text=True, timeout=10, check=True, env={"TZ": "UTC"}).stdout
        fields = dict(line.strip().split(": ", 1) for line in real.splitlines() if ": " in line)
        assert fields["Normalized form"] == format_timestamp(ts)
        assert fields["From now"] == format_timestamp_relative(ts, time.time())


# --- diag endpoints and the debug socket --------------------------------------------------


async def test_diag_endpoints(node_sim: Sim) -> None:
    """/metrics (Prometheus text, real names), /healthz, /readyz per scenario readyz."""
    async with node(node_sim, "web-1") as web, node(node_sim, "edge-1") as edge, \
            node(node_sim, "proxy-1") as proxy:
        code, headers, metrics = await http(web, ("127.0.0.1", 3000), "/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        hz = await http(web, ("127.0.0.1", 3000), "/healthz")
        assert (hz[0], hz[1]["content-type"], hz[2]) == (200, "application/json",
                                                         b'{"status":"ok"}')
        rd = await http(web, ("localhost", 3000), "/readyz")
        er = await http(edge, ("127.0.0.1", 3000), "/readyz")
        pr = await http(proxy, ("127.0.0.1", 3000), "/readyz")
        pm = (await http(proxy, ("127.0.0.1", 3000), "/metrics"))[2]
        nf = await http(web, ("127.0.0.1", 3000), "/nope")
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await http(web, ("127.0.0.1", 3001), "/metrics")
    text = metrics.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP \w+ .+|TYPE \w+ (gauge|counter|summary))", line)
            continue
        m = re.fullmatch(r'([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)', line)
        assert m, line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    assert samples["process_state"] == 2  # degraded
    assert re.search(r'^teleport_build_info\{gitref="v17\.4\.2-0-g[0-9a-f]+",'
                     r'goversion="go1\.23\.7",version="17\.4\.2"\} 1$', text, re.M)
    assert samples['teleport_services{service_name="ssh_service"}'] == 1
    assert samples["process_max_fds"] == 65536
    assert {"go_goroutines", "go_threads", "process_start_time_seconds",
            "process_resident_memory_bytes"} <= set(samples)
    assert rd[0] == 503 and json.loads(rd[2]) == {
        "status": "teleport is in a degraded state, check logs for details",
        "pid": int(json.loads(rd[2])["pid"])}
    # v16 answers without pid; `starting` is 400 in lib/service/state.go
    assert er[0] == 400 and er[2] == b'{"status":"teleport is starting and hasn\'t joined ' \
                                     b'the cluster yet"}'
    assert pr[0] == 200 and json.loads(pr[2])["status"] == "ok"
    assert b'teleport_reverse_tunnels_connected{type="node"} 1\n' in pm
    assert nf[0] == 404 and nf[2] == b"404 page not found\n"
    assert refused.value.code == asyncssh.OPEN_CONNECT_FAILED
    assert refused.value.reason == "Connection refused"


async def test_diag_addr_from_teleport_yaml_any_address(node_sim: Sim) -> None:
    """`diag_addr: 0.0.0.0:3001` in a files: teleport.yaml listens on every local address."""
    ip = node_sim.inst("sys-1")["ip"]
    async with node(node_sim, "sys-1") as conn:
        for host in ("127.0.0.1", ip, "localhost"):
            assert (await http(conn, (host, 3001), "/healthz"))[0] == 200


async def test_debug_socket(node_sim: Sim) -> None:
    """`<data_dir>/debug.sock` is a socket (lstat) answering /log-level; other paths fail."""
    async with node(node_sim, "sys-1") as conn:
        async with conn.start_sftp_client() as sftp:
            attrs = await sftp.lstat("/var/lib/teleport/debug.sock")
        assert attrs.permissions is not None and stat.S_ISSOCK(attrs.permissions)
        code, headers, body = await http(conn, "/var/lib/teleport/debug.sock", "/log-level")
        assert (code, body) == (200, b"DEBUG")  # severity DEBUG in its teleport.yaml
        assert headers["content-type"] == "text/plain; charset=utf-8"
        put = await http(conn, "/var/lib/teleport/debug.sock", "/log-level", "PUT", b"info")
        assert put[2] == b'Changed log level from "DEBUG" to "INFO".'
        assert (await http(conn, "/var/lib/teleport/debug.sock", "/log-level"))[2] == b"INFO"
        with pytest.raises(asyncssh.ChannelOpenError):
            await http(conn, "/var/lib/teleport/nope.sock", "/log-level")
    async with node(node_sim, "web-1") as conn:
        assert (await http(conn, "/var/lib/teleport/debug.sock", "/log-level"))[2] == b"INFO"


# --- data_dir and the process-state database ----------------------------------------------


async def test_process_state_sqlite(node_sim: Sim, tmp_path: Path) -> None:
    """proc/sqlite.db read over SFTP is a SQLite file with lite.go's schema and real keys."""
    async with node(node_sim, "web-2") as conn, conn.start_sftp_client() as sftp:
        names = sorted(await sftp.listdir("/var/lib/teleport"))
        async with sftp.open("/var/lib/teleport/proc/sqlite.db", "rb") as f:
            data = await f.read()
        size = (await sftp.stat("/var/lib/teleport/proc/sqlite.db")).size
    assert {"cache", "debug.sock", "host_uuid", "log", "proc"} <= set(names)
    assert isinstance(data, bytes) and data.startswith(b"SQLite format 3\0") and size == len(data)
    path = tmp_path / "sqlite.db"
    path.write_bytes(data)
    con = sqlite3.connect(path)
    cols = [r[1] for r in con.execute("PRAGMA table_info(kv)")]
    assert cols == ["key", "modified", "expires", "value", "revision"]
    assert [r[1] for r in con.execute("PRAGMA table_info(events)")] == [
        "id", "type", "created", "kv_key", "kv_modified", "kv_expires", "kv_value",
        "kv_revision"]
    rows = dict(con.execute("SELECT key, value FROM kv").fetchall())
    con.close()
    assert {"/ids/instance/current", "/ids/node/current", "/states/node/state",
            "/teleport/last-known-version"} <= set(rows)
    ident = json.loads(rows["/ids/instance/current"])
    assert ident["kind"] == "identity" and ident["metadata"]["name"] == "current"
    key_pem = base64.b64decode(ident["spec"]["key"])
    assert key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert base64.b64decode(ident["spec"]["tls_cert"]).startswith(b"-----BEGIN CERTIFICATE")
    assert base64.b64decode(ident["spec"]["ssh_cert"]).startswith(b"ssh-ed25519-cert-v01")
    canaries = (node_sim.state / "canaries.txt").read_text().split()
    planted = [c for c in canaries if c.startswith("CANARYprockey") and c.encode() in key_pem]
    assert len(planted) == 1
    assert base64.b64encode(planted[0].encode()).decode() in canaries
    assert base64.b64encode(planted[0].encode()) in rows["/ids/instance/current"]
    state = json.loads(rows["/states/node/state"])
    assert state["kind"] == "state" and "rotation" in state["spec"]
    assert rows["/teleport/last-known-version"] == b"17.4.2"


# --- faults on the new operations ---------------------------------------------------------


async def test_faults_on_forwarding(node_sim: Sim) -> None:
    """hang: exec never ends, diag still answers; slow: diag waits delay_s; garbage: the
    metrics body has invalid bytes and is cut."""
    async with node(node_sim, "hang-1") as hang:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(hang.run("systemctl list-units"), 0.6)
        assert (await http(hang, ("127.0.0.1", 3000), "/healthz"))[0] == 200
    async with node(node_sim, "slow-1") as slow:
        start = time.monotonic()
        assert (await http(slow, ("127.0.0.1", 3000), "/readyz"))[0] == 200
        assert time.monotonic() - start >= 0.4
    async with node(node_sim, "garbage-1") as garbage:
        reader, writer = await garbage.open_connection("127.0.0.1", 3000)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
        st = await run(garbage, "systemctl", "status", "--no-pager", "teleport.service")
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"\xff\xfe\x00" in raw
    assert not raw.endswith(b"0\r\n\r\n")
    assert b"\xff\xfe" in (st.stdout or b"")


def test_find_printf_matches_gnu_find(tmp_path: Path) -> None:
    """The simulated `find DIR -maxdepth N -printf` lists what real GNU find lists on the
    node's materialised files (same types, sizes and paths)."""
    import subprocess

    from tpdump.sim.cluster import SimCluster
    from tpdump.sim.scenario import load_scenario
    from tpdump.sim.shell import ExecResult, run_command
    from tpdump.sim.vfs import FSBuilder, materialize

    scen = tmp_path / "s.yaml"
    scen.write_text("groups: [{name: a, count: 1, services: [node]}]\n")
    cluster = SimCluster(load_scenario(scen), net=249)
    node = cluster.nodes[0]
    fs = FSBuilder(cluster).fs(node)
    tmp_path = tmp_path / "root"
    got = run_command("find /var/lib/teleport -maxdepth 5 -printf '%y %s %p\\n'", fs, node,
                      0.0, cluster)
    materialize(fs, tmp_path)
    real = subprocess.run(["find", f"{tmp_path}/var/lib/teleport", "-maxdepth", "5",
                           "-printf", "%y %s %p\\n"], capture_output=True, text=True, check=True)
    want = sorted(line.replace(str(tmp_path), "", 1) for line in real.stdout.splitlines()
                  if not line.startswith("d "))
    have = sorted(line for line in got.stdout.decode().splitlines() if not line.startswith("d "))
    assert isinstance(got, ExecResult)
    assert have == want and have
