"""From a raw wire value to a typed, JSON-friendly value of a NuvIoT storage type (docs/parsing.md §Types).

``make_converter`` is called once per field; the function it returns runs per message. Two steps:
1. the wire type (``parsed_string_field_type``), when set, must describe the value: a whole number, a real
   number or a boolean (``string``/``file`` accept anything). It checks, it does not change the value;
2. the storage type converts. Strict: a JSON ``false`` is not a number, ``"12abc"`` is not an integer,
   ``"yes"`` is not a boolean.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from typing import Any

from runtime.core.parsing.errors import (
    INVALID_DECIMAL,
    INVALID_INTEGER,
    INVALID_TEXT,
    INVALID_VALUE,
    NOT_NUMERIC_OR_BOOLEAN,
    STATE_SET_MISSING,
    UNIT_SET_MISSING,
    UNKNOWN_STATE,
    UNSUPPORTED_STORAGE_TYPE,
    ParseError,
    shown,
)
from runtime.core.parsing.geo import parse_geolocation
from runtime.core.parsing.locate import as_text
from runtime.core.parsing.timestamps import parse_datetime
from runtime.core.solution.enums import DateTimeZone, ParameterType, ParseStringValueType
from runtime.core.solution.model import StateSet, UnitSet

Converter = Callable[[Any], Any]

_INT_TEXT = re.compile(r"\s*[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)\s*", re.ASCII)
_REAL_TEXT = re.compile(
    r"\s*[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII
)
_INT64 = (-(2**63), 2**63 - 1)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


# --------------------------------------------------------------------------- scalars


def parse_integer(raw: Any) -> int:
    if isinstance(raw, bool):
        raise _not_integer(raw)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and _INT_TEXT.fullmatch(raw):
        value = int(raw.replace(",", ""))
    else:
        raise _not_integer(raw)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ParseError(INVALID_INTEGER, f"{shown(raw)} does not fit a 64-bit integer")
    return value


def _not_integer(raw: Any) -> ParseError:
    return ParseError(INVALID_INTEGER, f"{shown(raw)} is not an integer")


def parse_decimal(raw: Any, code: str = INVALID_DECIMAL) -> float:
    if isinstance(raw, bool):
        raise ParseError(code, f"{shown(raw)} is not a number")
    try:
        if isinstance(raw, int | float):
            value = float(raw)
        elif isinstance(raw, str) and _REAL_TEXT.fullmatch(raw):
            value = float(raw.replace(",", ""))
        else:
            raise ParseError(code, f"{shown(raw)} is not a number")
    except OverflowError:
        raise ParseError(code, f"{shown(raw)} is too large") from None
    if not math.isfinite(value):
        raise ParseError(code, f"{shown(raw)} is not a finite number")
    return value


def parse_boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return raw == 1
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ParseError(NOT_NUMERIC_OR_BOOLEAN, f"{shown(raw)} is not a boolean (true/false/1/0)")


def to_string(raw: Any) -> str:
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(INVALID_TEXT, f"{shown(raw)} is not UTF-8 text") from None
    return as_text(raw)


def _scaled(value: float, scaler: float, raw: Any, code: str) -> float:
    result = value * scaler
    if not math.isfinite(result):
        raise ParseError(code, f"{shown(raw)} scaled by {scaler} is not a finite number")
    return result


# --------------------------------------------------------------------------- wire types


def _check_wire(wire: ParseStringValueType | None) -> Callable[[Any], None] | None:
    if wire is ParseStringValueType.WHOLE_NUMBER:
        return _check_whole
    if wire is ParseStringValueType.REAL_NUMBER:
        return lambda raw: _discard(parse_decimal(raw))
    if wire is ParseStringValueType.BOOLEAN:
        return lambda raw: _discard(parse_boolean(raw))
    return None


def _discard(_: Any) -> None:
    return None


def _check_whole(raw: Any) -> None:
    """A whole number on the wire; a JSON ``3.0`` is whole too (storage decides whether it may be a float)."""
    if not (isinstance(raw, float) and raw.is_integer()):
        parse_integer(raw)


# --------------------------------------------------------------------------- storage types


# (storage, wire) pairs whose storage conversion runs the wire check's own parser first, on the same raw value
# with the same error: the check would only parse the value twice.
_CHECKED_BY_STORAGE = frozenset({
    (ParameterType.DECIMAL, ParseStringValueType.REAL_NUMBER),  # parse_decimal (then the scaler)
    (ParameterType.INTEGER, ParseStringValueType.WHOLE_NUMBER),  # parse_integer (a whole float fails it too)
    (ParameterType.TRUE_FALSE, ParseStringValueType.BOOLEAN),  # parse_boolean
})


def make_converter(
    storage: ParameterType,
    wire: ParseStringValueType | None = None,
    *,
    scaler: float = 1.0,
    zone: DateTimeZone | None = None,
    state_set: StateSet | None = None,
    unit_set: UnitSet | None = None,
    state_set_key: str | None = None,
    unit_set_key: str | None = None,
) -> Converter:
    store = _storage(storage, scaler, zone, state_set, unit_set, state_set_key, unit_set_key)
    check = _check_wire(wire)
    if check is None or (storage, wire) in _CHECKED_BY_STORAGE:
        return store

    def convert(raw: Any) -> Any:
        check(raw)
        return store(raw)

    return convert


def _storage(
    storage: ParameterType,
    scaler: float,
    zone: DateTimeZone | None,
    state_set: StateSet | None,
    unit_set: UnitSet | None,
    state_set_key: str | None,
    unit_set_key: str | None,
) -> Converter:
    P = ParameterType
    if storage is P.STRING:
        return to_string
    if storage is P.INTEGER:
        return parse_integer
    if storage is P.DECIMAL:
        if scaler == 1.0:
            return parse_decimal
        return lambda raw: _scaled(parse_decimal(raw), scaler, raw, INVALID_DECIMAL)
    if storage is P.TRUE_FALSE:
        return parse_boolean
    if storage is P.DATETIME:
        return lambda raw: parse_datetime(raw, zone)
    if storage is P.GEOLOCATION:
        return parse_geolocation
    if storage is P.STATE:
        return _state_converter(state_set, state_set_key)
    if storage is P.VALUE_WITH_UNIT:
        return _unit_converter(unit_set, unit_set_key, scaler)
    if storage is P.IMAGE:
        return _image
    if storage is P.OBJECT:
        return lambda raw: base64.b64encode(raw).decode("ascii") if isinstance(raw, bytes) else raw
    if storage in (P.DECIMAL_ARRAY, P.INT_ARRAY, P.STRING_ARRAY):
        item = {P.DECIMAL_ARRAY: parse_decimal, P.INT_ARRAY: parse_integer, P.STRING_ARRAY: to_string}[
            storage
        ]
        return lambda raw: _array(raw, item)
    return _unsupported(storage)


def _unsupported(storage: ParameterType) -> Converter:
    def convert(raw: Any) -> Any:
        raise ParseError(
            UNSUPPORTED_STORAGE_TYPE, f"storage type {storage.value!r} is not parsed from messages"
        )

    return convert


def _image(raw: Any) -> str:
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode("ascii")
    if isinstance(raw, str):
        return raw
    raise ParseError(INVALID_VALUE, f"{shown(raw)} is not an image (bytes or base64 text)")


def _array(raw: Any, item: Converter) -> list[Any]:
    if not isinstance(raw, list):
        raise ParseError(INVALID_VALUE, f"{shown(raw)} is not an array")
    return [item(x) for x in raw]


def _state_converter(state_set: StateSet | None, key: str | None) -> Converter:
    if state_set is None:
        detail = f"state set {key!r} is not in the solution" if key else "the field has no state set"

        def missing(raw: Any) -> Any:
            raise ParseError(STATE_SET_MISSING, detail)

        return missing
    keys = {s.key: s.key for s in state_set.states}
    folded = {s.key.lower(): s.key for s in state_set.states}
    enums = (
        {s.enum_value: s.key for s in state_set.states if s.enum_value is not None}
        if state_set.require_enum
        else {}
    )

    def convert(raw: Any) -> str:
        if isinstance(raw, str):
            found = keys.get(raw) or folded.get(raw.strip().lower())
            if found is None and enums and _INT_TEXT.fullmatch(raw):
                found = enums.get(int(raw.replace(",", "")))
        elif isinstance(raw, int) and not isinstance(raw, bool):
            found = enums.get(raw) or keys.get(str(raw))
        else:
            found = None
        if found is None:
            raise ParseError(UNKNOWN_STATE, f"{shown(raw)} is not a state of {state_set.key!r}")
        return found

    return convert


def _unit_converter(unit_set: UnitSet | None, key: str | None, scaler: float) -> Converter:
    if unit_set is None:
        detail = f"unit set {key!r} is not in the solution" if key else "the field has no unit set"

        def missing(raw: Any) -> Any:
            raise ParseError(UNIT_SET_MISSING, detail)

        return missing
    default = next((u for u in unit_set.units if u.is_default), None)
    places = default.number_decimal_points if default is not None else None

    def convert(raw: Any) -> float:
        value = _scaled(parse_decimal(raw, NOT_NUMERIC_OR_BOOLEAN), scaler, raw, NOT_NUMERIC_OR_BOOLEAN)
        return round(value, places) if places is not None and places >= 0 else value

    return convert
