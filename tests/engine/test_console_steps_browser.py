"""The run page's Steps and the runs tables' pages, in a real headless Chromium: a
finished durable run stepped through block by block with the keyboard, older and newer
pages of /runs and of a flow's RUNS tab — at 390 px too, and with no request elsewhere."""

# The browser fixtures are the console tests': imported, then named as test parameters,
# which is how pytest finds them.
# ruff: noqa: F401, F811

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer
from test_console_browser import Watched, browser, narrow, shoot, wide
from test_ui_browser import CHROMIUM, sign_in

from engine import Identity
from engine._http.auth import add_token

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
expect = sync_api.expect
Page = sync_api.Page

TALLY = """
flow: tally
status: LIVE
start: init
blocks:
  init: {type: set, values: {count: 0, label: "=inputs.label"}, next: loop}
  loop: {type: repeat, while: "vars.count < 2", max_iterations: 10, body: bump, next: note}
  bump: {type: set, values: {count: "=vars.count + 1"}}
  note: {type: set, values: {summary: "='counted ' + string(vars.count)"}, next: done}
  done: {type: return, value: "=vars.count"}
"""
OTHER = """
flow: other
status: LIVE
start: done
blocks:
  done: {type: return, value: 1}
"""
PAGE = 100  # the runs tables' page size


@pytest.fixture
def admin(tmp_path: Path) -> str:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "tally.yaml").write_text(TALLY)
    (workspace / "other.yaml").write_text(OTHER)
    return add_token(workspace / "tokens.yaml", "root", ["Administrator"])


@pytest.fixture
def durable(tmp_path: Path, admin: str) -> Iterator[LiveServer]:
    """A server whose engine keeps its runs, with their steps, in a SQLite file."""
    workspace = tmp_path / "workspace"
    with LiveServer(workspace, store=f"sqlite:///{tmp_path / 'runs.db'}") as running:
        yield running


@pytest.fixture
def memory(tmp_path: Path, admin: str) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "workspace") as running:
        yield running


