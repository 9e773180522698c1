"""The checker's base: the report, the problem helpers every check section uses (``validate``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runtime.core.errors import Problem
from runtime.core.solution import codes
from runtime.core.solution.enums import ParameterType
from runtime.core.solution.model import Listener, SolutionDocument, Transmitter

# the attribute that holds a value's type, per model (message field, input, attribute, parameter, property)
_TYPE_ATTRS = ("storage_type", "input_type", "attribute_type", "parameter_type", "field_type")


@dataclass(frozen=True, slots=True)
class ValidationReport:
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.errors



def _snake(wire: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in wire)


def _missing(obj: object, wire: str) -> bool:
    value = getattr(obj, _snake(wire))
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value is None or value == "" or value == ()


class CheckerBase:
    def __init__(self, doc: SolutionDocument) -> None:
        self.doc = doc
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def err(self, path: str, code: str, message: str) -> None:
        self.errors.append(Problem(path, code, message))

    def warn(self, path: str, code: str, message: str) -> None:
        self.warnings.append(Problem(path, code, message))

    def unique(
        self, items: Iterable[str], path: str, what: str, attr: str = "key", code: str = codes.DUPLICATE_KEY
    ) -> None:
        seen: set[str] = set()
        for i, key in enumerate(items):
            if key in seen:
                self.err(f"{path}[{i}].{attr}", code, f"{what} {key!r} is defined more than once")
            seen.add(key)

    def state_unit(self, obj: object, path: str) -> None:
        state_set = getattr(obj, "state_set", None)
        unit_set = getattr(obj, "unit_set", None)
        if state_set and state_set not in self.doc.state_set_by_key:
            self.err(f"{path}.stateSet", codes.SLN_STATE_SET_NOT_FOUND, f"unknown state set {state_set!r}")
        if unit_set and unit_set not in self.doc.unit_set_by_key:
            self.err(f"{path}.unitSet", codes.SLN_UNIT_SET_NOT_FOUND, f"unknown unit set {unit_set!r}")
        kind = next((getattr(obj, a) for a in _TYPE_ATTRS if getattr(obj, a, None) is not None), None)
        if kind is ParameterType.STATE and not state_set:
            self.err(f"{path}.stateSet", codes.STATE_SET_REQUIRED,
                     "a State value needs a state set (NuvIoT MGV1006 on every value): set stateSet to one of "
                     f"the solution's state sets ({', '.join(self.doc.state_set_by_key) or 'none defined'})")
        if kind is ParameterType.VALUE_WITH_UNIT and not unit_set:
            self.err(f"{path}.unitSet", codes.UNIT_SET_REQUIRED,
                     "a value with unit needs a unit set (NuvIoT MGV1003 on every value): set unitSet to one of "
                     f"the solution's unit sets ({', '.join(self.doc.unit_set_by_key) or 'none defined'})")

    def required(
        self, obj: Listener | Transmitter, kind: str, fields: tuple[str, ...], path: str, code: str
    ) -> None:
        for wire in fields:
            if wire == "creds":
                if not obj.anonymous:
                    for cred in ("userName", "password"):
                        if _missing(obj, cred):
                            self.err(
                                f"{path}.{cred}",
                                code,
                                f"{cred} is required for a {kind} that is not anonymous",
                            )
            elif _missing(obj, wire):
                self.err(f"{path}.{wire}", code, f"{wire} is required for a {kind}")

    # ---------------------------------------------------------------- sections
