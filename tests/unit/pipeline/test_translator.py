"""Input translator: fields of every kind, validation, defaults, error collection."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from runtime.core.errors import StageError
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.translator import STAGE, translate
from runtime.core.solution.model import (
    MessageDefinition,
    MessageField,
    Planner,
    Solution,
    SolutionDocument,
    StateDef,
    StateSet,
    Unit,
    UnitSet,
)

ONOFF = StateSet(
    key="onoff",
    require_enum=True,
    states=(StateDef(key="ison", enum_value=5), StateDef(key="isoff", enum_value=6)),
)
TEMPS = UnitSet(key="temps", units=(Unit(key="c", is_default=True, number_decimal_points=2),))


def make_doc(*messages: MessageDefinition) -> SolutionDocument:
    return SolutionDocument(
        solution=Solution(key="s", planner=Planner(key="p")),
        messages=messages,
        state_sets=(ONOFF,),
        unit_sets=(TEMPS,),
    )


# The 2018 fixture's motion message, as the NuvIoT export defines it.
MOTION = MessageDefinition(
    key="motionmessage",
    message_id="motion001",
    content_type="json",
    fields=(
        MessageField(
            key="motion", storage_type="true-false", parsed_string_field_type="boolean", json_path="motion"
        ),
        MessageField(
            key="level", storage_type="integer", parsed_string_field_type="wholenumber", json_path="level"
        ),
        MessageField(
            key="temperature",
            storage_type="decimal",
            parsed_string_field_type="realnumber",
            json_path="temperature",
        ),
        MessageField(
            key="itemstatus",
            storage_type="state",
            state_set="onoff",
            parsed_string_field_type="string",
            json_path="itemstatus",
        ),
    ),
)


def run(message: MessageDefinition, payload: bytes = b"", **kw: Any) -> dict[str, Any]:
    return translate(make_doc(message), message, MessageView(payload, **kw))


def fails(message: MessageDefinition, payload: bytes = b"", **kw: Any) -> StageError:
    with pytest.raises(StageError) as info:
        run(message, payload, **kw)
    assert info.value.stage == STAGE
    return info.value


def test_motion_message_sample_payload() -> None:
    # the fixture's own sample payload (single-quoted JSON, as Newtonsoft accepts it)
    assert run(MOTION, b"{'motion':'true','level':3}") == {"motion": True, "level": 3}


def test_motion_message_all_fields() -> None:
    payload = b'{"motion": false, "level": "7", "temperature": 21.5, "itemstatus": 6}'
    assert run(MOTION, payload) == {"motion": False, "level": 7, "temperature": 21.5, "itemstatus": "isoff"}


def test_bool_into_decimal_fails_and_all_problems_are_listed() -> None:
    # motion's wire type is boolean, "zero, false, False is false, anything else true" (the 2018 export's
    # label): "maybe" is true; level, temperature and itemstatus break NuvIoT's MessageValue rules
    error = fails(MOTION, b'{"motion": "maybe", "level": "x", "temperature": false, "itemstatus": "on"}')
    assert error.code == "MGV1008"  # the first problem's code
    assert "motion:" not in error.detail
    for part in (
        "level: MGV1008",
        "temperature: MGV1009",
        "itemstatus: MGV1007",
        "'x'",
        "False",
    ):
        assert part in error.detail


def test_invalid_json_fails_every_body_field_reported_once() -> None:
    error = fails(MOTION, b"{oops")
    assert error.code == "invalid_json"
    assert error.detail.count("invalid_json") == 1  # one problem, not one line per field
    assert "motion, level, temperature, itemstatus: invalid_json" in error.detail


def test_nocontent_reads_only_non_body_fields() -> None:
    message = MessageDefinition(
        key="m",
        message_id="m",
        content_type="nocontent",
        fields=(
            MessageField(key="state", search_location="querystring", query_string_field="s"),
            MessageField(key="dev", search_location="path", path_locator="/x/{dev}"),
            MessageField(key="hdr", search_location="headers", header_name="x-h", storage_type="integer"),
            MessageField(key="top", search_location="topic", topic_locator="t/{top}"),
            MessageField(key="body", json_path="a", default_value="d"),
        ),
    )
    got = run(
        message, b"\xff not even text", query={"s": "on"}, path="/x/d1", headers={"x-h": "5"}, topic="t/z"
    )
    assert got == {"state": "on", "dev": "d1", "hdr": 5, "top": "z", "body": "d"}


def test_field_without_search_location_reads_the_body() -> None:
    message = MessageDefinition(
        key="m", message_id="m", content_type="json", fields=(MessageField(key="a", json_path="a"),)
    )
    assert run(message, b'{"a": "x"}') == {"a": "x"}


# --------------------------------------------------------------------------- validation


def field_message(**kw: Any) -> MessageDefinition:
    return MessageDefinition(
        key="m", message_id="m", content_type="json", fields=(MessageField(key="f", json_path="v", **kw),)
    )


@pytest.mark.parametrize(
    ("settings", "payload", "expected"),
    [
        ({}, b"{}", {}),  # absent, optional, no default: left out
        ({}, b'{"v": null}', {}),
        ({}, b'{"v": ""}', {}),  # empty text is absent
        ({"default_value": "abc"}, b"{}", {"f": "abc"}),
        ({"storage_type": "integer", "default_value": "0"}, b"{}", {"f": 0}),
        ({"storage_type": "integer", "default_value": ""}, b"{}", {}),
        ({"storage_type": "integer", "min_value": 1, "max_value": 10}, b'{"v": 1}', {"f": 1}),
        ({"storage_type": "integer", "min_value": 1, "max_value": 10}, b'{"v": 10}', {"f": 10}),
        ({"storage_type": "decimal", "min_value": -1.5}, b'{"v": -1.5}', {"f": -1.5}),
        ({"storage_type": "decimal", "max_value": 2.0, "decimal_scaler": 0.1}, b'{"v": 20}', {"f": 2.0}),
        ({"reg_ex_validation": "^[A-Z]{3}$"}, b'{"v": "ABC"}', {"f": "ABC"}),
        ({"reg_ex_validation": "^(?'p'[A-Z])"}, b'{"v": "Abc"}', {"f": "Abc"}),
        ({"storage_type": "integer", "reg_ex_validation": "^x$"}, b'{"v": 5}', {"f": 5}),  # strings only
        ({"is_required": True}, b'{"v": "x"}', {"f": "x"}),
        (
            {"storage_type": "valuewithunit", "unit_set": "temps", "decimal_scaler": 0.01},
            b'{"v": 2155}',
            {"f": 21.55},
        ),
        (
            {"storage_type": "datetime", "date_time_zone": "epochseconds"},
            b'{"v": 0}',
            {"f": "1970-01-01T00:00:00.000Z"},
        ),
        ({"storage_type": "geolocation"}, b'{"v": "1,2"}', {"f": "1.000000,2.000000"}),
    ],
)
def test_field_settings(settings: dict[str, Any], payload: bytes, expected: dict[str, Any]) -> None:
    assert run(field_message(**settings), payload) == expected


@pytest.mark.parametrize(
    ("settings", "payload", "code", "shown"),
    [
        ({"is_required": True}, b"{}", "missing_required_field", "json_path 'v'"),
        ({"is_required": True, "default_value": "x"}, b"{}", "missing_required_field", "f:"),
        ({"storage_type": "integer", "min_value": 1}, b'{"v": 0}', "value_out_of_range", "minimum 1"),
        ({"storage_type": "integer", "max_value": 10}, b'{"v": 11}', "value_out_of_range", "maximum 10"),
        ({"storage_type": "decimal", "max_value": 1.5}, b'{"v": "1.51"}', "value_out_of_range", "1.51"),
        ({"reg_ex_validation": "^[A-Z]{3}$"}, b'{"v": "AB1"}', "regex_validation_failed", "'AB1'"),
        ({"reg_ex_validation": "(bad"}, b'{"v": "x"}', "invalid_regex", "reg_ex_validation"),
        ({"storage_type": "integer", "default_value": "zero"}, b"{}", "MGV1008", "default_value"),
        (
            {"storage_type": "integer", "min_value": 5, "default_value": "1"},
            b"{}",
            "value_out_of_range",
            "default_value",
        ),
        ({"storage_type": "valuewithunit"}, b'{"v": 1}', "MGV1003", "no unit set"),
        ({"storage_type": "state", "state_set": "gone"}, b'{"v": 1}', "MGV1006", "'gone'"),
        ({"storage_type": "geolocation"}, b'{"v": "91,0"}', "MGV1011", "latitude"),
        ({"storage_type": "datetime"}, b'{"v": "soon"}', "MGV1011", "'soon'"),
    ],
)
def test_field_settings_reject(settings: dict[str, Any], payload: bytes, code: str, shown: str) -> None:
    error = fails(field_message(**settings), payload)
    assert error.code == code
    assert error.detail.startswith("message 'm': f: ")
    assert shown in error.detail


def test_long_bad_values_are_truncated() -> None:
    error = fails(field_message(storage_type="integer"), b'{"v": "' + b"9" * 200 + b'x"}')
    assert len(error.detail) < 200


# --------------------------------------------------------------------------- other content types end to end


@pytest.mark.parametrize(
    ("message", "payload", "expected"),
    [
        (
            MessageDefinition(
                key="m",
                message_id="m",
                content_type="xml",
                fields=(
                    MessageField(key="color", x_path="//root/x"),
                    MessageField(key="temp", x_path="/root/y", storage_type="decimal"),
                ),
            ),
            b"<root><x>green</x><y>21.5</y></root>",
            {"color": "green", "temp": 21.5},
        ),
        (
            MessageDefinition(
                key="m",
                message_id="m",
                content_type="delimited",
                quoted_text=True,
                fields=(
                    MessageField(key="name", delimited_index=1),
                    MessageField(key="count", delimited_index=2, storage_type="integer"),
                    MessageField(key="on", delimited_index=3, storage_type="true-false", parsed_string_field_type="boolean"),
                ),
            ),
            b'"pump, main",12,1\n',
            {"name": "pump, main", "count": 12, "on": True},
        ),
        (
            MessageDefinition(
                key="m",
                message_id="m",
                content_type="stringposition",
                fields=(
                    MessageField(key="id", start_index=1, length=4),
                    MessageField(key="temp", start_index=5, length=5, storage_type="decimal"),
                ),
            ),
            b"D001021.5",
            {"id": "D001", "temp": 21.5},
        ),
        (
            MessageDefinition(
                key="m",
                message_id="m",
                content_type="stringregex",
                reg_ex="<val1:(?'V1'[0-9]*)><val2:(?<V2>[a-z]*)>",
                fields=(
                    MessageField(key="v1", reg_ex_group_name="V1", storage_type="integer"),
                    MessageField(key="v2", reg_ex_group_name="V2"),
                ),
            ),
            b"<val1:32><val2:abc>",
            {"v1": 32, "v2": "abc"},
        ),
        (
            MessageDefinition(
                key="m",
                message_id="m",
                content_type="binary",
                endian="littleendian",
                binary_parsing_strategy="relative",
                string_parsing_strategy="stringlength",
                fields=(
                    MessageField(key="seq", parsed_binary_field_type="uint16", storage_type="integer"),
                    MessageField(
                        key="temp",
                        parsed_binary_field_type="singleprecisionfloatingpoint",
                        storage_type="decimal",
                    ),
                    MessageField(key="on", parsed_binary_field_type="boolean", storage_type="true-false"),
                    MessageField(key="name", parsed_binary_field_type="string", string_length_byte_count=1),
                    MessageField(
                        key="raw",
                        parsed_binary_field_type="int16",
                        storage_type="decimal",
                        decimal_scaler=0.5,
                    ),
                ),
            ),
            struct.pack("<Hf?B3sh", 7, 21.5, True, 3, b"abc", -10),
            {"seq": 7, "temp": 21.5, "on": True, "name": "abc", "raw": -5.0},
        ),
    ],
)
def test_content_types(message: MessageDefinition, payload: bytes, expected: dict[str, Any]) -> None:
    assert run(message, payload) == expected


def test_binary_overrun_fails_the_message() -> None:
    message = MessageDefinition(
        key="m",
        message_id="m",
        content_type="binary",
        fields=(
            MessageField(key="a", parsed_binary_field_type="uint32", storage_type="integer", binary_offset=2),
        ),
    )
    error = fails(message, b"\x00\x01\x02")
    assert error.code == "read_past_end"
    assert "a: read_past_end" in error.detail


def test_compiled_readers_follow_the_document() -> None:
    message = field_message(storage_type="state", state_set="onoff")
    other = SolutionDocument(
        solution=Solution(key="s", planner=Planner(key="p")),
        messages=(message,),
        state_sets=(StateSet(key="onoff", states=(StateDef(key="x"),)),),
    )
    assert run(message, b'{"v": "ison"}') == {"f": "ison"}
    assert translate(other, message, MessageView(b'{"v": "x"}')) == {"f": "x"}
