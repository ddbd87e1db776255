"""tctl runner: error cleaning and classification, deadlines, stderr with exit 0."""

import stat
import time
from pathlib import Path

import pytest

from tpdump.tctl import Tctl, TctlFailure, classify, clean_message

RED = "\x1b[31mERROR: \x1b[0m"


def fake_tctl(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tctl"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_clean_message_strips_ansi_and_prefix() -> None:
    """The red `ERROR:` prefix tctl prints even off a terminal is removed."""
    assert clean_message(RED + 'access denied to perform action "list" on "node"\n') == \
        'access denied to perform action "list" on "node"'


@pytest.mark.parametrize(("message", "expected"), [
    ('access denied to perform action "list" on "cert_authority"', TctlFailure.ACCESS_DENIED),
    ('Cannot connect to the auth server. Is the auth server running on "127.0.0.1:3025"?',
     TctlFailure.CANNOT_CONNECT),
    ('unsupported resource: "frobnicator"', TctlFailure.UNSUPPORTED),
    ("something else broke", TctlFailure.OTHER),
])
def test_classify(message: str, expected: TctlFailure) -> None:
    """Each known tctl message maps to its class."""
    assert classify(message) is expected


@pytest.mark.anyio
async def test_error_exit_is_classified(tmp_path: Path) -> None:
    """An ANSI-prefixed error with exit 1 becomes a classified failure with a clean message."""
    path = fake_tctl(tmp_path, f"printf '{RED}access denied to perform action \"list\" on "
                               f"\"node\"\\n' >&2; exit 1")
    result = await Tctl(path, auth_server=None, identity=None, concurrency=2,
                        timeout=5).run("get", "node", "--format=json")
    assert result.failure is TctlFailure.ACCESS_DENIED
    assert result.message.startswith("access denied")
    assert result.returncode == 1


@pytest.mark.anyio
async def test_stderr_with_exit_zero_is_not_a_failure(tmp_path: Path) -> None:
    """Cluster alerts on stderr with exit 0 leave the call successful."""
    path = fake_tctl(tmp_path, "echo '[]'; echo 'Cluster alert: upgrade soon' >&2; exit 0")
    result = await Tctl(path, auth_server="a:3025", identity="/id", concurrency=1,
                        timeout=5).run("get", "node", "--format=json")
    assert result.ok
    assert "alert" in result.stderr
    assert result.stdout.strip() == b"[]"


@pytest.mark.anyio
async def test_global_flags_are_passed(tmp_path: Path) -> None:
    """--auth-server and -i reach tctl before the command."""
    path = fake_tctl(tmp_path, 'printf "%s\\n" "$@"')
    result = await Tctl(path, auth_server="proxy.example.com:443", identity="/tmp/id",
                        concurrency=1, timeout=5).run("status")
    assert result.stdout.decode().split() == ["--auth-server=proxy.example.com:443", "-i",
                                              "/tmp/id", "status"]


@pytest.mark.anyio
async def test_hanging_tctl_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    """A tctl that never answers is killed at the deadline and classified as timed out."""
    path = fake_tctl(tmp_path, "exec sleep 30")
    started = time.monotonic()
    result = await Tctl(path, auth_server=None, identity=None, concurrency=1,
                        timeout=0.5).run("status")
    assert result.failure is TctlFailure.TIMEOUT
    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_missing_tctl(tmp_path: Path) -> None:
    """A tctl path that does not exist is reported, not raised."""
    result = await Tctl(str(tmp_path / "nope"), auth_server=None, identity=None,
                        concurrency=1, timeout=2).run("status")
    assert result.failure is TctlFailure.NOT_FOUND


@pytest.mark.anyio
async def test_get_all_is_refused(tmp_path: Path) -> None:
    """tpdump can never run `tctl get all` or pass --with-secrets."""
    tctl = Tctl(fake_tctl(tmp_path, "exit 0"), auth_server=None, identity=None, concurrency=1,
                timeout=2)
    with pytest.raises(ValueError):
        await tctl.run("get", "all")
    with pytest.raises(ValueError):
        await tctl.run("get", "cert_authority", "--with-secrets")
