"""The web UI in a real headless Chromium, against a real server.

Needs Debian's Chromium at /usr/bin/chromium (the project's CI installs it); the
browser is driven by Playwright but never downloaded by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer

from engine._http.auth import add_token

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "permissions-tab.png"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
Browser = sync_api.Browser
Page = sync_api.Page
expect = sync_api.expect

FLOWS = {
    "order-approval.yaml": """
flow: order-approval
description: Approve an order; large amounts need a second look.
status: LIVE
inputs: {type: object, properties: {amount: {type: number}}}
start: check
blocks:
  check: {type: condition, if: "inputs.amount > 1000.0", then: escalate, else: approve}
  escalate: {type: set, values: {approved: false}, next: done}
  approve: {type: set, values: {approved: true}, next: done}
  done: {type: return, value: {approved: "=vars.approved"}}
""",
    "nightly-report.yaml": """
flow: nightly-report
description: Builds the nightly report.
status: LIVE
start: done
blocks:
  done: {type: return, value: {rows: 0}}
""",
    "draft.yaml": """
flow: draft
start: done
blocks:
  done: {type: return, value: 1}
""",
}

PERMISSIONS = """
default: grant
app:
  roles: {NonAuthenticatedUser: deny, Manager: grant}
  users: {mallory: deny}
flows:
  order-approval:
    roles: {Contractor: deny, Finance: grant}
    users: {alice: grant}
