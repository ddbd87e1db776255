"""The web UI in a real headless browser (Debian's chromium through Playwright): open the
page with the token, press the one button against the simulated cluster, watch the
progress reach the end, download the archive and check it; without the token there is no
page and no API.

Outside CI a machine without chromium or Playwright skips; under CI=true (the lab set-up
installs both) their absence fails the tests instead."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Served, serving
from tpdump.archive import read_archive, verify
from tpdump.snapshot import write_index

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        return "chromium is not installed (apt-get install chromium)"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None and os.environ.get("CI") != "true",
                                reason=str(MISSING))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert MISSING is None, MISSING  # under CI=true: fail, never skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        b = pw.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


SNAPSHOT = "tpdump-web.example.com-20261126T031700Z.tar.gz"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sim_state: Path) -> Iterator[Served]:
    """The server, with a snapshot directory holding one snapshot made 3 hours ago."""
    tmp = tmp_path_factory.mktemp("browser")
    snaps = tmp / "snaps"
    snaps.mkdir()
    (snaps / SNAPSHOT).write_bytes(b"snapshot bytes")
    started = time.time() - 3 * 3600
    write_index(snaps, [{"name": SNAPSHOT, "kind": "snapshot", "scope": "cluster",
                         "profile": "standard", "started": started, "finished": started + 9,
                         "verdict": "complete", "exit_code": 0, "bytes": 14,
                         "sha256": "0" * 64,
                         "files": [{"name": SNAPSHOT, "bytes": 14, "sha256": "0" * 64}]}])
    with serving(tmp, sim_state, "--snapshot-dir", str(snaps)) as s:
        yield s


def test_one_button_dump_progress_and_download(browser: Any, served: Served,
                                               tmp_path: Path) -> None:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url)
            if not r.url.startswith(served.url) else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    resp = page.goto(f"{served.url}?token={served.token}")
    assert resp is not None and resp.status == 200
    assert page.url == served.url, "the token is dropped from the address bar"
    assert served.token not in page.content()
    cookies = context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == \
        [("tpdump_session", True, "Strict")]
    # The newest snapshot is offered at once, with its age, before anything runs.
    newest = page.locator("#newest")
    assert newest.is_visible()
    assert "Newest snapshot" in newest.inner_text() and "3 h old" in newest.inner_text()
    assert newest.locator("a.download").get_attribute("href") == f"/download/{SNAPSHOT}"
    page.check("#scope-cluster")
    page.select_option("#profile", "speed")
    page.click("#start")
    assert newest.is_visible(), "still offered while the fresh dump runs"
    seen: list[str] = []
    line = page.locator("#progress-line")
    page.wait_for_function(
        "() => document.getElementById('progress-line').dataset.running === 'true'",
        timeout=10_000)
    seen.append(line.inner_text())
    page.wait_for_function(
        "() => { const d = document.getElementById('progress-line').dataset;"
        "        return d.running === 'false' && d.total === '5' && d.done === '5'; }",
        timeout=60_000)
    seen.append(line.inner_text())
    assert "nodes 5/5 · 0 failed" in seen[-1] and "finished" in seen[-1], seen
    # A second click while nothing runs is allowed again; the button is enabled.
    assert page.is_enabled("#start")
    link = page.locator("#message a.download").first
    with page.expect_download(timeout=30_000) as info:
        link.click()
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    files = read_archive(target)
    assert verify(files) == []
    assert b'"verdict": "complete"' in files["report.json"]
    # The list shows it with its size and age, without a reload.
    page.wait_for_function(
        "() => document.querySelectorAll('#dumps tr').length >= 1", timeout=10_000)
    assert download.suggested_filename in page.inner_text("#dumps")
    assert not external, f"requests left the server: {external}"
    assert not errors, errors
    context.close()


def test_409_message_in_the_page(browser: Any, served: Served) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{served.url}?token={served.token}")
    status, _ = served.start()  # a dump started elsewhere (the API)
    assert status == 202
    # What a second tab that has not heard of it yet does: press the button (the page's
    # own click handler; this tab's button may already be disabled by the pushed state).
    page.evaluate("start()")
    page.wait_for_function(
        "() => document.getElementById('message').textContent.includes('already running')",
        timeout=10_000)
    served.wait_idle()
    context.close()


def test_without_token_no_page_and_no_api(browser: Any, served: Served) -> None:
    context = browser.new_context()
    page = context.new_page()
    resp = page.goto(served.url)
    assert resp is not None and resp.status == 401
    assert page.locator("#start").count() == 0
    assert "web.example.com" not in page.content()
    # The browser context's own requests (its cookies, which are none): no API either.
    for path in ("api/dumps", "api/state", "api/events"):
        assert context.request.get(served.url + path).status == 401
    assert context.request.post(served.url + "api/dumps", data={"scope": "cluster"}
                                ).status == 401
    context.close()
