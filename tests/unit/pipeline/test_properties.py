"""Garbage in never crashes a stage: only StageError (or, inside parsing, ParseError) comes out."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.parsing.convert import make_converter
from runtime.core.parsing.errors import ParseError
from runtime.core.parsing.patterns import compile_regex, segment_locator
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.planner import plan
from runtime.core.pipeline.sentinel import check
from runtime.core.pipeline.translator import translate
from runtime.core.solution.enums import DateTimeZone, ParameterType, ParseStringValueType
from runtime.core.solution.model import (
    FieldParser,
    MessageDefinition,
    MessageField,
    Planner,
    SecurityField,
    Sentinel,
    Solution,
    SolutionDocument,
    StateDef,
    StateSet,
    Unit,
    UnitSet,
)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

STORAGE = [
    {"storage_type": "string", "reg_ex_validation": "^[a-z]+$"},
    {"storage_type": "integer", "min_value": 0, "max_value": 100},
    {"storage_type": "decimal", "decimal_scaler": 0.1},
    {"storage_type": "true-false"},
    {"storage_type": "datetime"},
    {"storage_type": "datetime", "date_time_zone": "epochms"},
    {"storage_type": "geolocation"},
    {"storage_type": "state", "state_set": "onoff"},
    {"storage_type": "valuewithunit", "unit_set": "temps"},
    {"storage_type": "image"},
    {"storage_type": "object"},
    {"storage_type": "intarray"},
]


def _fields(**where: Any) -> tuple[MessageField, ...]:
    return tuple(MessageField(key=f"f{i}", **where, **kind) for i, kind in enumerate(STORAGE))


MESSAGES = (
    MessageDefinition(key="json", message_id="json", content_type="json", fields=_fields(json_path="a.b")),
    MessageDefinition(key="xml", message_id="xml", content_type="xml", fields=_fields(x_path="//a")),
    MessageDefinition(
        key="csv",
        message_id="csv",
        content_type="delimited",
        quoted_text=True,
        fields=_fields(delimited_index=2),
    ),
    MessageDefinition(
        key="pos", message_id="pos", content_type="stringposition", fields=_fields(start_index=2, length=3)
    ),
    MessageDefinition(
        key="re",
        message_id="re",
        content_type="stringregex",
        reg_ex="v=(?'v'.*)",
        fields=_fields(reg_ex_group_name="v"),
    ),
    MessageDefinition(
        key="bin",
        message_id="bin",
        content_type="binary",
        binary_parsing_strategy="relative",
        fields=tuple(
            MessageField(
                key=f"b{i}",
                parsed_binary_field_type=t,
                string_parsing_strategy="stringlength",
                string_length_byte_count=2,
            )
            for i, t in enumerate(
                [
                    "string",
                    "boolean",
                    "char",
                    "byte",
                    "uint16",
                    "int16",
                    "uint32",
                    "int32",
                    "uint64",
                    "int64",
                    "singleprecisionfloatingpoint",
                    "doubleprecisionfloatingpoint",
                ]
            )
        ),
    ),
    MessageDefinition(
        key="none",
        message_id="none",
        content_type="nocontent",
        fields=_fields(search_location="headers", header_name="h")
        + _fields(search_location="path", path_locator="/x/{v}"),
    ),
)
DOC = SolutionDocument(
    solution=Solution(key="s", planner=Planner(key="p")),
    messages=MESSAGES,
    state_sets=(StateSet(key="onoff", require_enum=True, states=(StateDef(key="on", enum_value=1),)),),
    unit_sets=(UnitSet(key="temps", units=(Unit(key="c", is_default=True, number_decimal_points=1),)),),
)
PLANNER = Planner(
    key="p",
    device_id_parsers=(
        FieldParser(key="x", content_type="xml", x_path="/r/@id"),
        FieldParser(key="j", content_type="json", json_path="id"),
        FieldParser(key="b", content_type="binary", parsed_binary_field_type="string"),
        FieldParser(key="p", search_location="path", path_locator="/d/{id}"),
    ),
    message_type_id_parsers=(
        FieldParser(key="t", search_location="topic", topic_locator="+/{m}/#"),
        FieldParser(key="r", content_type="stringregex", reg_ex_value_selector="m=(\\w+)"),
    ),
)

text = st.text(max_size=40)
headers = st.dictionaries(st.sampled_from(["h", "x-key", "authorization"]), text, max_size=3)
payloads = st.one_of(
    st.binary(max_size=64),
    text.map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | text,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "b", "id"]), inner, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda v: __import__("json").dumps({"a": {"b": v}, "id": v}).encode()),
    st.builds(lambda v: f"<r id='{v}'><a>{v}</a></r>".encode(), text),
)


def views() -> st.SearchStrategy[MessageView]:
    return st.builds(
        lambda p, t, path, h: MessageView(p, topic=t, path=path, headers=h),
        payloads,
        st.none() | text,
        st.none() | text,
        headers,
    )


@SETTINGS
@given(st.sampled_from(MESSAGES), views())
def test_translate_raises_only_stage_errors(message: MessageDefinition, view: MessageView) -> None:
    try:
        result = translate(DOC, message, view)
    except StageError as exc:
        assert exc.stage == "inputtranslator"
    else:
        assert set(result) <= {f.key for f in message.fields}


@SETTINGS
@given(views())
def test_plan_raises_only_stage_errors(view: MessageView) -> None:
    try:
        device_id, message_id = plan(PLANNER, view)
    except StageError as exc:
        assert exc.stage == "planner"
    else:
        assert isinstance(device_id, str) and device_id
        assert message_id is None or isinstance(message_id, str)


SENTINELS = [
    Sentinel(
        key=kind,
        security_fields=(
            SecurityField(
                key="k",
                field_type=kind,
                locator=FieldParser(key="k", search_location="headers", header_name="authorization"),
            ),
        ),
    )
    for kind in ("accesskey", "basicaccess", "sharedsignature")
]


@SETTINGS
@given(st.sampled_from(SENTINELS), views(), st.floats(allow_nan=True))
def test_sentinel_raises_only_stage_errors(sentinel: Sentinel, view: MessageView, now: float) -> None:
    device = Device(device_id="d", device_configuration="c", primary_access_key="k")
    try:
        check(sentinel, view, device, now=now)
    except StageError as exc:
        assert exc.code == "unauthorized_device"


scalars = st.none() | st.booleans() | st.integers() | st.floats() | text | st.binary(max_size=8)


@SETTINGS
@given(
    st.sampled_from(list(ParameterType)),
    st.sampled_from([None, *ParseStringValueType]),
    st.sampled_from([None, *DateTimeZone]),
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.sampled_from(["lat", "lon", "x"]), scalars, max_size=3),
)
def test_converters_raise_only_parse_errors(
    storage: ParameterType, wire: ParseStringValueType | None, zone: DateTimeZone | None, raw: Any
) -> None:
    convert = make_converter(
        storage, wire, zone=zone, scaler=0.5, state_set=DOC.state_sets[0], unit_set=DOC.unit_sets[0]
    )
    try:
        convert(raw)
    except ParseError:
        pass


@SETTINGS
@given(text, text)
def test_patterns_raise_only_parse_errors(pattern: str, subject: str) -> None:
    try:
        compile_regex(pattern).search(subject)
    except ParseError:
        pass
    try:
        segment_locator(pattern, is_path=True).capture(subject)
    except ParseError:
        pass


def test_a_pattern_python_warns_about_compiles_as_written() -> None:
    """'[[' makes Python's re warn (a possible nested set, FutureWarning); the suite turns warnings into
    errors, and a solution's pattern must compile as .NET reads it, not fail on a warning."""
    assert compile_regex("[[a]").search("x[y") is not None
