"""`tpdump serve` over plain HTTP (curl-like): the token guards every page, API call and
download; cross-site POSTs are refused; downloads are only of indexed files; one dump at a
time (409)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.conftest import Served, serving
from tpdump.archive import read_archive, verify


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sim_state: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    with serving(tmp, sim_state) as s:
        # A file in the dump directory that tpdump did not write, and one beside it.
        s.dump_dir.mkdir(parents=True, exist_ok=True)
        (s.dump_dir / "not-indexed.tar.gz").write_bytes(b"not from tpdump")
        (tmp / "outside.txt").write_text("outside the dump directory")
        yield s


@pytest.fixture(scope="module")
def finished(served: Served) -> dict[str, object]:
    """One dump started over the API, and the 409 a second start gets meanwhile."""
    status, body = served.start()
    assert status == 202, body
    again, refused = served.start()
    job = served.wait_idle()
    return {"second_status": again, "second_body": refused, "job": job}


def test_no_token_no_page_no_api_no_download(served: Served, finished: dict[str, object]
                                             ) -> None:
    job = finished["job"]
    assert isinstance(job, dict)
    name = job["entry"]["name"]
    for path in ("/", "/api/dumps", "/api/state", "/api/events", f"/download/{name}"):
        status, headers, body = served.request(path)
        assert status == 401, path
        assert b"web.example.com" not in body and b"<script" not in body
        assert headers.get("WWW-Authenticate") == "Bearer"
    # A wrong token (also as ?token= and as a forged cookie) is no better.
    for path in ("/", "/api/dumps", f"/download/{name}"):
        assert served.request(path, token="x" * len(served.token))[0] == 401
    assert served.request("/?token=wrong-token-wrong-token")[0] == 401
    assert served.request("/api/dumps", headers={"Cookie": f"tpdump_session={served.token}"}
                          )[0] == 401
    status, _, _ = served.request("/api/dumps", method="POST", token="not-the-token-000000",
                                  body=b'{"scope": "cluster"}',
                                  headers={"Content-Type": "application/json"})
    assert status == 401


def test_token_in_query_sets_strict_cookie_and_leaves_the_url(served: Served) -> None:
    status, headers, _ = served.request(f"/?token={served.token}")
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    value = re.search(r"tpdump_session=([^;]+)", cookie)
    assert value and served.token not in cookie
    status, headers, body = served.request("/", headers={"Cookie": f"tpdump_session="
                                                         f"{value.group(1)}"})
    assert status == 200 and b"Start dump" in body
    assert served.token.encode() not in body, "the token must never be in the page"
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]
    assert b"http://" not in body and b"https://" not in body, "no external assets"
    assert headers["X-Frame-Options"] == "DENY"


def test_cross_site_post_refused(served: Served, finished: dict[str, object]) -> None:
    _, headers, body = served.request(f"/?token={served.token}")
    cookie = re.search(r"tpdump_session=([^;]+)", headers["Set-Cookie"])
    assert cookie
    jar = {"Cookie": f"tpdump_session={cookie.group(1)}"}
    _, _, page = served.request("/", headers=jar)
    csrf = re.search(rb'name="tpdump-csrf" content="([0-9a-f]+)"', page)
    assert csrf
    form = b"scope=cluster&profile=speed"
    # What a form on another site sends (with the cookie, were it not SameSite=Strict).
    for extra in (
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example",
         "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "application/x-www-form-urlencoded"},  # no CSRF header
        {"Content-Type": "application/json", "X-Tpdump-CSRF": csrf.group(1).decode(),
         "Origin": "https://evil.example"},
        {"Content-Type": "application/json", "X-Tpdump-CSRF": csrf.group(1).decode(),
         "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "application/json", "X-Tpdump-CSRF": "0" * 64},
    ):
        status, _, body = served.request("/api/dumps", method="POST", body=form,
                                         headers={**jar, **extra})
        assert status == 403, (extra, body)
    # Without any credential a cross-site form is simply unauthenticated.
    status, _, _ = served.request("/api/dumps", method="POST", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
    assert status == 401
    # The page's own request (same origin, CSRF header) is accepted: here it gets 409 or
    # 202 depending on timing, never 403.
    origin = served.url.rstrip("/")
    status, _, _ = served.request("/api/dumps", method="POST", body=b'{"profile": "speed"}',
                                  headers={**jar, "Content-Type": "application/json",
                                           "X-Tpdump-CSRF": csrf.group(1).decode(),
                                           "Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert status in (202, 409)
    served.wait_idle()


def test_second_dump_gets_409(finished: dict[str, object]) -> None:
    assert finished["second_status"] == 409
    body = finished["second_body"]
    assert isinstance(body, dict) and "already running" in body["error"]


def test_download_of_the_dump(served: Served, finished: dict[str, object],
                              tmp_path: Path) -> None:
    job = finished["job"]
    assert isinstance(job, dict) and job["error"] is None, job
    assert job["done"] == job["total"] == 5 and job["failed"] == 0
    entry = job["entry"]
    status, headers, body = served.request(f"/download/{entry['name']}", token=served.token)
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    path = tmp_path / entry["name"]
    path.write_bytes(body)
    files = read_archive(path)
    assert verify(files) == []
    assert json.loads(files["report.json"])["verdict"] == "complete"
    status, listing = served.json("/api/dumps", token=served.token)
    assert status == 200 and entry["name"] in [e["name"] for e in listing["entries"]]
    index = json.loads((served.dump_dir / "index.json").read_text())
    assert any(e["sha256"] == entry["sha256"] for e in index["entries"])


@pytest.mark.parametrize("path", [
    "/download/not-indexed.tar.gz", "/download/index.json", "/download/.index.lock",
    "/download/..%2Foutside.txt", "/download/%2E%2E%2Foutside.txt", "/download/../outside.txt",
    "/download/..%2F..%2F..%2Fetc%2Fpasswd", "/download/%2Fetc%2Fpasswd", "/download/",
    "/download/tpdump-web.example.com-x.tar.gz%00", "/download//etc/passwd",
])
def test_traversal_and_unindexed_refused(served: Served, finished: dict[str, object],
                                         path: str) -> None:
    status, _, body = served.request(path, token=served.token)
    assert status in (400, 404), (path, status)
    assert b"outside the dump directory" not in body and b"root:" not in body
    assert b"not from tpdump" not in body


def test_kube_scope_and_bad_requests(served: Served, finished: dict[str, object]) -> None:
    served.wait_idle()
    for body in (b'{"scope": "everything"}', b'{"profile": "turbo"}', b"scope=cluster",
                 b"[1, 2]"):
        status, _, answer = served.request("/api/dumps", method="POST", token=served.token,
                                           body=body,
                                           headers={"Content-Type": "application/json"})
        assert status == 400, (body, answer)
    status, _ = served.start(scope="kube", profile="small")
    assert status == 202
    job = served.wait_idle()
    assert job["scope"] == "kube" and job["profile"] == "small" and job["error"] is None
    assert job["entry"]["verdict"] == "complete", job
