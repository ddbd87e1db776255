"""Bad flags and bad config files, through the real command (`python -m tpdump ...` as a
subprocess): exit 2, one line on stderr with the TPD code, no traceback, no archive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (name, arguments after `tpdump`, a word the message must hold). {d} is a scratch
# directory, {cfg} a config file written from CONFIGS.
CASES: list[tuple[str, list[str], str]] = [
    ("unknown flag", ["cluster", "--no-such-flag", "-o", "{d}/"], "--no-such-flag"),
    ("unknown flag node", ["node", "--proxy", "p:3023", "-o", "{d}/"], "--proxy"),
    ("unknown command", ["clusters"], "clusters"),
    ("no command", [], "COMMAND"),
    ("missing value", ["cluster", "--concurrency"], "--concurrency"),
    ("bad size", ["cluster", "--proxy", "p:3023", "--max-size", "5XB", "-o", "{d}/"],
     "5XB"),
    ("huge size", ["cluster", "--proxy", "p:3023", "--max-size", "9" * 400 + "GB",
                   "-o", "{d}/"], "max_size"),
    ("zero split", ["cluster", "--proxy", "p:3023", "--split-size", "0", "-o", "{d}/"],
     "split_size"),
    ("negative concurrency", ["cluster", "--proxy", "p:3023", "--concurrency", "-4",
                              "-o", "{d}/"], "concurrency"),
    ("word concurrency", ["cluster", "--concurrency", "many", "-o", "{d}/"], "many"),
    ("bad duration", ["cluster", "--proxy", "p:3023", "--timeout", "10m", "-o", "{d}/"],
     "10m"),
    ("negative duration", ["node", "--timeout", "-1", "-o", "{d}/"], "timeout"),
    ("nan duration", ["node", "--timeout", "nan", "-o", "{d}/"], "timeout"),
    ("infinite duration", ["kube", "--kube-timeout", "inf", "-o", "{d}/"], "kube_timeout"),
    ("bad profile", ["node", "--profile", "fastest", "-o", "{d}/"], "fastest"),
    ("bad format", ["node", "--format", "rar", "-o", "{d}/"], "rar"),
    ("bad log format", ["node", "--log-format", "xml", "-o", "{d}/"], "xml"),
    ("bad skip item", ["node", "--skip-items", "everything", "-o", "{d}/"], "everything"),
    ("forbidden kind", ["cluster", "--proxy", "p:3023", "--include-kinds", "all",
                        "-o", "{d}/"], "all"),
    ("missing proxy", ["cluster", "--auth-server", "a:3025", "-o", "{d}/"], "--proxy"),
    ("sysroot not a dir", ["node", "--sysroot", "{d}/nope", "-o", "{d}/"], "--sysroot"),
    ("no obfuscate", ["node", "--no-obfuscate", "--obfuscate-uuids", "-o", "{d}/"],
     "--obfuscate"),
    ("nonexistent config", ["cluster", "--config", "{d}/none.yaml", "-o", "{d}/"],
     "none.yaml"),
    ("config is a directory", ["node", "--config", "{d}", "-o", "{d}/"], "cannot read"),
    ("config not yaml", ["cluster", "--config", "{cfg}", "-o", "{d}/"], "not valid YAML"),
    ("config not utf-8", ["node", "--config", "{cfg}", "-o", "{d}/"], "UTF-8"),
    ("config not a mapping", ["node", "--config", "{cfg}", "-o", "{d}/"], "mapping"),
    ("config unknown key", ["node", "--config", "{cfg}", "-o", "{d}/"], "colour"),
    ("config wrong type", ["node", "--config", "{cfg}", "-o", "{d}/"], "concurrency"),
    ("config bad date", ["node", "--config", "{cfg}", "-o", "{d}/"], "not valid YAML"),
    ("config nan", ["node", "--config", "{cfg}", "-o", "{d}/"], "timeout"),
    ("config bad profile type", ["node", "--config", "{cfg}", "-o", "{d}/"], "profile"),
    ("config bad targets", ["cluster", "--config", "{cfg}", "-o", "{d}/"], "targets"),
    ("config huge concurrency", ["cluster", "--config", "{cfg}", "-o", "{d}/"],
     "concurrency: too large"),
    ("config huge timeout", ["node", "--config", "{cfg}", "-o", "{d}/"],
     "item_timeout: too large"),
    ("config huge entries", ["node", "--config", "{cfg}", "-o", "{d}/"],
     "datadir_entries: too large"),
    ("config huge byte cap", ["node", "--config", "{cfg}", "-o", "{d}/"],
     "log_bytes: too large"),
    ("config huge byte cap int", ["node", "--config", "{cfg}", "-o", "{d}/"],
     "sqlite_bytes: too large"),
    ("huge concurrency flag", ["cluster", "--proxy", "p:3023", "--concurrency",
                               "100000000000000000000", "-o", "{d}/"], "concurrency"),
    ("huge timeout flag", ["node", "--timeout", "1e300", "-o", "{d}/"], "timeout"),
    ("huge max size flag", ["node", "--max-output", "2TiB", "-o", "{d}/"], "max_output"),
    ("snapshot bad keep", ["snapshot", "--dir", "{d}/s", "--keep", "0", "--proxy", "p:3023"],
     "--keep"),
    ("snapshot bad age", ["snapshot", "--dir", "{d}/s", "--max-age", "3 years",
                          "--proxy", "p:3023"], "--max-age"),
    ("snapshot bad total", ["snapshot", "--dir", "{d}/s", "--max-total-size", "lots",
                            "--proxy", "p:3023"], "lots"),
    ("snapshot bad scope", ["snapshot", "--dir", "{d}/s", "--scope", "everything"],
     "everything"),
    ("snapshot no dir", ["snapshot", "--proxy", "p:3023"], "--dir"),
    ("snapshot output", ["snapshot", "--dir", "{d}/s", "-o", "{d}/x", "--proxy", "p:3023"],
     "--output"),
    ("serve missing token file", ["serve", "--dir", "{d}/s", "--token-file", "{d}/t"],
     "--token-file"),
    ("serve short token", ["serve", "--dir", "{d}/s", "--token-file", "{cfg}"],
     "16 characters"),
    ("serve binary token", ["serve", "--dir", "{d}/s", "--token-file", "{cfg}"], "UTF-8"),
    ("serve bad profile", ["serve", "--dir", "{d}/s", "--profile", "x"], "profile"),
    ("serve bad config", ["serve", "--dir", "{d}/s", "--config", "{cfg}"], "unknown option"),
    ("inspect missing", ["inspect", "{d}/none.tar.gz"], "TPD401"),
    ("inspect garbage", ["inspect", "{cfg}"], "TPD401"),
    ("analyze garbage", ["analyze", "{cfg}"], "TPD401"),
    ("diff garbage", ["diff", "{cfg}", "{cfg}"], "TPD401"),
]
CONFIGS: dict[str, bytes] = {
    "config not yaml": b"concurrency: [1, 2\nproxy: {\n",
    "config not utf-8": b"proxy: \xff\xfe:3023\n",
    "config not a mapping": b"- proxy\n- p:3023\n",
    "config unknown key": b"proxy: p:3023\ncolour: blue\n",
    "config wrong type": b"proxy: p:3023\nconcurrency: lots\n",
    "config bad date": b"proxy: p:3023\ncluster-name: 2024-02-30\n",
    "config nan": b"timeout: .nan\n",
    "config bad profile type": b"profile: [small]\n",
    "config bad targets": b"proxy: p:3023\ntargets: [a, b]\n",
    "config huge concurrency": b"proxy: p:3023\nconcurrency: 100000000000000000000\n",
    "config huge timeout": b"item-timeout: 604801\n",
    "config huge entries": b"datadir_entries: 10000001\n",
    "config huge byte cap": b"log-bytes: 1.5TiB\n",
    "config huge byte cap int": b"sqlite_bytes: 1099511627777\n",
    "serve short token": b"short\n",
    "serve binary token": b"\xff\xfe0123456789abcdefghij\n",
    "serve bad config": b"nope: 1\n",
    "inspect garbage": b"not an archive at all",
    "analyze garbage": b"PK\x03\x04 broken zip",
    "diff garbage": b"\x1f\x8b broken gzip",
}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env.pop("KUBECONFIG", None)
    return subprocess.run([sys.executable, "-m", "tpdump", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("name", "args", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_flag_or_config_is_one_clear_line(tmp_path: Path, name: str, args: list[str],
                                              needle: str) -> None:
    """A bad flag or config exits 2 with one `tpdump: TPDnnn: …` line naming the culprit,
    no traceback, and writes no archive."""
    scratch = tmp_path / "d"
    scratch.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(CONFIGS.get(name, b""))
    argv = [a.replace("{d}", str(scratch)).replace("{cfg}", str(cfg)) for a in args]
    done = _run(argv, tmp_path)
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, err)
    assert "Traceback" not in done.stderr
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tpdump: TPD"), err
    assert needle in lines[0], err
    made = [p for p in tmp_path.rglob("*") if p.name.startswith("tpdump-")
            or p.suffix in (".gz", ".zip", ".partial")]
    assert made == [], made
    assert done.stdout == ""


def test_help_and_version_still_exit_0(tmp_path: Path) -> None:
    """--help and --version are not errors: they print on stdout and exit 0."""
    for args in (["--help"], ["cluster", "--help"], ["--version"]):
        done = _run(args, tmp_path)
        assert done.returncode == 0 and done.stdout and not done.stderr, args
