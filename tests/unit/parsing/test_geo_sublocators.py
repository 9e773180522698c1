"""Geolocation fields read from two places: NuvIoT's ``Lat…``/``Lon…`` sub-locators.

LagoVista/DeviceMessagingAdmin ``src/LagoVista.IoT.DeviceMessaging.Models/DeviceMessageDefinitionField.cs``:
``LatJsonPath``/``LonJsonPath``, ``LatXPath``/``LonXPath``, ``LatDelimitedIndex``/``LonDelimitedIndex``,
``LatStartIndex``/``LonStartIndex``, ``LatRegExGroupName``/``LonRegExGroupName``, ``LatBinaryOffset``/
``LonBinaryOffset``, ``LatQueryStringField``/``LonQueryStringField``; the geolocation is stored as NuvIoT's
``MessageValue`` holds it, ``"dd.dddddd,ddd.dddddd"``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from runtime.core.errors import StageError
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.translator import translate
from runtime.core.solution.model import MessageDefinition, MessageField, Planner, Solution, SolutionDocument


def read(content: str, field: dict[str, Any], payload: bytes, **view: Any) -> Any:
    message = MessageDefinition(key="m", message_id="m", content_type=content, delimiter=",",
                                reg_ex=r"lat=(?P<la>[-\d.]+);lon=(?P<lo>[-\d.]+)", endian="littleendian",
                                fields=(MessageField(key="where", storage_type="geolocation", **field),))
    doc = SolutionDocument(solution=Solution(key="s", planner=Planner(key="p")), messages=(message,))
    return translate(doc, message, MessageView(payload=payload, **view)).get("where")


@pytest.mark.parametrize(
    ("content", "field", "payload", "view"),
    [
        ("json", {"latJsonPath": "gps.lat", "lonJsonPath": "gps.lon"}, b'{"gps": {"lat": 28.5, "lon": -81.25}}', {}),
        ("xml", {"latXPath": "/p/@lat", "lonXPath": "/p/@lon"}, b'<p lat="28.5" lon="-81.25"/>', {}),
        ("delimited", {"latDelimitedIndex": 2, "lonDelimitedIndex": 3}, b"dev1,28.5,-81.25", {}),
        ("stringposition", {"latStartIndex": 1, "lonStartIndex": 7, "length": 6}, b"28.50 -81.25", {}),
        ("stringregex", {"latRegExGroupName": "la", "lonRegExGroupName": "lo"}, b"lat=28.5;lon=-81.25", {}),
        ("binary", {"latBinaryOffset": 0, "lonBinaryOffset": 8, "parsedBinaryFieldType": "doubleprecisionfloatingpoint",
                    "binaryParsingStrategy": "absolute"}, struct.pack("<dd", 28.5, -81.25), {}),
        ("json", {"searchLocation": "querystring", "latQueryStringField": "la", "lonQueryStringField": "lo"},
         b"", {"query": {"la": "28.5", "lo": "-81.25"}}),
    ],
    ids=["json", "xml", "delimited", "stringposition", "stringregex", "binary", "querystring"],
)
def test_latitude_and_longitude_are_read_apart(content: str, field: dict[str, Any], payload: bytes,
                                               view: dict[str, Any]) -> None:
    parsed = MessageField.model_validate({"key": "where", "storageType": "geolocation", **field})
    assert read(content, parsed.model_dump(exclude={"key", "storage_type"}, exclude_none=True), payload, **view) == (
        "28.500000,-81.250000")


def test_half_a_location_is_malformed_and_none_is_absent() -> None:
    field = {"lat_delimited_index": 2, "lon_delimited_index": 3}
    assert read("delimited", field, b"dev1,,") is None
    with pytest.raises(StageError) as info:
        read("delimited", field, b"dev1,28.5,")
    assert info.value.code == "MGV1010"


@pytest.mark.parametrize(
    ("content", "field", "payload"),
    [
        ("json", {"latJsonPath": "gps.lat", "lonJsonPath": "gps.lon", "altitudeJsonPath": "gps.alt"},
         b'{"gps": {"lat": 28.5, "lon": -81.25, "alt": 120.5}}'),
        ("delimited", {"latDelimitedIndex": 2, "lonDelimitedIndex": 3, "altitudeDelimitedIndex": 4},
         b"dev1,28.5,-81.25,120.5"),
        ("xml", {"latXPath": "/p/@lat", "lonXPath": "/p/@lon", "altitudeXPath": "/p/@alt"},
         b'<p lat="28.5" lon="-81.25" alt="120.5"/>'),
    ],
    ids=["json", "delimited", "xml"],
)
def test_the_altitude_sub_locator_is_read_with_the_location(content: str, field: dict[str, Any],
                                                            payload: bytes) -> None:
    """``AltitudeJsonPath``, ``AltitudeDelimitedIndex``, ``AltitudeXPath`` (same C# model): stored as
    ``lat,lon,altitude``; a location without its altitude stays ``lat,lon``."""
    parsed = MessageField.model_validate({"key": "where", "storageType": "geolocation", **field})
    dumped = parsed.model_dump(exclude={"key", "storage_type"}, exclude_none=True)
    assert read(content, dumped, payload) == "28.500000,-81.250000,120.5"
    if content == "delimited":
        assert read(content, dumped, b"dev1,28.5,-81.25,") == "28.500000,-81.250000"
