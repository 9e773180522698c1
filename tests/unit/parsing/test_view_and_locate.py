"""MessageView caching and every location strategy / content type of the locators."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.messages import InboundMessage
from runtime.core.parsing.errors import (
    INVALID_DELIMITED,
    INVALID_JSON,
    INVALID_LOCATOR,
    INVALID_REGEX,
    INVALID_TEXT,
    INVALID_XML,
    READ_PAST_END,
    UNSUPPORTED_CONTENT_TYPE,
    UNSUPPORTED_PARSING_STRATEGY,
    ParseError,
)
from runtime.core.parsing.locate import MISSING, BinaryCursor, compile_locator, locator_for
from runtime.core.parsing.view import MessageView
from runtime.core.solution.model import FieldParser, MessageDefinition, MessageField

JSON = b'{"temperature": 21.5, "motion": false, "level": 3, "sub": {"deep": {"x": "y"}}, "arr": [1, 2], "nul": null}'
XML = b"<root><x>green</x><y unit='C'>21.5</y><z><a>1</a><a>2</a></z></root>"


def view(payload: bytes = b"", **kw: Any) -> MessageView:
    return MessageView(payload, **kw)


def find(parser: FieldParser, v: MessageView, message: MessageDefinition | None = None) -> Any:
    return compile_locator(parser, message)(v, BinaryCursor())


# --------------------------------------------------------------------------- the view


def test_view_of_inbound_message() -> None:
    msg = InboundMessage(
        listener="rest",
        payload=b"{}",
        topic="t",
        path="/p",
        method="POST",
        headers={"x-a": "1"},
        query={"q": "2"},
    )
    v = MessageView.of(msg)
    assert (v.payload, v.topic, v.path, v.method, v.received_at) == (
        b"{}",
        "t",
        "/p",
        "POST",
        msg.received_at,
    )
    assert v.header("X-A") == "1"
    assert v.query_value("q") == "2"
    assert v.query_value("Q") is None  # query names are case-sensitive


def test_view_parses_once() -> None:
    v = view(JSON)
    assert v.json() is v.json()
    assert v.delimited(",", False) is v.delimited(",", False)


def test_view_caches_failures_and_raises_fresh_errors() -> None:
    v = view(b"{not json")
    errors = []
    for _ in range(2):
        with pytest.raises(ParseError) as info:
            v.json()
        errors.append(info.value)
    assert errors[0] is not errors[1]
    assert {e.code for e in errors} == {INVALID_JSON}


def test_single_quoted_json_like_nuviots_samples() -> None:
    assert view(b"{'motion':'true','level':3, \"a\": \"it's\", 'b': 'say \"hi\"'}").json() == {
        "motion": "true",
        "level": 3,
        "a": "it's",
        "b": 'say "hi"',
    }


def test_bom_is_skipped() -> None:
    assert view(b'\xef\xbb\xbf{"a": 1}').json() == {"a": 1}
    assert view(b"\xef\xbb\xbfabc").text == "abc"


@pytest.mark.parametrize(
    ("payload", "method", "code"),
    [
        (b"\xff\xfe", "text", INVALID_TEXT),
        (b"<a><b></a>", "xml", INVALID_XML),
        (b"", "xml", INVALID_XML),
        (b"[1, 2", "json", INVALID_JSON),
    ],
)
def test_view_errors(payload: bytes, method: str, code: str) -> None:
    with pytest.raises(ParseError) as info:
        attr = getattr(view(payload), method)
        attr() if callable(attr) else None
    assert info.value.code == code


def test_xml_entities_are_not_expanded() -> None:
    payload = b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>'
    parser = FieldParser(key="k", content_type="xml", x_path="/r")
    assert "root:" not in str(find(parser, view(payload)))  # the reference stays unexpanded


# --------------------------------------------------------------------------- locations without a body


@pytest.mark.parametrize(
    ("parser", "kw", "expected"),
    [
        (
            FieldParser(key="k", search_location="headers", header_name="X-DeviceId"),
            {"headers": {"x-deviceid": "d1"}},
            "d1",
        ),
        (
            FieldParser(key="k", search_location="headers", header_name="x-deviceid"),
            {"headers": {"X-DeviceId": "d1"}},
            "d1",
        ),
        (
            FieldParser(key="k", search_location="headers", header_name="x-other"),
            {"headers": {"x-deviceid": "d1"}},
            MISSING,
        ),
        (
            FieldParser(key="k", search_location="querystring", query_string_field="state"),
            {"query": {"state": "on"}},
            "on",
        ),
        (FieldParser(key="k", search_location="querystring", query_string_field="state"), {}, MISSING),
        (
            FieldParser(key="k", search_location="path", path_locator="/motion/*/{status}"),
            {"path": "/motion/d/active"},
            "active",
        ),
        (
            FieldParser(key="k", search_location="topic", topic_locator="msg/{id}/*"),
            {"topic": "msg/slb001/enter"},
            "slb001",
        ),
        (FieldParser(key="k", search_location="topic", topic_locator="msg/{id}/*"), {}, MISSING),
    ],
)
def test_non_body_locations(parser: FieldParser, kw: dict[str, Any], expected: Any) -> None:
    assert find(parser, view(b"ignored", **kw)) == expected


@pytest.mark.parametrize(
    "parser",
    [
        FieldParser(key="k", search_location="headers"),
        FieldParser(key="k", search_location="querystring"),
        FieldParser(key="k", search_location="path"),
        FieldParser(key="k", search_location="topic", topic_locator="no/placeholder"),
        FieldParser(key="k", search_location="body"),  # a message-less body parser needs a content type
        FieldParser(key="k", content_type="json"),
        FieldParser(key="k", content_type="json", json_path="a..b"),
        FieldParser(key="k", content_type="xml", x_path="///["),
        FieldParser(key="k", content_type="delimited", delimited_index=0),
        FieldParser(key="k", content_type="delimited", delimited_index=1, delimiter=";;"),
        FieldParser(key="k", content_type="stringposition"),
        FieldParser(key="k", content_type="stringposition", start_index=1, length=-1),
        FieldParser(key="k", content_type="binary"),
        FieldParser(key="k", content_type="binary", parsed_binary_field_type="byte", binary_offset=-1),
    ],
)
def test_settings_that_cannot_work_fail_per_call(parser: FieldParser) -> None:
    locate = compile_locator(parser)  # compiling never raises
    for _ in range(2):
        with pytest.raises(ParseError) as info:
            locate(view(b"{}"), None)
        assert info.value.code == INVALID_LOCATOR


def test_locator_for_is_cached_by_identity() -> None:
    parser = FieldParser(key="k", content_type="json", json_path="a")
    assert locator_for(parser) is locator_for(parser)
    assert locator_for(parser) is not locator_for(parser.model_copy())


# --------------------------------------------------------------------------- body: JSON and XML


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("temperature", 21.5),
        ("motion", False),
        ("level", 3),
        ("sub.deep.x", "y"),
        ("$.sub.deep.x", "y"),
        ("sub.deep", {"x": "y"}),
        ("arr", [1, 2]),
        ("arr.0", MISSING),  # no arrays in paths
        ("nul", MISSING),  # null is absent
        ("nope", MISSING),
        ("level.x", MISSING),
    ],
)
def test_json_path(path: str, expected: Any) -> None:
    assert find(FieldParser(key="k", content_type="json", json_path=path), view(JSON)) == expected


def test_json_path_on_non_object_body() -> None:
    assert find(FieldParser(key="k", content_type="json", json_path="a"), view(b"[1]")) is MISSING


@pytest.mark.parametrize(
    ("xpath", "expected"),
    [
        ("//root/x", "green"),
        ("/root/y", "21.5"),
        ("/root/y/@unit", "C"),
        ("/root/x/text()", "green"),
        ("/root/z/a", "1"),  # first match
        ("count(/root/z/a)", 2.0),
        ("/root/missing", MISSING),
        ("boolean(/root/x)", True),
    ],
)
def test_xpath(xpath: str, expected: Any) -> None:
    assert find(FieldParser(key="k", content_type="xml", x_path=xpath), view(XML)) == expected


def test_xpath_evaluation_error() -> None:
    with pytest.raises(ParseError) as info:
        find(FieldParser(key="k", content_type="xml", x_path="//p:x"), view(XML))
    assert info.value.code == INVALID_LOCATOR


# --------------------------------------------------------------------------- body: text


@pytest.mark.parametrize(
    ("payload", "index", "quoted", "delimiter", "expected"),
    [
        (b"a,b,c", 1, False, None, "a"),
        (b"a,b,c\r\n", 3, False, None, "c"),
        (b"a,b,c", 4, False, None, MISSING),
        (b"a, b", 2, False, None, " b"),  # values are not trimmed
        (b"a;b", 2, False, ";", "b"),
        (b"a\tb", 2, False, "\\t", "b"),
        (b'"x,y",2', 1, True, None, "x,y"),
        (b"'x,y',2", 2, True, None, "2"),
        (b'"a\\nb\\t\\"q\\"",2', 1, True, None, 'a\nb\t"q"'),
        (b'"x,y",2', 1, False, None, '"x'),  # without quoted text, quotes are ordinary
        (b'"ab"cd,2', 1, True, None, "abcd"),
        (b"a,,c", 2, False, None, ""),
    ],
)
def test_delimited(payload: bytes, index: int, quoted: bool, delimiter: str | None, expected: Any) -> None:
    parser = FieldParser(
        key="k", content_type="delimited", delimited_index=index, quoted_text=quoted, delimiter=delimiter
    )
    assert find(parser, view(payload)) == expected


def test_delimited_uses_the_message_settings() -> None:
    message = MessageDefinition(
        key="m", message_id="m", content_type="delimited", delimiter="|", quoted_text=True
    )
    field = MessageField(key="k", delimited_index=2)
    assert find(field, view(b"a|'b|c'"), message) == "b|c"


def test_unterminated_quote() -> None:
    parser = FieldParser(key="k", content_type="delimited", delimited_index=1, quoted_text=True)
    with pytest.raises(ParseError) as info:
        find(parser, view(b'"abc,1'))
    assert info.value.code == INVALID_DELIMITED


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [(1, 3, "ABC"), (4, 2, "DE"), (7, None, "GHIJ"), (10, 1, "J"), (11, 0, "")],
)
def test_string_position(start: int, length: int | None, expected: str) -> None:
    parser = FieldParser(key="k", content_type="stringposition", start_index=start, length=length)
    assert find(parser, view(b"ABCDEFGHIJ")) == expected


@pytest.mark.parametrize(("start", "length"), [(9, 3), (12, 1), (12, None)])
def test_string_position_past_end(start: int, length: int | None) -> None:
    parser = FieldParser(key="k", content_type="stringposition", start_index=start, length=length)
    with pytest.raises(ParseError) as info:
        find(parser, view(b"ABCDEFGHIJ"))
    assert info.value.code == READ_PAST_END


@pytest.mark.parametrize(
    ("regex", "group", "payload", "expected"),
    [
        ("<val1:(?'V1'[0-9]*)>", "V1", b"<val1:32>", "32"),
        ("t=(?<t>[0-9.]+);h=(?<h>[0-9]+)", "h", b"t=21.5;h=40", "40"),
        ("t=(?<t>[0-9.]+)(;h=(?<h>[0-9]+))?", "h", b"t=21.5", MISSING),  # group did not take part
        ("t=(?<t>[0-9.]+)", "t", b"nothing here", MISSING),
    ],
)
def test_string_regex(regex: str, group: str, payload: bytes, expected: Any) -> None:
    message = MessageDefinition(key="m", message_id="m", content_type="stringregex", reg_ex=regex)
    assert find(MessageField(key="k", reg_ex_group_name=group), view(payload), message) == expected


def test_string_regex_errors() -> None:
    message = MessageDefinition(key="m", message_id="m", content_type="stringregex", reg_ex="(?<a>x)")
    with pytest.raises(ParseError) as info:
        find(MessageField(key="k", reg_ex_group_name="b"), view(b"x"), message)
    assert info.value.code == INVALID_LOCATOR
    bad = MessageDefinition(key="m", message_id="m", content_type="stringregex", reg_ex="(x")
    with pytest.raises(ParseError) as info:
        find(MessageField(key="k", reg_ex_group_name="a"), view(b"x"), bad)
    assert info.value.code == INVALID_REGEX


def test_message_less_regex_parser_uses_its_selector_as_the_pattern() -> None:
    parser = FieldParser(
        key="k", content_type="stringregex", reg_ex_value_selector="id=(?'id'\\w+)", reg_ex_group_name="id"
    )
    assert find(parser, view(b"hello id=dev7 bye")) == "dev7"


# --------------------------------------------------------------------------- selector, other content types


@pytest.mark.parametrize(
    ("selector", "value", "expected"),
    [
        (r"^Temperature\s?=\s?([\d\.]{1,5})\s?F$", "Temperature = 32.0 F", "32.0"),
        (r"\d+", "abc123def", "123"),  # no group: the whole match
        (r"(x)?(\d+)", "abc123", MISSING),  # first group did not take part
        (r"zzz", "abc", MISSING),
        (r"Basic (.*)", "Basic QUJD", "QUJD"),
    ],
)
def test_regex_value_selector(selector: str, value: str, expected: Any) -> None:
    parser = FieldParser(key="k", search_location="headers", header_name="h", reg_ex_value_selector=selector)
    assert find(parser, view(headers={"h": value})) == expected


def test_selector_sees_json_numbers_as_text() -> None:
    parser = FieldParser(
        key="k", content_type="json", json_path="temperature", reg_ex_value_selector=r"(\d+)\."
    )
    assert find(parser, view(JSON)) == "21"


def test_no_content_and_media() -> None:
    nocontent = MessageDefinition(key="m", message_id="m", content_type="nocontent")
    media = MessageDefinition(key="m", message_id="m", content_type="media")
    assert find(MessageField(key="k", json_path="a"), view(b'{"a": 1}'), nocontent) is MISSING
    assert find(MessageField(key="k"), view(b"\x89PNG"), media) == b"\x89PNG"


@pytest.mark.parametrize("content", ["protobuf", "sevensegementimage", "pointarray", "geopointarray"])
def test_unsupported_content_types(content: str) -> None:
    message = MessageDefinition(key="m", message_id="m", content_type=content)
    with pytest.raises(ParseError) as info:
        find(MessageField(key="k"), view(b"x"), message)
    assert info.value.code == UNSUPPORTED_CONTENT_TYPE


def test_script_binary_strategy_is_unsupported() -> None:
    parser = FieldParser(
        key="k", content_type="binary", parsed_binary_field_type="byte", binary_parsing_strategy="script"
    )
    with pytest.raises(ParseError) as info:
        find(parser, view(b"\x01"))
    assert info.value.code == UNSUPPORTED_PARSING_STRATEGY


def test_geolocation_from_lat_lon_json_paths() -> None:
    message = MessageDefinition(key="m", message_id="m", content_type="json")
    field = MessageField(
        key="k", storage_type="geolocation", lat_json_path="pos.lat", lon_json_path="pos.lon"
    )
    assert find(field, view(b'{"pos": {"lat": 1.5, "lon": -2}}'), message) == {"lat": 1.5, "lon": -2}
    assert find(field, view(b'{"x": 1}'), message) is MISSING
