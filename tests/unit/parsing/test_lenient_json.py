"""Bodies Newtonsoft reads (NuvIoT parses message bodies with it) and strict JSON refuses.

Newtonsoft's ``JsonTextReader`` accepts single-quoted strings, trailing commas in objects and arrays, ``//`` and
``/* */`` comments and unquoted property names; NuvIoT's own sample message for the starter app is
``{'motion':'on'}`` (LagoVista/StarterKit ``OrgInitializer.AddDefaultMessage``). Strict JSON is read by orjson
first; the lenient reading only runs when that fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.parsing.errors import INVALID_JSON, ParseError
from runtime.core.parsing.lenient_json import normalise
from runtime.core.parsing.view import MessageView


def body(payload: bytes) -> Any:
    return MessageView(payload=payload).json()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{'motion':'on'}", {"motion": "on"}),
        (b'{"level": 3, "tags": ["a", "b",],}', {"level": 3, "tags": ["a", "b"]}),
        (b'{\n  // the sensor\n  "level": /* raw */ 3\n}', {"level": 3}),
        (b"{motion: true, level: 2}", {"motion": True, "level": 2}),
        (b"{'quote': 'say \"hi\"', 'apostrophe': 'it\\'s'}", {"quote": 'say "hi"', "apostrophe": "it's"}),
        (b'{"url": "http://host//path", "text": "a,]"}', {"url": "http://host//path", "text": "a,]"}),
    ],
)
def test_newtonsoft_leniencies_are_read(payload: bytes, expected: Any) -> None:
    assert body(payload) == expected


@pytest.mark.parametrize("payload", [b'{"motion": tru', b"{'open: 1}", b'{"a": 1 /* no end', b"[1,,2]", b"{,}"])
def test_what_newtonsoft_refuses_too_is_invalid_json(payload: bytes) -> None:
    with pytest.raises(ParseError) as info:
        body(payload)
    assert info.value.code == INVALID_JSON


def test_strict_json_is_left_alone() -> None:
    text = '{"a": [1, 2], "b": {"c": "d, e"}, "f": null}'
    assert normalise(text) == text


def test_the_lenient_reading_is_for_device_sized_bodies_only() -> None:
    from runtime.core.parsing.view import LENIENT_MAX_BYTES

    small = b"{'v': '" + b"x" * 100 + b"'}"
    assert body(small) == {"v": "x" * 100}
    large = b"{'v': '" + b"x" * LENIENT_MAX_BYTES + b"'}"
    with pytest.raises(ParseError) as info:
        body(large)  # strict JSON of any size is read; Newtonsoft's leniencies only up to the limit
    assert info.value.code == INVALID_JSON
