"""The one converter from text and JSON values to NuvIoT's types (docs/fidelity.md, "Values").

Used by the input translator (device message fields, ``core/parsing/convert.py``), the workflow (inputs,
attributes, output-command fields, ``core/pipeline/typed.py``), input-command parameters and system messages.
The rules are those of NuvIoT's ``MessageValue.Validate`` (LagoVista/Runtime
``src/LagoVista.IoT.Runtime.Core/Models/PEM/MessageValue.cs``, tested by ``MessageValueTests``), applied to
the text .NET would hold for the value (a JSON ``true`` is ``"True"``, a JSON ``3.0`` is ``"3"``):

- integer: ``int.TryParse`` (``NumberStyles.Integer``): optional sign and surrounding blanks, digits only, in
  the Int32 range. No thousands separators, no ``3.0`` (MGV1008). A JSON number that is whole is fine.
- decimal: ``decimal.TryParse`` (``NumberStyles.Number``): sign (leading or trailing), thousands separators,
  a decimal point, no exponent (MGV1009). JSON numbers are fine.
- value with unit: ``double.TryParse`` (``Float | AllowThousands``): also an exponent (MGV1004).
- true-false: ``bool.TryParse``: ``true``/``false`` in any case, blanks around; ``1``, ``yes`` are not
  booleans (MGV1004, NuvIoT's code for it).
- state: the state's key exactly (MGV1007); a state set's enum value when it requires enums; no state set is
  MGV1006.
- string: the text as .NET formats it (``True``/``False``, ``3``, ``21.5``, ``1E-05``).
- date-time and geolocation: ``core/parsing/timestamps.py`` and ``core/parsing/geo.py`` (MGV1011, MGV1010).

``lenient=True`` is for input-command parameters and system messages, which deliberately accept more
(docs/fidelity.md): booleans ``1``/``0``/``yes``/``no``/``on``/``off``, whole numbers written ``3.0``, state
keys in any case and state names. ``ValueProblem`` is a ``ParseError`` (code, detail) and a ``ValueError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import orjson

from runtime.core.parsing.errors import (
    INVALID_DECIMAL,
    INVALID_INTEGER,
    INVALID_TEXT,
    INVALID_VALUE,
    NOT_NUMERIC_OR_BOOLEAN,
    STATE_SET_MISSING,
    UNKNOWN_STATE,
    ParseError,
    shown,
)
from runtime.core.parsing.geo import parse_geolocation
from runtime.core.parsing.timestamps import parse_datetime
from runtime.core.solution.enums import DateTimeZone, ParameterType
from runtime.core.solution.model import StateSet, UnitSet
from runtime.core.units import UnitProblem, split_unit, to_default


class ValueProblem(ParseError, ValueError):
    """A value that is not of its NuvIoT type: ``code`` (MGV10xx) and ``detail``."""


_INT32 = (-(2**31), 2**31 - 1)
_DECIMAL_MAX = 79228162514264337593543950335  # System.Decimal.MaxValue
_INTEGER = re.compile(r"[ \t\r\n]*[+-]?\d+[ \t\r\n]*", re.ASCII)
_GROUPED = r"(?:\d[\d,]*)"  # .NET AllowThousands: group separators anywhere after the first digit
_DECIMAL = re.compile(
    rf"[ \t\r\n]*(?P<lead>[+-]?)(?P<num>{_GROUPED}(?:\.\d*)?|\.\d+)(?P<trail>[+-]?)[ \t\r\n]*", re.ASCII
)
_DOUBLE = re.compile(rf"[ \t\r\n]*[+-]?(?:{_GROUPED}(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[ \t\r\n]*", re.ASCII)
_LENIENT_TRUE = frozenset({"true", "1", "yes", "on"})
_LENIENT_FALSE = frozenset({"false", "0", "no", "off"})


# --------------------------------------------------------------------------- text as .NET writes it


def dotnet_text(value: object) -> str:
    """``value`` as a .NET string: ``True``/``False``, ``3`` for a whole double, ``1E-05``, JSON for structures."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if 1e-4 <= abs(value) < 1e15:
            return repr(value)  # the shortest text that reads back, as .NET Core writes a double
        for digits in range(17):  # the same, in .NET's exponent form: 1E-05, 1.5E+20
            text = f"{value:.{digits}e}"
            if float(text) == value:
                break
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}E{exponent[0]}{exponent[1:].lstrip('0').rjust(2, '0')}"
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueProblem(INVALID_TEXT, f"{shown(value)} is not UTF-8 text") from None
    try:  # structures: their JSON text (what JToken.ToString gives, without the indentation)
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        raise ValueProblem(INVALID_VALUE, f"{shown(value)} has no text form") from None


