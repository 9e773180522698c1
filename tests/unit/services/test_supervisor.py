"""The supervisor walks the lifecycle with fake planes and a fake solution loader."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from runtime.core.errors import CommandRefusedError, ListenerBindError, Problem, SolutionError
from runtime.core.lifecycle import InstanceState as S
from runtime.core.lifecycle import Verb
from runtime.core.ports import StateChange
from runtime.core.solution.model import SolutionDocument
from runtime.services.supervisor import LoadedSolution, Runtime, wait_for_state

DOC = SolutionDocument.model_validate({"solution": {"key": "demo", "planner": {"key": "p"}}})


class FakeLoader:
    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.loads = 0
        self.accepted_count = 0

    async def load(self) -> LoadedSolution:
        self.loads += 1
        if self.fail is not None:
            raise self.fail
        return LoadedSolution(doc=DOC, origin="test")

    async def accepted(self, loaded: LoadedSolution) -> None:
        self.accepted_count += 1


class FakePlane:
    def __init__(self, name: str, log: list[str], fail: Exception | None = None) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def start(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.log.append(f"{self.name}:start")

    async def stop(self, deadline: float | None = None) -> None:
        self.log.append(f"{self.name}:stop")

    def status(self) -> dict[str, Any]:
        return {"listeners": []}


class FakePlanes:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.data_fail: Exception | None = None
        self.seed_fail: Exception | None = None

    def data_plane(self, loaded: LoadedSolution, on_fatal: Callable[[str], None]) -> FakePlane:
        return FakePlane("data", self.log, self.data_fail)

    def command_plane(self, loaded: LoadedSolution) -> FakePlane:
        return FakePlane("commands", self.log)

    async def solution_changed(self, loaded: LoadedSolution) -> None:
        if self.seed_fail is not None:
            raise self.seed_fail
        self.log.append("solution")


@pytest.fixture
async def running() -> Any:
    loader, planes, changes = FakeLoader(), FakePlanes(), []
    rt = Runtime(loader, planes)
    rt.add_state_listener(changes.append)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await wait_for_state(rt, {S.RUNNING, S.FAILED_TO_INITIALIZE, S.FAILED_TO_START}, 5)
    yield rt, loader, planes, changes, stop
    stop.set()
    await asyncio.wait_for(task, 5)


def states(changes: list[StateChange]) -> list[str]:
    return [c.state.value for c in changes]


async def test_boot_reaches_running_through_the_documented_states(running: Any) -> None:
    _rt, loader, planes, changes, _ = running
    assert states(changes) == ["StartingRuntime", "Initializing", "Starting", "Running"]
    assert planes.log == ["solution", "commands:start", "data:start"]
    assert loader.accepted_count == 1


async def test_pause_keeps_the_command_plane_and_start_resumes(running: Any) -> None:
    rt, _, planes, changes, _ = running
    assert await rt.control(Verb.PAUSE) is S.PAUSING
    await wait_for_state(rt, {S.PAUSED}, 5)
    assert planes.log[-1] == "data:stop"  # the command plane (input commands) is not stopped
    with pytest.raises(CommandRefusedError) as refused:
        await rt.control(Verb.PAUSE)
    assert refused.value.code == "DEP1006"
    assert await rt.control(Verb.START) is S.STARTING
    await wait_for_state(rt, {S.RUNNING}, 5)
    assert planes.log[-1] == "data:start"
    assert states(changes)[-4:] == ["Pausing", "Paused", "Starting", "Running"]


async def test_stop_closes_everything_and_start_again(running: Any) -> None:
    rt, _, planes, _changes, _ = running
    await rt.control(Verb.STOP)
    await wait_for_state(rt, {S.STOPPED}, 5)
    assert planes.log[-2:] == ["data:stop", "commands:stop"]
    await rt.control(Verb.START)
    await wait_for_state(rt, {S.RUNNING}, 5)
    assert planes.log[-2:] == ["commands:start", "data:start"]


async def test_bad_solution_fails_to_initialize_and_start_retries() -> None:
    loader, planes, changes = FakeLoader(), FakePlanes(), []
    loader.fail = SolutionError([Problem("solution.listeners[0].listenOnPort", "PYRT0001", "required")])
    rt = Runtime(loader, planes)
    rt.add_state_listener(changes.append)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await wait_for_state(rt, {S.FAILED_TO_INITIALIZE}, 5)
    assert "solution.listeners[0].listenOnPort" in (rt.snapshot().reason or "")
    loader.fail = None
    await rt.control(Verb.START)
    await wait_for_state(rt, {S.RUNNING}, 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert states(changes)[-2:] == ["Stopping", "Stopped"]


async def test_busy_port_fails_to_start_naming_it() -> None:
    loader, planes = FakeLoader(), FakePlanes()
    planes.data_fail = ListenerBindError("rest6010", 6010, "Address already in use")
    rt = Runtime(loader, planes)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await wait_for_state(rt, {S.FAILED_TO_START}, 5)
    assert "6010" in (rt.snapshot().reason or "")
    assert planes.log[-1] == "commands:stop"  # what had started is closed again
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_reload_keeps_the_old_solution_when_the_new_one_is_bad(running: Any) -> None:
    rt, loader, _planes, changes, _ = running
    before = len(changes)
    loader.fail = SolutionError([Problem("solution.planner", "INS1002", "no planner")])
    assert await rt.control(Verb.RELOAD) is S.RUNNING
    for _ in range(50):
        if rt.last_reload is not None:
            break
        await asyncio.sleep(0.01)
    assert rt.last_reload is not None and rt.last_reload["ok"] is False
    assert "INS1002" not in (rt.snapshot().reason or "") and rt.state is S.RUNNING
    assert len(changes) == before  # no transition at all
    loader.fail = None
    await rt.control(Verb.RELOAD)
    await wait_for_state(rt, {S.INITIALIZING}, 5)
    await wait_for_state(rt, {S.RUNNING}, 5)
    assert states(changes)[-3:] == ["Initializing", "Starting", "Running"]


async def test_fatal_report_moves_to_fatal_error_and_start_recovers(running: Any) -> None:
    rt, _, _planes, _, _ = running
    rt.report_fatal("worker crashed")
    await wait_for_state(rt, {S.FATAL_ERROR}, 5)
    assert rt.snapshot().reason == "worker crashed"
    await rt.control(Verb.START)
    await wait_for_state(rt, {S.RUNNING}, 5)


class SlowStopPlane(FakePlane):
    """A data plane whose stop takes a while and counts how often it ran to the end."""

    stops = 0

    async def stop(self, deadline: float | None = None) -> None:
        await asyncio.sleep(0.3)
        SlowStopPlane.stops += 1
        self.log.append(f"{self.name}:stop")


async def test_signal_during_a_pause_still_stops_every_plane() -> None:
    loader, planes, changes = FakeLoader(), FakePlanes(), []
    planes.data_plane = lambda loaded, on_fatal: SlowStopPlane("data", planes.log)  # type: ignore[method-assign]
    rt = Runtime(loader, planes, grace=0.05)
    rt.add_state_listener(changes.append)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await wait_for_state(rt, {S.RUNNING}, 5)
    SlowStopPlane.stops = 0
    await rt.control(Verb.PAUSE)  # the data plane is stopping (0.3 s) ...
    stop.set()  # ... when the signal arrives: the pause is cancelled after the grace period
    await asyncio.wait_for(task, 5)
    assert rt.state is S.STOPPED
    assert SlowStopPlane.stops == 1  # the half-stopped plane was stopped again, to the end
    assert planes.log[-1] == "commands:stop"
    assert states(changes)[-3:] == ["Pausing", "Stopping", "Stopped"]


async def test_a_store_that_refuses_the_seed_fails_to_initialize_naming_it(running: Any) -> None:
    """Seeding devices on a full disk: FailedToInitialize with the store's reason (was FatalError with
    'internal error: TransientError(database busy after 5 attempts)'), at boot and on reload; start recovers."""
    from runtime.core.errors import TransientError

    rt, _, planes, changes, _ = running
    planes.seed_fail = TransientError("disk full: /data/runtime.db cannot be written")
    await rt.control(Verb.RELOAD)
    await wait_for_state(rt, {S.FAILED_TO_INITIALIZE}, 5)
    assert rt.snapshot().reason == "storage unavailable: disk full: /data/runtime.db cannot be written"
    await rt.control(Verb.START)
    await wait_for_state(rt, {S.FAILED_TO_INITIALIZE}, 5)
    assert states(changes).count("FailedToInitialize") == 2  # the start booted again and failed again
    planes.seed_fail = None  # space returned
    await rt.control(Verb.START)
    await wait_for_state(rt, {S.RUNNING}, 5)
