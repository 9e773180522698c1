"""Typed values inside a workflow: attributes, inputs, parameters (reference/nuviot-spec.md §1.10).

``convert(value, type, state_set)`` turns what arrives (a JSON value, a query-string text, a script's result)
into the stored form of a NuvIoT type, or raises ``ValueError`` with a short reason. The rules are NuvIoT's
``MessageValue`` rules, in the one converter ``runtime/core/values.py``; input-command parameters pass
``lenient=True`` (they accept more, docs/fidelity.md). Stored forms: string ``str`` (as .NET writes the value:
``True``); integer ``int``; decimal and value-with-unit ``float``; true-false ``bool``; state: the state *key*
``str``; geolocation ``"lat,lon"``; date-time ISO text; other types as they come. ``None`` stays ``None``.
"""

from __future__ import annotations

import math

from runtime.core.solution.enums import ParameterType
from runtime.core.solution.model import StateSet
from runtime.core.values import convert as convert_value

# Exact types a converter returns unchanged (bool is not int here: ``type(True) is bool``).
_ALREADY: dict[ParameterType, type] = {
    ParameterType.STRING: str,
    ParameterType.INTEGER: int,
    ParameterType.DECIMAL: float,
    ParameterType.TRUE_FALSE: bool,
}


def convert(value: object, ptype: ParameterType, state_set: StateSet | None = None, *, lenient: bool = False) -> object:
    """``value`` in the stored form of ``ptype``; ``ValueError`` (a ``values.ValueProblem``) when it cannot be."""
    if value is None:
        return None
    exact = _ALREADY.get(ptype)  # already in its stored form (the usual case: a typed input set on an attribute)
    if exact is not None and type(value) is exact and (
        not isinstance(value, float) or math.isfinite(value)) and (type(value) is not int or -(2**31) <= value < 2**31):
        return value
    return convert_value(value, ptype, state_set=state_set, lenient=lenient)


def is_numeric(ptype: ParameterType) -> bool:
    return ptype in (ParameterType.INTEGER, ParameterType.DECIMAL)