"""


class Tokens:
    def __init__(self, workspace: Path) -> None:
        path = workspace / "tokens.yaml"
        self.admin = add_token(path, "root", ["Administrator"])
        self.manager = add_token(path, "maria", ["Manager"])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    for name, text in FLOWS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "permissions.yaml").write_text(PERMISSIONS)
    return tmp_path


@pytest.fixture
def tokens(workspace: Path) -> Tokens:
    return Tokens(workspace)


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


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"script errors in the page: {errors}"


def sign_in(page: Page, server: LiveServer, token: str, start: str = "/") -> None:
    page.goto(server.url + start)
    expect(page).to_have_url(re.compile(r"/sign-in\?"))
    page.get_by_label("Administrator token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(server.url + start) + "$"))


def activate(server: LiveServer, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/flows/order-approval/activate-blocking",
        json={"amount": 10},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_nothing_is_shown_before_an_administrator_token(
    page: Page, server: LiveServer, tokens: Tokens
) -> None:
    page.goto(server.url + "/flows/order-approval#permissions")
    expect(page).to_have_url(re.compile(r"/sign-in\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("order-approval")).to_have_count(0)
    token = page.get_by_label("Administrator token")
    token.fill("not-a-token")
    token.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    token.fill(tokens.manager)
    token.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("does not hold the administrator role")
    token.fill(tokens.admin)
    token.press("Enter")
    expect(page).to_have_url(server.url + "/flows/order-approval#permissions")
    expect(page.get_by_role("tab", name="PERMISSIONS", exact=True)).to_have_attribute(
        "aria-selected", "true"
    )


def test_the_flow_manager_lists_flows_and_their_live_version(
    page: Page, server: LiveServer, tokens: Tokens
) -> None:
    sign_in(page, server, tokens.admin)
    expect(page.get_by_role("heading", name="Flow Manager")).to_be_visible()
    rows = page.locator("#flows-table tbody tr")
    expect(rows).to_have_count(3)
    approval = rows.filter(has_text="order-approval")
    expect(approval.locator("td").nth(0)).to_have_text("v1")
    expect(approval.locator("td").nth(1)).to_have_text("LIVE")
    expect(rows.filter(has_text="draft").locator("td").nth(0)).to_have_text("—")
    page.get_by_role("link", name="order-approval").click()
    expect(page).to_have_url(server.url + "/flows/order-approval")
    expect(page.get_by_role("heading", name=re.compile("order-approval"))).to_contain_text(
        "LIVE v1"
    )


def test_a_role_toggled_gray_green_red_keeps_its_setting_and_refuses_that_role(
    page: Page, server: LiveServer, tokens: Tokens
) -> None:
    assert activate(server, tokens.manager).status_code == 200
    sign_in(page, server, tokens.admin)
    page.get_by_role("link", name="order-approval").click()
    page.get_by_role("tab", name="PERMISSIONS", exact=True).click()
    expect(page).to_have_url(server.url + "/flows/order-approval#permissions")
    page.get_by_role("tab", name="ROLES PERMISSIONS").click()
    row = page.locator("tr", has=page.get_by_role("rowheader", name="Manager"))

    gray = row.get_by_role("button", name="Role Manager: inherited (click to grant)")
    expect(gray).to_have_class(re.compile(r"\binherit\b"))
    expect(row.locator(".effective")).to_contain_text("Allowed")
    expect(row.locator(".effective")).to_contain_text("granted by app-wide role Manager")
    gray.click()

    green = row.get_by_role("button", name="Role Manager: granted (click to deny)")
    expect(green).to_have_class(re.compile(r"\bgrant\b"))
    expect(green).to_have_css("background-color", "rgb(31, 138, 76)")
    expect(row.locator(".effective")).to_contain_text("granted by flow-level role Manager")
    green.click()

    red = row.get_by_role("button", name="Role Manager: denied (click to inherit)")
    expect(red).to_have_class(re.compile(r"\bdeny\b"))
    expect(red).to_have_css("background-color", "rgb(194, 50, 47)")
    expect(red).to_be_focused()
    expect(row.locator(".effective")).to_contain_text("Denied")
    expect(row.locator(".effective")).to_contain_text("denied by flow-level role Manager")
    expect(page.locator("#announce")).to_contain_text("Role Manager: denied")

    page.reload()
    page.get_by_role("tab", name="ROLES PERMISSIONS").click()
    expect(
        row.get_by_role("button", name="Role Manager: denied (click to inherit)")
    ).to_be_visible()

    refused = activate(server, tokens.manager)
    assert refused.status_code == 403
    assert refused.json()["error"] == "activation_denied"
    assert "denied by flow-level role Manager" in refused.json()["message"]

    page.get_by_role("tab", name="ROLES PERMISSIONS").focus()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled", caret="hide")


def test_toggles_tabs_and_new_rows_work_from_the_keyboard(
    page: Page, server: LiveServer, tokens: Tokens
) -> None:
    sign_in(page, server, tokens.admin, "/flows/order-approval")
    versions = page.get_by_role("tab", name="VERSIONS", exact=True)
    expect(versions).to_be_visible()
    expect(versions).to_have_attribute("aria-selected", "true")
    versions.focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="PERMISSIONS", exact=True)).to_be_focused()
    expect(page.get_by_role("tab", name="PERMISSIONS", exact=True)).to_have_attribute(
        "aria-selected", "true"
    )
    users = page.get_by_role("tabpanel", name="USER PERMISSIONS")
    expect(users.get_by_role("button", name="User alice: granted (click to deny)")).to_be_visible()
    expect(
        users.get_by_role("button", name="User mallory: inherited (click to grant)")
    ).to_be_visible()
    expect(users.locator("tr", has_text="mallory").locator(".hint")).to_have_text(
        "app-wide: denied"
    )

    page.get_by_role("tab", name="USER PERMISSIONS").focus()
    page.keyboard.press("ArrowRight")
    roles = page.get_by_role("tabpanel", name="ROLES PERMISSIONS")
    expect(roles).to_be_visible()
    add = roles.get_by_label("Add a role")
    add.fill("Auditor")
    add.press("Enter")
    toggle = roles.get_by_role("button", name="Role Auditor: inherited (click to grant)")
    expect(toggle).to_be_focused()
    page.keyboard.press("Enter")
    granted = roles.get_by_role("button", name="Role Auditor: granted (click to deny)")
    expect(granted).to_be_focused()
    page.keyboard.press("Space")
    denied = roles.get_by_role("button", name="Role Auditor: denied (click to inherit)")
    expect(denied).to_be_focused()
    page.keyboard.press("Space")
    back = roles.get_by_role("button", name="Role Auditor: inherited (click to grant)")
    expect(back).to_be_focused()  # the row stays although nothing is set for it any more
    expect(roles.locator("tr", has_text="Auditor").locator(".effective")).to_contain_text(
        "granted by default"
    )
    stored = httpx.get(
        f"{server.url}/api/flows/order-approval/permissions",
        headers={"Authorization": f"Bearer {tokens.admin}"},
    ).json()
    assert "Auditor" not in [role["name"] for role in stored["roles"]]

    add.fill("AuthenticatedUser")
    add.press("Enter")  # already listed: focus moves to its row
    expect(roles.get_by_role("button", name=re.compile("^Role AuthenticatedUser:"))).to_be_focused()
    users_add = page.get_by_role("tabpanel", name="USER PERMISSIONS").get_by_label("Add a user")
    page.get_by_role("tab", name="USER PERMISSIONS").click()
    users_add.fill("NonAuthenticatedUser")
    users_add.press("Enter")
    expect(
        page.get_by_role("tabpanel", name="USER PERMISSIONS").get_by_role("alert")
    ).to_contain_text("system role")


def test_app_wide_settings_have_their_own_page(
    page: Page, server: LiveServer, tokens: Tokens
) -> None:
    sign_in(page, server, tokens.admin, "/settings")
    expect(page.get_by_role("heading", name="App-wide permissions")).to_be_visible()
    expect(page.locator("#default-permission")).to_have_text("granted")
    users = page.get_by_role("tabpanel", name="USER PERMISSIONS")
    mallory = users.get_by_role("button", name="User mallory: denied (click to inherit)")
    mallory.click()
    expect(
        users.get_by_role("button", name="User mallory: inherited (click to grant)")
    ).to_be_visible()
    expect(users.locator("tr", has_text="mallory").locator(".effective")).to_contain_text(
        "granted by default"
    )
    page.get_by_role("tab", name="ROLES PERMISSIONS").click()
    anonymous = page.get_by_role(
        "button", name="Role NonAuthenticatedUser: denied (click to inherit)"
    )
    expect(anonymous).to_be_visible()
    app = httpx.get(
        f"{server.url}/api/permissions", headers={"Authorization": f"Bearer {tokens.admin}"}
    ).json()
    assert "mallory" not in [user["name"] for user in app["users"]]


def test_versions_are_paused_and_resumed_from_the_flow_page(
    page: Page, server: LiveServer, tokens: Tokens
) -> None:
    sign_in(page, server, tokens.admin, "/flows/order-approval")
    panel = page.get_by_role("tabpanel", name="VERSIONS", exact=True)
    panel.get_by_role("button", name="Pause").click()
    page.get_by_role("dialog").get_by_role("button", name="Pause").click()  # the confirmation
    expect(page.locator("#flow-badge")).to_have_text("PAUSED v1")
    assert activate(server, tokens.manager).status_code == 409
    panel.get_by_role("button", name="Resume").click()
    page.get_by_role("dialog").get_by_role("button", name="Resume").click()
    expect(page.locator("#flow-badge")).to_have_text("LIVE v1")
    assert activate(server, tokens.manager).status_code == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/sign-in\?"))
