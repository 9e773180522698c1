"""Suite-wide fixtures: a real mosquitto on a free port, unique topics, a leak guard (tasks, threads,
timers), and the rule that a skipped test fails the run unless it is on ``SKIP_ALLOWED``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import Postgres, Redis
from tests.support.leaks import Leaks, TrackingLoop
from tests.support.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURE = REPO.parent / "shared" / "fixtures" / "nuviot-motionhandler-2018.json"
LOCAL_FIXTURE = REPO / "tests" / "fixtures" / "nuviot-motionhandler-2018.json"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Tests run on uvloop, the loop the daemon runs on (its transports differ from asyncio's)."""
    return {"uvloop": TrackingLoop}  # uvloop, with a record of its timers for the leak guard


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker for the session. Tests keep apart by topic prefix (``unique_topic``)."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, for tests that stop and restart it."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(params=["fastpath", "fallback"])
def mqtt_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on the MQTT listener's fast path and again on plain aiomqtt (the fallback that
    ``runtime/adapters/listeners/mqtt_fastpath.py`` chooses when paho's or aiomqtt's internals differ)."""
    if request.param == "fallback":
        monkeypatch.setattr("runtime.adapters.listeners.mqtt.fastpath_enabled", lambda wanted: False)
    return str(request.param)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A PostgreSQL of the suite's own (initdb + pg_ctl on a free port); tests keep apart by table name."""
    with Postgres(tmp_path_factory.mktemp("postgres")) as pg:
        yield pg


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A redis-server of the suite's own on a free port; tests keep apart by stream key."""
    with Redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def unique_topic() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def motion_fixture_path() -> Path:
    """NuvIoT's own 2018 export (a copy is kept under tests/fixtures so the suite runs without shared/)."""
    return LOCAL_FIXTURE if LOCAL_FIXTURE.exists() else SHARED_FIXTURE


@pytest.fixture(autouse=True)
async def _no_leaks() -> object:
    """Every test must clean up the tasks, threads and timers it started (Home Assistant's verify_cleanup).

    Higher-scoped fixtures are set up before this one and torn down after it, so what they start is not
    counted; the test's own function-scoped fixtures are torn down before the check."""
    leaks = Leaks(asyncio.get_running_loop())
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    lingering = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if lingering:
        for t in lingering:
            t.cancel()
        await asyncio.gather(*lingering, return_exceptions=True)
    timers = await leaks.timers()
    threads = await leaks.threads()
    problems = [f"{what} left running: {names}" for what, names in
                (("tasks", [t.get_name() for t in lingering]), ("timers", timers), ("threads", threads)) if names]
    if problems:
        pytest.fail("; ".join(problems))


# ---------------------------------------------------------------------------------------------- skips
# A skipped test fails the run (so CI cannot go green on what it did not test), unless it is listed here
# with the reason it may legitimately not run on some machine. Keep this list short.
SKIP_ALLOWED: dict[str, str] = {
    # 10,000 sockets need a hard RLIMIT_NOFILE above ~11,000; a container's ulimit can be lower, and a test
    # cannot raise a hard limit
    "tests/integration/test_tcp_udp_ws_listeners.py::test_tcp_ten_thousand_idle_connections": "fd limit",
    # closing a connection from the server side needs rabbitmqctl for the node; for the machine's RabbitMQ
    # that means root or the rabbitmq user (our own node, started when 5672 does not answer, always works)
    "tests/integration/test_amqp_listener.py::test_reconnects_after_the_server_closes_the_connection":
        "rabbitmqctl for the machine's node",
}
_unexpected_skips: list[str] = []


def _allowed(nodeid: str) -> bool:
    return any(nodeid == key or nodeid.startswith(key + "[") for key in SKIP_ALLOWED)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and not _allowed(report.nodeid):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected_skips:
        terminalreporter.section("skipped tests that are not allowed to skip (tests/conftest.py SKIP_ALLOWED)",
                                 red=True)
        for line in _unexpected_skips:
            terminalreporter.line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
