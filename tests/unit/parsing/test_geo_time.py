"""Geolocation and date-time values."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.parsing.errors import INVALID_GEOLOCATION, OUT_OF_RANGE_OR_BAD_DATETIME, ParseError
from runtime.core.parsing.geo import parse_geolocation
from runtime.core.parsing.timestamps import parse_datetime
from runtime.core.solution.enums import DateTimeZone as Z


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("28.425123,-118.424511", "28.425123,-118.424511"),
        ("28.4,118.4", "28.400000,118.400000"),
        (" +28.4 , -118.4 ", "28.400000,-118.400000"),
        ("32° 18.851' N, 117° 10.2' W", "32.314183,-117.170000"),
        ("32° 18' 42.1\" N,117° 10' 12\" W", "32.311694,-117.170000"),
        ("32.30442° N,117.5 W", "32.304420,-117.500000"),
        ("32.30442° S,117.5 E", "-32.304420,117.500000"),
        ("90,180", "90.000000,180.000000"),
        ("-0.0000001,0", "0.000000,0.000000"),
        ({"lat": 1.5, "lon": -2}, "1.500000,-2.000000"),
        ({"latitude": "1.5", "longitude": "2° 30' E"}, "1.500000,2.500000"),
        # with an altitude (NuvIoT's Altitude sub-locators; the firmware's geo message sends lat,lon,altitude)
        ("28.4,1,120.5", "28.400000,1.000000,120.5"),
        ({"lat": 1.5, "lon": -2, "alt": "35"}, "1.500000,-2.000000,35"),
    ],
)
def test_geolocation(raw: Any, expected: str) -> None:
    assert parse_geolocation(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("28.4", INVALID_GEOLOCATION),
        ("28.4,1,2,3", INVALID_GEOLOCATION),
        ("28.4,1,high", INVALID_GEOLOCATION),  # a third part is an altitude: a number
        ("abc,def", INVALID_GEOLOCATION),
        ("123.0,1", INVALID_GEOLOCATION),  # latitude has at most two integer digits
        ("1,1234.0", INVALID_GEOLOCATION),
        ("32° 18.851' E,1", INVALID_GEOLOCATION),  # latitude hemisphere must be N or S
        ("32° 61' N,1", INVALID_GEOLOCATION),
        ("-32.5 N,1", INVALID_GEOLOCATION),
        (28.4, INVALID_GEOLOCATION),
        (True, INVALID_GEOLOCATION),
        ({"lat": True, "lon": 1}, INVALID_GEOLOCATION),
        ({"lat": 1}, INVALID_GEOLOCATION),
        ({"lat": float("nan"), "lon": 1}, INVALID_GEOLOCATION),
        ("91,0", OUT_OF_RANGE_OR_BAD_DATETIME),
        ("-90.5,0", OUT_OF_RANGE_OR_BAD_DATETIME),
        ("0,180.1", OUT_OF_RANGE_OR_BAD_DATETIME),
        ("99° 0' S,0", OUT_OF_RANGE_OR_BAD_DATETIME),
    ],
)
def test_geolocation_rejects(raw: Any, code: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_geolocation(raw)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("raw", "zone", "expected"),
    [
        ("2024-03-04T10:20:30.123Z", None, "2024-03-04T10:20:30.123Z"),
        ("2024-03-04T10:20:30.123456789Z", Z.ISO8601, "2024-03-04T10:20:30.123Z"),
        ("2024-03-04T10:20:30Z", Z.UNIVERSAL_TIME_ZONE, "2024-03-04T10:20:30.000Z"),
        ("2024-03-04T10:20:30+02:00", Z.ISO8601, "2024-03-04T08:20:30.000Z"),
        ("2024-03-04T10:20:30-0130", Z.ISO8601, "2024-03-04T11:50:30.000Z"),
        ("2024-03-04T10:20:30+05", Z.ISO8601, "2024-03-04T05:20:30.000Z"),
        ("2024-03-04 10:20", Z.NO_TIME_ZONE, "2024-03-04T10:20:00.000Z"),
        ("2024-03-04", Z.SERVER_TIME_ZONE, "2024-03-04T00:00:00.000Z"),
        ("0001-01-01T00:00:00Z", None, "0001-01-01T00:00:00.000Z"),
        (1709547630, Z.EPOCH_SECONDS, "2024-03-04T10:20:30.000Z"),
        ("1709547630.5", Z.EPOCH_SECONDS, "2024-03-04T10:20:30.500Z"),
        (1709547630123, Z.EPOCH_MS, "2024-03-04T10:20:30.123Z"),
        ("1709547630123", Z.EPOCH_MS, "2024-03-04T10:20:30.123Z"),
        (0, Z.EPOCH_MS, "1970-01-01T00:00:00.000Z"),
        (-1000, Z.EPOCH_MS, "1969-12-31T23:59:59.000Z"),
    ],
)
def test_datetime(raw: Any, zone: Z | None, expected: str) -> None:
    assert parse_datetime(raw, zone) == expected


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("yesterday", None),
        ("2024-13-01T00:00:00Z", None),
        ("2024-02-30", None),
        ("2024-03-04T25:00:00Z", None),
        ("2024-03-04T10:20:30+24:00", None),
        ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
        (1709547630, None),  # a number needs an epoch option
        (True, Z.EPOCH_SECONDS),
        ("12abc", Z.EPOCH_SECONDS),
        (10**20, Z.EPOCH_SECONDS),
        (float("nan"), Z.EPOCH_MS),
        (float("inf"), Z.EPOCH_SECONDS),
        ({"t": 1}, Z.EPOCH_SECONDS),
    ],
)
def test_datetime_rejects(raw: Any, zone: Z | None) -> None:
    with pytest.raises(ParseError) as info:
        parse_datetime(raw, zone)
    assert info.value.code == OUT_OF_RANGE_OR_BAD_DATETIME
