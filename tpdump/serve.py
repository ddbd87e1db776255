"""`tpdump serve`: the web UI (SPEC §11).

One page: scope and profile, one button, live progress (server-sent events), the dumps and
snapshots of the dump directory with download. Dumps run in this process, one at a time,
with the `Run` classes the command line uses.

Access: every request needs the token (`Authorization: Bearer TOKEN`, or the HttpOnly,
SameSite=Strict session cookie that `GET /?token=TOKEN` sets and then drops from the URL).
Compared in constant time. A POST authenticated by the cookie also needs the page's CSRF
header and a same-origin Origin / Sec-Fetch-Site, so a form on another site cannot start a
dump. Downloads are limited to the file names in the directory's index.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
from aiohttp import web

from tpdump.config import PROFILES, Settings, resolve
from tpdump.errors import TpdumpError, UsageError
from tpdump.kuberun import KubeRun
from tpdump.local import NodeRun
from tpdump.logs import configure
from tpdump.progress import fmt_bytes
from tpdump.runner import ClusterRun, Run
from tpdump.snapshot import SCOPES, indexed_files, load_index, run_into

COOKIE = "tpdump_session"
CSRF_HEADER = "X-Tpdump-CSRF"
TEMPLATE = Path(__file__).parent / "web" / "index.html"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Served:
    """A run under `tpdump serve`: the server owns the signals (SIGINT/SIGTERM stop the
    server, which interrupts the running dump through `stop()`)."""

    collect_scope: anyio.CancelScope | None = None
    interrupted: bool

    async def _watch_signals(self, collect: anyio.CancelScope,
                             watcher: anyio.CancelScope) -> None:
        self.collect_scope = collect
        with watcher:
            await anyio.sleep_forever()

    def stop(self) -> None:
        if self.collect_scope is not None:
            self.interrupted = True
            self.collect_scope.cancel()


class ServedClusterRun(_Served, ClusterRun):
    pass


class ServedNodeRun(_Served, NodeRun):
    pass


class ServedKubeRun(_Served, KubeRun):
    pass


_SERVED: dict[str, type[Run]] = {"cluster": ServedClusterRun, "node": ServedNodeRun,
                                 "kube": ServedKubeRun}


def _make_served(scope: str, settings: Settings, run_log: Any, command: str) -> Run:
    return _SERVED[scope](settings, run_log, command)


def load_token(path: str | None) -> str:
    """The token from --token-file (its first line), or a fresh random one."""
    if path is None:
        return secrets.token_urlsafe(32)
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"--token-file {path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"--token-file {path}: not UTF-8 text") from exc
    token = text.splitlines()[0].strip() if text else ""
    if len(token) < 16:
        raise UsageError(f"--token-file {path}: the token must have at least 16 characters")
    return token


@dataclass
class Job:
    """The dump that is running (or the last one)."""

    scope: str
    profile: str
    started: float = field(default_factory=time.time)
    run: Run | None = None
    finished: float | None = None
    entry: dict[str, Any] | None = None
    error: str | None = None
    ended: anyio.Event = field(default_factory=anyio.Event)

    def state(self) -> dict[str, Any]:
        run = self.run
        c = run.counters if run is not None else None
        written = run._written() if run is not None else 0
        end = self.finished or time.time()
        return {"scope": self.scope, "profile": self.profile, "running": self.finished is None,
                "phase": c.phase if c else "starting", "total": c.total if c else 0,
                "done": c.done if c else 0, "failed": c.failed if c else 0,
                "bytes": written, "bytes_text": fmt_bytes(written),
                "elapsed": round(end - self.started, 1),
                "entry": _public_entry(self.entry) if self.entry else None,
                "error": self.error}


def _public_entry(e: Mapping[str, Any]) -> dict[str, Any]:
    """What the page shows of an index entry (no settings, no paths)."""
    return {"name": e.get("name"), "kind": e.get("kind"), "scope": e.get("scope"),
            "profile": e.get("profile"), "verdict": e.get("verdict"),
            "exit_code": e.get("exit_code"), "bytes": e.get("bytes"),
            "sha256": e.get("sha256"), "started": e.get("started"),
            "finished": e.get("finished"), "nodes": e.get("nodes"),
            "files": [{"name": f.get("name"), "bytes": f.get("bytes")}
                      for f in e.get("files") or []]}


class Server:
    """The application and the one-dump-at-a-time runner."""

    def __init__(self, *, token: str, dump_dir: Path, snapshot_dirs: list[Path],
                 file_values: Mapping[str, Any], flag_values: Mapping[str, Any],
                 tg: anyio.abc.TaskGroup | None = None) -> None:
        self.token = token
        self.dump_dir = dump_dir
        self.dirs = [dump_dir, *[d for d in snapshot_dirs if d != dump_dir]]
        self.file_values = dict(file_values)
        self.flag_values = dict(flag_values)
        self.tg = tg
        self.job: Job | None = None
        self.closing = False
        self.session = hmac.new(token.encode(), b"tpdump session", hashlib.sha256).hexdigest()
        self.csrf = hmac.new(token.encode(), b"tpdump csrf", hashlib.sha256).hexdigest()

    # --- access ----------------------------------------------------------------------
    def _authenticated(self, request: web.Request) -> str | None:
        """'bearer', 'cookie' or None."""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(
                auth[7:].strip().encode(), self.token.encode()):
            return "bearer"
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session.encode()):
            return "cookie"
        return None

    def _same_origin(self, request: web.Request) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        # The Origin's host must be this server's (its scheme may differ behind a TLS
        # reverse proxy).
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return False
        sent = request.headers.get(CSRF_HEADER, "")
        return hmac.compare_digest(sent.encode(), self.csrf.encode())

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        how = self._authenticated(request)
        if how is None and request.method == "GET" and request.path == "/" \
                and hmac.compare_digest(request.query.get("token", "").encode(),
                                        self.token.encode()):
            # Set the session cookie and drop the token from the address bar.
            redirect = web.HTTPSeeOther("/")
            redirect.set_cookie(COOKIE, self.session, httponly=True, samesite="Strict",
                                path="/", secure=request.secure)
            _harden(redirect)
            raise redirect
        if how is None:
            resp = web.Response(status=401, text="401: a token is needed: open the address "
                                "`tpdump serve` printed, or send Authorization: Bearer "
                                "TOKEN\n", headers={"WWW-Authenticate": "Bearer"})
            return _harden(resp)
        if request.method not in ("GET", "HEAD") and how == "cookie" \
                and not self._same_origin(request):
            return _harden(web.json_response(
                {"error": "cross-site request refused"}, status=403))
        try:
            answer = await handler(request)
        except web.HTTPException as exc:
            _harden(exc)
            raise
        return _harden(answer)

    # --- pages -----------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for d in self.dirs:
            for e in load_index(d):
                pub = _public_entry(e)
                pub["available"] = all((d / str(f["name"])).is_file() for f in e["files"])
                out.append(pub)
        return sorted(out, key=lambda e: float(e.get("started") or 0), reverse=True)

    def listing(self) -> dict[str, Any]:
        entries = self.entries()
        newest = next((e for e in entries if e.get("kind") == "snapshot"
                       and e.get("available")), None)
        return {"now": time.time(), "entries": entries, "newest_snapshot": newest,
                "job": self.job.state() if self.job else None}

    async def index(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        initial = json.dumps({"listing": self.listing(), "profiles": list(PROFILES),
                              "scopes": list(SCOPES),
                              "default_profile": self._settings(None).profile})
        # `<` escaped so that no data can close the script element.
        initial = initial.replace("<", "\\u003c").replace(">", "\\u003e") \
            .replace("&", "\\u0026")
        page = TEMPLATE.read_text(encoding="utf-8") \
            .replace("{{NONCE}}", nonce).replace("{{CSRF}}", html.escape(self.csrf)) \
            .replace("{{INITIAL}}", initial)
        resp = web.Response(text=page, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
        return resp

    async def api_dumps(self, request: web.Request) -> web.Response:
        return web.json_response(self.listing())

    async def api_state(self, request: web.Request) -> web.Response:
        return web.json_response({"job": self.job.state() if self.job else None})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the job's state twice a second while it runs."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        _harden(resp)
        await resp.prepare(request)
        last = ""
        try:
            while not self.closing:
                state = json.dumps({"job": self.job.state() if self.job else None})
                if state != last:
                    await resp.write(f"event: state\ndata: {state}\n\n".encode())
                    last = state
                else:
                    await resp.write(b": keep-alive\n\n")
                await anyio.sleep(0.25)
        except (ConnectionResetError, anyio.BrokenResourceError):
            pass
        return resp

    def _settings(self, profile: str | None) -> Settings:
        flags = dict(self.flag_values)
        if profile:
            flags["profile"] = profile
        settings = resolve(self.file_values, flags)
        return settings

    async def start_dump(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "expected a JSON body"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        scope = str(body.get("scope") or "cluster")
        profile = str(body.get("profile") or "") or None
        if scope not in SCOPES:
            return web.json_response({"error": f"scope must be one of {', '.join(SCOPES)}"},
                                     status=400)
        if profile is not None and profile not in PROFILES:
            return web.json_response(
                {"error": f"profile must be one of {', '.join(PROFILES)}"}, status=400)
        if self.job is not None and self.job.finished is None:
            return web.json_response(
                {"error": "a dump is already running; wait for it to finish",
                 "job": self.job.state()}, status=409)
        try:
            settings = self._settings(profile)
            if scope == "cluster":
                from tpdump.cli import _require
                _require(settings)
        except TpdumpError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        job = self.job = Job(scope, settings.profile)
        assert self.tg is not None
        self.tg.start_soon(self._run_job, job, settings)
        return web.json_response({"job": job.state()}, status=202)

    async def _run_job(self, job: Job, settings: Settings) -> None:
        settings = _quiet(settings)
        run_log = configure(verbose=False, quiet=True, fmt=settings.log_format)
        command = f"tpdump serve (web UI: {job.scope}, profile {job.profile})"

        def started(run: Run) -> None:
            job.run = run

        try:
            job.entry = await run_into(self.dump_dir, settings, job.scope, run_log, command,
                                       kind="dump", make=_make_served, started=started)
        except Exception as exc:  # the job boundary: report it on the page
            job.error = f"{type(exc).__name__}: {exc}"
            print(f"tpdump serve: dump failed: {job.error}", file=sys.stderr, flush=True)
        finally:
            job.finished = time.time()
            job.ended.set()

    def stop(self) -> None:
        self.closing = True
        run = self.job.run if self.job and self.job.finished is None else None
        if isinstance(run, _Served):
            run.stop()

    async def download(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        for d in self.dirs:
            if name in indexed_files(d):
                path = d / name
                if path.parent == d and path.is_file() and not path.is_symlink():
                    return web.FileResponse(path, headers={
                        "Content-Disposition": f'attachment; filename="{name}"',
                        "Content-Type": "application/octet-stream"})
        return web.json_response({"error": "no such dump"}, status=404)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/api/dumps", self.api_dumps)
        app.router.add_get("/api/state", self.api_state)
        app.router.add_get("/api/events", self.events)
        app.router.add_post("/api/dumps", self.start_dump)
        app.router.add_get("/download/{name}", self.download)
        return app


def _quiet(settings: Settings) -> Settings:
    import dataclasses
    return dataclasses.replace(settings, quiet=True, verbose=False)


def _harden(resp: web.StreamResponse) -> web.StreamResponse:
    h = resp.headers
    h.setdefault("Cache-Control", "no-store")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    return resp


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "8765"
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError as exc:
        raise UsageError(f"--listen {text}: expected HOST:PORT") from exc
    if not 0 <= number <= 65535:
        raise UsageError(f"--listen {text}: port out of range")
    return host, number


async def serve(*, listen: str, token: str, dump_dir: Path, snapshot_dirs: list[Path],
                file_values: Mapping[str, Any], flag_values: Mapping[str, Any],
                printed_token: bool) -> int:
    """Run the server until SIGINT/SIGTERM (DIRs exist and are absolute)."""
    import signal

    host, port = parse_listen(listen)
    server = Server(token=token, dump_dir=dump_dir, snapshot_dirs=snapshot_dirs,
                    file_values=file_values, flag_values=flag_values)
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True,
                           shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(f"--listen {listen}: cannot listen: {exc.strerror or exc}") from exc
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    url = f"http://{shown}:{bound[1]}/"
    if printed_token:
        print(f"tpdump serve: open {url}?token={token}", flush=True)
    else:
        print(f"tpdump serve: open {url}?token=<the token in --token-file>", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"tpdump serve: listening on {host}, not only on loopback; anyone who "
              "can reach it needs the token", file=sys.stderr, flush=True)
    async with anyio.create_task_group() as tg:
        server.tg = tg
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        finally:
            server.stop()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                if server.job is not None:
                    await server.job.ended.wait()
                await runner.cleanup()
            tg.cancel_scope.cancel()
    return 0
