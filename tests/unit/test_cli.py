"""The command line: explain, usage errors with exit 2, --print-config."""

import subprocess
import sys
from pathlib import Path

import pytest

from tpdump.cli import main


def test_explain_known_and_unknown(capsys) -> None:  # type: ignore[no-untyped-def]
    """`tpdump explain TPD200` prints the explanation; an unknown code exits 2."""
    assert main(["explain", "tpd200"]) == 0
    assert "connection refused" in capsys.readouterr().out
    assert main(["explain", "TPD999999"]) == 2


def test_bad_flag_value_exits_2(capsys) -> None:  # type: ignore[no-untyped-def]
    """A bad number or an unknown flag is a usage error (exit 2)."""
    assert main(["cluster", "--concurrency", "many"]) == 2
    assert main(["cluster", "--no-such-flag"]) == 2


def test_missing_proxy_is_a_usage_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Without --proxy (or targets) tpdump says what is missing and exits 2."""
    assert main(["cluster", "--auth-server", "x:3025", "-o", str(tmp_path)]) == 2
    assert "--proxy" in capsys.readouterr().err


def test_print_config_shows_merged_settings(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--print-config shows profile defaults overridden by the file and flags."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("concurrency: 5\nproxy: p:3023\n")
    assert main(["cluster", "--config", str(cfg), "--node-timeout", "7",
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "concurrency: 5" in out and "node_timeout: 7.0" in out and "proxy: p:3023" in out


def test_python_dash_m() -> None:
    """`python -m tpdump` runs the same command line."""
    done = subprocess.run([sys.executable, "-m", "tpdump", "explain", "TPD203"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "host key" in done.stdout


def test_codes_doc_is_in_sync() -> None:
    """docs/codes.md explains every registered code with its current text."""
    from tpdump.cli import codes_markdown
    from tpdump.errors import CODES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "codes.md").read_text()
    assert doc == codes_markdown(), "regenerate: tpdump explain --markdown > docs/codes.md"
    for c in CODES.values():
        assert f"## {c.code}: {c.title}" in doc


def test_a_bug_exits_fatal_not_incomplete(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 means "archive written but incomplete" (a timer unit treats it as success):
    an unexpected exception must exit 3 with its traceback."""
    from tpdump import cli

    def boom(code: str | None) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_explain", boom)
    assert cli.main(["explain", "TPD200"]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "internal error" in err
