"""Suite-wide fixtures: a real mosquitto on a free port, unique topics, a lingering-task guard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from tests.support.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURE = REPO.parent / "shared" / "fixtures" / "nuviot-motionhandler-2018.json"
LOCAL_FIXTURE = REPO / "tests" / "fixtures" / "nuviot-motionhandler-2018.json"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Tests run on uvloop, the loop the daemon runs on (its transports differ from asyncio's)."""
    return {"uvloop": uvloop.new_event_loop}


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


@pytest.fixture
def unique_topic() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def motion_fixture_path() -> Path:
    """NuvIoT's own 2018 export (a copy is kept under tests/fixtures so the suite runs without shared/)."""
    return LOCAL_FIXTURE if LOCAL_FIXTURE.exists() else SHARED_FIXTURE


@pytest.fixture(autouse=True)
async def _no_lingering_tasks() -> object:
    """Every test must clean up the tasks it started (Home Assistant's verify_cleanup)."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    lingering = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if lingering:
        for t in lingering:
            t.cancel()
        await asyncio.gather(*lingering, return_exceptions=True)
        pytest.fail(f"tasks left running: {[t.get_name() for t in lingering]}")
