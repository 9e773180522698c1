"""Planner: id parsers (on the 2018 fixture's own planner) and route selection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.planner import (
    COULD_NOT_DETERMINE_DEVICE_ID,
    COULD_NOT_DETERMINE_MESSAGE_ID,
    COULD_NOT_FIND_DEVICE,
    COULD_NOT_FIND_DEVICE_CONFIGURATION,
    COULD_NOT_FIND_MESSAGE,
    plan,
    planned_device,
    select_route,
)
from runtime.core.solution.model import (
    DeviceConfiguration,
    FieldParser,
    MessageDefinition,
    Planner,
    Route,
    Solution,
    SolutionDocument,
)


def _parser(raw: dict[str, Any]) -> FieldParser:
    """A NuvIoT export MessageAttributeParser as a FieldParser (only what the planner uses)."""

    def enum_id(name: str) -> str | None:
        value = raw.get(name)
        return value["Id"] if isinstance(value, dict) and value.get("HasValue") else None

    return FieldParser(
        key=raw["Key"],
        search_location=enum_id("SearchLocation"),
        content_type=enum_id("ContentType"),
        path_locator=raw.get("PathLocator"),
        json_path=raw.get("JsonPath"),
    )


@pytest.fixture
def planner_2018(motion_fixture_path: Path) -> Planner:
    export = json.loads(motion_fixture_path.read_text(encoding="utf-8"))["Planner"]["Value"]
    return Planner(
        key=export["Key"],
        device_id_parsers=tuple(_parser(p) for p in export["DeviceIdParsers"]),
        message_type_id_parsers=tuple(_parser(p) for p in export["MessageTypeIdParsers"]),
    )


def test_2018_planner_path(planner_2018: Planner) -> None:
    view = MessageView(b'{"motion": true}', path="/sensor/dev001/motion001", method="POST")
    assert plan(planner_2018, view) == ("dev001", "motion001")


def test_2018_planner_falls_back_to_the_body_parser(planner_2018: Planner) -> None:
    # the fixture's second "device id" parser reads JsonPath "msgid" from a JSON body
    assert plan(planner_2018, MessageView(b'{"msgid": "dev009"}', path="/other")) == ("dev009", None)
    assert plan(planner_2018, MessageView(b'{"msgid": 42}', path="/other")) == ("42", None)  # ids are strings


@pytest.mark.parametrize(
    ("payload", "path"),
    [(b"{}", "/other"), (b"not json", "/other"), (b'{"msgid": ""}', None), (b'{"msgid": null}', "/sensor")],
)
def test_2018_planner_no_device_id(planner_2018: Planner, payload: bytes, path: str | None) -> None:
    with pytest.raises(StageError) as info:
        plan(planner_2018, MessageView(payload, path=path))
    assert (info.value.stage, info.value.code) == ("planner", COULD_NOT_DETERMINE_DEVICE_ID)
    assert "deviceid" in info.value.detail and "msgidfrombod" in info.value.detail


def test_first_parser_with_a_value_wins() -> None:
    planner = Planner(
        key="p",
        device_id_parsers=(
            FieldParser(key="h", search_location="headers", header_name="x-deviceid"),
            FieldParser(key="q", search_location="querystring", query_string_field="id"),
            FieldParser(key="t", search_location="topic", topic_locator="d/{id}"),
        ),
        message_type_id_parsers=(
            FieldParser(
                key="m1", search_location="headers", header_name="x-msg", reg_ex_validation="^[a-z]+$"
            ),
            FieldParser(key="m2", search_location="topic", topic_locator="d/*/{m}"),
        ),
    )
    assert plan(planner, MessageView(topic="d/t1/temp", query={"id": "q1"})) == ("q1", "temp")
    assert plan(planner, MessageView(topic="d/t1/temp", headers={"x-deviceid": " h1 "})) == ("h1", "temp")
    assert plan(planner, MessageView(topic="d/t1", headers={"x-msg": "ok"})) == ("t1", "ok")
    # the header value fails reg_ex_validation, so the next parser is used
    assert plan(planner, MessageView(topic="d/t1/temp", headers={"x-msg": "NO!"})) == ("t1", "temp")


def test_selector_and_body_formats_for_ids() -> None:
    planner = Planner(
        key="p",
        device_id_parsers=(
            FieldParser(
                key="auth", search_location="headers", header_name="x-id", reg_ex_value_selector="^dev:(.+)$"
            ),
            FieldParser(key="b", content_type="binary", parsed_binary_field_type="uint16"),
        ),
        message_type_id_parsers=(FieldParser(key="m", content_type="delimited", delimited_index=2),),
    )
    assert plan(planner, MessageView(b"\x00\x07,x", headers={"x-id": "dev:abc"})) == ("abc", "x")
    assert plan(planner, MessageView(b"\x00\x07,x")) == ("7", "x")


def test_no_parsers() -> None:
    with pytest.raises(StageError) as info:
        plan(Planner(key="p"), MessageView())
    assert info.value.code == COULD_NOT_DETERMINE_DEVICE_ID


# --------------------------------------------------------------------------- routes


def msg(key: str, message_id: str) -> MessageDefinition:
    return MessageDefinition(key=key, message_id=message_id)


def setup(*routes: Route) -> tuple[SolutionDocument, DeviceConfiguration]:
    config = DeviceConfiguration(key="cfg", routes=routes)
    doc = SolutionDocument(
        solution=Solution(key="s", planner=Planner(key="p"), device_configurations=(config,)),
        messages=(msg("motion", "motion001"), msg("temp", "temp001"), msg("other", "other001")),
    )
    return doc, config


MOTION = Route(key="r-motion", message_definition="motion")
TEMP = Route(key="r-temp", message_definition="temp")
DEFAULT = Route(key="r-default", message_definition="other", is_default=True)


@pytest.mark.parametrize(
    ("routes", "message_id", "expected"),
    [
        ((MOTION, TEMP), "motion001", "r-motion"),
        ((MOTION, TEMP), "temp001", "r-temp"),
        ((MOTION, TEMP, DEFAULT), "temp001", "r-temp"),  # a match beats the default
        ((MOTION, TEMP, DEFAULT), "nope", "r-default"),
        ((MOTION, TEMP, DEFAULT), None, "r-default"),
        ((MOTION,), None, "r-motion"),  # one message: the inferred fallback
        ((MOTION, Route(key="r-motion2", message_definition="motion")), None, "r-motion"),
    ],
)
def test_select_route(routes: tuple[Route, ...], message_id: str | None, expected: str) -> None:
    doc, config = setup(*routes)
    assert select_route(doc, config, message_id).key == expected


@pytest.mark.parametrize(
    ("routes", "message_id", "code"),
    [
        ((MOTION, TEMP), "nope", COULD_NOT_FIND_MESSAGE),
        ((MOTION,), "nope", COULD_NOT_FIND_MESSAGE),  # a parsed id that does not match is never guessed
        ((MOTION, TEMP), None, COULD_NOT_DETERMINE_MESSAGE_ID),
        ((), None, COULD_NOT_DETERMINE_MESSAGE_ID),
        ((), "motion001", COULD_NOT_FIND_MESSAGE),
        ((Route(key="r", message_definition="gone"),), "gone", COULD_NOT_FIND_MESSAGE),
        ((Route(key="r", message_definition="gone"),), None, COULD_NOT_DETERMINE_MESSAGE_ID),
        (
            (MOTION, TEMP, Route(key="d", message_definition="gone", is_default=True)),
            "x",
            COULD_NOT_FIND_MESSAGE,
        ),
    ],
)
def test_select_route_fails(routes: tuple[Route, ...], message_id: str | None, code: str) -> None:
    doc, config = setup(*routes)
    with pytest.raises(StageError) as info:
        select_route(doc, config, message_id)
    assert (info.value.stage, info.value.code) == ("planner", code)


def test_planned_device_finds_the_configuration_or_names_what_is_missing() -> None:
    doc, config = setup(MOTION)
    known = Device(device_id="dev1", device_configuration="cfg")
    assert planned_device(doc, "dev1", known) == (known, config)
    with pytest.raises(StageError) as info:
        planned_device(doc, "dev404", None)
    assert (info.value.stage, info.value.code) == ("planner", COULD_NOT_FIND_DEVICE)
    assert "dev404" in info.value.detail
    with pytest.raises(StageError) as info:
        planned_device(doc, "dev2", Device(device_id="dev2", device_configuration="gone"))
    assert (info.value.stage, info.value.code) == ("planner", COULD_NOT_FIND_DEVICE_CONFIGURATION)
    assert "'gone'" in info.value.detail and "dev2" in info.value.detail
