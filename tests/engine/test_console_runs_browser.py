"""The runs console in a real headless Chromium: the runs table, a run's page (timeline,
log, related runs, marked graph, Cancel), the RUN and RUNS tabs of a flow, and the
PERMISSIONS tab's identity check — at 390 px too, and with no request elsewhere."""

# The browser fixtures are the console tests': imported, then named as test parameters,
# which is how pytest finds them.
# ruff: noqa: F401, F811

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer
from test_console_browser import Watched, browser, narrow, shoot, wide
from test_ui_browser import CHROMIUM, sign_in

from engine._http.auth import add_token

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
expect = sync_api.expect
Page = sync_api.Page

FLOWS = {
    "intake.yaml": """
flow: intake
description: Takes an order in and has it reviewed.
status: LIVE
inputs:
  type: object
  required: [amount, item]
  properties:
    amount: {type: number, minimum: 0}
    item: {type: string}
    count: {type: integer, default: 2}
    priority: {type: string, enum: [low, high], default: low}
    rush: {type: boolean}
start: note
blocks:
  note: {type: log, message: "='an order of ' + string(inputs.amount)", next: review}
  review: {type: call_flow, flow: review, inputs: {amount: "=inputs.amount"}, result: r,
           next: keep}
  keep: {type: set, values: {ok: "=vars.r.ok"}, next: done}
  done: {type: return, value: {ok: "=vars.ok", item: "=inputs.item"}}
""",
    "review.yaml": """
flow: review
status: LIVE
callable_by: [intake]
start: done
blocks:
  done: {type: return, value: {ok: true}}
""",
    "slow.yaml": """
flow: slow
status: LIVE
start: pause
blocks:
  pause: {type: wait, seconds: 60, next: done}
  done: {type: return, value: 1}
""",
    "count.yaml": """
flow: count
status: LIVE
start: init
blocks:
  init: {type: set, values: {i: 0}, next: loop}
  loop: {type: repeat, while: "vars.i < 3", max_iterations: 10, body: bump, next: done}
  bump: {type: set, values: {i: "=vars.i + 1"}}
  done: {type: return, value: "=vars.i"}
""",
    "locked.yaml": """
flow: locked
status: LIVE
start: done
blocks:
  done: {type: return, value: 1}
""",
}

PERMISSIONS = """
default: grant
flows:
  locked:
    users: {root: deny}
  review:
    users: {bob: deny}
"""


class Tokens:
    def __init__(self, workspace: Path) -> None:
        self.admin = add_token(workspace / "tokens.yaml", "root", ["Administrator"])


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for name, text in FLOWS.items():
        (workspace / name).write_text(text)
    (workspace / "permissions.yaml").write_text(PERMISSIONS)
    return Tokens(workspace)


@pytest.fixture
def server(tmp_path: Path, tokens: Tokens) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "workspace") as running:
        yield running


def call(server: LiveServer, tokens: Tokens, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {tokens.admin}"}
    response = httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)
    return response


def same_origin(watched: Watched, server: LiveServer) -> None:
    elsewhere = [url for url in watched.requests if not url.startswith(server.url + "/")]
    assert elsewhere == [], f"requests to another origin: {elsewhere}"


