"""Data-stream rows (runtime/core/streams.py): the stream's field definitions decide what a row may hold."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.solution.model import DataStream, Instance, Planner, Route, Solution, SolutionDocument
from runtime.core.streams import (
    StreamKind,
    StreamRowError,
    build_row,
    mapped_row,
    parse_bucket,
    spec_of,
    step_values,
    stream_problems,
    stream_steps,
)

T0 = 1_767_225_600.5  # 2026-01-01T00:00:00.500Z


def stream(**extra: Any) -> DataStream:
    return DataStream.model_validate({
        "key": "hist", "name": "History",
        "fields": [
            {"key": "temp", "name": "Temperature", "fieldName": "temperature", "fieldType": "decimal",
             "isRequired": True, "minValue": -40, "maxValue": 80, "numberDecimalPoint": 1},
            {"key": "count", "name": "Count", "fieldName": "count", "fieldType": "integer"},
            {"key": "on", "name": "On", "fieldName": "isOn", "fieldType": "true-false"},
        ], **extra})


def test_row_carries_device_id_and_timestamp_under_the_streams_names() -> None:
    spec = spec_of(stream(deviceIdFieldName="sensorId", timestampFieldName="readAt"))
    assert build_row(spec, "dev1", T0, {"temp": 21.26, "count": "7", "on": "true"}) == {
        "sensorId": "dev1", "readAt": "2026-01-01T00:00:00.500Z", "temperature": 21.3, "count": 7, "isOn": True}


def test_epoch_date_storage_format_stores_whole_seconds() -> None:
    spec = spec_of(stream(dateStorageFormat="expoch"))  # NuvIoT's own id for epoch
    assert build_row(spec, "d", T0, {"temperature": 1})["timeStamp"] == 1_767_225_600


@pytest.mark.parametrize(("values", "field", "why"), [
    ({"count": 1}, "temperature", "is required"),
    ({"temp": -41}, "temperature", "below the minimum -40"),
    ({"temp": 80.5}, "temperature", "above the maximum 80"),
    ({"temp": "warm"}, "temperature", "is not a number"),
    ({"temp": 1, "count": 1.5}, "count", "not a whole number"),
    ({"temp": 1, "on": "maybe"}, "isOn", "not true or false"),
    ({"temp": 1, "colour": "red"}, "colour", "the stream has no such field"),
])
def test_a_row_breaking_the_field_definitions_names_stream_and_field(values: dict, field: str, why: str) -> None:
    with pytest.raises(StreamRowError) as info:
        build_row(spec_of(stream()), "d", T0, values)
    assert info.value.stage == "datastream" and info.value.code == "datastream_row_invalid"
    assert info.value.detail.startswith(f"data stream hist, field {field}: ")
    assert why in info.value.detail


def test_update_rows_carry_only_the_given_fields() -> None:
    assert build_row(spec_of(stream()), "d", T0, {"count": 3}, partial=True) == {"count": 3}


@pytest.mark.parametrize(("type_id", "kind", "fallback"), [
    (None, StreamKind.BUILTIN, False), ("postgresql", StreamKind.POSTGRESQL, False),
    ("redis", StreamKind.REDIS, False), ("azuretablestorage", StreamKind.BUILTIN, True),
    ("sqlserver", StreamKind.BUILTIN, True),
])
def test_stream_types(type_id: str | None, kind: StreamKind, fallback: bool) -> None:
    spec = spec_of(stream(streamType=type_id))
    assert (spec.kind, spec.fallback) == (kind, fallback)


def test_route_mappings_from_message_and_workflow_and_by_name() -> None:
    route = Route.model_validate({"key": "r", "name": "r", "messageDefinition": "m", "steps": [
        {"id": "t", "type": "inputtranslator", "module": "mt", "next": {"to": "w", "mappings": {"a": "a"}},
         "secondary": [{"to": "s1", "mappings": {"temperature": "temp"}}]},
        {"id": "w", "type": "workflow", "module": "wf", "secondary": [{"to": "s1", "mappings": {"level": "count"}}]},
        {"id": "s1", "type": "datastream", "module": "hist"},
        {"id": "s2", "type": "datastream", "module": "other"},
    ]})
    first, second = stream_steps(route)
    assert first.stream == "hist" and not first.by_name
    assert step_values(first, {"temperature": 20.5, "x": 1}, {"level": 3}) == {"temp": 20.5, "count": 3}
    assert second.stream == "other" and second.by_name
    names = frozenset({"temp", "count", "temperature"})
    assert step_values(second, {"temp": 1, "seq": "x"}, {"count": 2, "other": 3}, names) == {"temp": 1, "count": 2}


def test_validation_warns_for_unreachable_types_and_refuses_bad_settings() -> None:
    doc = SolutionDocument(
        instance=Instance(), solution=Solution(key="s", name="s", planner=Planner(key="p")),
        data_streams=(stream(key="simpletable", streamType="azuretablestorage"),
                      stream(key="pg", streamType="postgresql", dbTableName="bad-name"),
                      stream(key="rd", streamType="redis")))
    errors, warnings = stream_problems(doc)
    assert [(w.path, w.code) for w in warnings] == [("dataStreams[0].streamType", "PYRT2080")]
    assert "simpletable" in warnings[0].message and "built-in storage" in warnings[0].message
    assert {(e.path, e.code) for e in errors} == {
        ("dataStreams[1].dbUrl", "PYRT2081"), ("dataStreams[1].dbTableName", "PYRT2081"),
        ("dataStreams[2].redisServerUris", "PYRT2081")}


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("5m", 300), ("1h", 3600), ("1d", 86400), ("15", 15)])
def test_bucket_sizes(text: str, seconds: int) -> None:
    assert parse_bucket(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1w", "-5s", "32d"])
def test_bad_bucket_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="bucket must"):
        parse_bucket(text)


def test_the_fast_row_builder_gives_the_general_paths_row_or_error() -> None:
    """Each stream's precompiled builder (the usual row) and the general path agree on every value: the same
    row, in the same column order, or the same dead-letter reason."""
    import dataclasses
    import itertools

    ds = DataStream.model_validate({
        "key": "hist", "name": "History", "fields": [
            {"key": "temp", "name": "T", "fieldName": "temperature", "fieldType": "decimal", "isRequired": True,
             "minValue": -40, "maxValue": 80, "numberDecimalPoint": 1},
            {"key": "count", "name": "C", "fieldName": "count", "fieldType": "integer", "minValue": 0},
            {"key": "level", "name": "L", "fieldName": "level", "fieldType": "valuewithunit"},
            {"key": "on", "name": "On", "fieldName": "isOn", "fieldType": "true-false"},
            {"key": "mode", "name": "Mode", "fieldName": "mode", "fieldType": "string", "isRequired": True},
        ]})
    fast = spec_of(ds)
    assert fast.fast is not None
    general = dataclasses.replace(fast, fast=None)
    samples: dict[str, list[object]] = {
        "temp": [21.26, 21, -40, 80.0, 80.01, -41, float("nan"), float("inf"), "22.5", True, None],
        "count": [3, 3.0, 3.5, -1, "4", None, False, 2**63 - 1, 2**63, -(2**63) - 1, 1e30],
        "level": [1, 2.5, None, "x"],
        "on": [True, False, "true", 1, None],
        "mode": ["auto", 5, None, {"a": 1}],
    }
    # a route step's mappings (message field -> stream field), compiled into the builder by mapped_row
    mappings = [(("mt", "temp"), ("mc", "count"), ("ml", "level"), ("mo", "isOn"), ("mm", "mode")),
                (("mt", "temperature"), ("mm", "mode")),  # by column; the other fields missing
                (("mt", "temp"), ("mc", "temp"), ("mm", "mode")),  # a field fed twice: the last present wins
                (("mt", "temp"), ("mm", "mode"), ("mx", "nosuch"))]  # no such field
    checked = 0
    for combo in itertools.product(*samples.values()):
        values = dict(zip(samples, combo, strict=True))
        values = {k: v for k, v in values.items() if v is not None}
        for stamp in (True, False):
            outcomes = []
            for spec in (fast, general):
                try:
                    row = build_row(spec, "dev1", T0, values, stamp=stamp)
                    outcomes.append(("row", list(row.items())))
                except StreamRowError as exc:
                    outcomes.append(("error", str(exc)))
            assert outcomes[0] == outcomes[1], values
            checked += 1
        message = {"m" + k[0]: v for k, v in values.items()} | {"mx": 1}
        for pairs in mappings:
            outcomes = []
            for call in (lambda p=pairs, m=message: mapped_row(fast, p, "dev1", m),
                         lambda p=pairs, m=message: build_row(general, "dev1", T0, {d: m[s] for s, d in p if s in m},
                                                              stamp=False)):
                try:
                    outcomes.append(("row", list(call().items())))
                except StreamRowError as exc:
                    outcomes.append(("error", str(exc)))
            assert outcomes[0] == outcomes[1], (pairs, message)
            checked += 1
    assert checked > 3000
    assert fast.mapped[mappings[0]] is not None and fast.mapped[mappings[1]] is not None  # compiled
    assert fast.mapped[mappings[2]] is None and fast.mapped[mappings[3]] is None  # per message, the general path
    for values in ({"temperature": 5.0, "mode": "m"}, {"temp": 1, "mode": "m", "nosuch": 1}):  # by column; unknown
        outcomes = []
        for spec in (fast, general):
            try:
                outcomes.append(list(build_row(spec, "d", T0, values).items()))
            except StreamRowError as exc:
                outcomes.append([str(exc)])
        assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("decimals", [0, 1, 2, 3, 6, 15, 16])
def test_the_fast_row_builder_rounds_as_round_does(decimals: int) -> None:
    """The builder's shortcut for a value already at the field's decimals (``round(v * 10**d) / 10**d == v``)
    gives exactly ``round(v, d)``: halves, binary near-halves, negative zero, values too large for the shortcut."""
    import dataclasses
    import random
    import struct

    ds = DataStream.model_validate({"key": "r", "name": "R", "fields": [
        {"key": "v", "name": "V", "fieldName": "v", "fieldType": "decimal", "numberDecimalPoint": decimals}]})
    fast = spec_of(ds)
    assert fast.fast is not None
    general = dataclasses.replace(fast, fast=None)
    rng = random.Random(decimals)
    values: list[float] = [0.0, -0.0, 21.5, 21.25, 2.675, 1.005, 0.125, -0.5, 1.5, 2.5, 5e-324, 1e15, -1e15,
                           4.4e13, 4.6e13, 2.0 ** 52, 1e300, -1e300, 123456.789]
    for _ in range(3000):
        values += [rng.randint(-10**9, 10**9) / 10 ** rng.randint(0, 10), rng.uniform(-1e6, 1e6),
                   struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]]
    for value in values:
        if value != value or value in (float("inf"), float("-inf")):
            continue
        got = build_row(fast, "d", T0, {"v": value})["v"]
        want = build_row(general, "d", T0, {"v": value})["v"]
        assert repr(got) == repr(want) == repr(round(value, decimals)), value


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 1e19, "1e30", pytest.param(10**5000, id="5000-digits")])
def test_an_integer_field_takes_64_bit_values_only(value: object) -> None:
    """Past a signed 64-bit integer neither the queue's JSON nor PostgreSQL's bigint can hold the value: the row
    is a dead letter naming the field (not a batch that fails at the database again and again)."""
    ds = DataStream.model_validate({"key": "n", "name": "N", "fields": [
        {"key": "count", "name": "C", "fieldName": "count", "fieldType": "integer"}]})
    spec = spec_of(ds)
    assert build_row(spec, "d", T0, {"count": 2**63 - 1})["count"] == 2**63 - 1
    assert build_row(spec, "d", T0, {"count": -(2**63)})["count"] == -(2**63)
    with pytest.raises(StreamRowError, match=r"count: .* is outside the 64-bit integer range"):
        build_row(spec, "d", T0, {"count": value})
