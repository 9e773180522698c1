"""Ports: the protocols the outer layers talk to, implemented elsewhere (pure: no I/O here).

``ControlPort`` is what the command channels (admin HTTP API, MQTT command channel) see of the
supervisor: the current state, the operator verbs, and a feed of state changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from runtime.core.lifecycle import InstanceState, Verb


@dataclass(frozen=True, slots=True)
class StateChange:
    """One instance-state transition (or the current state: "in ``state`` since ``at``, because ``reason``")."""

    at: float  # wall-clock seconds since the epoch (time.time()), when ``state`` was entered
    previous: InstanceState | None  # None for the first state
    state: InstanceState
    reason: str | None


class ControlPort(Protocol):
    def snapshot(self) -> StateChange:
        """The current state, since when, and why."""
        ...

    async def control(self, verb: Verb) -> InstanceState:
        """Run an operator verb. Raises ``CommandRefusedError`` when the verb is not allowed now;
        returns the state once the verb was accepted."""
        ...

    def add_state_listener(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``callback`` (on the event loop, synchronously; it must not block) on every change.
        Returns a function that unsubscribes it."""
        ...
