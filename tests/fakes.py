"""In-memory stand-ins for the runtime's ports, for tests of adapters and services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from runtime.core.lifecycle import ERROR_STATES, InstanceState, Verb, check_verb, next_state
from runtime.core.ports import StateChange

S = InstanceState

# The states each verb walks through once accepted (every step is checked against TRANSITIONS).
_STEPS: dict[Verb, tuple[InstanceState, ...]] = {
    Verb.PAUSE: (S.PAUSING, S.PAUSED),
    Verb.START: (S.STARTING, S.RUNNING),
    Verb.STOP: (S.STOPPING, S.STOPPED),
    Verb.RELOAD: (S.INITIALIZING, S.STARTING, S.RUNNING),
}


class FakeControl:
    """A ``ControlPort`` with a tiny state machine driven by ``runtime.core.lifecycle``.

    ``control(verb)`` checks the verb with ``check_verb`` (so refusals carry the real DEP10xx codes), walks
    the verb's states (pause: Pausing -> Paused; start: Starting -> Running, or from an error state
    Initializing -> Starting -> Running; stop: Stopping -> Stopped; reload: Initializing -> Starting ->
    Running), notifying listeners at each step, and returns the final state. ``step_delay`` seconds pass
    between steps (0 still yields to the loop). ``transition()`` moves the state directly, checked against
    the table; ``fail_with`` makes the next ``control()`` raise that exception after the verb check.
    """

    def __init__(
        self,
        state: InstanceState = S.RUNNING,
        *,
        reason: str | None = None,
        step_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._current = StateChange(at=clock(), previous=None, state=state, reason=reason)
        self._listeners: list[Callable[[StateChange], None]] = []
        self.step_delay = step_delay
        self.fail_with: BaseException | None = None
        self.calls: list[Verb] = []
        self.changes: list[StateChange] = []

    @property
    def state(self) -> InstanceState:
        return self._current.state

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    # ControlPort -----------------------------------------------------------------------------
    def snapshot(self) -> StateChange:
        return self._current

    async def control(self, verb: Verb) -> InstanceState:
        self.calls.append(verb)
        check_verb(self.state, verb)
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        steps = _STEPS[verb]
        if verb is Verb.START and self.state in ERROR_STATES:
            steps = (S.INITIALIZING, *steps)
        for target in steps:
            self.transition(target, reason=f"{verb.value} requested")
            await asyncio.sleep(self.step_delay)
        return self.state

    def add_state_listener(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    # Test controls ---------------------------------------------------------------------------
    def transition(self, target: InstanceState, reason: str | None = None) -> StateChange:
        """Move to ``target`` (must be allowed by the transition table) and notify the listeners."""
        next_state(self.state, target)
        change = StateChange(at=self._clock(), previous=self.state, state=target, reason=reason)
        self._current = change
        self.changes.append(change)
        for callback in list(self._listeners):
            callback(change)
        return change
