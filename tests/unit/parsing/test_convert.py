"""Wire and storage types: every storage type, bad values, strictness."""

from __future__ import annotations

import math
from typing import Any

import pytest

from runtime.core.parsing.convert import make_converter
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
)
from runtime.core.solution.enums import ParameterType as P
from runtime.core.solution.enums import ParseStringValueType as W
from runtime.core.solution.model import StateDef, StateSet, Unit, UnitSet

ONOFF = StateSet(
    key="onoff",
    require_enum=True,
    states=(StateDef(key="ison", enum_value=5), StateDef(key="isoff", enum_value=6)),
)
PLAIN = StateSet(key="plain", states=(StateDef(key="open", enum_value=1), StateDef(key="closed")))
TEMPS = UnitSet(key="temps", units=(Unit(key="c", is_default=True, number_decimal_points=1), Unit(key="f")))


@pytest.mark.parametrize(
    ("storage", "raw", "expected"),
    [
        (P.STRING, "abc", "abc"),
        (P.STRING, "Grüße °C", "Grüße °C"),  # not limited to ASCII
        (P.STRING, 12, "12"),
        (P.STRING, 21.5, "21.5"),
        (P.STRING, True, "True"),  # as .NET writes it (NuvIoT's starter app compares with 'True')
        (P.STRING, 3.0, "3"),
        (P.STRING, 1e-05, "1E-05"),
        (P.STRING, {"a": 1}, '{"a":1}'),
        (P.STRING, b"bytes", "bytes"),
        (P.INTEGER, "42", 42),
        (P.INTEGER, " -7 ", -7),
        (P.INTEGER, "+7", 7),
        (P.INTEGER, 2147483647, 2147483647),  # Int32, as int.TryParse
        (P.INTEGER, "-2147483648", -2147483648),
        (P.INTEGER, 3.0, 3),  # a whole JSON number: .NET writes it "3"
        (P.INTEGER, 3, 3),
        (P.DECIMAL, "21.5", 21.5),
        (P.DECIMAL, 21, 21.0),
        (P.DECIMAL, "-.5", -0.5),
        (P.DECIMAL, "5-", -5.0),  # decimal.TryParse takes a trailing sign
        (P.DECIMAL, 1e3, 1000.0),
        (P.DECIMAL, "1,234.5", 1234.5),
        (P.DECIMAL, "5.", 5.0),
        (P.DECIMAL, "1,5", 15.0),  # .NET AllowThousands: group separators anywhere
        (P.TRUE_FALSE, True, True),
        (P.TRUE_FALSE, False, False),
        (P.TRUE_FALSE, "true", True),
        (P.TRUE_FALSE, "True", True),
        (P.TRUE_FALSE, "TRUE", True),
        (P.TRUE_FALSE, "false", False),
        (P.TRUE_FALSE, "False", False),
        (P.TRUE_FALSE, " false ", False),
        (P.IMAGE, b"\x89PNG", "iVBORw=="),
        (P.IMAGE, "aGk=", "aGk="),
        (P.OBJECT, {"a": [1, 2]}, {"a": [1, 2]}),
        (P.OBJECT, "x", "x"),
        (P.OBJECT, b"hi", "aGk="),
        (P.DECIMAL_ARRAY, [1, 2.5], [1.0, 2.5]),
        (P.INT_ARRAY, [1, "2"], [1, 2]),
        (P.STRING_ARRAY, ["a", 1], ["a", "1"]),
    ],
)
def test_storage_types(storage: P, raw: Any, expected: Any) -> None:
    value = make_converter(storage)(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("storage", "raw", "code"),
    [
        (P.STRING, b"\xff", INVALID_TEXT),
        (P.INTEGER, "12abc", INVALID_INTEGER),
        (P.INTEGER, "1.5", INVALID_INTEGER),
        (P.INTEGER, 1.5, INVALID_INTEGER),
        (P.INTEGER, "3.0", INVALID_INTEGER),  # int.TryParse
        (P.INTEGER, "1,000,333", INVALID_INTEGER),  # no thousands separators
        (P.INTEGER, 2**31, INVALID_INTEGER),
        (P.INTEGER, True, INVALID_INTEGER),
        (P.INTEGER, "1_000", INVALID_INTEGER),
        (P.INTEGER, "0x10", INVALID_INTEGER),
        (P.INTEGER, "١٢", INVALID_INTEGER),  # non-ASCII digits
        (P.INTEGER, "1,00", INVALID_INTEGER),  # not thousands grouping
        (P.INTEGER, "", INVALID_INTEGER),
        (P.INTEGER, 2**63, INVALID_INTEGER),
        (P.INTEGER, "-9223372036854775809", INVALID_INTEGER),
        (P.INTEGER, {"a": 1}, INVALID_INTEGER),
        (P.DECIMAL, False, INVALID_DECIMAL),  # "temp": false is not a number
        (P.DECIMAL, True, INVALID_DECIMAL),
        (P.DECIMAL, "nan", INVALID_DECIMAL),
        (P.DECIMAL, "inf", INVALID_DECIMAL),
        (P.DECIMAL, math.inf, INVALID_DECIMAL),
        (P.DECIMAL, math.nan, INVALID_DECIMAL),
        (P.DECIMAL, "1e999", INVALID_DECIMAL),
        (P.DECIMAL, 10**400, INVALID_DECIMAL),
        (P.DECIMAL, "21.5C", INVALID_DECIMAL),
        (P.DECIMAL, "1e3", INVALID_DECIMAL),  # decimal.TryParse takes no exponent
        (P.DECIMAL, "-5-", INVALID_DECIMAL),
        (P.DECIMAL, [1], INVALID_DECIMAL),
        (P.TRUE_FALSE, "yes", NOT_NUMERIC_OR_BOOLEAN),
        (P.TRUE_FALSE, "1", NOT_NUMERIC_OR_BOOLEAN),  # bool.TryParse
        (P.TRUE_FALSE, 1, NOT_NUMERIC_OR_BOOLEAN),
        (P.TRUE_FALSE, "", NOT_NUMERIC_OR_BOOLEAN),
        (P.TRUE_FALSE, 2, NOT_NUMERIC_OR_BOOLEAN),
        (P.TRUE_FALSE, 1.0, NOT_NUMERIC_OR_BOOLEAN),
        (P.IMAGE, 5, INVALID_VALUE),
        (P.DECIMAL_ARRAY, "1,2", INVALID_VALUE),
        (P.INT_ARRAY, [1, "x"], INVALID_INTEGER),
        (P.ML_INFERENCE, "x", UNSUPPORTED_STORAGE_TYPE),
    ],
)
def test_storage_types_reject(storage: P, raw: Any, code: str) -> None:
    with pytest.raises(ParseError) as info:
        make_converter(storage)(raw)
    assert info.value.code == code


