"""Hostile input is refused with the typed error of the place it came in (section 11).

Deep nesting, alias bombs, non-JSON numbers, names with a trailing newline, huge
version numbers, cross-site form posts, remote ``$ref`` s: each is refused where it
enters — ``InvalidFlow``, ``422``, ``415``, exit 2 — never a traceback, a 500, a hang or
a logged secret. HTTP is checked against ``flowwarden serve`` in a process of its own,
whose stderr is read back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from serve_process import FLOWWARDEN, ServeProcess

from blocks import BlockRegistry
from engine import Engine, InvalidFlow, InvalidInputs, InvalidWorkspace
from engine._http.auth import TokenFileAuthenticator, add_token
from engine._model.document import FlowDocument, parse_document, validate_document
from engine._model.limits import JSONLimitError, NestingTooDeep, load_yaml, loads_json
from engine._runtime.interpreter import Program
from engine._runtime.workspace import read_permissions
from engine._store.sqlite import SQLiteStore
from permissions import Identity

DEEP = "[" * 100_000
# nine levels of nine aliases: 9**9 strings once expanded, from a few hundred bytes
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)

ORDER = """
flow: order
status: LIVE
inputs:
  type: object
  properties: {amount: {type: number, minimum: 0}}
start: done
blocks:
  done: {type: return, value: {amount: "=inputs.amount"}}
"""

GUARDED = """
flow: guarded
status: LIVE
start: done
blocks:
  done: {type: return, value: 1}
"""

PERMISSIONS = "flows: {guarded: {roles: {NonAuthenticatedUser: deny}}}\n"


class Served(ServeProcess):
    """``flowwarden serve`` of one workspace; its stderr is kept for the checks."""

    def __init__(self, workspace: Path) -> None:
        super().__init__(str(workspace))

    def post(self, path: str, body: bytes | None, **headers: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=30)


class Tokens:
    def __init__(self, workspace: Path) -> None:
        path = workspace / "tokens.yaml"
        self.admin = add_token(path, "root", ["Administrator"])
        self.alice = add_token(path, "alice", [])


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


JSON = {"Content-Type": "application/json"}


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text[:300]
    code: str = response.json()["error"]
    return code


def assert_clean_log(stderr: str, *secrets: str) -> None:
    """The server logged no traceback, no unhandled error and none of ``secrets``."""
    for secret in secrets:
        assert secret not in stderr
    assert "Traceback" not in stderr and '"http.error"' not in stderr, stderr[-3000:]
    statuses = [
        json.loads(line).get("status")
        for line in stderr.splitlines()
        if line.startswith("{") and '"http.request"' in line
    ]
    assert statuses and 500 not in statuses


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "order.yaml").write_text(ORDER)
    (tmp_path / "guarded.yaml").write_text(GUARDED)
    (tmp_path / "permissions.yaml").write_text(PERMISSIONS)
    return tmp_path


@pytest.fixture
def tokens(workspace: Path) -> Tokens:
    return Tokens(workspace)


@pytest.fixture
def served(workspace: Path, tokens: Tokens) -> Iterator[Served]:
    with Served(workspace) as server:
        yield server
    assert server.process.returncode == 0, server.stderr[-3000:]
    assert_clean_log(server.stderr, tokens.admin, tokens.alice)


# -- the readers themselves ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e999", "[-1e400]"])
def test_the_json_reader_refuses_what_is_not_json(text: str) -> None:
    with pytest.raises(JSONLimitError):
        loads_json(text)


def test_the_json_reader_answers_as_json_loads_does_call_after_call() -> None:
    # one decoder serves every call: a refusal leaves nothing behind for the next
    for text, expected in [('{"a": [1, 2.5]}', {"a": [1, 2.5]}), (b'{"n": 1}', {"n": 1})]:
        with pytest.raises(JSONLimitError):
            loads_json("[1, NaN]")
        assert loads_json(text) == expected
    for text in ["\ufeff{}", '{"a": 1', "", "[1,]"]:
        with pytest.raises(json.JSONDecodeError) as ours:
            loads_json(text)
        with pytest.raises(json.JSONDecodeError) as stdlib:
            json.loads(text)
        assert str(ours.value) == str(stdlib.value)


def test_the_json_reader_refuses_nesting_past_the_limit_before_parsing() -> None:
    assert loads_json("[" * 64 + "]" * 64) is not None
    with pytest.raises(NestingTooDeep):
        loads_json("[" * 65 + "]" * 65)
    with pytest.raises(NestingTooDeep):
        loads_json(DEEP)
    assert loads_json('{"a": "' + "[" * 1000 + '"}') == {"a": "[" * 1000}  # strings don't nest
    with pytest.raises(NestingTooDeep):
        loads_json("[" * 10, max_nesting=9)


def test_the_yaml_reader_refuses_an_alias_bomb_at_once() -> None:
    assert len(ALIAS_BOMB) < 500
    started = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match="more than 100000 nodes"):
        load_yaml(ALIAS_BOMB)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (DEEP, "deeper than 64"),
        ("a: " + "[" * 64 + "]" * 64, "deeper than 64"),
        ("x: &x " + "[" * 60 + "1" + "]" * 60 + "\ny: [[[[[*x]]]]]", "deeper than 64"),
        ("&a [*a]", "alias inside the collection"),
        ("a: " + "x" * 1_048_577, "over the limit"),
        ("s: &s " + "y" * 1000 + "\nl: [" + ", ".join(["*s"] * 2000) + "]", "more than 1048576"),
    ],
)
def test_the_yaml_reader_refuses_deep_recursive_and_oversized_documents(
    text: str, problem: str
) -> None:
    with pytest.raises(yaml.YAMLError, match=problem):
        load_yaml(text)


def test_the_yaml_reader_keeps_ordinary_aliases_and_merge_keys() -> None:
    loaded = load_yaml("base: &b {a: 1}\nmore: {<<: *b, c: 2}\nlist: [*b, *b]")
    assert loaded == {"base": {"a": 1}, "more": {"a": 1, "c": 2}, "list": [{"a": 1}, {"a": 1}]}
    assert load_yaml("a: " + "[" * 63 + "1" + "]" * 63)["a"] is not None


# -- documents ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [DEEP, "flow: x\nstart: a\nblocks: " + DEEP, ALIAS_BOMB])
def test_a_hostile_document_is_invalid_flow(text: str) -> None:
    with pytest.raises(InvalidFlow) as caught:
        parse_document(text)
    assert len(caught.value.problems) == 1


def test_a_deep_document_given_as_a_mapping_is_invalid_flow() -> None:
    deep: Any = {}
    for _ in range(5000):
        deep = {"a": deep}
    with pytest.raises(InvalidFlow, match="over a limit"):
        parse_document({"flow": "x", "start": "a", "blocks": {"a": deep}})


async def test_an_alias_bomb_cannot_reach_the_engine() -> None:
    async with Engine() as engine:
        started = time.perf_counter()
        with pytest.raises(InvalidFlow):
            await engine.add_version(
                "flow: bomb\nstart: a\nblocks: {a: {type: return}}\n" + ALIAS_BOMB
            )
        assert time.perf_counter() - started < 2


def test_an_inputs_schema_may_not_refer_outside_itself() -> None:
    raw = parse_document(
        """
