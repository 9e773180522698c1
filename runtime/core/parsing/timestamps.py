"""Date-time values: read by ``date_time_zone``, stored as ``YYYY-MM-DDTHH:MM:SS.sssZ`` (UTC, milliseconds).

- ``epochseconds`` / ``epochms``: a number (JSON number, binary integer or float, or numeric text).
- every other option (unset, ``iso8601``, ``universaltimezone``, ``notimezone``, ``servertimezone``):
  ISO 8601 text, ``YYYY-MM-DD`` optionally followed by ``T`` (or a space) ``HH:MM[:SS[.fraction]]`` and an
  optional zone (``Z`` or ``±HH:MM``/``±HHMM``/``±HH``). A zone in the text is honoured and converted to
  UTC; text without a zone is UTC (this runtime runs on UTC: ``servertimezone`` is treated the same).
Anything else is MGV1011 ("format should be YYYY-MM-DDTHH:MM:SS.sssZ").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from runtime.core.parsing.errors import OUT_OF_RANGE_OR_BAD_DATETIME, ParseError, shown
from runtime.core.solution.enums import DateTimeZone

_ISO = re.compile(
    r"\s*(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?"
    r"\s*(?P<z>[Zz]|[+-]\d{2}(?::?\d{2})?)?\s*",
    re.ASCII,
)
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_utc(moment: datetime) -> str:
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond // 1000:03d}Z"


def parse_datetime(raw: object, zone: DateTimeZone | None) -> str:
    if zone is DateTimeZone.EPOCH_SECONDS or zone is DateTimeZone.EPOCH_MS:
        return _from_epoch(raw, 1000.0 if zone is DateTimeZone.EPOCH_MS else 1.0)
    if not isinstance(raw, str):
        raise _bad(raw)
    match = _ISO.fullmatch(raw)
    if match is None:
        raise _bad(raw)
    try:
        year, month, day = (int(p) for p in match.group("date").split("-"))
        fraction = (match.group("f") or "0")[:6].ljust(6, "0")
        moment = datetime(
            year,
            month,
            day,
            int(match.group("h") or 0),
            int(match.group("m") or 0),
            int(match.group("s") or 0),
            int(fraction),
            tzinfo=_zone(match.group("z")),
        )
        return format_utc(moment)
    except (ValueError, OverflowError):
        raise _bad(raw) from None


def _zone(text: str | None) -> timezone:
    if text is None or text in "Zz":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError("bad offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _from_epoch(raw: object, divisor: float) -> str:
    if isinstance(raw, bool):
        raise _bad(raw)
    if isinstance(raw, str):
        if _NUMBER.fullmatch(raw) is None:
            raise _bad(raw)
        number: float | int = float(raw) if any(c in raw for c in ".eE") else int(raw)
    elif isinstance(raw, int | float):
        number = raw
    else:
        raise _bad(raw)
    try:
        if isinstance(number, int) and divisor == 1000.0:
            delta = timedelta(milliseconds=number)
        else:
            delta = timedelta(seconds=number / divisor)
        return format_utc(_EPOCH + delta)
    except (OverflowError, ValueError):
        raise _bad(raw) from None


def _bad(raw: object) -> ParseError:
    return ParseError(
        OUT_OF_RANGE_OR_BAD_DATETIME,
        f"{shown(raw)} is not a date-time (format should be YYYY-MM-DDTHH:MM:SS.sssZ)",
    )
