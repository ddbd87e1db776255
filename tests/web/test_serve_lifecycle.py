"""`tpdump serve` start and stop: a generated token, SIGTERM during a dump (the archive is
still finished and indexed), and the listen address."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.web.conftest import FAST, serving
from tpdump.serve import parse_listen


def test_generated_token_is_printed_and_works(sim_state: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpdump", "serve", "--config", str(sim_state / "tpdump.yaml"),
         "--dir", str(tmp_path / "dumps"), "--listen", "127.0.0.1:0", *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=([A-Za-z0-9_-]{40,})", line)
        assert match, line
        url, token = match.groups()
        req = urllib.request.Request(url + "api/dumps",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["entries"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0


def test_sigterm_during_a_dump_finishes_and_indexes_it(sim_state: Path, tmp_path: Path
                                                       ) -> None:
    with serving(tmp_path, sim_state) as s:
        status, _ = s.start(profile="standard")
        assert status == 202
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        s.proc.wait(timeout=15)
        assert time.monotonic() - started < 10
    assert s.proc.returncode == 0
    index = json.loads((s.dump_dir / "index.json").read_text())
    (entry,) = index["entries"]
    assert entry["verdict"] in ("interrupted", "complete"), entry  # it may have been fast
    assert (s.dump_dir / entry["name"]).stat().st_size == entry["bytes"]
    assert not [p for p in s.dump_dir.iterdir() if p.name.startswith(".run-")]


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8765") == ("::1", 8765)
    assert parse_listen("localhost") == ("localhost", 8765)


def test_address_in_use_is_a_usage_error(tmp_path: Path) -> None:
    import socket

    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tpdump", "serve", "--dir", str(tmp_path / "d"),
             "--listen", f"127.0.0.1:{port}", "--token-file", str(token)],
            capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "cannot listen" in done.stderr
