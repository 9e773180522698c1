"""Unit sets (NuvIoT ``UnitSet``/``Unit``, LagoVista/DeviceAdmin ``UnitSet.cs``, ``Unit.cs``): a value with unit is
stored in its set's default unit; a value that names another unit of the set is converted. Pure.

A unit is named by its ``Key``, ``Abbreviation`` or ``Name`` (case-insensitive), after the number (``"72 F"``,
``"72°F"``) or as ``{"value": 72, "unit": "f"}``. A ``factor`` unit converts as ``default = value x
ConversionFactor`` (and back by dividing); a ``script`` unit (``convertToDefaultUnit`` / ``convertFromDefaultUnit``)
is not run by this runtime: a value in such a unit fails (MGV1004), and ``validate`` warns (PYRT2091).
"""

from __future__ import annotations

import re

from runtime.core.parsing.errors import NOT_NUMERIC_OR_BOOLEAN
from runtime.core.solution.model import Unit, UnitSet

_NUMBER_THEN_UNIT = re.compile(r"\s*([-+]?[0-9][0-9,]*(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*([^\s0-9.,+\-].*?)\s*")


class UnitProblem(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def find_unit(unit_set: UnitSet, name: str) -> Unit | None:
    folded = name.strip().casefold()
    for attr in ("key", "abbreviation", "name"):
        for unit in unit_set.units:
            value = getattr(unit, attr)
            if value and value.strip().casefold() == folded:
                return unit
    return None


def default_unit(unit_set: UnitSet) -> Unit | None:
    return next((u for u in unit_set.units if u.is_default), None)


def split_unit(raw: object, unit_set: UnitSet | None) -> tuple[object, Unit | None]:
    """``raw`` without the unit it names, and that unit (None when it names none)."""
    if unit_set is None:
        return raw, None
    if isinstance(raw, dict) and "value" in raw:
        name = raw.get("unit")
        if name is None:
            return raw["value"], None
        return raw["value"], _named(unit_set, str(name), raw)
    if isinstance(raw, str):
        match = _NUMBER_THEN_UNIT.fullmatch(raw)
        if match is not None:
            return match.group(1), _named(unit_set, match.group(2), raw)
    return raw, None


def _named(unit_set: UnitSet, name: str, raw: object) -> Unit:
    unit = find_unit(unit_set, name)
    if unit is None:
        known = ", ".join(u.abbreviation or u.key for u in unit_set.units) or "none"
        raise UnitProblem(NOT_NUMERIC_OR_BOOLEAN, f"{raw!r}: {name!r} is not a unit of unit set {unit_set.key} "
                                                  f"(units: {known})")
    return unit


def to_default(unit: Unit, value: float) -> float:
    """``value`` in ``unit`` as a value in the set's default unit."""
    if unit.is_default:
        return value
    if unit.conversion_factor is not None and (unit.conversion_type or "factor") == "factor":
        return value * unit.conversion_factor
    raise UnitProblem(NOT_NUMERIC_OR_BOOLEAN, f"unit {unit.key} converts by script (convertToDefaultUnit), "
                                              "which this runtime does not run")


def from_default(unit: Unit, value: float) -> float:
    """A value in the default unit as a value in ``unit`` (rounded to its ``NumberDecimalPoints``)."""
    if unit.is_default:
        out = value
    elif unit.conversion_factor and (unit.conversion_type or "factor") == "factor":
        out = value / unit.conversion_factor
    else:
        raise UnitProblem(NOT_NUMERIC_OR_BOOLEAN, f"unit {unit.key} converts by script (convertFromDefaultUnit), "
                                                  "which this runtime does not run")
    places = unit.number_decimal_points
    return round(out, places) if places is not None and places >= 0 else out
