"""The intake's room callbacks: how a listener that stopped reading learns it may read again."""

from __future__ import annotations

from runtime.core.messages import InboundMessage
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters


def fill(intake: Intake, n: int) -> None:
    for i in range(n):
        assert intake.offer(InboundMessage("l", str(i).encode(), "t"))


async def test_room_callback_fires_once_when_a_take_brings_the_intake_below_a_quarter() -> None:
    intake = Intake(40, Counters())
    fill(intake, 30)
    calls: list[int] = []
    intake.call_when_room(lambda: calls.append(len(intake)))
    await intake.take(10)  # 20 left: still above the low-water mark (10)
    assert calls == []
    await intake.take(11)  # 9 left
    assert calls == [9]
    await intake.take(9)
    assert calls == [9]  # once


async def test_room_callback_fires_at_once_when_there_is_room_and_when_the_intake_stops() -> None:
    intake = Intake(40, Counters())
    now: list[str] = []
    intake.call_when_room(lambda: now.append("room"))
    assert now == ["room"]
    fill(intake, 20)
    stopped: list[str] = []
    intake.call_when_room(lambda: stopped.append("stopped"))
    intake.stop_accepting()  # what arrives now is refused and counted: the listener must read it
    assert stopped == ["stopped"]


async def test_a_failing_room_callback_does_not_stop_the_others_or_the_take() -> None:
    intake = Intake(8, Counters())
    fill(intake, 8)
    seen: list[str] = []

    def boom() -> None:
        raise RuntimeError("listener gone")

    intake.call_when_room(boom)
    intake.call_when_room(lambda: seen.append("second"))
    assert len(await intake.take(8)) == 8
    assert seen == ["second"]
