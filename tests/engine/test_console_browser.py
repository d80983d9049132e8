"""The flow page as an operations console, in a real headless Chromium: the GRAPH tab,
confirmed lifecycle actions, narrow screens, the keyboard, and no request elsewhere."""

# The workspace and token fixtures are the permissions UI tests': imported, then named
# as test parameters, which is how pytest finds them.
# ruff: noqa: F401, F811

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer
from test_ui_browser import (
    ARGS,
    CHROMIUM,
    Tokens,
    activate,
    sign_in,
    tokens,
    workspace,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
Browser = sync_api.Browser
Page = sync_api.Page
expect = sync_api.expect

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def server(workspace: Path, tokens: Tokens) -> Iterator[LiveServer]:
    with LiveServer(workspace) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


class Watched:
    """A page, with the script errors, policy violations and requests it caused."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )


def open_page(browser: Browser, width: int = 1200) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": width, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    watched = Watched(page)
    yield watched
    context.close()
    assert watched.errors == [], f"errors or policy violations in the page: {watched.errors}"


@pytest.fixture
def wide(browser: Browser) -> Iterator[Watched]:
    yield from open_page(browser)


@pytest.fixture
def narrow(browser: Browser) -> Iterator[Watched]:
    yield from open_page(browser, 390)


def shoot(page: Page, tmp_path: Path, name: str, keep: bool = False) -> None:
    page.mouse.move(0, 0)
    for target in [tmp_path / name, *([SCREENSHOTS / name] if keep else [])]:
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True, animations="disabled", caret="hide")


def admin_get(server: LiveServer, tokens: Tokens, path: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {tokens.admin}"})


def test_the_graph_tab_draws_one_node_per_block_of_the_live_version(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/order-approval")
    page.get_by_role("tab", name="GRAPH").click()
    expect(page).to_have_url(server.url + "/flows/order-approval#graph")
    svg = page.locator("#graph svg")
    expect(svg).to_be_visible()
    flow = admin_get(server, tokens, "/api/flows/order-approval").json()
    blocks = flow["live"]["document"]["blocks"]
    expect(svg.locator("g.node")).to_have_count(len(blocks))
    for block_id, body in blocks.items():
        expect(svg.locator("g.node", has_text=block_id).first).to_contain_text(body["type"])
    # the text parsed: a flowchart was drawn, not Mermaid's error picture
    expect(svg).to_have_attribute("aria-roledescription", re.compile("flowchart"))
    expect(svg.locator(".error-icon")).to_have_count(0)
    expect(page.locator("#page-error")).to_have_count(0)
    expect(svg.locator(".edgeLabel", has_text="then")).to_have_count(1)
    page.get_by_text("The graph as Mermaid text").click()
    expect(page.locator("#graph-text")).to_have_text(flow["graph"])
    shoot(page, tmp_path, "graph-tab.png", keep=True)


def test_the_versions_tab_pauses_and_resumes_only_once_confirmed(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/order-approval")
    panel = page.get_by_role("tabpanel", name="VERSIONS", exact=True)
    panel.get_by_role("button", name="Pause").click()
    dialog = page.get_by_role("dialog", name="Pause order-approval?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("refuses new activations")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    shoot(page, tmp_path, "versions-confirm.png", keep=True)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#flow-badge")).to_have_text("LIVE v1")
    assert activate(server, tokens.manager).status_code == 200

    panel.get_by_role("button", name="Pause").click()
    dialog.get_by_role("button", name="Pause").click()
    expect(page.locator("#flow-badge")).to_have_text("PAUSED v1")
    expect(panel.get_by_role("button", name="Resume")).to_be_focused()
    expect(page.locator("#announce")).to_contain_text("order-approval: paused v1")
    assert activate(server, tokens.manager).status_code == 409

    panel.get_by_role("button", name="Resume").click()
    page.get_by_role("dialog", name="Resume order-approval?").get_by_role(
        "button", name="Resume"
    ).click()
    expect(page.locator("#flow-badge")).to_have_text("LIVE v1")
    assert activate(server, tokens.manager).status_code == 200


def test_an_invalid_version_shows_each_problem_with_its_block_and_field(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    bad = {
        "start": "check",
        "blocks": {"check": {"type": "condition", "if": "true", "then": "nowhere"}},
    }
    added = httpx.post(
        f"{server.url}/api/flows/order-approval/versions",
        json=bad,
        headers={"Authorization": f"Bearer {tokens.admin}"},
    )
    assert added.json()["status"] == "INVALID"
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/order-approval")
    row = page.locator("#versions-table tr[data-version='2']")
    expect(row.locator(".badge")).to_have_text("INVALID")
    problems = row.locator(".problems li")
    expect(problems.first).to_be_visible()
    expect(problems.filter(has_text="block check")).not_to_have_count(0)
    expect(row.get_by_role("button")).to_have_count(0)  # nothing to start
    shoot(page, tmp_path, "versions-tab.png", keep=True)


@pytest.mark.parametrize(
    ("start", "ready", "name"),
    [
        ("/", "#flows-table", "narrow-flow-manager.png"),
        (
            "/flows/order-approval#permissions",
            "#panel-permissions button.toggle",
            "narrow-permissions.png",
        ),
        ("/flows/order-approval#graph", "#graph svg", "narrow-graph.png"),
        ("/flows/order-approval#versions", "#versions-table tbody tr", "narrow-versions.png"),
    ],
)
def test_pages_fit_a_390_px_screen_without_scrolling_sideways(
    narrow: Watched,
    server: LiveServer,
    tokens: Tokens,
    tmp_path: Path,
    start: str,
    ready: str,
    name: str,
) -> None:
    page = narrow.page
    sign_in(page, server, tokens.admin, start)
    expect(page.locator(ready).first).to_be_visible()
    if "permissions" in start:
        page.get_by_role("tab", name="ROLES PERMISSIONS").click()
        row = page.locator("tr", has=page.get_by_role("rowheader", name="Manager"))
        row.get_by_role("button", name=re.compile("^Role Manager:")).click()
        expect(page.locator("#notice")).to_be_visible()
        add = page.get_by_role("button", name="Add role row")
        notice, button = page.locator("#notice").bounding_box(), add.bounding_box()
        assert notice and button
        overlaps = not (
            notice["y"] + notice["height"] <= button["y"]
            or button["y"] + button["height"] <= notice["y"]
        )
        assert not overlaps, "the notice covers the Add role row button"
    page.wait_for_timeout(100)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(page, tmp_path, name, keep=True)


def test_a_permission_toggled_by_keyboard_is_undone_from_the_notice(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/order-approval#permissions")
    alice = "User alice: granted (click to deny)"
    expect(page.get_by_role("button", name=alice)).to_be_visible()
    page.locator("#main").focus()
    for _ in range(40):  # Tab through the page up to alice's toggle
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == alice:
            break
    else:
        pytest.fail("Tab never reached alice's toggle")
    page.keyboard.press("Enter")
    denied = page.get_by_role("button", name="User alice: denied (click to inherit)")
    expect(denied).to_be_focused()
    expect(page.locator("#announce")).to_contain_text("User alice: denied")
    undo = page.get_by_role("button", name="Undo")
    expect(undo).to_be_visible()
    shoot(page, tmp_path, "permissions-undo.png", keep=True)
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "notice-undo":
            break
    else:
        pytest.fail("Tab never reached the Undo button")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name=alice)).to_be_focused()
    expect(page.locator("#announce")).to_contain_text("Undone: User alice is granted again")
    expect(undo).to_be_hidden()
    stored = admin_get(server, tokens, "/api/flows/order-approval/permissions").json()
    assert {"name": "alice", "permission": "GRANT"}.items() <= next(
        user for user in stored["users"] if user["name"] == "alice"
    ).items()


def test_no_page_asks_anything_of_another_origin(
    wide: Watched, server: LiveServer, tokens: Tokens
) -> None:
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/order-approval#graph")
    expect(page.locator("#graph svg")).to_be_visible()
    page.get_by_role("tab", name="PERMISSIONS", exact=True).click()
    page.goto(server.url + "/settings")
    expect(page.locator("#panel-app")).to_be_visible()
    page.goto(server.url + "/")
    expect(page.locator("#flows-table")).to_be_visible()
    assert any(url.endswith("/static/vendor/mermaid.min.js") for url in wide.requests)
    elsewhere = [url for url in wide.requests if not url.startswith(server.url + "/")]
    assert elsewhere == []
