"""The two places NuvIoT writes data-stream rows from, through the real dispatcher, the JavaScript engine and
built-in storage: the route's data-stream step (message fields and workflow attributes mapped to stream
fields) and the scripts' ``addToDataStream`` / ``updateDataStream``. A row that breaks the stream's field
definitions is a dead letter naming the stream and the field, and no row of that message is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from runtime.adapters.scripting.engine import build_solution_scripts
from runtime.adapters.streams import DataStreams
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage, MessageRecord, PemStatus
from runtime.core.solution.loader import load_solution_report
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters
from runtime.services.streams import StreamService
from tests.support.devices import Registry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "solution.yaml"
POST_HANDLER = """
function postHandler() {
  addToDataStream("audit", {note: "temp " + Attributes.temperature, level: Attributes.humidity});
  if (Attributes.humidity > 90) { addToDataStream("audit", {level: "high"}); }
  if (Attributes.humidity == 77) { updateDataStream("history", {mode: "checked"}, {humidity: 40}); }
}
"""


def solution() -> Any:
    tree = yaml.safe_load(BENCH.read_text())
    tree["messages"][0]["fields"].append({"key": "seq", "name": "Seq", "searchLocation": "body", "jsonPath": "seq",
                                          "storageType": "string", "parsedStringFieldType": "string"})
    tree["dataStreams"] = [
        {"key": "history", "name": "History", "fields": [
            {"key": "seq", "name": "Seq", "fieldName": "seq", "fieldType": "string", "isRequired": True},
            {"key": "temp", "name": "Temperature", "fieldName": "temperature", "fieldType": "decimal",
             "maxValue": 50},
            {"key": "hum", "name": "Humidity", "fieldName": "humidity", "fieldType": "integer"},
            {"key": "mode", "name": "Mode", "fieldName": "mode", "fieldType": "string"}]},
        {"key": "audit", "name": "Audit", "timestampFieldName": "at", "deviceIdFieldName": "sensor",
         "dateStorageFormat": "epoch", "fields": [
             {"key": "note", "name": "Note", "fieldName": "note", "fieldType": "string"},
             {"key": "level", "name": "Level", "fieldName": "level", "fieldType": "integer"}]},
    ]
    route = tree["solution"]["deviceConfigurations"][0]["routes"][0]
    translate = next(s for s in route["steps"] if s["id"] == "translate")
    translate["secondary"] = [{"to": "hist", "mappings": {"seq": "seq", "temperature": "temp"}}]
    workflow = next(s for s in route["steps"] if s["id"] == "workflow")
    workflow["secondary"] = [{"to": "hist", "mappings": {"humidity": "hum"}}]  # a workflow attribute
    route["steps"].append({"id": "hist", "type": "datastream", "module": "history"})
    tree["workflows"][0]["postHandlerScript"] = POST_HANDLER
    return load_solution_report(yaml.safe_dump(tree).encode(), source="test", env={}).document


class Sink:
    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    def record_message(self, rec: MessageRecord, on_commit: Any = None) -> None:
        self.records.append(rec)
        if on_commit is not None:
            on_commit()  # committed at once here; the stream queue decides when the ack runs

    async def writable(self) -> None:
        return None


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Dispatcher, StreamService, Sink]]:
    doc = solution()
    async with DataStreams(tmp_path) as ds:
        service = ds.service_for(doc)
        await service.start()
        sink = Sink()
        registry = Registry([Device(device_id="d0001", device_configuration="sensor")])
        d = Dispatcher(doc, registry, sink, Counters(), build_engines(doc, build_solution_scripts(doc)), {},
                       streams=service)
        try:
            yield d, service, sink
        finally:
            await service.stop()


def message(seq: str, temperature: float, humidity: int, acks: list[str] | None = None) -> InboundMessage:
    body = {"seq": seq, "ts": 1.0, "temperature": temperature, "humidity": humidity, "mode": "auto"}
    msg = InboundMessage(listener="mqttin", payload=orjson.dumps(body), topic="bench/d0001/q1",
                         received_at=1_767_225_600.0 + int(seq[1:]))
    if acks is not None:
        msg.ack = lambda: acks.append(seq)
    return msg


async def rows(service: StreamService, stream: str, count: int) -> list[dict[str, Any]]:
    for _ in range(500):
        got = await service.read(stream, None, None, None, 100)
        if len(got) >= count and all(s["depth"] == 0 for s in service.status()):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{stream}: {got}")


async def test_route_step_and_scripts_write_rows(running: tuple[Dispatcher, StreamService, Sink]) -> None:
    d, service, sink = running
    acks: list[str] = []
    for i, (t, h) in enumerate([(21.5, 40), (22.0, 41), (23.0, 77)]):
        assert d.handle(message(f"s{i}", t, h, acks)).status is PemStatus.COMPLETED
    assert len(sink.records) == 3 and acks == []  # record committed, rows not yet in the durable queue
    history = await rows(service, "history", 3)
    assert [(r["seq"], r["temperature"], r["humidity"]) for r in history] == [
        ("s2", 23.0, 77), ("s1", 22.0, 41), ("s0", 21.5, 40)]  # newest first; humidity from the workflow
    assert history[0]["deviceId"] == "d0001" and history[0]["timeStamp"] == "2026-01-01T00:00:02.000Z"
    assert [r["mode"] for r in history] == [None, None, "checked"]  # updateDataStream matched humidity 40
    audit = await rows(service, "audit", 3)
    assert audit[0] == {"sensor": "d0001", "at": 1_767_225_602, "note": "temp 23", "level": 77}
    assert sorted(acks) == ["s0", "s1", "s2"]  # acked once the rows were in the durable queue


async def test_a_row_breaking_the_fields_is_a_dead_letter_and_writes_nothing(
    running: tuple[Dispatcher, StreamService, Sink],
) -> None:
    d, service, _ = running
    rec = d.handle(message("s5", 51.0, 40))  # temperature above the history stream's maximum of 50
    assert rec.status is PemStatus.FAILED and rec.stage == "datastream"
    assert rec.error == "datastream_row_invalid: data stream history, field temperature: 51.0 is above the maximum 50"
    rec = d.handle(message("s6", 20.0, 95))  # the script writes level "high" to an integer field
    assert rec.status is PemStatus.FAILED
    assert rec.error == "datastream_row_invalid: data stream audit, field level: 'high' is not a number"
    assert d.handle(message("s7", 20.0, 50)).status is PemStatus.COMPLETED
    assert [r["seq"] for r in await rows(service, "history", 1)] == ["s7"]
    assert [r["level"] for r in await rows(service, "audit", 1)] == [50]
