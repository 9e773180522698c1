"""supervise(): lost connections are retried with backoff, crashes are logged and retried, FatalError escapes."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from runtime.adapters.supervision import Outcome, SessionTask, supervise
from runtime.core.backoff import Backoff
from runtime.core.errors import FatalError


class Script:
    """A session that plays a list of steps: an exception to raise, or an outcome to return."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self) -> Outcome | None:
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step  # type: ignore[return-value]


async def test_lost_connections_are_reported_and_retried_until_stopped() -> None:
    session = Script(ConnectionError("refused"), None, Outcome.AGAIN, Outcome.STOPPED)
    losses: list[str] = []
    backoff = Backoff(base=0.001, cap=0.001)
    with structlog.testing.capture_logs() as logs:
        await supervise(session, role="listener", backoff=backoff, connection_errors=(ConnectionError,),
                        on_loss=lambda e: losses.append(e) or "listener_disconnected", listener="k")
    assert session.calls == 4  # AGAIN: straight to the next session, without on_loss or backoff
    assert losses == ["refused", "the broker closed the connection"]
    assert backoff.attempt == 2
    warned = [e for e in logs if e["event"] == "listener_disconnected"]
    assert [(e["error"], e["listener"]) for e in warned] == [("refused", "k"), ("the broker closed the connection", "k")]


async def test_a_crash_is_logged_with_its_stack_and_the_session_runs_again() -> None:
    session = Script(ValueError("bug"), Outcome.STOPPED)
    losses: list[str] = []
    with structlog.testing.capture_logs() as logs:
        await supervise(session, role="transmitter", backoff=Backoff(base=0.001, cap=0.001),
                        connection_errors=(ConnectionError,), on_loss=lambda e: losses.append(e) or "lost")
    assert losses == ["internal error: bug"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["transmitter_session_crashed"]


async def test_fatal_error_escapes_unwrapped() -> None:
    with pytest.raises(FatalError, match="disk gone"):
        await supervise(Script(FatalError("disk gone")), role="listener", backoff=Backoff(),
                        connection_errors=(ConnectionError,), on_loss=lambda e: "lost")


async def test_stop_cuts_the_backoff_short_and_session_task_stops_within_its_bound() -> None:
    runner = SessionTask("listener:t")
    session = Script(*[ConnectionError("down")] * 3)

    async def run() -> None:
        await supervise(session, role="listener", backoff=Backoff(base=60.0, cap=60.0),
                        connection_errors=(ConnectionError,), on_loss=lambda e: "lost",
                        stop=runner.stop_requested, attempted=runner.attempted)

    await runner.start(run)  # returns after the first attempt, which failed: not a start failure
    assert runner.running and session.calls == 1
    async with asyncio.timeout(5):  # the 0..60 s backoff is cut short by the stop
        assert await runner.stop(limit=5.0) is True
    assert not runner.running and session.calls == 1
