"""The runtime's exception tree. Adapters translate library errors into these with ``raise ... from``."""

from __future__ import annotations

from dataclasses import dataclass


class RuntimeBaseError(Exception):
    """Base of every error the runtime raises on purpose."""


class IllegalTransitionError(RuntimeBaseError):
    """A lifecycle transition that the transition table does not allow."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"transition {current} -> {target} is not allowed")
        self.current = current
        self.target = target


class CommandRefusedError(RuntimeBaseError):
    """A control verb that is not allowed in the current state (HTTP 409, MQTT ok=false)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a solution: where (a dotted/indexed path), a stable code, and what."""

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SolutionError(RuntimeBaseError):
    """The solution could not be read or is invalid. Carries every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid solution")


class StageError(RuntimeBaseError):
    """A pipeline stage refused a message (expected: dead letter with stage, code and detail)."""

    def __init__(self, stage: str, code: str, detail: str) -> None:
        super().__init__(f"{stage}: {code}: {detail}")
        self.stage = stage
        self.code = code
        self.detail = detail


class TransientError(RuntimeBaseError):
    """Something outside us is down or busy (broker, disk, cloud); retry with backoff."""


class FatalError(RuntimeBaseError):
    """Unrecoverable after start: the runtime moves to FatalError, the command channel stays up."""


class StorageError(RuntimeBaseError):
    """The local store cannot be used (damaged, unreadable, not writable, disk full). Its message says what
    is wrong and what to do: FailedToInitialize at start, FatalError later."""


class ListenerBindError(RuntimeBaseError):
    """A listener (or the input-command server) could not bind its port: FailedToStart."""

    def __init__(self, key: str, port: int | None, reason: str) -> None:
        super().__init__(f"listener {key} could not bind port {port}: {reason}")
        self.key = key
        self.port = port
        self.reason = reason


def describe(exc: BaseException) -> str:
    """An exception as one line for a status field or a log: its message, else its type's name."""
    return str(exc) or type(exc).__name__