# --------------------------------------------------------------------------- scalars


def to_integer(raw: object, *, lenient: bool = False) -> int:
    if isinstance(raw, bool):
        raise ValueProblem(INVALID_INTEGER, f"{shown(raw)} is not an integer")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        value = int(raw)  # .NET writes a whole double without decimals
    elif isinstance(raw, str) and _INTEGER.fullmatch(raw):
        value = int(raw)
    elif lenient and isinstance(raw, str) and _DOUBLE.fullmatch(raw) and "," not in raw:
        number = float(raw)
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueProblem(INVALID_INTEGER, f"{shown(raw)} is not a whole number")
        value = int(number)
    else:
        raise ValueProblem(INVALID_INTEGER, f"{shown(raw)} is not an integer")
    if not _INT32[0] <= value <= _INT32[1]:
        raise ValueProblem(INVALID_INTEGER, f"{shown(raw)} is outside the 32-bit integer range")
    return value


def to_decimal(raw: object, code: str = INVALID_DECIMAL) -> float:
    if isinstance(raw, bool):
        raise ValueProblem(code, f"{shown(raw)} is not a number")
    if isinstance(raw, int | float):
        if isinstance(raw, int) and abs(raw) > _DECIMAL_MAX:
            raise ValueProblem(code, f"{shown(raw)} is too large for a decimal")
        value = float(raw)
        if not math.isfinite(value) or abs(value) > _DECIMAL_MAX:
            raise ValueProblem(code, f"{shown(raw)} is not a finite decimal number")
        return value
    match = _DECIMAL.fullmatch(raw) if isinstance(raw, str) else None
    if match is None or (match["lead"] and match["trail"]):
        raise ValueProblem(code, f"{shown(raw)} is not a decimal number")
    value = float(match["num"].replace(",", ""))
    if abs(value) > _DECIMAL_MAX:
        raise ValueProblem(code, f"{shown(raw)} is too large for a decimal")
    return -value if "-" in (match["lead"], match["trail"]) else value


def to_double(raw: object, code: str = NOT_NUMERIC_OR_BOOLEAN) -> float:
    if isinstance(raw, bool):
        raise ValueProblem(code, f"{shown(raw)} is not numeric")
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
    elif isinstance(raw, str) and _DOUBLE.fullmatch(raw):
        try:
            value = float(raw.replace(",", ""))
        except OverflowError:
            value = math.inf
    else:
        raise ValueProblem(code, f"{shown(raw)} is not numeric")
    if not math.isfinite(value):
        raise ValueProblem(code, f"{shown(raw)} is not a finite number")
    return value


def to_boolean(raw: object, *, lenient: bool = False) -> bool:
    if isinstance(raw, bool):
        return raw
    text = raw if isinstance(raw, str) else (str(raw) if lenient and isinstance(raw, int) else None)
    if text is not None:
        folded = text.strip(" \t\r\n\x00").lower()
        if folded in ("true", "false"):
            return folded == "true"
        if lenient and (folded in _LENIENT_TRUE or folded in _LENIENT_FALSE):
            return folded in _LENIENT_TRUE
    allowed = "true/false, 1/0, yes/no, on/off" if lenient else "true or false"
    raise ValueProblem(NOT_NUMERIC_OR_BOOLEAN, f"{shown(raw)} is not a boolean ({allowed})")


