"""Typed values inside a workflow: attributes, inputs, parameters (reference/nuviot-spec.md §1.10).

``convert(value, type, state_set)`` turns what arrives (a JSON value, a query-string text, a script's result)
into the stored form of a NuvIoT type, or raises ``ValueError`` with a short reason. Stored forms: string
``str``; integer ``int``; decimal ``float``; true-false ``bool``; state: the state *key* ``str``; geolocation
``"lat,lon"``; date-time ISO text; other types as they come. ``None`` stays ``None`` (a cleared value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from runtime.core.solution.enums import ParameterType
from runtime.core.solution.model import StateSet

_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value)) if math.isfinite(value) else str(value)
    if isinstance(value, dict | list | tuple):
        raise ValueError("expected a text value, got a structure")
    return str(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got true/false")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        return _integer(number)
    raise ValueError(f"expected a whole number, got {type(value).__name__}")


def _decimal(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got true/false")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _geolocation(value: Any) -> str:
    if isinstance(value, dict):
        lat, lon = (
            value.get("latitude", value.get("Latitude")),
            value.get("longitude", value.get("Longitude")),
        )
    elif isinstance(value, list | tuple) and len(value) == 2:
        lat, lon = value
    elif isinstance(value, str) and value.count(",") == 1:
        lat, lon = value.split(",")
    else:
        raise ValueError(f"expected 'latitude,longitude', got {value!r}")
    la, lo = _decimal(lat), _decimal(lon)
    if abs(la) > 90 or abs(lo) > 180:
        raise ValueError(f"latitude/longitude out of range: {value!r}")
    return f"{la:.6f},{lo:.6f}"


def _state(value: Any, state_set: StateSet | None) -> str:
    if state_set is None or not state_set.states:
        return _text(value)
    text = _text(value).strip()
    for s in state_set.states:
        if s.key == text:
            return s.key
    for s in state_set.states:
        if s.key.lower() == text.lower() or (s.name and s.name.lower() == text.lower()):
            return s.key
    try:
        number = _integer(value)
    except ValueError:
        number = None
    if number is not None:
        for s in state_set.states:
            if s.enum_value is not None and s.enum_value == number:
                return s.key
    allowed = ", ".join(s.key for s in state_set.states)
    raise ValueError(f"{value!r} is not a state of {state_set.key} ({allowed})")


def _datetime(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"expected an ISO 8601 date-time, got {value!r}")


_SIMPLE: dict[ParameterType, Callable[[Any], Any]] = {
    ParameterType.STRING: _text,
    ParameterType.INTEGER: _integer,
    ParameterType.DECIMAL: _decimal,
    ParameterType.TRUE_FALSE: _boolean,
    ParameterType.GEOLOCATION: _geolocation,
    ParameterType.DATETIME: _datetime,
}


# Exact types a converter returns unchanged (bool is not int here: ``type(True) is bool``).
_ALREADY: dict[ParameterType, type] = {
    ParameterType.STRING: str,
    ParameterType.INTEGER: int,
    ParameterType.DECIMAL: float,
    ParameterType.TRUE_FALSE: bool,
}


def convert(value: Any, ptype: ParameterType, state_set: StateSet | None = None) -> Any:
    """``value`` in the stored form of ``ptype``; ``ValueError`` when it cannot be converted."""
    if value is None:
        return None
    exact = _ALREADY.get(ptype)  # already in its stored form (the usual case: a typed input set on an attribute)
    if exact is not None and type(value) is exact and (exact is not float or math.isfinite(value)):
        return value
    if ptype is ParameterType.STATE:
        return _state(value, state_set)
    fn = _SIMPLE.get(ptype)
    return value if fn is None else fn(value)


def is_numeric(ptype: ParameterType) -> bool:
    return ptype in (ParameterType.INTEGER, ParameterType.DECIMAL)