def finished_run(server: LiveServer, tokens: Tokens) -> dict[str, Any]:
    answer = call(
        server,
        tokens,
        "POST",
        "/api/flows/intake/activate-blocking",
        json={"amount": 7, "item": "ink"},
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    assert result["status"] == "COMPLETED"
    return result


def test_a_run_started_from_the_run_form_lands_on_its_page_with_its_timeline_and_graph(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/intake#run")
    form = page.locator("#run-form")
    expect(form.get_by_label("amount")).to_have_attribute("aria-required", "true")
    expect(form.get_by_label("count")).to_have_value("2")
    expect(form.get_by_label("priority")).to_have_value("0")  # the default, "low"
    expect(form.get_by_label("rush")).not_to_be_checked()
    form.get_by_label("amount").fill("12.5")
    form.get_by_role("button", name="Run as administrator").click()
    expect(page.get_by_role("alert")).to_contain_text("item is required")
    form.get_by_label("item").fill("pens")
    form.get_by_label("priority").select_option(label='"high"')
    form.get_by_label("rush").check()
    form.get_by_role("button", name="Run as administrator").click()
    expect(page).to_have_url(re.compile(re.escape(server.url) + r"/runs/[^/#?]+$"))
    run_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    result = call(server, tokens, "GET", f"/api/runs/{run_id}").json()
    assert result["inputs"] == {
        "amount": 12.5,
        "item": "pens",
        "count": 2,
        "priority": "high",
        "rush": True,
    }
    assert result["user_id"] == "root"
    expect(page.locator("#run-result")).to_contain_text('"item": "pens"')
    steps = page.locator("#run-trace .step")
    expect(steps).to_have_count(len(result["trace"]))
    for index, entry in enumerate(result["trace"]):
        expect(steps.nth(index)).to_contain_text(entry["block"])
        expect(steps.nth(index)).to_contain_text(entry["type"])
        expect(steps.nth(index)).to_contain_text(entry["outcome"])
    executed = {entry["block"] for entry in result["trace"]}
    assert executed == {"note", "review", "keep", "done"}
    expect(page.locator("#run-log")).to_contain_text("an order of 12.5")
    child = call(server, tokens, "GET", f"/api/runs?parent={run_id}").json()["runs"]
    assert len(child) == 1
    expect(
        page.locator("#run-children").get_by_role("link", name=child[0]["run_id"])
    ).to_be_visible()
    svg = page.locator("#graph svg")
    expect(svg).to_be_visible()
    expect(svg.locator("g.node.executed")).to_have_count(len(executed))
    graph = call(server, tokens, "GET", f"/api/runs/{run_id}/graph").json()
    assert re.search(r"class .+ executed", graph["graph"])
    expect(page.locator("#graph-text")).to_have_text(graph["graph"])
    expect(page.locator("#run-actions")).to_be_hidden()
    shoot(page, tmp_path, "run-page.png", keep=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    expect(page).to_have_url(server.url + "/runs")
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row).to_contain_text("intake v1")
    expect(row).to_contain_text("COMPLETED")
    expect(row).to_contain_text("root")
    page.locator(f'tr[data-run="{child[0]["run_id"]}"]').get_by_role("link").first.click()
    expect(page.get_by_role("link", name=run_id)).to_be_visible()  # the parent's link
    page.goto(server.url + "/flows/intake#runs")
    expect(page.locator(f'#panel-runs tr[data-run="{run_id}"]')).to_be_visible()
    expect(page.locator("#panel-runs tbody tr")).to_have_count(1)  # only intake's runs
    same_origin(wide, server)


def test_each_loop_iteration_is_its_own_numbered_entry_of_the_timeline(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    answer = call(server, tokens, "POST", "/api/flows/count/activate-blocking", json={})
    result = answer.json()
    assert result["status"] == "COMPLETED", result
    page = wide.page
    sign_in(page, server, tokens.admin, f"/runs/{result['run_id']}")
    expect(page.locator("#run-trace .step")).to_have_count(len(result["trace"]))
    bumps = page.locator('#run-trace .step[data-block="bump"]')
    expect(bumps).to_have_count(3)
    expect(bumps.nth(1)).to_contain_text("#2")
    expect(bumps.nth(2)).to_contain_text("#3")
    expect(page.locator("#graph svg g.node.executed")).to_have_count(4)
    shoot(page, tmp_path, "run-loop.png")
    same_origin(wide, server)


def test_the_runs_table_filters_and_updates_unfinished_rows_by_itself(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    finished_run(server, tokens)
    waiting = call(server, tokens, "POST", "/api/flows/slow/activate").json()["run_id"]
    page = wide.page
    sign_in(page, server, tokens.admin, "/runs")
    expect(page.locator("tbody tr")).to_have_count(3)
    page.get_by_label("Flow").fill("slow")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/runs\?flow=slow"))
    row = page.locator(f'tr[data-run="{waiting}"]')
    expect(row).to_contain_text("RUNNING")
    expect(page.locator("tbody tr")).to_have_count(1)
    assert call(server, tokens, "POST", f"/api/runs/{waiting}/cancel").status_code == 200
    expect(row).to_contain_text("CANCELLED", timeout=10_000)  # no reload: it polled
    page.goto(server.url + "/runs?status=COMPLETED&user=root")
    expect(page.get_by_label("Status")).to_have_value("COMPLETED")
    expect(page.locator("tbody tr")).to_have_count(2)
    shoot(page, tmp_path, "runs-page.png", keep=True)
    same_origin(wide, server)


def test_a_waiting_run_is_cancelled_from_its_page_once_confirmed(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    run_id = call(server, tokens, "POST", "/api/flows/slow/activate").json()["run_id"]
    page = wide.page
    sign_in(page, server, tokens.admin, f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text(re.compile("QUEUED|RUNNING"))
    page.get_by_role("button", name="Cancel this run").click()
    dialog = page.get_by_role("dialog", name=f"Cancel run {run_id}?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert call(server, tokens, "GET", f"/api/runs/{run_id}").json()["status"] == "RUNNING"
    page.get_by_role("button", name="Cancel this run").click()
    shoot(page, tmp_path, "run-cancel-confirm.png")
    dialog.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status")).to_have_text("CANCELLED")
    expect(page.get_by_role("button", name="Cancel this run")).to_be_hidden()
    assert call(server, tokens, "GET", f"/api/runs/{run_id}").json()["status"] == "CANCELLED"
    shoot(page, tmp_path, "run-cancelled.png")
    same_origin(wide, server)


def test_a_refused_activation_shows_the_gates_reason(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    refused = call(server, tokens, "POST", "/api/flows/locked/activate", json={})
    assert refused.status_code == 403
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/locked#run")
    page.get_by_role("button", name="Run as administrator").click()
    alert = page.locator("#run-error")
    expect(alert).to_have_attribute("role", "alert")
    expect(alert).to_contain_text(refused.json()["message"])
    expect(page).to_have_url(server.url + "/flows/locked#run")
    shoot(page, tmp_path, "run-refused.png")
    same_origin(wide, server)


def test_the_identity_check_shows_which_flow_of_the_chain_refuses(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    page = wide.page
    sign_in(page, server, tokens.admin, "/flows/intake#permissions")
    box = page.locator("#check-form")
    box.get_by_label("User id").fill("bob")
    box.get_by_label("Roles").fill("Clerk, Buyer")
    box.get_by_role("button", name="Check").click()
    result = page.locator("#check-result")
    expect(result).to_contain_text("bob (Clerk, Buyer) is refused: review refuses")
    expect(result.locator('li[data-flow="intake"]')).to_contain_text("Allowed")
    expect(result.locator('li[data-flow="review"]')).to_contain_text("Refuses")
    expect(result.locator('li[data-flow="review"]')).to_contain_text("called from intake")
    box.get_by_label("User id").fill("carol")
    box.get_by_role("button", name="Check").click()
    expect(result).to_contain_text("may run intake and every flow it calls")
    shoot(page, tmp_path, "identity-check.png")
    same_origin(wide, server)


def test_the_runs_pages_fit_390_px_without_scrolling_sideways(
    narrow: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    run_id = finished_run(server, tokens)["run_id"]
    page = narrow.page
    sign_in(page, server, tokens.admin, "/runs")

    def fits(name: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} is {width} px wide"
        shoot(page, tmp_path, f"narrow-{name}.png")

    expect(page.locator("tbody tr")).to_have_count(2)
    fits("runs")
    page.goto(f"{server.url}/runs/{run_id}")
    expect(page.locator("#graph svg")).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    fits("run")
    for tab in ("run", "runs", "permissions"):
        page.goto(f"{server.url}/flows/intake#{tab}")
        expect(page.get_by_role("tab", name=tab.upper(), exact=True)).to_have_attribute(
            "aria-selected", "true"
        )
        if tab == "permissions":
            page.get_by_label("User id").fill("bob")
            page.get_by_role("button", name="Check").click()
            expect(page.locator("#check-result")).to_contain_text("refuses")
        fits(f"flow-{tab}")
    same_origin(narrow, server)


def test_a_run_page_is_usable_by_keyboard_alone(
    wide: Watched, server: LiveServer, tokens: Tokens, tmp_path: Path
) -> None:
    """Tab reaches the parent link of a child run's page and the Cancel button of a
    waiting run's page, each with a visible focus ring; Enter opens the confirmation and
    the keyboard confirms it."""
    finished = finished_run(server, tokens)
    child = call(server, tokens, "GET", f"/api/runs?parent={finished['run_id']}").json()
    page = wide.page
    sign_in(page, server, tokens.admin, f"/runs/{child['runs'][0]['run_id']}")
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == (
            f"/runs/{finished['run_id']}"
        ):
            break
    else:
        pytest.fail("Tab never reached the link to the parent run")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    assert page.url.endswith(f"/runs/{finished['run_id']}")

    run_id = call(server, tokens, "POST", "/api/flows/slow/activate").json()["run_id"]
    page.goto(f"{server.url}/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text(re.compile("QUEUED|RUNNING"))
    cancel = page.get_by_role("button", name="Cancel this run")
    for _ in range(60):
        page.keyboard.press("Tab")
        if cancel.evaluate("button => button === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the Cancel button")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=f"Cancel run {run_id}?")
    expect(dialog.get_by_role("button", name="Cancel", exact=True)).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Cancel run")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#run-status")).to_have_text("CANCELLED")
    shoot(page, tmp_path, "run-keyboard.png")
    same_origin(wide, server)