def get(server: LiveServer, admin: str, path: str) -> Any:
    response = httpx.get(server.url + path, headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 200, response.text
    return response.json()


def tally(server: LiveServer, admin: str, label: str = "ink") -> dict[str, Any]:
    response = httpx.post(
        server.url + "/api/flows/tally/activate-blocking",
        json={"label": label},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["status"] == "COMPLETED", result
    return result


def many_runs(server: LiveServer, flow: str, count: int) -> None:
    """``count`` finished runs of ``flow``, started in the server's engine."""
    engine = server.engine
    assert engine is not None

    async def start() -> None:
        for _ in range(count):
            await engine.call_flow(flow, {"label": "x"}, identity=Identity("root"))

    server.call(start)


def same_origin(watched: Watched, server: LiveServer) -> None:
    elsewhere = [url for url in watched.requests if not url.startswith(server.url + "/")]
    assert elsewhere == [], f"requests to another origin: {elsewhere}"


def tab_to(page: Page, name: str) -> None:
    button = page.get_by_role("button", name=name, exact=True)
    for _ in range(80):
        page.keyboard.press("Tab")
        if button.evaluate("button => button === document.activeElement"):
            return
    pytest.fail(f"Tab never reached {name!r}")


def test_a_finished_durable_run_is_stepped_through_by_keyboard(
    wide: Watched, durable: LiveServer, admin: str, tmp_path: Path
) -> None:
    result = tally(durable, admin)
    run_id = result["run_id"]
    steps = get(durable, admin, f"/api/runs/{run_id}/steps")["steps"]
    blocks = [entry["block"] for entry in result["trace"]]
    assert blocks == ["init", "bump", "bump", "loop", "note", "done"]
    assert [step["block"] for step in steps] == blocks[:-1]  # the return ends the run
    page = wide.page
    sign_in(page, durable, admin, f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    status = page.get_by_role("status").filter(has_text="Step")  # besides the page's notices
    expect(status).to_have_attribute("aria-live", "polite")
    shown = page.get_by_label("Variables after this block")
    timeline = page.locator("#run-trace .step")

    def at(number: int) -> None:
        step = steps[number - 1]
        expect(status).to_have_text(f"Step {number} of {len(steps)}: after block {step['block']}")
        expect(shown).to_have_text(json.dumps(step["variables"], indent=2))
        current = page.locator('#run-trace .step[aria-current="step"]')
        expect(current).to_have_count(1)
        expect(timeline.nth(step["trace_index"])).to_have_attribute("aria-current", "step")
        expect(timeline.nth(step["trace_index"])).to_have_class(re.compile(r"\bcurrent\b"))

    at(1)
    expect(shown).to_contain_text('"label": "ink"')
    tab_to(page, "Next step")
    for number in range(2, len(steps) + 1):
        page.keyboard.press("Enter")
        at(number)
    expect(shown).to_contain_text('"summary": "counted 2"')
    page.keyboard.press("Enter")  # past the last step: nothing moves
    at(len(steps))
    expect(page.get_by_role("button", name="Next step")).to_have_attribute("aria-disabled", "true")
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Previous step")).to_be_focused()
    page.keyboard.press(" ")
    at(len(steps) - 1)
    page.keyboard.press("ArrowLeft")  # the arrow keys move too
    at(len(steps) - 2)
    page.keyboard.press("ArrowRight")
    at(len(steps) - 1)
    for _ in range(len(steps)):
        page.keyboard.press("ArrowLeft")
    at(1)
    expect(page.get_by_role("button", name="Previous step")).to_have_attribute(
        "aria-disabled", "true"
    )
    expect(page.locator("#run-steps-note")).to_contain_text("The block that ended the run")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    at(3)
    page.locator("#run-steps-panel").scroll_into_view_if_needed()
    shoot(page, tmp_path, "run-steps.png", keep=True)
    same_origin(wide, durable)


def test_a_run_on_the_memory_store_says_it_has_no_steps(
    wide: Watched, memory: LiveServer, admin: str
) -> None:
    run_id = tally(memory, admin)["run_id"]
    page = wide.page
    sign_in(page, memory, admin, f"/runs/{run_id}")
    expect(page.locator("#run-steps-note")).to_contain_text("keeps no per-block checkpoints")
    expect(page.locator("#run-stepper")).to_be_hidden()
    expect(page.locator('#run-trace .step[aria-current="step"]')).to_have_count(0)
    same_origin(wide, memory)


def test_the_runs_table_pages_to_older_runs_and_back_keeping_its_filter(
    wide: Watched, durable: LiveServer, admin: str, tmp_path: Path
) -> None:
    many_runs(durable, "tally", PAGE + 5)
    many_runs(durable, "other", 3)
    newest = get(durable, admin, f"/api/runs?limit={PAGE}")["runs"]
    page = wide.page
    sign_in(page, durable, admin, "/runs")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(PAGE)
    expect(page.get_by_role("link", name="← Newer runs")).to_have_count(0)
    first = [run["run_id"] for run in newest]
    expect(rows.first).to_have_attribute("data-run", first[0])
    older = page.get_by_role("link", name="Older runs →")
    older.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/runs\?cursor="))
    expect(rows).to_have_count(PAGE + 8 - PAGE)
    second = [row.get_attribute("data-run") for row in rows.all()]
    assert not set(second) & set(first)
    expect(page.get_by_role("link", name="Older runs →")).to_have_count(0)  # the last page
    shoot(page, tmp_path, "runs-older.png", keep=True)
    page.get_by_role("link", name="← Newer runs").click()
    expect(rows).to_have_count(PAGE)
    expect(rows.first).to_have_attribute("data-run", first[0])
    assert page.url == durable.url + "/runs"

    page.goto(durable.url + "/runs?flow=tally")
    expect(rows).to_have_count(PAGE)
    link = page.get_by_role("link", name="Older runs →")
    expect(link).to_have_attribute("href", re.compile(r"flow=tally.*cursor=|cursor=.*flow=tally"))
    link.click()
    expect(rows).to_have_count(5)  # the filter was kept: only tally's runs
    expect(page.get_by_label("Flow")).to_have_value("tally")
    for row in rows.all():
        expect(row).to_contain_text("tally v1")
    same_origin(wide, durable)


def test_a_flows_runs_tab_pages_to_older_runs(
    wide: Watched, durable: LiveServer, admin: str
) -> None:
    many_runs(durable, "tally", PAGE + 2)
    page = wide.page
    sign_in(page, durable, admin, "/flows/tally#runs")
    rows = page.locator("#panel-runs tbody tr")
    expect(rows).to_have_count(PAGE)
    page.locator("#panel-runs").get_by_role("link", name="Older runs →").click()
    expect(page).to_have_url(re.compile(r"/flows/tally\?cursor=[^#]+&newer=#runs$"))
    expect(page.get_by_role("tab", name="RUNS", exact=True)).to_have_attribute(
        "aria-selected", "true"
    )
    expect(rows).to_have_count(2)
    page.locator("#panel-runs").get_by_role("link", name="← Newer runs").click()
    expect(rows).to_have_count(PAGE)
    same_origin(wide, durable)


def test_the_steps_and_the_pager_fit_390_px_without_scrolling_sideways(
    narrow: Watched, durable: LiveServer, admin: str, tmp_path: Path
) -> None:
    run_id = tally(durable, admin, label="a-label-without-any-space-" * 8)["run_id"]
    many_runs(durable, "tally", PAGE)
    page = narrow.page

    def fits(name: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} is {width} px wide"
        shoot(page, tmp_path, f"narrow-{name}.png")

    sign_in(page, durable, admin, f"/runs/{run_id}")
    expect(page.locator("#step-status")).to_contain_text("Step 1 of 5")
    page.get_by_role("button", name="Next step").click()
    expect(page.locator("#step-status")).to_contain_text("Step 2 of 5")
    fits("run-steps")
    page.goto(durable.url + "/runs")
    expect(page.get_by_role("link", name="Older runs →")).to_be_visible()
    fits("runs-pager")
    page.get_by_role("link", name="Older runs →").click()
    expect(page.get_by_role("link", name="← Newer runs")).to_be_visible()
    fits("runs-older")
    page.goto(durable.url + "/flows/tally#runs")
    expect(page.locator("#panel-runs").get_by_role("link", name="Older runs →")).to_be_visible()
    fits("flow-runs-pager")
    same_origin(narrow, durable)