flow: refs
inputs:
  $defs: {amount: {type: number}}
  properties:
    local: {$ref: "#/$defs/amount"}
    remote: {$ref: "http://127.0.0.1:9/schema.json"}
    $ref: {type: string}
  items: {$ref: "other.json#/x"}
  enum: [{$ref: "only data"}]
start: done
blocks:
  done: {type: return, value: 1}
"""
    )
    _, problems = validate_document(raw, BlockRegistry())
    refs = sorted(str(problem.field) for problem in problems)
    assert refs == ["inputs.items.$ref", "inputs.properties.remote.$ref"]


def test_the_inputs_validator_never_fetches_a_reference() -> None:
    with socket.socket() as listener:  # a server that would see any fetch
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.3)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/schema.json"
        raw = parse_document(
            {
                "flow": "old",
                "inputs": {"$ref": url},
                "start": "a",
                "blocks": {"a": {"type": "return"}},
            }
        )
        registry = BlockRegistry()
        valid, _ = validate_document({**raw, "inputs": None}, registry)
        assert valid is not None
        document = FlowDocument.model_validate({**valid.model_dump(), "inputs": {"$ref": url}})
        validator = Program(document, registry).input_validator
        assert validator is not None
        with pytest.raises(Exception, match="Unresolvable"):
            list(validator.iter_errors({}))
        with pytest.raises(TimeoutError):
            listener.accept()


# -- configuration files -----------------------------------------------------------------


@pytest.mark.parametrize("text", [DEEP, ALIAS_BOMB, "&a [*a]"])
def test_hostile_configuration_files_are_invalid_workspace(tmp_path: Path, text: str) -> None:
    path = tmp_path / "permissions.yaml"
    path.write_text(text)
    with pytest.raises(InvalidWorkspace):
        read_permissions(path)
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(InvalidWorkspace):
        TokenFileAuthenticator(path)


# -- the CLI -------------------------------------------------------------------------------


def flowwarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWWARDEN, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "option",
    [["--inputs", DEEP], ["-i", f"x={DEEP}"], ["--inputs", '{"amount": NaN}']],
    ids=["inputs-deep", "i-deep", "inputs-nan"],
)
def test_hostile_cli_inputs_exit_2_with_a_message(workspace: Path, option: list[str]) -> None:
    result = flowwarden("run", str(workspace), "order", *option, "--store", "memory:")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "not valid JSON" in result.stderr or "deeper than 64" in result.stderr


@pytest.mark.parametrize("text", [DEEP, ALIAS_BOMB])
def test_one_hostile_file_in_a_workspace_leaves_every_other_flow_running(
    workspace: Path, tokens: Tokens, text: str
) -> None:
    (workspace / "bad.yaml").write_text(text)
    ran = flowwarden("run", str(workspace), "order", "-i", "amount=3", "--store", "memory:")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(ran.stdout) == {"amount": 3}
    assert ran.stderr.count("bad.yaml") == 1 and "Traceback" not in ran.stderr
    checked = flowwarden("validate", str(workspace))
    assert checked.returncode == 2 and "bad.yaml" in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    with Served(workspace) as server:
        answer = server.post("/api/flows/order/activate-blocking", b'{"amount": 1}', **JSON)
        assert answer.status_code == 200 and answer.json()["output"] == {"amount": 1}
    assert_clean_log(server.stderr, tokens.admin, tokens.alice)


def test_flowwarden_serve_refuses_a_hostile_tokens_file_with_exit_2(workspace: Path) -> None:
    (workspace / "tokens.yaml").write_text(DEEP)
    result = flowwarden("serve", str(workspace), "--port", "0")
    assert result.returncode == 2 and "tokens.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_store_file_of_serve_is_private(workspace: Path) -> None:
    with Served(workspace) as server:
        ran = server.post("/api/flows/order/activate-blocking", b'{"amount": 1}', **JSON)
        assert ran.status_code == 200
        files = [workspace / f".flowwarden.db{suffix}" for suffix in ("", "-wal", "-shm")]
        assert [stat.S_IMODE(file.stat().st_mode) for file in files] == [0o600] * 3


async def test_a_sqlite_store_creates_its_files_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with Engine(store=SQLiteStore(path)) as engine:
        await engine.add_version(GUARDED)
        files = [path, tmp_path / "runs.db-wal", tmp_path / "runs.db-shm"]
        assert all(file.exists() for file in files)
        assert [stat.S_IMODE(file.stat().st_mode) for file in files] == [0o600] * 3


# -- HTTP, against a real server process ----------------------------------------------------


def test_a_deeply_nested_body_from_a_permitted_caller_is_422(
    served: Served, tokens: Tokens
) -> None:
    for body in (DEEP.encode(), b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}"):
        answer = served.post("/api/flows/order/activate", body, **bearer(tokens.alice), **JSON)
        assert error_of(answer, 422) == "invalid_inputs"
        assert "deeper than 64" in answer.json()["message"]
    ok = served.post("/api/flows/order/activate-blocking", b'{"amount": 2}', **JSON)
    assert ok.status_code == 200 and ok.json()["output"] == {"amount": 2}


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"Infinity", b'{"amount": NaN}', b'{"amount": -Infinity}', b'{"amount": 1e999}'],
)
def test_nan_and_infinity_are_not_json(served: Served, body: bytes) -> None:
    answer = served.post("/api/flows/order/activate-blocking", body, **JSON)
    assert error_of(answer, 422) == "invalid_inputs"


def _raw_exchange(port: int, head: bytes, filler: bytes = b"", times: int = 0) -> bytes:
    """What the server answers on a connection of its own to ``head`` and then
    ``times`` pieces of ``filler``: b"" when it closed the connection with a reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(head)
            for _ in range(times):
                conn.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was sent: the answer may still be there
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
        return answer


