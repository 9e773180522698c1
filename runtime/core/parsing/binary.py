"""Binary bodies: fixed-size values at a 0-based offset, big or little endian (docs/parsing.md §Binary).

``read_binary`` returns the Python value and the offset just past it (the next field's start under the
"relative" strategy). Reading past the end of the payload is ``read_past_end``.
"""

from __future__ import annotations

import struct

from runtime.core.parsing.errors import INVALID_LOCATOR, INVALID_TEXT, READ_PAST_END, ParseError, shown
from runtime.core.solution.enums import Endian, ParseBinaryValueType, StringParsingStrategy

_T = ParseBinaryValueType
# type -> struct code (without byte order)
_CODES: dict[ParseBinaryValueType, str] = {
    _T.BYTE: "B",
    _T.UINT16: "H",
    _T.INT16: "h",
    _T.UINT32: "I",
    _T.INT32: "i",
    _T.UINT64: "Q",
    _T.INT64: "q",
    _T.SINGLE: "f",
    _T.DOUBLE: "d",
}
_STRUCTS: dict[tuple[ParseBinaryValueType, Endian], struct.Struct] = {
    (kind, endian): struct.Struct((">" if endian is Endian.BIG else "<") + code)
    for kind, code in _CODES.items()
    for endian in Endian
}
_PREFIX_CODES = {1: "B", 2: "H", 4: "I"}


def read_binary(
    data: bytes,
    offset: int,
    kind: ParseBinaryValueType,
    endian: Endian,
    strategy: StringParsingStrategy | None = None,
    length_bytes: int | None = None,
) -> tuple[object, int]:
    if offset < 0:
        raise ParseError(INVALID_LOCATOR, f"binary offset {offset} is negative")
    if kind is _T.BOOLEAN:
        _need(data, offset, 1)
        return data[offset] != 0, offset + 1
    if kind is _T.CHAR:
        _need(data, offset, 1)
        return _utf8(data[offset : offset + 1]), offset + 1
    if kind is _T.STRING:
        return _read_string(data, offset, endian, strategy, length_bytes)
    unpacker = _STRUCTS[(kind, endian)]
    _need(data, offset, unpacker.size)
    return unpacker.unpack_from(data, offset)[0], offset + unpacker.size


def _read_string(
    data: bytes, offset: int, endian: Endian, strategy: StringParsingStrategy | None, length_bytes: int | None
) -> tuple[str, int]:
    if strategy is StringParsingStrategy.STRING_LENGTH:
        size = 1 if length_bytes is None else length_bytes
        code = _PREFIX_CODES.get(size)
        if code is None:
            raise ParseError(
                INVALID_LOCATOR, f"string length prefix must be 1, 2 or 4 bytes, not {shown(size)}"
            )
        _need(data, offset, size)
        (length,) = struct.unpack_from((">" if endian is Endian.BIG else "<") + code, data, offset)
        start = offset + size
        _need(data, start, length)
        return _utf8(data[start : start + length]), start + length
    # null-terminated (the default): up to 0x00 or the end of the payload
    if offset > len(data):
        raise ParseError(READ_PAST_END, f"offset {offset} is past the end of a {len(data)}-byte body")
    end = data.find(b"\x00", offset)
    if end < 0:
        return _utf8(data[offset:]), len(data)
    return _utf8(data[offset:end]), end + 1


def _need(data: bytes, offset: int, size: int) -> None:
    if offset + size > len(data):
        raise ParseError(
            READ_PAST_END, f"{size} byte(s) at offset {offset} run past the end of a {len(data)}-byte body"
        )


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            INVALID_TEXT, f"binary string {shown(raw)} is not UTF-8 (byte {exc.start})"
        ) from None
