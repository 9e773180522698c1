"""FakeControl follows the lifecycle table and check_verb, so tests built on it see real behaviour."""

from __future__ import annotations

import pytest

from runtime.core.errors import CommandRefusedError, IllegalTransitionError
from runtime.core.lifecycle import InstanceState, Verb
from runtime.core.ports import StateChange
from tests.fakes import FakeControl

S = InstanceState


@pytest.mark.parametrize(
    ("start", "verb", "path"),
    [
        (S.RUNNING, Verb.PAUSE, [S.PAUSING, S.PAUSED]),
        (S.PAUSED, Verb.START, [S.STARTING, S.RUNNING]),
        (S.STOPPED, Verb.START, [S.STARTING, S.RUNNING]),
        (S.FATAL_ERROR, Verb.START, [S.INITIALIZING, S.STARTING, S.RUNNING]),
        (S.RUNNING, Verb.STOP, [S.STOPPING, S.STOPPED]),
        (S.FAILED_TO_START, Verb.STOP, [S.STOPPING, S.STOPPED]),
        (S.PAUSED, Verb.RELOAD, [S.INITIALIZING, S.STARTING, S.RUNNING]),
    ],
)
async def test_verbs_walk_the_table(start: InstanceState, verb: Verb, path: list[InstanceState]) -> None:
    control = FakeControl(start)
    seen: list[StateChange] = []
    unsubscribe = control.add_state_listener(seen.append)
    assert await control.control(verb) is path[-1]
    assert [c.state for c in seen] == path
    assert seen[0].previous is start and control.snapshot() == seen[-1]
    unsubscribe()
    unsubscribe()
    assert control.listener_count == 0


@pytest.mark.parametrize(
    ("start", "verb", "code"),
    [
        (S.PAUSED, Verb.PAUSE, "DEP1006"),
        (S.RUNNING, Verb.START, "DEP1005"),
        (S.STOPPING, Verb.STOP, "DEP1004"),
    ],
)
async def test_refusals_carry_the_lifecycle_codes(start: InstanceState, verb: Verb, code: str) -> None:
    control = FakeControl(start)
    with pytest.raises(CommandRefusedError) as info:
        await control.control(verb)
    assert info.value.code == code and control.state is start and control.changes == []


def test_transition_is_checked() -> None:
    with pytest.raises(IllegalTransitionError):
        FakeControl(S.STOPPED).transition(S.PAUSED)
