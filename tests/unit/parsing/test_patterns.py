""".NET regex translation and path/topic locators."""

from __future__ import annotations

import re

import pytest

from runtime.core.parsing.errors import INVALID_LOCATOR, INVALID_REGEX, ParseError
from runtime.core.parsing.patterns import compile_regex, dotnet_to_python, segment_locator


@pytest.mark.parametrize(
    ("dotnet", "python"),
    [
        ("<val1:(?'V1'[0-9]*)>", "<val1:(?P<V1>[0-9]*)>"),
        ("(?<temp>\\d+)", "(?P<temp>\\d+)"),
        ("(?<=a)b(?<!c)", "(?<=a)b(?<!c)"),  # look-behinds untouched
        ("(?P<x>a)", "(?P<x>a)"),  # already Python
        ("\\(?<notagroup>", "\\(?<notagroup>"),  # escaped parenthesis
        ("[(?<x>]", "[(?<x>]"),  # inside a character class
        ("[]x](?'a'y)", "[]x](?P<a>y)"),  # ']' first in a class is literal
        ("[^]x](?'a'y)", "[^]x](?P<a>y)"),
        ("(?<a>x)\\k<a>\\k'a'", "(?P<a>x)(?P=a)(?P=a)"),
        ("(?i)x(?:y)", "(?i)x(?:y)"),
    ],
)
def test_dotnet_to_python(dotnet: str, python: str) -> None:
    assert dotnet_to_python(dotnet) == python
    re.compile(python)


def test_balancing_group_is_refused() -> None:
    with pytest.raises(ParseError) as info:
        compile_regex("(?<open-close>x)")
    assert info.value.code == INVALID_REGEX


def test_bad_pattern_is_invalid_regex_every_time() -> None:
    for _ in range(2):  # the failure is cached, and raised fresh each time
        with pytest.raises(ParseError) as info:
            compile_regex("(unclosed")
        assert info.value.code == INVALID_REGEX


def test_nuviot_regex_example() -> None:
    assert compile_regex("<val1:(?'V1'[0-9]*)>").search("<val1:32>").group("V1") == "32"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("locator", "path", "expected"),
    [
        ("/sensor/{deviceid}/*", "/sensor/dev001/motion001", "dev001"),
        ("/sensor/*/{message}", "/sensor/dev001/motion001", "motion001"),
        ("/deviceadmin/{deviceid}", "/deviceadmin/device1234", "device1234"),
        ("/motion/*/{status}", "/motion/device001/active", "active"),
        ("/api/{messageid}/*", "/api/m1/x?y=1", "m1"),  # query string is not part of the path
        ("sensor/{id}", "/sensor/a", "a"),  # leading slashes are optional on both sides
        ("/sensor/{id}", "sensor/a/", "a"),  # a trailing slash is ignored
        ("/sensor/{id}", "/sensor/a/b/c", "a"),  # extra segments after the locator are ignored
        ("/sensor/{id}/*", "/sensor/a", None),  # a trailing * needs one more segment
        ("/sensor/{id}", "/other/a", None),  # literal segments must match
        ("/sensor/{id}", "/Sensor/a", None),  # ... case-sensitively
        ("/sensor/{id}", "/sensor", None),  # too short
        ("/sensor/{id}", "/sensor//x", None),  # an empty capture is no value
        ("/s/dev-{id}.json", "/s/dev-42.json", "42"),  # placeholder inside a segment
        ("/s/{id}", "/s/a%20b", "a b"),  # percent-decoded
        ("/s/{id}", "", None),
        ("/s/{id}", None, None),
    ],
)
def test_path_locator(locator: str, path: str | None, expected: str | None) -> None:
    assert segment_locator(locator, is_path=True).capture(path) == expected


@pytest.mark.parametrize(
    ("locator", "topic", "expected"),
    [
        ("msg/{deviceid}/{messageid}", "msg/slb001/enter", "slb001"),
        ("msg/+/{messageid}", "msg/slb001/enter", "enter"),  # MQTT '+' = '*'
        ("devices/{id}/#", "devices/d1/a/b/c", "d1"),  # MQTT '#' = the rest
        ("devices/{id}", "devices/d%201", "d%201"),  # topics are not percent-decoded
        ("devices/{id}", "devices/a?b", "a?b"),  # '?' is an ordinary topic character
    ],
)
def test_topic_locator(locator: str, topic: str, expected: str | None) -> None:
    assert segment_locator(locator, is_path=False).capture(topic) == expected


def test_several_placeholders_prefer_the_parser_key() -> None:
    assert (
        segment_locator("msg/{deviceid}/{messageid}", is_path=False, prefer="messageid").capture("msg/d/m")
        == "m"
    )
    assert (
        segment_locator("msg/{deviceid}/{messageid}", is_path=False, prefer="other").capture("msg/d/m") == "d"
    )


def test_locator_without_placeholder_is_invalid() -> None:
    with pytest.raises(ParseError) as info:
        segment_locator("/sensor/*", is_path=True)
    assert info.value.code == INVALID_LOCATOR
