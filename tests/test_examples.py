"""The example workspaces run, through the Python API, and give the outputs they promise."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine import (
    ActivationDenied,
    Engine,
    Identity,
    InvalidInputs,
    RunStatus,
    VersionStatus,
)
from engine._cli import main
from engine._runtime.workspace import load_workspace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKSPACES = sorted(path for path in EXAMPLES.iterdir() if path.is_dir())
USER = Identity(user_id="tester")


def test_there_are_at_least_five_example_workspaces():
    names = {path.name for path in WORKSPACES}
    assert {"approvals", "http-fetch", "fan-out", "loops", "error-handling"} <= names


@pytest.mark.parametrize("root", WORKSPACES, ids=lambda path: path.name)
async def test_every_example_loads_without_problems_and_is_live(root):
    async with Engine() as engine:
        report = await load_workspace(engine, root)
        assert report.problems == []
        assert report.warnings == []
        assert report.flows
        for flow in report.flows:
            statuses = [info.status for info in await engine.list_versions(flow)]
            assert statuses == [VersionStatus.LIVE], flow


@pytest.mark.parametrize("root", WORKSPACES, ids=lambda path: path.name)
def test_every_example_validates_with_the_cli(root, capsys):
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    assert all(line.startswith("ok: ") for line in out.splitlines())


# -- approvals -------------------------------------------------------------------------------


async def approve(amount: float, identity: Identity) -> tuple[str, dict[str, object], bool]:
    async with await Engine.open_workspace(EXAMPLES / "approvals") as engine:
        result = await engine.call_flow("order-approval", {"amount": amount}, identity=identity)
        return result.status, result.output, result.has_errors


async def test_approvals_small_orders_are_approved_at_once():
    status, output, has_errors = await approve(250, Identity(user_id="bob"))
    assert status is RunStatus.COMPLETED
    assert output == {"approved": True, "decided_by": "auto", "note": "within the automatic limit"}
    assert not has_errors


async def test_approvals_a_manager_approves_a_large_order_through_the_child_flow():
    status, output, has_errors = await approve(5000, Identity(user_id="alice", roles={"Manager"}))
    assert status is RunStatus.COMPLETED
    assert output == {"approved": True, "decided_by": "alice", "note": "approved by a manager"}
    assert not has_errors


async def test_approvals_a_manager_rejects_an_order_over_the_limit():
    _, output, _ = await approve(60000, Identity(user_id="alice", roles={"Manager"}))
    assert output == {
        "approved": False,
        "decided_by": "alice",
        "note": "over the manager limit of 50000",
    }


async def test_approvals_without_the_manager_role_the_escalation_is_refused_and_handled():
    status, output, has_errors = await approve(5000, Identity(user_id="bob"))
    assert status is RunStatus.COMPLETED
    assert output == {
        "approved": False,
        "decided_by": "nobody",
        "note": "needs a manager: activation_denied",
    }
    assert has_errors


@pytest.mark.parametrize("identity", [Identity(), Identity(user_id="mallory", roles={"Manager"})])
async def test_approvals_anonymous_callers_and_mallory_are_denied(identity):
    with pytest.raises(ActivationDenied):
        await approve(5, identity)


async def test_approvals_negative_amounts_are_refused_by_the_schema():
    with pytest.raises(InvalidInputs):
        await approve(-1, USER)


# -- http-fetch ------------------------------------------------------------------------------


class FlakyServer:
    """A real HTTP server on 127.0.0.1 that answers 503 to the first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[dict[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    outer.requests.append(dict(self.headers))
                    count = len(outer.requests)
                if count <= outer.failures:
                    body, status = b"busy", 503
                    kind = "text/plain"
                else:
                    body = json.dumps({"price": 42, "attempt": count}).encode()
                    status, kind = 200, "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/price"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


async def test_http_fetch_retries_until_the_server_answers():
    with FlakyServer(failures=2) as server:
        async with await Engine.open_workspace(EXAMPLES / "http-fetch") as engine:
            result = await engine.call_flow("fetch-json", {"url": server.url}, identity=USER)
    assert result.status is RunStatus.COMPLETED
    assert result.output == {"source": "live", "status": 200, "data": {"price": 42, "attempt": 3}}
    assert not result.has_errors
    assert len(server.requests) == 3
    attempts = [entry.outcome for entry in result.trace if entry.block == "fetch"]
    assert attempts == ["http", "http", "ok"]
    # the backoff waited 0.2 s, then 0.4 s, between the attempts
    starts = [entry.start for entry in result.trace if entry.block == "fetch"]
    assert starts[1] - starts[0] >= 0.2
    assert starts[2] - starts[1] >= 0.4


async def test_http_fetch_falls_back_when_every_attempt_fails():
    with FlakyServer(failures=10) as server:
        async with await Engine.open_workspace(EXAMPLES / "http-fetch") as engine:
            result = await engine.call_flow(
                "fetch-json", {"url": server.url, "fallback": {"price": 0}}, identity=USER
            )
    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == {
        "source": "fallback",
        "data": {"price": 0},
        "error": f"GET {server.url} answered 503",
    }
    assert len(server.requests) == 4


async def test_http_fetch_refuses_a_url_that_is_not_http():
    async with await Engine.open_workspace(EXAMPLES / "http-fetch") as engine:
        with pytest.raises(InvalidInputs):
            await engine.call_flow("fetch-json", {"url": "file:///etc/passwd"}, identity=USER)


# -- fan-out ---------------------------------------------------------------------------------


async def test_fan_out_prices_lines_concurrently_and_collects_bulk_lines():
    lines = [{"sku": f"s{i}", "qty": 10 if i % 3 == 0 else 1, "cents": 100 + i} for i in range(8)]
    async with await Engine.open_workspace(EXAMPLES / "fan-out") as engine:
        result = await engine.call_flow("order-total", {"lines": lines}, identity=USER)
    assert result.status is RunStatus.COMPLETED
    expected = sum(
        line["qty"] * line["cents"] * 9 // 10 if line["qty"] >= 10 else line["qty"] * line["cents"]
        for line in lines
    )
    assert result.output["total_cents"] == expected == 3300
    assert result.output["lines_priced"] == 8
    assert sorted(result.output["bulk"]) == ["s0", "s3", "s6"]
    assert [entry.block for entry in result.trace].count("lookup") == 8
    # the lookups overlapped in time, never more than four at once (concurrency: 4)
    lookups = [entry for entry in result.trace if entry.block == "lookup"]
    most = max(
        sum(1 for other in lookups if other.start <= entry.start < other.start + other.duration)
        for entry in lookups
    )
    assert 2 <= most <= 4


async def test_fan_out_exact_cents_for_a_small_order():
    lines = [{"sku": "pen", "qty": 2, "cents": 999}, {"sku": "clip", "qty": 10, "cents": 150}]
    async with await Engine.open_workspace(EXAMPLES / "fan-out") as engine:
        result = await engine.call_flow("order-total", {"lines": lines}, identity=USER)
    assert result.output == {"total_cents": 3348, "lines_priced": 2, "bulk": ["clip"]}


# -- loops -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "steps", "peak"), [(1, 0, 1), (6, 8, 16), (27, 111, 9232), (97, 118, 9232)]
)
async def test_loops_collatz(n, steps, peak):
    async with await Engine.open_workspace(EXAMPLES / "loops") as engine:
        result = await engine.call_flow("collatz", {"n": n}, identity=USER)
    assert result.status is RunStatus.COMPLETED
    assert result.output == {"start": n, "steps": steps, "peak": peak}


@pytest.mark.parametrize(
    ("numbers", "above", "output"),
    [
        ([3, 8, 12, 20], 10, {"found": 12, "position": 2, "checked": 3}),
        ([50, 1], 10, {"found": 50, "position": 0, "checked": 1}),
        ([3, 4], 10, {"found": None, "position": -1, "checked": 2}),
        ([], 10, {"found": None, "position": -1, "checked": 0}),
    ],
)
async def test_loops_find_first_stops_at_the_first_match(numbers, above, output):
    async with await Engine.open_workspace(EXAMPLES / "loops") as engine:
        result = await engine.call_flow(
            "find-first", {"numbers": numbers, "above": above}, identity=USER
        )
    assert result.status is RunStatus.COMPLETED
    assert result.output == output
    # break left the loop: no block ran for the numbers after the match
    assert [entry.block for entry in result.trace].count("test") == output["checked"]


# -- error-handling --------------------------------------------------------------------------


async def charge(inputs: dict[str, object]):
    async with await Engine.open_workspace(EXAMPLES / "error-handling") as engine:
        return await engine.call_flow("charge", inputs, identity=USER)


async def test_error_handling_a_plain_charge_goes_through():
    result = await charge({"amount": 10})
    assert result.status is RunStatus.COMPLETED
    assert result.output == {"status": "charged", "amount": 10}
    assert not result.has_errors


async def test_error_handling_a_slow_gateway_times_out_and_the_charge_is_queued():
    result = await charge({"amount": 10, "gateway_delay": 30})
    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == {"status": "queued", "reason": "timeout", "failed_block": "gateway"}
    (gateway,) = (entry for entry in result.trace if entry.block == "gateway")
    assert gateway.outcome == "timeout"
    assert 0.4 < gateway.duration < 5
    assert [entry["message"] for entry in result.log] == [
        "gateway unavailable, queueing the charge: block 'gateway' timed out after 0.5 s"
    ]


async def test_error_handling_a_declined_card_is_handled_from_vars_error():
    result = await charge({"amount": 10, "card": "tok_declined"})
    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == {
        "status": "declined",
        "reason": "card_declined",
        "message": "the issuer declined the card",
    }


async def test_error_handling_an_unhandled_failure_fails_the_run():
    result = await charge({"amount": -5})
    assert result.status is RunStatus.FAILED
    assert result.output is None
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.block) == (
        "invalid_amount",
        "amount must be positive, got -5",
        "invalid",
    )


