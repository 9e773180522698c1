"""From a raw wire value to a typed, JSON-friendly value of a NuvIoT storage type (docs/parsing.md §Types).

``make_converter`` is called once per field; the function it returns runs per message. Two steps:
1. the wire type (``parsed_string_field_type``), when set: ``wholenumber`` and ``realnumber`` must describe
   the value (they check, they do not change it); ``boolean`` reads it as NuvIoT's label says ("zero, false,
   False is false, anything else true"); ``string``/``file`` accept anything;
2. the storage type converts, by NuvIoT's ``MessageValue`` rules: ``runtime/core/values.py`` (the one
   converter, also used by the workflow, input commands and system messages). Images, objects and arrays
   are handled here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from runtime.core.parsing.errors import (
    INVALID_DECIMAL,
    INVALID_VALUE,
    UNIT_SET_MISSING,
    UNSUPPORTED_STORAGE_TYPE,
    ParseError,
    shown,
)
from runtime.core.solution.enums import DateTimeZone, ParameterType, ParseStringValueType
from runtime.core.solution.model import StateSet, UnitSet
from runtime.core.values import (
    converter,
    dotnet_text,
    to_decimal,
    to_double,
    to_integer,
    wire_boolean,
)

Converter = Callable[[object], object]

# the scalar readers, under the names the parsing package has used
parse_integer = to_integer
parse_decimal = to_decimal
to_string = dotnet_text


# --------------------------------------------------------------------------- wire types


def _check_whole(raw: object) -> None:
    """A whole number on the wire; a JSON ``3.0`` is whole too (storage decides whether it may be a float)."""
    if not (isinstance(raw, float) and raw.is_integer()):
        to_double(raw) if not isinstance(raw, str) else to_integer(raw)


def _check_real(raw: object) -> None:
    to_double(raw, INVALID_DECIMAL)


# --------------------------------------------------------------------------- storage types


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
    if wire is ParseStringValueType.BOOLEAN:
        return lambda raw: store(wire_boolean(raw))
    check = _check_whole if wire is ParseStringValueType.WHOLE_NUMBER else (
        _check_real if wire is ParseStringValueType.REAL_NUMBER else None)
    if check is None or (storage, wire) in _CHECKED_BY_STORAGE:
        return store

    def convert(raw: object) -> object:
        check(raw)
        return store(raw)

    return convert


# (storage, wire) pairs whose storage conversion is at least as strict as the wire check on the same value
_CHECKED_BY_STORAGE = frozenset({
    (ParameterType.INTEGER, ParseStringValueType.WHOLE_NUMBER),
    (ParameterType.DECIMAL, ParseStringValueType.REAL_NUMBER),
    (ParameterType.VALUE_WITH_UNIT, ParseStringValueType.REAL_NUMBER),
})


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
    if storage is P.VALUE_WITH_UNIT and unit_set is None:
        detail = f"unit set {unit_set_key!r} is not in the solution" if unit_set_key else "the field has no unit set"

        def missing(raw: object) -> object:
            raise ParseError(UNIT_SET_MISSING, detail)

        return missing
    fn = converter(storage, state_set=state_set, unit_set=unit_set, zone=zone, scaler=scaler,
                   state_set_key=state_set_key)
    if fn is not None:
        return fn
    if storage is P.IMAGE:
        return _image
    if storage is P.OBJECT:
        return lambda raw: base64.b64encode(raw).decode("ascii") if isinstance(raw, bytes) else raw
    if storage in (P.DECIMAL_ARRAY, P.INT_ARRAY, P.STRING_ARRAY):
        items: dict[ParameterType, Converter] = {P.DECIMAL_ARRAY: to_decimal, P.INT_ARRAY: to_integer,
                                                 P.STRING_ARRAY: dotnet_text}
        item = items[storage]
        return lambda raw: _array(raw, item)
    return _unsupported(storage)


def _unsupported(storage: ParameterType) -> Converter:
    def convert(raw: object) -> object:
        raise ParseError(
            UNSUPPORTED_STORAGE_TYPE, f"storage type {storage.value!r} is not parsed from messages"
        )

    return convert


def _image(raw: object) -> str:
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode("ascii")
    if isinstance(raw, str):
        return raw
    raise ParseError(INVALID_VALUE, f"{shown(raw)} is not an image (bytes or base64 text)")


def _array(raw: object, item: Converter) -> list[object]:
    if not isinstance(raw, list):
        raise ParseError(INVALID_VALUE, f"{shown(raw)} is not an array")
    return [item(x) for x in raw]
