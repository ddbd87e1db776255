"""tpdump's changes to asyncssh (tpdump.transport.tune_asyncssh): a real asyncssh server on
loopback counts the SSH_MSG_IGNORE packets a client sends under each cipher."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import asyncssh
import pytest
from asyncssh.connection import SSHConnection

import tpdump.transport  # noqa: F401  (applies tune_asyncssh at import)

_IGNORE = 2  # SSH_MSG_IGNORE


class _Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test is about the packets after it


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    data = await process.stdin.read(1 << 20)
    process.stdout.write(data[::-1])
    process.exit(0)


async def _ignores_received(cipher: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, bytes]:
    received: Counter[int] = Counter()
    original = SSHConnection._packet_handlers[_IGNORE]

    def counting(self: Any, pkttype: int, pktid: int, packet: Any) -> None:
        if isinstance(self, asyncssh.SSHServerConnection):
            received[pkttype] += 1
        original(self, pkttype, pktid, packet)

    monkeypatch.setitem(SSHConnection._packet_handlers, _IGNORE, counting)
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(_Open, "127.0.0.1", 0, server_host_keys=[key],
                                          process_factory=_echo, encoding=None)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect("127.0.0.1", port, known_hosts=None, username="t",
                                    encryption_algs=[cipher]) as conn:
            results = []
            for i in range(5):  # several channels: open, data, EOF, close each
                r = await conn.run("echo", input=b"payload %d" % i, encoding=None)
                results.append(r.stdout)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(results[-1], bytes)
    return received[_IGNORE], results[-1]


@pytest.mark.parametrize("cipher", ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
                                    "chacha20-poly1305@openssh.com"])
def test_no_ignore_packets_under_aead_ciphers(cipher: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ignores, out = anyio.run(_ignores_received, cipher, monkeypatch)
    assert out == b"4 daolyap"
    assert ignores == 0


def test_ignore_packets_kept_for_other_ciphers(monkeypatch: pytest.MonkeyPatch) -> None:
    """CTR (and CBC) ciphers keep asyncssh's ignore packet in front of each packet."""
    ignores, out = anyio.run(_ignores_received, "aes256-ctr", monkeypatch)
    assert out == b"4 daolyap"
    assert ignores >= 10