# -- hello -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "greeting"),
    [
        ({}, "Hello, world!"),
        ({"name": "Ada"}, "Hello, Ada!"),
        ({"name": "Ada", "lang": "fr"}, "Bonjour, Ada!"),
        ({"name": "Grace", "lang": "de"}, "Hallo, Grace!"),
    ],
)
async def test_hello_greets_in_the_chosen_language(inputs, greeting):
    async with await Engine.open_workspace(EXAMPLES / "hello") as engine:
        result = await engine.call_flow("hello", inputs)
    assert result.output == {"greeting": greeting}


# -- the demo commands the docs show ---------------------------------------------------------


ORDER_LINES = json.dumps(
    {"lines": [{"sku": "pen", "qty": 2, "cents": 999}, {"sku": "clip", "qty": 10, "cents": 150}]}
)
DEMOS = [
    ("run examples/hello hello -i name=Ada -i lang=fr", 0, {"greeting": "Bonjour, Ada!"}),
    (
        "run examples/approvals order-approval -i amount=5000 --user alice --role Manager",
        0,
        {"approved": True, "decided_by": "alice", "note": "approved by a manager"},
    ),
    (
        "run examples/approvals order-approval -i amount=5000 --user bob",
        0,
        {"approved": False, "decided_by": "nobody", "note": "needs a manager: activation_denied"},
    ),
    ("run examples/approvals order-approval -i amount=5000", 3, None),
    (
        "run examples/fan-out order-total --inputs ORDER_LINES",
        0,
        {"total_cents": 3348, "lines_priced": 2, "bulk": ["clip"]},
    ),
    ("run examples/loops collatz -i n=27", 0, {"start": 27, "steps": 111, "peak": 9232}),
    (
        "run examples/loops find-first -i numbers=[3,8,12,20] -i above=10",
        0,
        {"found": 12, "position": 2, "checked": 3},
    ),
    (
        "run examples/error-handling charge -i amount=20 -i gateway_delay=2",
        0,
        {"status": "queued", "reason": "timeout", "failed_block": "gateway"},
    ),
    ("run examples/error-handling charge -i amount=-5", 1, None),
]


@pytest.mark.parametrize(("command", "code", "output"), DEMOS, ids=[demo[0] for demo in DEMOS])
def test_demo_commands(command, code, output, capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    argv = [ORDER_LINES if word == "ORDER_LINES" else word for word in command.split()]
    assert main(argv) == code
    out = capsys.readouterr().out
    if output is None:
        assert out == ""
    else:
        assert json.loads(out) == output


def test_demo_check_of_the_approvals_chain(capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    assert main(["check", "examples/approvals", "order-approval", "--user", "bob"]) == 3
    assert capsys.readouterr().out.splitlines() == [
        "ALLOW order-approval (layer default): granted by default",
        "DENY manager-review (layer flow.system_role) via order-approval: "
        "denied by flow-level system role AuthenticatedUser",
    ]
    argv = ["check", "examples/approvals", "order-approval", "--user", "alice", "--role", "Manager"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ALLOW order-approval (layer default): granted by default",
        "ALLOW manager-review (layer flow.role) via order-approval: "
        "granted by flow-level role Manager",
    ]
