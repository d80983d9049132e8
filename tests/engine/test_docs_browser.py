"""The API explorer at /docs in a real headless Chromium, against a real server.

Needs Debian's Chromium at /usr/bin/chromium, like the web UI's browser tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from live_server import LiveServer
from test_ui_browser import ARGS, CHROMIUM

from engine._http.auth import add_token
from engine._http.openapi import OPERATIONS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
expect = sync_api.expect

FLOW = """
flow: echo
status: LIVE
start: done
blocks:
  done: {type: return, value: {got: "=inputs"}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workspace: Path = tmp_path_factory.mktemp("workspace")
    (workspace / "echo.yaml").write_text(FLOW)
    add_token(workspace / "tokens.yaml", "root", ["Administrator"])
    with LiveServer(workspace) as running:
        yield running


def test_docs_and_its_files_need_no_token_and_carry_a_strict_policy(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "explorer.js", "LICENSE"):
        assert httpx.get(f"{server.url}/docs/{name}").status_code == 200
    missing = httpx.get(f"{server.url}/docs/index.html")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_docs_shows_every_operation_without_asking_another_origin(server: LiveServer) -> None:
    origins: set[str] = set()
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.on("request", lambda request: origins.add(_origin(request.url)))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    problems.append(message.text)
                    if message.type == "error" or "Content Security Policy" in message.text
                    else None
                ),
            )
            page.goto(f"{server.url}/docs")
            expect(page.locator(".opblock").first).to_be_visible()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            shown = {text.replace("\u200b", "").strip() for text in paths}
            assert {op.path for op in OPERATIONS} <= shown
            assert page.locator(".opblock").count() == len(OPERATIONS)
            listing = page.locator('.opblock-get:has([data-path="/api/runs"])')
            listing.locator(".opblock-summary-control").click()
            expect(listing.get_by_text("next_cursor").first).to_be_visible()
        finally:
            browser.close()
    assert origins == {_origin(server.url)}
    assert problems == []


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
