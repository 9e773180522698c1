"""Geolocation values (spec §1.10): stored as ``"lat,lon"`` with six decimals each.

Accepted: text ``lat,lon`` where each coordinate is, tried in NuvIoT's order, degrees-minutes
``32° 18.851' N``, degrees-minutes-seconds ``32° 18' 42.1" N``, decimal with hemisphere ``32.30442° N``
or ``32.30442 N``, or signed decimal ``-118.424511`` (no sign = N/E); or an object ``{"lat": .., "lon": ..}``
(also ``latitude``/``longitude``; what ``lat_json_path``/``lon_json_path`` produce). Latitude has at most two
integer digits, longitude three. A malformed value is MGV1010; a latitude outside ±90 or a longitude
outside ±180 is MGV1011 (NuvIoT's code for both).
"""

from __future__ import annotations

import math
import re

from runtime.core.parsing.errors import INVALID_GEOLOCATION, OUT_OF_RANGE_OR_BAD_DATETIME, ParseError, shown

_DEG = r"\s*(?:\u00b0|\u00ba|deg)?\s*"
_MIN = r"\s*(?:'|\u2032)\s*"
_SEC = r"\s*(?:\"|\u2033|'')\s*"
_HEM = r"(?P<h>[NSEWnsew])"
_FORMS = (
    re.compile(rf"\s*(?P<d>\d{{1,3}}){_DEG}(?P<m>\d{{1,2}}(?:\.\d+)?){_MIN}{_HEM}\s*", re.ASCII),
    re.compile(
        rf"\s*(?P<d>\d{{1,3}}){_DEG}(?P<m>\d{{1,2}}){_MIN}(?P<s>\d{{1,2}}(?:\.\d+)?){_SEC}{_HEM}\s*", re.ASCII
    ),
    re.compile(rf"\s*(?P<d>\d{{1,3}}(?:\.\d+)?){_DEG}{_HEM}\s*", re.ASCII),
    re.compile(r"\s*(?P<sign>[+-]?)(?P<d>\d{1,3}(?:\.\d+)?)\s*", re.ASCII),
)


def parse_geolocation(raw: object) -> str:
    """``"lat,lon"``, or ``"lat,lon,altitude"`` when the value carries an altitude (NuvIoT's Altitude sub-locators)."""
    alt: object = None
    if isinstance(raw, dict):
        lat = raw.get("lat", raw.get("latitude"))
        lon = raw.get("lon", raw.get("lng", raw.get("longitude")))
        alt = raw.get("alt", raw.get("altitude"))
    elif isinstance(raw, str):
        parts = raw.split(",")
        if len(parts) not in (2, 3):
            raise _malformed(raw)
        lat, lon = parts[0], parts[1]
        alt = parts[2] if len(parts) == 3 else None
    else:
        raise _malformed(raw)
    altitude = _altitude(alt, raw) if alt is not None else None
    latitude = _coordinate(lat, raw, is_latitude=True)
    longitude = _coordinate(lon, raw, is_latitude=False)
    if not -90.0 <= latitude <= 90.0:
        raise ParseError(
            OUT_OF_RANGE_OR_BAD_DATETIME, f"latitude {latitude} in {shown(raw)} is outside -90..90"
        )
    if not -180.0 <= longitude <= 180.0:
        raise ParseError(
            OUT_OF_RANGE_OR_BAD_DATETIME, f"longitude {longitude} in {shown(raw)} is outside -180..180"
        )
    text = f"{_six(latitude)},{_six(longitude)}"
    return text if altitude is None else f"{text},{altitude}"


def _altitude(value: object, raw: object) -> str:
    """The altitude as plain decimal text (``120``, ``35.5``)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _malformed(raw)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        raise _malformed(raw) from None
    if not math.isfinite(number):
        raise _malformed(raw)
    text = f"{number:f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _six(value: float) -> str:
    text = f"{value:.6f}"
    return text[1:] if text == "-0.000000" else text


def _coordinate(value: object, raw: object, *, is_latitude: bool) -> float:
    if isinstance(value, bool) or value is None:
        raise _malformed(raw)
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise _malformed(raw)
        return number
    if not isinstance(value, str):
        raise _malformed(raw)
    for form in _FORMS:
        match = form.fullmatch(value)
        if match is not None:
            break
    else:
        raise _malformed(raw)
    groups = match.groupdict()
    degrees_text = groups["d"]
    if len(degrees_text.split(".")[0]) > (2 if is_latitude else 3):
        raise _malformed(raw)
    minutes = float(groups.get("m") or 0)
    seconds = float(groups.get("s") or 0)
    if minutes >= 60 or seconds >= 60:
        raise _malformed(raw)
    number = float(degrees_text) + minutes / 60 + seconds / 3600
    hemisphere = (groups.get("h") or "").upper()
    if hemisphere and hemisphere not in ("NS" if is_latitude else "EW"):
        raise _malformed(raw)
    if hemisphere in ("S", "W") or groups.get("sign") == "-":
        number = -number
    return number


def _malformed(raw: object) -> ParseError:
    return ParseError(
        INVALID_GEOLOCATION, f"{shown(raw)} is not a geolocation (expected (-)dd.dddddd,(-)ddd.dddddd)"
    )
