"""Fixtures of the web UI and snapshot tests: one simulated cluster (5 nodes, with the
Kubernetes stand-in) shared by the module, and `tpdump serve` as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import simulated

SCENARIO: dict[str, Any] = {
    "cluster_name": "web.example.com", "teleport_version": "17.4.2", "seed": 5,
    "groups": [{"name": "web", "count": 5, "services": ["node"], "rtt_ms": 20}],
    "kube": {"enabled": True, "namespaces": ["teleport-cluster"], "pods": 2},
}
TOKEN = "test-token-0123456789-abcdefghijkl"
FAST = ["--connect-timeout", "3", "--node-timeout", "20", "--item-timeout", "8", "-q"]


@pytest.fixture(scope="session")
def sim_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with simulated(tmp_path_factory.mktemp("websim"), SCENARIO) as state:
        yield state


@dataclass
class Served:
    """A running `tpdump serve`."""

    url: str  # http://127.0.0.1:PORT/
    token: str
    dump_dir: Path
    proc: subprocess.Popen[str]

    def request(self, path: str, *, method: str = "GET", token: str | None = None,
                body: bytes | None = None, headers: Mapping[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; `token` goes in Authorization."""
        req = urllib.request.Request(self.url.rstrip("/") + path, data=body, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.request(path, **kw)
        return status, json.loads(body) if body else None

    def start(self, scope: str = "cluster", profile: str = "speed") -> tuple[int, Any]:
        return self.json("/api/dumps", method="POST", token=self.token,
                         body=json.dumps({"scope": scope, "profile": profile}).encode(),
                         headers={"Content-Type": "application/json"})

    def wait_idle(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, state = self.json("/api/state", token=self.token)
            job = state["job"]
            if job is None or not job["running"]:
                return dict(job or {})
            time.sleep(0.2)
        raise AssertionError("the dump did not finish in time")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextmanager
def serving(tmp: Path, state: Path, *extra: str, token: str = TOKEN) -> Iterator[Served]:
    """`tpdump serve --config STATE/tpdump.yaml --dir TMP/dumps` on a free loopback port."""
    tmp.mkdir(parents=True, exist_ok=True)
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    dump_dir = tmp / "dumps"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpdump", "serve", "--config", str(state / "tpdump.yaml"),
         "--dir", str(dump_dir), "--listen", "127.0.0.1:0", "--token-file", str(token_file),
         *FAST, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no address printed: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        assert token not in line, "a token from --token-file must not be printed"
        yield Served(match.group(1), token, dump_dir, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
