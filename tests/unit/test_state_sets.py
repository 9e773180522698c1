"""Issue 12, done-when 7: state sets with integer values, as NuvIoT defines them.

LagoVista/DeviceAdmin ``src/LagoVista.IoT.DeviceAdmin.Models/StateSet.cs`` (``RequireEnum``; ``Validate``: with
``RequireEnum`` every state needs an ``EnumValue`` and the values are unique) and ``State.cs`` (``EnumValue``);
LagoVista/Runtime ``MessageValue.Validate`` (a state value is the state's key, MGV1007 otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime.core.solution import codes
from runtime.core.solution.enums import ParameterType as P
from runtime.core.solution.loader import load_solution_report
from runtime.core.solution.model import StateSet
from runtime.core.solution.validate import validate_document
from runtime.core.values import ValueProblem, converter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-deployment-instance.json"


def state_set(require_enum: bool, values: tuple[int | None, ...] = (0, 1, 2)) -> StateSet:
    keys = ("off", "low", "high")
    return StateSet.model_validate({"key": "fan", "name": "Fan", "requireEnum": require_enum, "states": [
        {"key": k, "name": k.title(), "enumValue": v, "isInitialState": k == "off"} for k, v in zip(keys, values, strict=True)]})


@pytest.mark.parametrize(("raw", "stored"), [(2, "high"), ("1", "low"), ("off", "off")])
def test_a_require_enum_state_set_reads_integer_values_as_its_states(raw: Any, stored: str) -> None:
    assert converter(P.STATE, state_set=state_set(True))(raw) == stored


def test_without_require_enum_only_the_key_is_a_state() -> None:
    with pytest.raises(ValueProblem) as info:
        converter(P.STATE, state_set=state_set(False))(2)
    assert "MGV1007" in str(info.value)


@pytest.mark.parametrize("values", [(0, 1, None), (0, 1, 1)])
def test_a_require_enum_state_set_without_unique_enum_values_is_refused(values: tuple[int | None, ...]) -> None:
    doc = load_solution_report(FIXTURE.read_bytes(), source="t", env={}).document
    report = validate_document(doc.model_copy(update={"state_sets": (state_set(True, values),)}))
    assert ("stateSets[0].states", codes.STATE_SET_ENUM) in {(e.path, e.code) for e in report.errors}


def test_unique_enum_values_pass() -> None:
    doc = load_solution_report(json.dumps(json.loads(FIXTURE.read_bytes())).encode(), source="t", env={}).document
    report = validate_document(doc.model_copy(update={"state_sets": (state_set(True),)}))
    assert not [e for e in report.errors if e.code == codes.STATE_SET_ENUM]
