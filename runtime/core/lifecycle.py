"""Instance states and the one table of allowed transitions (CONTRACT §3).

Wire names are NuvIoT's ``DeploymentInstanceStates`` member names.
"""

from __future__ import annotations

from enum import StrEnum

from runtime.core.errors import CommandRefusedError, IllegalTransitionError


class InstanceState(StrEnum):
    OFFLINE = "Offline"
    STARTING_RUNTIME = "StartingRuntime"
    INITIALIZING = "Initializing"
    STARTING = "Starting"
    RUNNING = "Running"
    PAUSING = "Pausing"
    PAUSED = "Paused"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED_TO_INITIALIZE = "FailedToInitialize"
    FAILED_TO_START = "FailedToStart"
    FATAL_ERROR = "FatalError"

    @property
    def is_error(self) -> bool:
        return self in ERROR_STATES

    @property
    def is_transitional(self) -> bool:
        return self in TRANSITIONAL_STATES


S = InstanceState

ERROR_STATES: frozenset[InstanceState] = frozenset({S.FAILED_TO_INITIALIZE, S.FAILED_TO_START, S.FATAL_ERROR})
TRANSITIONAL_STATES: frozenset[InstanceState] = frozenset(
    {S.STARTING_RUNTIME, S.INITIALIZING, S.STARTING, S.PAUSING, S.STOPPING}
)

# Every allowed move. Anything else raises IllegalTransitionError.
# - boot: Offline -> StartingRuntime -> Initializing -> Starting -> Running
# - a bad solution stops at FailedToInitialize, a port that cannot bind at FailedToStart
# - reload (from Running, Paused, Stopped or an error state) goes back through Initializing
# - start from an error state re-runs the boot from Initializing
# - SIGTERM may arrive in any state that is not already Stopping/Stopped
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.OFFLINE: frozenset({S.STARTING_RUNTIME}),
    S.STARTING_RUNTIME: frozenset({S.INITIALIZING, S.STOPPING, S.FATAL_ERROR}),
    S.INITIALIZING: frozenset({S.STARTING, S.FAILED_TO_INITIALIZE, S.STOPPING, S.FATAL_ERROR}),
    S.STARTING: frozenset({S.RUNNING, S.FAILED_TO_START, S.STOPPING, S.FATAL_ERROR}),
    S.RUNNING: frozenset({S.PAUSING, S.STOPPING, S.INITIALIZING, S.FATAL_ERROR}),
    S.PAUSING: frozenset({S.PAUSED, S.STOPPING, S.FATAL_ERROR}),
    S.PAUSED: frozenset({S.STARTING, S.STOPPING, S.INITIALIZING, S.FATAL_ERROR}),
    S.STOPPING: frozenset({S.STOPPED, S.FATAL_ERROR}),
    S.STOPPED: frozenset({S.STARTING, S.INITIALIZING}),
    S.FAILED_TO_INITIALIZE: frozenset({S.INITIALIZING, S.STOPPING}),
    S.FAILED_TO_START: frozenset({S.INITIALIZING, S.STOPPING}),
    S.FATAL_ERROR: frozenset({S.INITIALIZING, S.STOPPING}),
}


def can_transition(current: InstanceState, target: InstanceState) -> bool:
    return target in TRANSITIONS[current]


def next_state(current: InstanceState, target: InstanceState) -> InstanceState:
    """Return ``target`` when the table allows ``current -> target``; raise otherwise."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(current.value, target.value)
    return target


class Verb(StrEnum):
    PAUSE = "pause"
    START = "start"
    STOP = "stop"
    RELOAD = "reload"


# States from which each operator verb is accepted.
VERB_ALLOWED: dict[Verb, frozenset[InstanceState]] = {
    Verb.PAUSE: frozenset({S.RUNNING}),
    Verb.START: frozenset({S.PAUSED, S.STOPPED} | ERROR_STATES),
    Verb.STOP: frozenset({S.RUNNING, S.PAUSED} | ERROR_STATES),
    Verb.RELOAD: frozenset({S.RUNNING, S.PAUSED, S.STOPPED} | ERROR_STATES),
}

# Error codes are NuvIoT's where one exists (reference/nuviot-runtime.md §7, DEP10xx).
CODE_BUSY = "DEP1004"  # InstanceBusy
CODE_ALREADY_RUNNING = "DEP1005"  # InstanceAlreadyRunning
CODE_NOT_RUNNING = "DEP1006"  # InstanceNotRunning
CODE_CANT_STOP_NOT_RUNNING = "DEP1018"  # CantStopNotRunning


def check_verb(state: InstanceState, verb: Verb) -> None:
    """Raise CommandRefusedError (HTTP 409) when ``verb`` is not allowed in ``state``."""
    if state in VERB_ALLOWED[verb]:
        return
    if state.is_transitional or state is S.OFFLINE:
        raise CommandRefusedError(CODE_BUSY, f"cannot {verb.value} while {state.value}; try again shortly")
    if verb is Verb.START:
        raise CommandRefusedError(CODE_ALREADY_RUNNING, f"cannot start: instance is already {state.value}")
    if verb is Verb.PAUSE:
        raise CommandRefusedError(CODE_NOT_RUNNING, f"cannot pause: instance is {state.value}, not Running")
    if verb is Verb.STOP:
        raise CommandRefusedError(CODE_CANT_STOP_NOT_RUNNING, f"cannot stop: instance is already {state.value}")
    raise CommandRefusedError(CODE_BUSY, f"cannot {verb.value} while {state.value}")  # pragma: no cover