def wire_boolean(raw: object) -> bool:
    """ParseStringValueType ``boolean``: "zero, false, False is false, anything else true" (NuvIoT's label)."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        return raw != 0
    return dotnet_text(raw).strip().lower() not in ("0", "false", "")


def to_state(raw: object, state_set: StateSet | None, *, lenient: bool = False, key: str | None = None) -> str:
    if state_set is None:
        detail = f"state set {key!r} is not in the solution" if key else "the value has no state set"
        raise ValueProblem(STATE_SET_MISSING, detail)
    text = dotnet_text(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
    if text is not None:
        for s in state_set.states:
            if s.key == text:
                return s.key
        number = _enum_number(raw)
        if number is not None and (state_set.require_enum or lenient):
            for s in state_set.states:
                if s.enum_value is not None and s.enum_value == number:
                    return s.key
        if lenient:
            folded = text.strip().lower()
            for s in state_set.states:
                if s.key.lower() == folded or (s.name and s.name.lower() == folded):
                    return s.key
    allowed = ",".join(f"[{s.key}]" for s in state_set.states)
    raise ValueProblem(UNKNOWN_STATE, f"{shown(raw)} is not a state of {state_set.key!r} (allowed: {allowed})")


def _enum_number(raw: object) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _INTEGER.fullmatch(raw):
        return int(raw)
    return None


def to_value_with_unit(raw: object, unit_set: UnitSet | None = None, scaler: float = 1.0) -> float:
    """A number in the set's default unit: one that names another unit of the set is converted (``core/units.py``).
    A plain number (the usual case) costs nothing more."""
    unit = None
    try:
        value = to_double(raw)
    except ValueProblem:
        if unit_set is None or isinstance(raw, bool):
            raise
        try:
            number, unit = split_unit(raw, unit_set)
        except UnitProblem as exc:
            raise ValueProblem(exc.code, str(exc)) from None
        if unit is None:
            raise
        value = to_double(number)
    if scaler != 1.0:
        value = _scaled(value, scaler, raw, NOT_NUMERIC_OR_BOOLEAN)
    if unit is not None:
        try:
            value = to_default(unit, value)
        except UnitProblem as exc:
            raise ValueProblem(exc.code, str(exc)) from None
    default = next((u for u in unit_set.units if u.is_default), None) if unit_set is not None else None
    places = default.number_decimal_points if default is not None else None
    return round(value, places) if places is not None and places >= 0 else value


def _scaled(value: float, scaler: float, raw: object, code: str) -> float:
    result = value * scaler
    if not math.isfinite(result):
        raise ValueProblem(code, f"{shown(raw)} scaled by {scaler} is not a finite number")
    return result


# --------------------------------------------------------------------------- one entry point

Converter = Callable[[object], object]


def converter(
    ptype: ParameterType,
    *,
    state_set: StateSet | None = None,
    unit_set: UnitSet | None = None,
    zone: DateTimeZone | None = None,
    scaler: float = 1.0,
    lenient: bool = False,
    state_set_key: str | None = None,
) -> Converter | None:
    """The conversion for one declared value (built once, run per value); ``None`` for types kept as they come
    (image, object, arrays, ML inference: their callers handle them)."""
    P = ParameterType
    if ptype is P.STRING:
        return dotnet_text
    if ptype is P.INTEGER:
        return (lambda raw: to_integer(raw, lenient=True)) if lenient else to_integer
    if ptype is P.DECIMAL:
        if scaler == 1.0:
            return to_decimal
        return lambda raw: _scaled(to_decimal(raw), scaler, raw, INVALID_DECIMAL)
    if ptype is P.TRUE_FALSE:
        return (lambda raw: to_boolean(raw, lenient=True)) if lenient else to_boolean
    if ptype is P.DATETIME:
        return lambda raw: _datetime(raw, zone)
    if ptype is P.GEOLOCATION:
        return _geolocation
    if ptype is P.STATE:
        return lambda raw: to_state(raw, state_set, lenient=lenient, key=state_set_key)
    if ptype is P.VALUE_WITH_UNIT:
        return lambda raw: to_value_with_unit(raw, unit_set, scaler)
    return None


def convert(
    raw: object,
    ptype: ParameterType,
    *,
    state_set: StateSet | None = None,
    unit_set: UnitSet | None = None,
    zone: DateTimeZone | None = None,
    lenient: bool = False,
) -> object:
    """``raw`` in the stored form of ``ptype``; ``None`` (and, for all but strings, ``""``) is no value."""
    if raw is None or (raw == "" and ptype is not ParameterType.STRING):
        return None
    fn = converter(ptype, state_set=state_set, unit_set=unit_set, zone=zone, lenient=lenient)
    return raw if fn is None else fn(raw)


def _datetime(raw: object, zone: DateTimeZone | None) -> str:
    try:
        return parse_datetime(raw, zone)
    except ParseError as exc:
        raise ValueProblem(exc.code, exc.detail) from None


def _geolocation(raw: object) -> str:
    if isinstance(raw, list | tuple) and len(raw) == 2:
        raw = {"lat": raw[0], "lon": raw[1]}
    try:
        return parse_geolocation(raw)
    except ParseError as exc:
        raise ValueProblem(exc.code, exc.detail) from None
