"""The parsing examples of NuvIoT's documentation, read as the documentation says (issue 12, done-when 8).

LagoVista/docs ``Messaging/Parsing/``: ``ParsingJsonMessage.md`` (a single-quoted, tab-indented body and dotted
paths), ``ParsingDelimitedMessage.md`` ("a 1-indexed array of values", plain and quoted text),
``ParsingWithRegEx.md`` (the .NET group ``(?'V1'[0-9]*)``), ``ParsingStringMessage.md`` ("use 1 as the starting
point"), ``ParsingFromTopic.md`` (the locator ``/deviceadmin/{deviceid}``).
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.planner import plan
from runtime.core.pipeline.translator import translate
from runtime.core.solution.model import (
    FieldParser,
    MessageDefinition,
    Planner,
    Solution,
    SolutionDocument,
)


def read(message: dict[str, Any], payload: bytes) -> dict[str, Any]:
    msg = MessageDefinition.model_validate({"key": "m", "messageId": "m", **message})
    doc = SolutionDocument(solution=Solution(key="s", planner=Planner(key="p")), messages=(msg,))
    return translate(doc, msg, MessageView(payload=payload))


def test_json_paths_over_the_documented_single_quoted_body() -> None:
    body = b"{\n\t'field1':'value1',\n\t'subset1':{\n\t\t'field3':'value2',\n\t\t'field4':'another value'\n\t}\n}"
    fields = [{"key": k, "jsonPath": p} for k, p in
              (("a", "field1"), ("b", "subset1.field3"), ("c", "subset1.field4"))]
    assert read({"contentType": "json", "fields": fields}, body) == {
        "a": "value1", "b": "value2", "c": "another value"}


EXPECTED = {1: "msg004", 2: "dev0001", 3: "324", 4: "52", 5: "45", 6: "off", 7: "overrange"}


@pytest.mark.parametrize(("payload", "quoted"), [
    (b"msg004,dev0001,324,52,45,off,overrange", False),
    (b"'msg004','dev0001',324,52,45,off,'overrange'", True),
])
def test_delimited_indexes_count_from_one(payload: bytes, quoted: bool) -> None:
    fields = [{"key": f"f{i}", "delimitedIndex": i} for i in EXPECTED]
    got = read({"contentType": "delimited", "delimiter": ",", "quotedText": quoted, "fields": fields}, payload)
    assert got == {f"f{i}": v for i, v in EXPECTED.items()}


def test_regex_with_a_dotnet_named_group() -> None:
    message = {"contentType": "stringregex", "regEx": "<val1:(?'V1'[0-9]*)>",
               "fields": [{"key": "v", "regExGroupName": "V1", "storageType": "integer"}]}
    assert read(message, b"<val1:32>") == {"v": 32}


def test_string_position_starts_at_one() -> None:
    message = {"contentType": "stringposition",
               "fields": [{"key": "first", "startIndex": 1, "length": 3}, {"key": "rest", "startIndex": 4, "length": 3}]}
    assert read(message, b"abcdef") == {"first": "abc", "rest": "def"}


def test_a_path_locator_names_the_device() -> None:
    planner = Planner(key="p", device_id_parsers=(
        FieldParser(key="deviceid", search_location="path", path_locator="/deviceadmin/{deviceid}"),))
    assert plan(planner, MessageView(path="/deviceadmin/device1234")) == ("device1234", None)

