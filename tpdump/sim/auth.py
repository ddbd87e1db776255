"""The simulated auth server: answers the tctl stand-in over loopback, with auth faults.

Protocol: one JSON line in (`{"args": [...], "debug": bool}`), one JSON line out
(`{"stdout", "stderr", "code"}`). Faults: `down` (nothing listens), `hang` (never answers),
`slow` (every answer delayed `delay_s`); cluster alerts go to stderr with exit 0.
"""

from __future__ import annotations

import asyncio
import json
import logging

from tpdump.sim.cluster import SimCluster
from tpdump.sim.objects import RED, RESET, Objects, Reply

log = logging.getLogger(__name__)
MAX_REQUEST = 1 << 20


class AuthServer:
    """Serves tctl requests for one simulated cluster."""

    def __init__(self, cluster: SimCluster, objects: Objects) -> None:
        self.cluster = cluster
        self.objects = objects
        self.spec = cluster.scenario.auth
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on the auth address unless the auth fault is `down`."""
        if self.spec.fault == "down":
            return
        host, port = self.cluster.auth_addr
        self._server = await asyncio.start_server(self._handle, host, port,
                                                  limit=MAX_REQUEST)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()

    def answer(self, args: list[str], debug: bool = False) -> Reply:
        """The reply to one command, alerts included (no fault applied)."""
        reply = self.objects.run(args, debug=debug)
        if reply.code == 0 and args[:1] != ["version"] and self.spec.alerts:
            # common.ShowClusterAlerts: HIGH severity alerts, red, each followed by a blank line.
            alerts = "".join(f"{RED}{a}{RESET}\n\n" for a in self.spec.alerts)
            reply = Reply(reply.stdout, reply.stderr + alerts, reply.code)
        return reply

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            line = await reader.readline()
            req = json.loads(line)
            args = [str(a) for a in req.get("args", [])]
            if self.spec.fault == "hang":
                # Never answer: wait until the client goes away (EOF) or we are closed.
                await reader.read()
                return
            if self.spec.fault == "slow" and self.spec.delay_s > 0:
                await asyncio.sleep(self.spec.delay_s)
            reply = await asyncio.get_running_loop().run_in_executor(
                None, self.answer, args, bool(req.get("debug")))
            body = json.dumps({"stdout": reply.stdout, "stderr": reply.stderr,
                               "code": reply.code})
            writer.write(body.encode() + b"\n")
            await writer.drain()
        except (ValueError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("auth request failed: %s", exc)
        finally:
            self._conns.discard(writer)
            writer.close()