def test_decimal_scaler() -> None:
    assert make_converter(P.DECIMAL, scaler=0.1)("215") == pytest.approx(21.5)
    assert make_converter(P.DECIMAL, scaler=0.1)(215) == pytest.approx(21.5)
    assert make_converter(P.INTEGER, scaler=0.1)("215") == 215  # integers are not scaled
    with pytest.raises(ParseError) as info:
        make_converter(P.DECIMAL, scaler=1e308)("1e308")
    assert info.value.code == INVALID_DECIMAL


@pytest.mark.parametrize(
    ("wire", "storage", "raw", "expected"),
    [
        (W.BOOLEAN, P.TRUE_FALSE, "true", True),
        (W.BOOLEAN, P.STRING, "1", "True"),  # NuvIoT's label: "zero, false, False is false, anything else true"
        (W.BOOLEAN, P.TRUE_FALSE, "0", False),
        (W.BOOLEAN, P.TRUE_FALSE, "yes", True),
        (W.WHOLE_NUMBER, P.INTEGER, 3, 3),
        (W.WHOLE_NUMBER, P.DECIMAL, "3", 3.0),
        (W.WHOLE_NUMBER, P.DECIMAL, 3.0, 3.0),
        (W.REAL_NUMBER, P.DECIMAL, "2.5", 2.5),
        (W.REAL_NUMBER, P.INTEGER, "3", 3),
        (W.STRING, P.INTEGER, "3", 3),
        (W.FILE, P.IMAGE, b"x", "eA=="),
    ],
)
def test_wire_types(wire: W, storage: P, raw: Any, expected: Any) -> None:
    assert make_converter(storage, wire)(raw) == expected


@pytest.mark.parametrize(
    ("wire", "storage", "raw", "code"),
    [
        (W.WHOLE_NUMBER, P.DECIMAL, "2.5", INVALID_INTEGER),
        (W.WHOLE_NUMBER, P.STRING, "abc", INVALID_INTEGER),
        (W.REAL_NUMBER, P.STRING, "abc", INVALID_DECIMAL),
        (W.REAL_NUMBER, P.INTEGER, "3.5", INVALID_INTEGER),
        (W.REAL_NUMBER, P.DECIMAL, False, INVALID_DECIMAL),
    ],
)
def test_wire_types_reject(wire: W, storage: P, raw: Any, code: str) -> None:
    with pytest.raises(ParseError) as info:
        make_converter(storage, wire)(raw)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("state_set", "raw", "expected"),
    [
        (ONOFF, "ison", "ison"),
        (ONOFF, 5, "ison"),
        (ONOFF, "6", "isoff"),
        (PLAIN, "open", "open"),
        (PLAIN, "closed", "closed"),
    ],
)
def test_state(state_set: StateSet, raw: Any, expected: str) -> None:
    assert make_converter(P.STATE, state_set=state_set)(raw) == expected


@pytest.mark.parametrize(
    ("state_set", "raw"),
    [(ONOFF, "on"), (ONOFF, "ISON"), (ONOFF, 7), (ONOFF, True), (PLAIN, 1), (PLAIN, "1"), (ONOFF, 5.0)],
)
def test_state_rejects(state_set: StateSet, raw: Any) -> None:
    with pytest.raises(ParseError) as info:
        make_converter(P.STATE, state_set=state_set)(raw)
    assert info.value.code == UNKNOWN_STATE


def test_state_without_state_set() -> None:
    for key in (None, "gone"):
        with pytest.raises(ParseError) as info:
            make_converter(P.STATE, state_set_key=key)("x")
        assert info.value.code == STATE_SET_MISSING


def test_value_with_unit() -> None:
    convert = make_converter(P.VALUE_WITH_UNIT, unit_set=TEMPS, scaler=0.1)
    assert convert("215.44") == 21.5  # scaled, rounded to the default unit's precision
    with pytest.raises(ParseError) as info:
        convert("warm")
    assert info.value.code == NOT_NUMERIC_OR_BOOLEAN
    with pytest.raises(ParseError) as info:
        make_converter(P.VALUE_WITH_UNIT, unit_set_key="gone")("1")
    assert info.value.code == UNIT_SET_MISSING
    assert make_converter(P.VALUE_WITH_UNIT, unit_set=UnitSet(key="u"))("1.23456") == 1.23456