def _resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_malformed_or_endless_request_head_is_400_and_the_server_keeps_serving(
    served: Served,
) -> None:
    activation = b"POST /api/flows/order/activate-blocking HTTP/1.1\r\nHost: test\r\n"
    body = b'{"amount": 3}'
    framed = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    # not HTTP at all (a TLS hello's first bytes, then text)
    assert _raw_exchange(served.port, b"\x16\x03\x01\x02\x00 hello\r\n\r\n").startswith(
        b"HTTP/1.1 400 "
    )
    # a long header under the bound is read as any other
    long = b"X-Long: " + b"a" * 40_000 + b"\r\n"
    answer = _raw_exchange(
        served.port, activation + long + framed + b"Connection: close\r\n\r\n" + body
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["output"] == {"amount": 3}
    # one header growing for 32 MB: refused once the head is over the bound, so the
    # server keeps under 8 MiB of it (the parser alone would keep every byte, waiting)
    before = _resident_kib(served.process.pid)
    answer = _raw_exchange(served.port, activation + b"X-Endless: ", b"a" * 65_536, 512)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert _resident_kib(served.process.pid) - before < 8_192
    # and an endless request line alike
    answer = _raw_exchange(served.port, b"GET /", b"a" * 65_536, 512)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert _resident_kib(served.process.pid) - before < 8_192
    ok = served.post("/api/flows/order/activate-blocking", body, **JSON)
    assert ok.status_code == 200 and ok.json()["output"] == {"amount": 3}


def test_a_deep_management_body_is_refused_not_a_500(served: Served, tokens: Tokens) -> None:
    admin = bearer(tokens.admin)
    document = served.post("/api/flows/order/versions", DEEP.encode(), **admin)
    assert error_of(document, 422) == "invalid_flow"
    bomb = served.post("/api/flows/order/versions", ALIAS_BOMB.encode(), **admin)
    assert error_of(bomb, 422) == "invalid_flow"
    setting = httpx.put(
        f"{served.url}/api/permissions/users/bob", content=DEEP.encode(), headers=admin
    )
    assert error_of(setting, 422) == "invalid_body"
    nan = httpx.put(
        f"{served.url}/api/permissions/users/bob", content=b'{"permission": NaN}', headers=admin
    )
    assert error_of(nan, 422) == "invalid_body"
    listed = httpx.get(f"{served.url}/api/flows", headers=admin)
    assert listed.status_code == 200 and {f["flow"] for f in listed.json()["flows"]} >= {"order"}


@pytest.mark.parametrize("version", ["100000000000000000000000", "2147483648", "99999"])
def test_a_huge_version_number_in_a_url_is_404(
    served: Served, tokens: Tokens, version: str
) -> None:
    answer = served.post(f"/api/flows/order/versions/{version}/start", None, **bearer(tokens.admin))
    assert error_of(answer, 404) == "flow_not_found"


def test_a_flow_name_with_a_trailing_newline_is_no_flow(served: Served, tokens: Tokens) -> None:
    answer = httpx.get(f"{served.url}/api/flows/order%0A", headers=bearer(tokens.admin))
    assert error_of(answer, 404) == "flow_not_found"
    added = served.post(
        "/api/flows/order%0A/versions",
        b"start: a\nblocks: {a: {type: return}}\n",
        **bearer(tokens.admin),
    )
    assert error_of(added, 404) == "flow_not_found"


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None],
)
def test_an_activation_body_that_is_not_declared_json_is_415_and_runs_nothing(
    served: Served, tokens: Tokens, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path in ("/api/flows/order/activate", "/api/flows/order/activate-blocking"):
        answer = served.post(path, b'{"amount": 1}', **headers)
        assert error_of(answer, 415) == "unsupported_media_type"
    runs = httpx.get(f"{served.url}/api/flows/order", headers=bearer(tokens.admin))
    assert runs.status_code == 200
    kept = served.post("/api/flows/order/activate", b"", **{"Content-Type": "text/plain"})
    assert kept.status_code == 202  # an empty body is {} whatever its type
    declared = served.post(
        "/api/flows/order/activate", b"{}", **{"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert declared.status_code == 202


def test_refusals_come_in_order_401_413_415_then_the_gate(served: Served) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    huge = b"x" * (1_048_576 + 1)
    assert (
        error_of(
            served.post("/api/flows/guarded/activate", b"a=1", Authorization="Bearer no", **form),
            401,
        )
        == "unauthenticated"
    )
    assert error_of(served.post("/api/flows/guarded/activate", huge, **form), 413) == (
        "payload_too_large"
    )
    # a denied caller's form post: 415 before the gate's 403
    assert error_of(served.post("/api/flows/guarded/activate", b"a=1", **form), 415) == (
        "unsupported_media_type"
    )
    # declared JSON that nests too deep: the gate denies first, the body is parsed last
    denied = served.post("/api/flows/guarded/activate", DEEP.encode(), **JSON)
    assert error_of(denied, 403) == "activation_denied"
    assert "gate failed" not in denied.text


def test_a_broken_tokens_file_during_service_keeps_the_tokens_and_logs_no_token(
    workspace: Path, tokens: Tokens
) -> None:
    with Served(workspace) as server:
        (workspace / "tokens.yaml").write_text(DEEP)
        time.sleep(1.2)  # the file is looked at again at most once a second
        for _ in range(2):
            answer = server.post(
                "/api/flows/order/activate-blocking", b"{}", **bearer(tokens.alice), **JSON
            )
            assert answer.status_code == 200, answer.text
            time.sleep(1.1)
    assert server.process.returncode == 0
    assert_clean_log(server.stderr, tokens.alice, tokens.admin)


def test_the_server_log_renders_tracebacks_without_local_variables(tmp_path: Path) -> None:
    script = """
import structlog
from engine._http.app import configure_json_logs
configure_json_logs()
def authenticate(token):
    raise RuntimeError("boom")
try:
    authenticate("s3cr3t-token-value")
except RuntimeError:
    structlog.get_logger("flowwarden.http").exception("http.error")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["event"] == "http.error" and "RuntimeError" in json.dumps(line["exception"])
    assert "s3cr3t-token-value" not in result.stderr


@pytest.mark.parametrize("stderr", ["the process's", "text only"])
def test_the_server_log_writes_whole_json_lines_after_what_stderr_had(stderr: str) -> None:
    # lines go to stderr's binary buffer where it has one: text written before them
    # comes first, and a stderr replaced by a text stream gets the same lines
    replace = "import io; sys.stderr = io.StringIO()" if stderr == "text only" else ""
    script = f"""
import sys
{replace}
import structlog
from engine._http.app import configure_json_logs
print("before, no newline", file=sys.stderr, end="")
configure_json_logs()
structlog.get_logger("flowwarden.http").info("http.request", path="/caf\u00e9", big=2**70)
text = sys.stderr.getvalue() if hasattr(sys.stderr, "getvalue") else None
if text is not None:
    sys.__stderr__.write(text)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("before, no newline{"), result.stderr
    line = json.loads(result.stderr.removeprefix("before, no newline"))
    assert line["event"] == "http.request" and line["path"] == "/caf\u00e9"
    assert line["big"] == 2**70  # orjson refuses it: the standard library wrote it


def test_hostile_inputs_from_the_python_api_are_invalid_inputs() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]

    async def go() -> None:
        async with Engine() as engine:
            version = await engine.add_version(ORDER)
            await engine.start("order", version)
            with pytest.raises(InvalidInputs, match="deeper than 64"):
                await engine.call_flow("order", {"a": deep}, identity=Identity())

    import anyio

    anyio.run(go)


# -- sign-in redirects, in a real browser ---------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")
@pytest.mark.parametrize(
    "wanted",
    [
        "//other-site/x",
        "/.//other-site/x",
        "/\\other-site/x",
        "/\t/other-site/x",
        "https://other-site/x",
    ],
)
def test_sign_in_follows_only_a_path_of_the_same_site(
    served: Served, tokens: Tokens, wanted: str
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            query = httpx.QueryParams({"next": wanted})
            page.goto(f"{served.url}/sign-in?{query}")
            page.get_by_label("Administrator token").fill(tokens.admin)
            page.get_by_role("button", name="Sign in").click()
            sync_api.expect(page).to_have_url(f"{served.url}/")
            page.goto(f"{served.url}/sign-in?{httpx.QueryParams({'next': '/flows/order'})}")
            page.get_by_label("Administrator token").fill(tokens.admin)
            page.get_by_role("button", name="Sign in").click()
            sync_api.expect(page).to_have_url(f"{served.url}/flows/order")
        finally:
            browser.close()


# -- every entry point, fuzzed ----------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ODD_NUMBERS = ["NaN", "-Infinity", "Infinity", "1e999", "-1e400", "9" * 5000, "-0", "1e-400"]
_ODD_STRINGS = [
    '"\\ud800"',
    '"\\u0000"',
    '"\ufeff"',
    '"\\"',
    '"a\nb"',
    "'x'",
    '"' + "[" * 200 + '"',
]


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """JSON- and YAML-like text: deep, wide, huge, odd numbers, odd strings, aliases."""
    kind = draw(st.sampled_from(["deep", "wide", "number", "string", "alias", "mixed", "random"]))
    if kind == "deep":
        depth = draw(st.integers(60, 1500))
        opener = draw(st.sampled_from(["[", '{"a":', "- ", "a:\n "]))
        closer = {"[": "]", '{"a":': "}"}.get(opener, "")
        return opener * depth + draw(st.sampled_from(["1", "", "NaN"])) + closer * depth
    if kind == "wide":
        return "[" + ",".join(["1"] * draw(st.integers(0, 20_000))) + "]"
    if kind == "number":
        return '{"n": ' + draw(st.sampled_from(_ODD_NUMBERS)) + "}"
    if kind == "string":
        return '{"s": ' + draw(st.sampled_from(_ODD_STRINGS)) + "}"
    if kind == "alias":
        fan = draw(st.integers(2, 12))
        levels = draw(st.integers(1, 9))
        lines = ["a0: &a0 [x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
        return "\n".join([*lines, draw(st.sampled_from(["", "r: &r [*r]", "m: {<<: *a0}"]))])
    if kind == "mixed":
        parts = draw(
            st.lists(
                st.sampled_from(["[", "]", "{", "}", '"', ",", ":", "1", "&a", "*a", "\n"]),
                max_size=400,
            )
        )
        return "".join(parts)
    return draw(st.text(max_size=200))


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(hostile_text())
def test_fuzz_the_json_reader_gives_a_value_or_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        loads_json(text)


@FUZZ
@given(hostile_text())
def test_fuzz_documents_give_a_mapping_or_invalid_flow(text: str) -> None:
    started = time.perf_counter()
    try:
        raw = parse_document(text)
    except InvalidFlow:
        pass
    else:
        validate_document(raw, BlockRegistry())
    assert time.perf_counter() - started < 5


@FUZZ
@given(hostile_text())
def test_fuzz_configuration_files_give_settings_or_invalid_workspace(
    tmp_path: Path, text: str
) -> None:
    for name in ("permissions.yaml", "tokens.yaml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with contextlib.suppress(InvalidWorkspace):
            read_permissions(path) if name == "permissions.yaml" else TokenFileAuthenticator(path)


@FUZZ
@given(hostile_text(), st.booleans())
def test_fuzz_cli_inputs_give_a_run_or_exit_2(tmp_path: Path, text: str, pair: bool) -> None:
    from engine._cli import main

    (tmp_path / "echo.yaml").write_text(
        "flow: echo\nstatus: LIVE\nstart: a\nblocks: {a: {type: return, value: 1}}\n"
    )
    option = ["-i", f"x={text}"] if pair else ["--inputs", text]
    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # not something a command line can carry
    code = main(["run", str(tmp_path), "echo", *option, "--store", "memory:", "--quiet"])
    assert code in (0, 2)


@pytest.fixture(scope="module")
def asgi_portal() -> Iterator[Any]:
    """An app on a real engine, reached through httpx's ASGI transport from the tests."""
    from anyio.from_thread import start_blocking_portal

    from engine._http.app import create_app

    with start_blocking_portal("asyncio") as portal:
        engine = Engine()
        with portal.wrap_async_context_manager(engine):

            async def setup() -> httpx.AsyncClient:
                version = await engine.add_version(ORDER)
                await engine.start("order", version)
                app = create_app(engine, TokenFileAuthenticator(Path("/nonexistent/tokens.yaml")))
                transport = httpx.ASGITransport(app=app)
                return httpx.AsyncClient(transport=transport, base_url="http://t")

            client = portal.call(setup)
            yield portal, client
            portal.call(client.aclose)


@FUZZ
@given(hostile_text())
def test_fuzz_http_bodies_give_202_or_422(asgi_portal: Any, text: str) -> None:
    portal, client = asgi_portal
    body = text.encode("utf-8", "surrogatepass")

    async def post() -> httpx.Response:
        response: httpx.Response = await client.post(
            "/api/flows/order/activate", content=body, headers=JSON
        )
        return response

    response = portal.call(post)
    assert response.status_code in (202, 413, 422), response.text[:300]
    if response.status_code != 202:
        assert response.json()["error"] in ("invalid_inputs", "payload_too_large")
