"""readme.html rendered by a real headless browser (Debian chromium via Playwright): no
console errors, the two SVGs present, the status text visible; a screenshot is saved
(its path printed) as a test artifact. Under CI=true a missing browser fails the test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import Dump

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _require_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(CHROMIUM)
    if missing:
        why = f"missing {', '.join(missing)}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why} (CI=true: the browser check must run)")
        pytest.skip(why)


def artifact_dir(tmp_path: Path) -> Path:
    """tests/artifacts/ when it can be written (not committed), else the pytest tmp dir."""
    out = Path(__file__).resolve().parents[1] / "artifacts"
    try:
        out.mkdir(exist_ok=True)
        ignore = out / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# screenshots and other test artifacts: never committed\n*\n")
        return out
    except OSError:
        return tmp_path


@pytest.mark.parametrize("which", ["sick", "healthy"])
def test_readme_renders_in_chromium(which: str, request: pytest.FixtureRequest,
                                    tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    dump: Dump = request.getfixturevalue(which)
    page_path = tmp_path / "readme.html"
    page_path.write_bytes(dump.files["readme.html"])
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            assert page.locator("#status-text").is_visible()
            status = page.locator("#status-text").inner_text()
            assert f"Dump {dump.report['verdict']}" in status
            for svg in ("#cluster-picture", "#timeline"):
                assert page.locator(f"svg{svg}").is_visible()
                box = page.locator(f"svg{svg}").bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 20
            n = dump.report["nodes"]["total"]
            assert page.locator("#cluster-picture rect").count() >= n
            collected = sum(1 for x in dump.report["node_results"] if x["started_at"])
            assert page.locator("#timeline rect").count() == collected
            if dump.report["findings"]:
                rows = page.locator("#findings-table tr").count()
                assert rows == len(dump.report["findings"]) + 1
            else:
                assert page.locator("#no-findings").is_visible()
            shot = artifact_dir(tmp_path) / f"readme-{which}.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert errors == []
    assert all(u.startswith("file:") for u in requests), requests
