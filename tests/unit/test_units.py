"""Issue 12, done-when 7: unit sets convert between units (``core/units.py``).

Names from LagoVista/DeviceAdmin ``src/LagoVista.IoT.DeviceAdmin.Models/Unit.cs`` (``Key``, ``Name``,
``Abbreviation``, ``IsDefault``, ``ConversionType`` {factor, script}, ``ConversionFactor``, ``ConversionToScript``
with ``convertToDefaultUnit``, ``ConversionFromScript`` with ``convertFromDefaultUnit``, ``NumberDecimalPoints``);
a value with unit is stored in the default unit (reference/nuviot-spec.md §2.2, Messaging/TypeSystem/ValueWithUnits.md:
"each other unit has a scaling factor or to/from-default conversion scripts").
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.solution.enums import ParameterType as P
from runtime.core.solution.model import UnitSet
from runtime.core.units import find_unit, from_default
from runtime.core.values import ValueProblem, converter

PRESSURE = UnitSet.model_validate({"key": "pressure", "name": "Pressure", "units": [
    {"key": "kpa", "name": "Kilopascal", "abbreviation": "kPa", "isDefault": True, "numberDecimalPoints": 2},
    {"key": "psi", "name": "Pounds per square inch", "abbreviation": "psi", "conversionType": "factor",
     "conversionFactor": 6.894757, "numberDecimalPoints": 1},
    {"key": "bar", "name": "Bar", "abbreviation": "bar", "conversionType": "factor", "conversionFactor": 100.0},
    {"key": "inhg", "name": "Inches of mercury", "abbreviation": "inHg", "conversionType": "script",
     "conversionToScript": "function convertToDefaultUnit(value) { return value * 3.386389; }",
     "conversionFromScript": "function convertFromDefaultUnit(value) { return value / 3.386389; }"},
]})


@pytest.mark.parametrize(("raw", "stored"), [
    ("101.325", 101.33),  # a plain number is in the default unit (rounded to its NumberDecimalPoints)
    (101.325, 101.33),
    ("14.7 psi", 101.35),  # by abbreviation: x ConversionFactor
    ("14.7psi", 101.35),
    ("1 BAR", 100.0),  # by key or name, any case
    ({"value": 2, "unit": "bar"}, 200.0),
    ({"value": "14.7", "unit": "Pounds per square inch"}, 101.35),
    ("1e2 kPa", 100.0),
])
def test_a_value_in_another_unit_is_stored_in_the_default_unit(raw: Any, stored: float) -> None:
    assert converter(P.VALUE_WITH_UNIT, unit_set=PRESSURE)(raw) == stored


@pytest.mark.parametrize("raw", ["3 atm", "29.9 inHg", "32.f"])
def test_an_unknown_unit_or_one_converted_by_script_is_mgv1004(raw: str) -> None:
    with pytest.raises(ValueProblem) as info:
        converter(P.VALUE_WITH_UNIT, unit_set=PRESSURE)(raw)
    assert "MGV1004" in str(info.value)


def test_from_the_default_unit_with_the_units_decimal_points() -> None:
    psi = find_unit(PRESSURE, "psi")
    assert psi is not None and from_default(psi, 101.35) == 14.7


def test_validate_warns_a_unit_converted_by_script() -> None:
    import json
    from pathlib import Path

    from runtime.core.solution import codes
    from runtime.core.solution.loader import load_solution_report
    from runtime.core.solution.validate import validate_document

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "nuviot-deployment-instance.json"
    doc = load_solution_report(json.dumps(json.loads(fixture.read_bytes())).encode(), source="t", env={}).document
    report = validate_document(doc.model_copy(update={"unit_sets": (PRESSURE,)}))
    assert ("unitSets[0].units[3].conversionType", codes.NOT_RUN) in {(w.path, w.code) for w in report.warnings}
