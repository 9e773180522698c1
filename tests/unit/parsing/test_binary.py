"""Binary bodies: all twelve types, both endians, strings, relative offsets, overruns."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from runtime.core.parsing.binary import read_binary
from runtime.core.parsing.errors import INVALID_LOCATOR, INVALID_TEXT, READ_PAST_END, ParseError
from runtime.core.parsing.locate import BinaryCursor, compile_locator
from runtime.core.parsing.view import MessageView
from runtime.core.solution.enums import Endian, ParseBinaryValueType, StringParsingStrategy
from runtime.core.solution.model import MessageDefinition, MessageField

T = ParseBinaryValueType
NUMERIC = [
    (T.BYTE, "B", 200),
    (T.UINT16, "H", 0xBEEF),
    (T.INT16, "h", -12345),
    (T.UINT32, "I", 0xDEADBEEF),
    (T.INT32, "i", -123456789),
    (T.UINT64, "Q", 2**64 - 2),
    (T.INT64, "q", -(2**62)),
    (T.SINGLE, "f", 1.5),
    (T.DOUBLE, "d", -2.25e100),
]


@pytest.mark.parametrize("endian", list(Endian))
@pytest.mark.parametrize(("kind", "code", "value"), NUMERIC)
def test_numbers(kind: ParseBinaryValueType, code: str, value: Any, endian: Endian) -> None:
    order = ">" if endian is Endian.BIG else "<"
    data = b"\xaa\xbb" + struct.pack(order + code, value) + b"\xcc"
    assert read_binary(data, 2, kind, endian) == (value, 2 + struct.calcsize(code))


@pytest.mark.parametrize("endian", list(Endian))
def test_endian_matters(endian: Endian) -> None:
    value, _ = read_binary(b"\x01\x02", 0, T.UINT16, endian)
    assert value == (0x0102 if endian is Endian.BIG else 0x0201)


@pytest.mark.parametrize(("byte", "expected"), [(b"\x00", False), (b"\x01", True), (b"\xff", True)])
def test_boolean(byte: bytes, expected: bool) -> None:
    assert read_binary(byte, 0, T.BOOLEAN, Endian.BIG) == (expected, 1)


def test_char() -> None:
    assert read_binary(b"xA", 1, T.CHAR, Endian.LITTLE) == ("A", 2)
    with pytest.raises(ParseError) as info:
        read_binary(b"\xe9", 0, T.CHAR, Endian.LITTLE)
    assert info.value.code == INVALID_TEXT


def test_float_special_values_are_read() -> None:
    value, _ = read_binary(struct.pack(">f", math.inf), 0, T.SINGLE, Endian.BIG)
    assert value == math.inf  # conversion to decimal rejects it later (MGV1009)


@pytest.mark.parametrize(
    ("data", "offset", "expected"),
    [
        (b"abc\x00def", 0, ("abc", 4)),
        (b"abc\x00def", 4, ("def", 7)),  # no terminator: to the end
        (b"\x00", 0, ("", 1)),
        (b"ab", 2, ("", 2)),
    ],
)
def test_null_terminated_string(data: bytes, offset: int, expected: tuple[str, int]) -> None:
    assert read_binary(data, offset, T.STRING, Endian.BIG, StringParsingStrategy.NULL_TERMINATED) == expected
    assert read_binary(data, offset, T.STRING, Endian.BIG) == expected  # the default strategy


@pytest.mark.parametrize("endian", list(Endian))
@pytest.mark.parametrize(("size", "code"), [(1, "B"), (2, "H"), (4, "I")])
def test_length_prefixed_string(size: int, code: str, endian: Endian) -> None:
    order = ">" if endian is Endian.BIG else "<"
    data = b"\x09" + struct.pack(order + code, 5) + b"hello" + b"rest"
    expected = ("hello", 1 + size + 5)
    assert read_binary(data, 1, T.STRING, endian, StringParsingStrategy.STRING_LENGTH, size) == expected


def test_length_prefix_size_must_be_1_2_or_4() -> None:
    with pytest.raises(ParseError) as info:
        read_binary(b"\x01a", 0, T.STRING, Endian.BIG, StringParsingStrategy.STRING_LENGTH, 3)
    assert info.value.code == INVALID_LOCATOR


@pytest.mark.parametrize(
    ("data", "offset", "kind", "strategy"),
    [
        (b"\x01", 0, T.UINT16, None),
        (b"\x01\x02\x03", 0, T.INT32, None),
        (b"", 0, T.BYTE, None),
        (b"", 0, T.BOOLEAN, None),
        (b"1234567", 0, T.DOUBLE, None),
        (b"ab", 3, T.STRING, None),
        (b"\x05abc", 0, T.STRING, StringParsingStrategy.STRING_LENGTH),  # prefix says 5, only 3 bytes
        (b"", 0, T.STRING, StringParsingStrategy.STRING_LENGTH),
    ],
)
def test_read_past_end(
    data: bytes, offset: int, kind: ParseBinaryValueType, strategy: StringParsingStrategy | None
) -> None:
    with pytest.raises(ParseError) as info:
        read_binary(data, offset, kind, Endian.BIG, strategy, 1)
    assert info.value.code == READ_PAST_END


def test_relative_offsets_follow_field_order() -> None:
    message = MessageDefinition(
        key="m",
        message_id="m",
        content_type="binary",
        binary_parsing_strategy="relative",
        endian="littleendian",
    )
    fields = [
        MessageField(key="a", parsed_binary_field_type="uint16"),
        MessageField(key="b", parsed_binary_field_type="string"),
        MessageField(key="c", parsed_binary_field_type="byte", binary_offset=1),  # skip one byte
    ]
    view = MessageView(b"\x01\x00hi\x00\xff\x07")
    cursor = BinaryCursor()
    assert [compile_locator(f, message)(view, cursor) for f in fields] == [1, "hi", 7]


def test_absolute_is_the_default_and_big_endian_the_default_order() -> None:
    message = MessageDefinition(key="m", message_id="m", content_type="binary")
    field = MessageField(key="a", parsed_binary_field_type="uint16", binary_offset=1)
    cursor = BinaryCursor()
    cursor.position = 5  # ignored by absolute fields
    assert compile_locator(field, message)(MessageView(b"\x00\x01\x02"), cursor) == 0x0102


def test_field_settings_override_the_message() -> None:
    message = MessageDefinition(key="m", message_id="m", content_type="binary", endian="bigendian")
    field = MessageField(key="a", parsed_binary_field_type="uint16", endian="littleendian")
    assert compile_locator(field, message)(MessageView(b"\x01\x02"), None) == 0x0201
