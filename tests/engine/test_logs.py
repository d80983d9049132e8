"""The project's loggers: structlog's, imported on the first event a command keeps."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from engine._model.jsontext import UtcStamper
from engine._model.logs import configured, get_logger

ROOT = Path(__file__).resolve().parents[2]


def fresh(code: str) -> list[str]:
    """The lines ``code`` prints in a new interpreter, where nothing imported structlog."""
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_an_event_below_a_pending_configuration_level_does_not_import_structlog() -> None:
    lines = fresh(
        "from engine._model.logs import configured, get_logger\n"
        "applied = []\n"
        "with configured(30, lambda: applied.append(1)):\n"
        "    get_logger('t').bind(run_id='r').info('quiet')\n"
        "    print('structlog' in sys.modules, applied)\n"
    )
    assert lines == ["False []"]


def test_the_first_event_at_the_level_applies_the_configuration_and_is_logged() -> None:
    lines = fresh(
        "import io\n"
        "from engine._model.logs import configured, get_logger\n"
        "out = io.StringIO()\n"
        "def configure():\n"
        "    import structlog\n"
        "    structlog.configure(\n"
        "        processors=[structlog.processors.KeyValueRenderer(sort_keys=True)],\n"
        "        logger_factory=lambda *_: structlog.PrintLogger(out),\n"
        "    )\n"
        "log = get_logger('t').bind(run_id='r')\n"
        "with configured(30, configure):\n"
        "    log.info('dropped')\n"
        "    log.warning('kept', n=1)\n"
        "    log.error('also kept')\n"
        "import structlog\n"
        "print(out.getvalue().strip())\n"
        "print(type(structlog.get_config()['logger_factory']).__name__)\n"
    )
    assert lines == [
        "event='kept' n=1 run_id='r'",
        "event='also kept' run_id='r'",
        "PrintLoggerFactory",  # structlog's default again, once the block is left
    ]


def test_a_structlog_imported_meanwhile_gets_the_configuration_on_the_next_event() -> None:
    # code that logs with structlog itself sees the command's configuration, not the default
    lines = fresh(
        "from engine._model.logs import configured, get_logger\n"
        "entries = []\n"
        "def configure():\n"
        "    import structlog.testing\n"
        "    capture = structlog.testing.LogCapture()\n"
        "    entries.append(capture.entries)\n"
        "    structlog.configure(processors=[capture])\n"
        "with configured(30, configure):\n"
        "    import structlog\n"
        "    get_logger('t').debug('below the level: structlog filters')\n"
        "print(entries)\n"
    )
    assert lines == ["[[{'event': 'below the level: structlog filters', 'log_level': 'debug'}]]"]


def test_settle_applies_a_pending_configuration_once_structlog_is_imported() -> None:
    lines = fresh(
        "from engine._model.logs import configured, settle\n"
        "applied = []\n"
        "with configured(30, lambda: applied.append(1)):\n"
        "    settle()\n"
        "    print(applied)\n"
        "    import structlog\n"
        "    settle()\n"
        "    print(applied)\n"
    )
    assert lines == ["[]", "[1]"]


def test_with_structlog_imported_the_configuration_applies_at_once_and_is_undone() -> None:
    before = structlog.get_config()
    seen = []
    with configured(logging.CRITICAL, lambda: seen.append(structlog.get_config())):
        assert len(seen) == 1
    assert structlog.get_config() == before


def test_capture_logs_sees_every_event_with_its_bound_context() -> None:
    log = get_logger("flowwarden.test").bind(run_id="r1")
    with capture_logs() as events:
        log.debug("one", n=1)
        log.bind(block="b").warning("two")
        get_logger("flowwarden.test").error("three")
    assert events == [
        {"run_id": "r1", "n": 1, "event": "one", "log_level": "debug"},
        {"run_id": "r1", "block": "b", "event": "two", "log_level": "warning"},
        {"event": "three", "log_level": "error"},
    ]


def test_a_cli_run_logs_its_activation_at_info_from_a_fresh_interpreter() -> None:
    lines = fresh(
        "from engine._cli import main\n"
        "sys.stderr = sys.stdout\n"
        "code = main(['run', 'examples/hello', 'hello', '--store', 'memory:', '-q', '-v'])\n"
        "print(code, 'structlog' in sys.modules)\n"
    )
    assert lines[-1] == "0 True"
    assert any("activation.allowed" in line and "via=cli" in line for line in lines)


def test_a_cli_run_logs_json_lines_when_asked() -> None:
    lines = fresh(
        "from engine._cli import main\n"
        "sys.stderr = sys.stdout\n"
        "main(['run', 'examples/hello', 'hello', '--store', 'memory:', '-q', '-v',"
        " '--log-format', 'json'])\n"
    )
    assert any(line.startswith("{") and '"activation.allowed"' in line for line in lines)


def _iso(nanoseconds: int) -> str:
    """What ``TimeStamper(fmt="iso", utc=True)`` writes for the instant ``nanoseconds``
    after the epoch: ``datetime.isoformat`` of it in UTC, to the microsecond rounded down."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    moment = epoch + dt.timedelta(microseconds=nanoseconds // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def test_the_json_logs_timestamp_is_structlogs_iso_utc_text_at_every_instant() -> None:
    second = 1_796_342_399 * 10**9  # 2026-12-03T23:59:59Z: the next second is a new day
    instants = [
        second,  # a whole second: no fraction, as isoformat writes it
        second + 1_500,  # 1 µs and a half: rounded down
        second + 999_999_999,
        second + 10**9,  # the next second, a new date: written anew
        second + 10**9 + 7_000,
        second,  # back a second (the clock was set): written anew, not kept
        951_782_400 * 10**9 + 123_456_000,  # 2000-02-29 (a leap day)
        0,
    ]
    clock = iter(instants)
    stamp = UtcStamper(clock=lambda: next(clock))
    written = [stamp(None, "info", {"event": "e"}) for _ in instants]

    assert [event["timestamp"] for event in written] == [_iso(n) for n in instants]
    assert written[0] == {"event": "e", "timestamp": "2026-12-03T23:59:59Z"}
    assert written[3]["timestamp"] == "2026-12-04T00:00:00Z"


def test_the_json_logs_timestamp_reads_the_clock_structlogs_does() -> None:
    ours, theirs = UtcStamper(), structlog.processors.TimeStamper(fmt="iso", utc=True)
    for _ in range(1000):
        before = theirs(None, "info", {})["timestamp"]
        stamped = ours(None, "info", {})["timestamp"]
        after = theirs(None, "info", {})["timestamp"]
        # the same shape, so the same order as text as in time
        assert len(stamped) in (20, 27) and stamped[10] == "T" and stamped.endswith("Z")
        assert before.rstrip("Z").ljust(26, "0") <= stamped.rstrip("Z").ljust(26, "0")
        assert stamped.rstrip("Z").ljust(26, "0") <= after.rstrip("Z").ljust(26, "0")
