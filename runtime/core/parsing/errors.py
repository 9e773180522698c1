"""What can go wrong while reading one value, as a stable code plus a detail (docs/parsing.md lists them).

``ParseError`` never leaves the parsing package's callers: the planner, the sentinel and the input
translator turn it into a ``StageError`` (or, for the planner, into "this parser found nothing").
"""

from __future__ import annotations

from runtime.core.errors import RuntimeBaseError

# NuvIoT's MessageValue codes (reference/nuviot-runtime.md §7), used where one fits.
UNIT_SET_MISSING = "MGV1003"  # value with unit, but no (known) unit set
NOT_NUMERIC_OR_BOOLEAN = "MGV1004"  # value with unit not numeric; NuvIoT also raises it for bad booleans
STATE_SET_MISSING = "MGV1006"
UNKNOWN_STATE = "MGV1007"
INVALID_INTEGER = "MGV1008"
INVALID_DECIMAL = "MGV1009"
INVALID_GEOLOCATION = "MGV1010"
OUT_OF_RANGE_OR_BAD_DATETIME = "MGV1011"  # latitude, longitude out of range; invalid date-time

# Our own (lower_snake).
MISSING_REQUIRED_FIELD = "missing_required_field"
VALUE_OUT_OF_RANGE = "value_out_of_range"  # min_value / max_value
REGEX_VALIDATION_FAILED = "regex_validation_failed"
READ_PAST_END = "read_past_end"
INVALID_TEXT = "invalid_text"  # body or binary string is not UTF-8
INVALID_JSON = "invalid_json"
INVALID_XML = "invalid_xml"
INVALID_DELIMITED = "invalid_delimited"  # unterminated quote
INVALID_VALUE = "invalid_value"  # a value of the wrong shape (an object where a scalar is needed)
INVALID_LOCATOR = "invalid_locator"  # the solution's parser settings cannot work (configuration)
INVALID_REGEX = "invalid_regex"  # a pattern in the solution does not compile
UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
UNSUPPORTED_STORAGE_TYPE = "unsupported_storage_type"
UNSUPPORTED_PARSING_STRATEGY = "unsupported_parsing_strategy"

_SHOWN = 40  # characters of a bad value shown in a detail


class ParseError(RuntimeBaseError):
    """One value could not be read or converted. ``detail`` never names the field (the caller does)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def shown(value: object) -> str:
    """A bad value as it may appear in a detail: repr, truncated."""
    if isinstance(value, bytes | bytearray):
        text = repr(bytes(value[: _SHOWN // 2]))
        return text + ("..." if len(value) > _SHOWN // 2 else "")
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
