"""The transition table, exhaustively: every (from, to) pair is either allowed or refused."""

from __future__ import annotations

import itertools

import pytest

from runtime.core.errors import CommandRefusedError, IllegalTransitionError
from runtime.core.lifecycle import (
    ERROR_STATES,
    TRANSITIONS,
    VERB_ALLOWED,
    InstanceState,
    Verb,
    check_verb,
    next_state,
)

S = InstanceState

# The expected table, written out independently of the code's, pair by pair.
ALLOWED = {
    (S.OFFLINE, S.STARTING_RUNTIME),
    (S.STARTING_RUNTIME, S.INITIALIZING),
    (S.STARTING_RUNTIME, S.STOPPING),
    (S.STARTING_RUNTIME, S.FATAL_ERROR),
    (S.INITIALIZING, S.STARTING),
    (S.INITIALIZING, S.FAILED_TO_INITIALIZE),
    (S.INITIALIZING, S.STOPPING),
    (S.INITIALIZING, S.FATAL_ERROR),
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.FAILED_TO_START),
    (S.STARTING, S.STOPPING),
    (S.STARTING, S.FATAL_ERROR),
    (S.RUNNING, S.PAUSING),
    (S.RUNNING, S.STOPPING),
    (S.RUNNING, S.INITIALIZING),
    (S.RUNNING, S.FATAL_ERROR),
    (S.PAUSING, S.PAUSED),
    (S.PAUSING, S.STOPPING),
    (S.PAUSING, S.FATAL_ERROR),
    (S.PAUSED, S.STARTING),
    (S.PAUSED, S.STOPPING),
    (S.PAUSED, S.INITIALIZING),
    (S.PAUSED, S.FATAL_ERROR),
    (S.STOPPING, S.STOPPED),
    (S.STOPPING, S.FATAL_ERROR),
    (S.STOPPED, S.STARTING),
    (S.STOPPED, S.INITIALIZING),
    (S.FAILED_TO_INITIALIZE, S.INITIALIZING),
    (S.FAILED_TO_INITIALIZE, S.STOPPING),
    (S.FAILED_TO_START, S.INITIALIZING),
    (S.FAILED_TO_START, S.STOPPING),
    (S.FATAL_ERROR, S.INITIALIZING),
    (S.FATAL_ERROR, S.STOPPING),
}


def test_all_twelve_states_with_nuviot_wire_names() -> None:
    assert [s.value for s in S] == [
        "Offline",
        "StartingRuntime",
        "Initializing",
        "Starting",
        "Running",
        "Pausing",
        "Paused",
        "Stopping",
        "Stopped",
        "FailedToInitialize",
        "FailedToStart",
        "FatalError",
    ]
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair(current: InstanceState, target: InstanceState) -> None:
    if (current, target) in ALLOWED:
        assert next_state(current, target) is target
    else:
        with pytest.raises(IllegalTransitionError):
            next_state(current, target)


def test_error_states_are_recoverable_by_start_and_reload() -> None:
    for state in ERROR_STATES:
        assert state in VERB_ALLOWED[Verb.START]
        assert state in VERB_ALLOWED[Verb.RELOAD]
        assert S.INITIALIZING in TRANSITIONS[state]


VERB_CASES = [
    (Verb.PAUSE, S.RUNNING, None),
    (Verb.PAUSE, S.PAUSED, "DEP1006"),
    (Verb.PAUSE, S.STOPPED, "DEP1006"),
    (Verb.PAUSE, S.STARTING, "DEP1004"),
    (Verb.START, S.PAUSED, None),
    (Verb.START, S.STOPPED, None),
    (Verb.START, S.FAILED_TO_START, None),
    (Verb.START, S.RUNNING, "DEP1005"),
    (Verb.START, S.STOPPING, "DEP1004"),
    (Verb.STOP, S.RUNNING, None),
    (Verb.STOP, S.PAUSED, None),
    (Verb.STOP, S.FATAL_ERROR, None),
    (Verb.STOP, S.STOPPED, "DEP1018"),
    (Verb.STOP, S.PAUSING, "DEP1004"),
    (Verb.RELOAD, S.RUNNING, None),
    (Verb.RELOAD, S.FAILED_TO_INITIALIZE, None),
    (Verb.RELOAD, S.INITIALIZING, "DEP1004"),
]


@pytest.mark.parametrize(("verb", "state", "code"), VERB_CASES)
def test_verbs(verb: Verb, state: InstanceState, code: str | None) -> None:
    if code is None:
        check_verb(state, verb)
    else:
        with pytest.raises(CommandRefusedError) as info:
            check_verb(state, verb)
        assert info.value.code == code
