"""A compiled route with data-stream steps (issue 13 item 6) writes the rows the general path writes.

Two dispatchers on the same solution, one with compiled routes and one without, each with its own registry,
record sink, counting clock and stream queue, take the same messages: records (dead letters included), device
states, counters, the queued rows (same items, same order) and when each message is acknowledged (after the
queue's commit when it queued rows) must be equal. The values break the streams' checks (required, min/max,
whole numbers, types) and fill a stream's queue; the routes the compiler must refuse say why.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from bench.streams import streams_solution
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage, PemStatus
from runtime.core.pipeline.compiled import CompiledRoutes
from runtime.core.solution.loader import load_solution_report
from runtime.core.solution.model import SolutionDocument
from runtime.core.streams import specs_of
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters
from runtime.services.streams import StreamService
from tests.support.devices import Registry
from tests.unit.pipeline.test_compiled_route import Sink, outcome, unchecked

SOLUTION = """
schemaVersion: 1
instance: { key: t, name: T, workingStorage: local, deviceRepository: { key: repo, repositoryType: local } }
solution:
  key: t
  name: T
  version: "1.0"
  defaultListener: mqttin
  listeners:
    - { key: mqttin, name: In, listenerType: mqttclient, contentType: json, hostName: 127.0.0.1,
        connectToPort: 1883, anonymous: true, mqttSubscriptions: [ { topic: "dev/#", qos: qos0 } ] }
  planner:
    key: p
    name: P
    deviceIdParsers: [ { key: deviceid, name: D, searchLocation: topic, topicLocator: "dev/{deviceid}/*" } ]
    messageTypeIdParsers: [ { key: msgtype, name: T, searchLocation: topic, topicLocator: "dev/*/{msgtype}" } ]
  deviceConfigurations:
    - key: sensor
      name: Sensor
      routes:
        - key: two
          name: Two streams
          isDefault: true
          messageDefinition: tele
          steps:
            - id: t
              type: inputtranslator
              module: mt
              next: { to: w, mappings: { temperature: temperature, humidity: humidity } }
              secondary:
                - { to: d1, mappings: { seq: seq, temperature: temp, humidity: hum } }
                - { to: d2, mappings: { seq: note, humidity: level } }
            - { id: w, type: workflow, module: wf }
            - { id: d1, type: datastream, module: history }
            - { id: d2, type: datastream, module: audit }
        - key: fromworkflow
          name: From the workflow
          messageDefinition: wfmsg
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { temperature: temperature } } }
            - { id: w, type: workflow, module: wf, secondary: [ { to: d, mappings: { temperature: temp } } ] }
            - { id: d, type: datastream, module: history }
        - key: byname
          name: By name
          messageDefinition: named
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { temperature: temperature } },
                secondary: [ { to: d } ] }
            - { id: w, type: workflow, module: wf }
            - { id: d, type: datastream, module: history }
        - key: nostream
          name: No such stream
          messageDefinition: gone
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { temperature: temperature } },
                secondary: [ { to: d, mappings: { temperature: temp } } ] }
            - { id: w, type: workflow, module: wf }
            - { id: d, type: datastream, module: nosuchstream }

messages:
  - key: tele
    name: Tele
    messageId: tele
    contentType: json
    fields:
      - { key: seq, name: S, jsonPath: seq, storageType: string, parsedStringFieldType: string }
      - { key: temperature, name: T, jsonPath: temperature, storageType: decimal }
      - { key: humidity, name: H, jsonPath: humidity, storageType: integer }
  - { key: wfmsg, name: W, messageId: wfmsg, contentType: json,
      fields: [ { key: temperature, name: T, jsonPath: temperature, storageType: decimal } ] }
  - { key: named, name: N, messageId: named, contentType: json,
      fields: [ { key: temperature, name: T, jsonPath: temperature, storageType: decimal } ] }
  - { key: gone, name: G, messageId: gone, contentType: json,
      fields: [ { key: temperature, name: T, jsonPath: temperature, storageType: decimal } ] }

inputTranslators:
  - { key: mt, name: MT, inputTranslatorType: message }
dataStreams:
  - key: history
    name: History
    streamType: builtin
    fields:
      - { key: seq, name: Seq, fieldName: seq, fieldType: string, isRequired: true }
      - { key: temp, name: Temperature, fieldName: temperature, fieldType: decimal, numberDecimalPoint: 2,
          minValue: -40, maxValue: 50 }
      - { key: hum, name: Humidity, fieldName: humidity, fieldType: integer, minValue: 0, maxValue: 100 }
  - key: audit
    name: Audit
    streamType: pointarray
    timestampFieldName: at
    deviceIdFieldName: sensor
    dateStorageFormat: epoch
    fields:
      - { key: note, name: Note, fieldName: note, fieldType: string }
      - { key: level, name: Level, fieldName: level, fieldType: decimal, maxValue: 90 }

workflows:
  - key: wf
    name: W
    inputs:
      - { key: temperature, name: T, inputType: decimal,
          outgoingConnections: [ { nodeKey: temp, nodeType: attribute } ] }
      - { key: humidity, name: H, inputType: integer, outgoingConnections: [ { nodeKey: hum, nodeType: attribute } ] }
    attributes:
      - { key: temp, name: T, attributeType: decimal }
      - { key: hum, name: H, attributeType: integer }
"""

REFUSED = {
    "sensor/fromworkflow": "the data-stream step to history takes values other than message fields",
    "sensor/byname": "the data-stream step to history takes values other than message fields",
    "sensor/nostream": "data stream nosuchstream is not running",
}


class Queue:
    """The stream queue's two calls the dispatcher makes: ``put`` (bounded, counted) and ``after_commit`` (held
    until ``commit``, as the durable queue holds it until its rows are in the file)."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.held: list[Callable[[], None]] = []
        self.overflow: dict[str, int] = {}
        self.listeners: list[Callable[[set[str]], None]] = []

    def put(self, stream: str, item: dict[str, Any]) -> bool:
        if sum(1 for s, _ in self.items if s == stream) >= self.max_rows:
            self.overflow[stream] = self.overflow.get(stream, 0) + 1
            return False
        self.items.append((stream, item))
        return True

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.held.append(callback)

    def commit(self) -> None:
        held, self.held = self.held, []
        for callback in held:
            callback()


class Run:
    def __init__(self, doc: SolutionDocument, devices: list[Device], *, compiled: bool, max_rows: int) -> None:
        self.registry, self.sink, self.counters = Registry(devices), Sink(), Counters()
        self.queue = Queue(max_rows)
        specs = specs_of(doc)
        self.streams = StreamService(specs, dict.fromkeys(specs), self.queue)  # type: ignore[arg-type]  # no sinks: nothing drains here
        self.acked: list[str] = []
        clock = itertools.count(1_700_000_000.0, 0.25)
        self.dispatcher = Dispatcher(doc, self.registry, self.sink, self.counters,  # type: ignore[arg-type]  # the registry's two methods
                                     build_engines(doc, {}), {}, clock=lambda: next(clock), compiled_routes=compiled,
                                     streams=self.streams)

    def send(self, messages: list[InboundMessage]) -> None:
        for m in messages:
            copy = InboundMessage(m.listener, m.payload, m.topic, m.path, m.method, dict(m.headers), dict(m.query),
                                  id=m.id, received_at=m.received_at, ack=lambda i=m.id: self.acked.append(i))
            self.dispatcher.handle(copy)


DEVICES = [Device("d1", "sensor"), Device("d2", "sensor", attributes={"temp": 3.0, "other": "kept"})]
BODIES: list[Mapping[str, object]] = [
    {"seq": "a", "temperature": 21.5, "humidity": 40},
    {"seq": "b", "temperature": 21.456, "humidity": 40.0},  # rounded to 2 decimals; a whole float as integer
    {"seq": "c", "temperature": 20, "humidity": "41"},  # an int for the decimal, text the message converts
    {"seq": "d", "temperature": 51.0, "humidity": 40},  # over history's maximum: a dead letter
    {"seq": "e", "temperature": -40.0, "humidity": 0},  # on both minimums
    {"seq": "f", "temperature": 50, "humidity": 100},  # on both maximums (audit's level: 100 > 90: dead letter)
    {"seq": "g", "temperature": 10.0, "humidity": 95},  # audit's level over 90: a dead letter
    {"seq": "h", "temperature": 10.0, "humidity": -1},  # under history's minimum
    {"temperature": 10.0, "humidity": 5},  # seq missing: required by history
    {"seq": "", "temperature": 10.0, "humidity": 5},  # seq empty: required
    {"seq": None, "temperature": None, "humidity": None},
    {"seq": "i"},  # temperature and humidity missing: not required
    {"seq": "j", "temperature": "12.5", "humidity": 7},
    {"seq": "l", "temperature": 1e300, "humidity": 7},
    {"seq": "m", "temperature": True, "humidity": 7},
    {"seq": "n", "temperature": 12.0, "humidity": 12.5},  # not whole: the message field refuses it
    {"seq": 17, "temperature": 12.0, "humidity": 7},  # a number for a text field
    {"seq": "o", "temperature": 12.0, "humidity": 7, "extra": [1, 2]},
    {"seq": "p" * 300, "temperature": 49.999, "humidity": 90},
]


RAW = [b'{"seq": "k", "temperature": 1e999, "humidity": 7}', b'{"seq": "q", "temperature": NaN}', b"[1]"]


def messages() -> list[InboundMessage]:
    out = []
    n = itertools.count()
    for device in ("d1", "d2", "d9"):
        for kind in ("tele", "wfmsg", "named", "gone"):
            for payload in [orjson.dumps(b) for b in BODIES] + RAW:
                out.append(InboundMessage("mqttin", payload, topic=f"dev/{device}/{kind}", id=f"m{next(n)}",
                                          received_at=1_767_225_600.0 + next(n) * 0.5))
        out.append(InboundMessage("mqttin", b"not json", topic=f"dev/{device}/tele", id=f"m{next(n)}",
                                  received_at=1_767_225_600.0))
    return out


def run_both(max_rows: int) -> tuple[Run, Run]:
    doc = unchecked(SOLUTION)
    msgs = messages()
    compiled = Run(doc, DEVICES, compiled=True, max_rows=max_rows)
    general = Run(doc, DEVICES, compiled=False, max_rows=max_rows)
    compiled.send(msgs)
    general.send(msgs)
    assert general.counters.compiled == 0
    return compiled, general


def test_compiled_stream_routes_queue_the_general_paths_rows_records_and_acks() -> None:
    compiled, general = run_both(max_rows=10_000)
    assert outcome(compiled) == outcome(general)
    assert compiled.queue.items == general.queue.items and compiled.queue.items
    assert compiled.acked == general.acked  # nothing that queued rows is acked before the queue's commit
    before = len(compiled.acked)
    compiled.queue.commit()
    general.queue.commit()
    assert compiled.acked == general.acked and len(compiled.acked) > before
    assert sorted(compiled.acked) == sorted(m.id for m in messages())  # each message acked once
    c = compiled.counters
    assert c.compiled >= 15 and c.compiled_fallback > 100  # both paths, many times
    failed = [r for r in compiled.sink.records if r.status is PemStatus.FAILED and r.stage == "datastream"]
    assert {r.error.split(",")[0] for r in failed if r.error} == {
        "datastream_row_invalid: data stream history", "datastream_row_invalid: data stream audit"}
    assert len(failed) >= 10
    first = compiled.queue.items[:2]
    assert first == [("history", {"op": "add", "at": 1_767_225_600.5,
                                  "row": {"deviceId": "d1", "seq": "a", "temperature": 21.5, "humidity": 40}}),
                     ("audit", {"op": "add", "at": 1_767_225_600.5,
                                "row": {"sensor": "d1", "note": "a", "level": 40.0}})]


def test_a_full_stream_queue_gives_the_same_warnings_on_both_paths() -> None:
    compiled, general = run_both(max_rows=5)
    assert outcome(compiled) == outcome(general)
    assert compiled.queue.items == general.queue.items and len(compiled.queue.items) == 10
    assert compiled.queue.overflow == general.queue.overflow and compiled.queue.overflow
    full = [r for r in compiled.sink.records if r.status is PemStatus.COMPLETED_WITH_WARNINGS
            and any("queue full, row refused (counted)" in w for w in (r.detail or {})["warnings"])]
    assert len(full) >= 5
    compiled.queue.commit()
    general.queue.commit()
    assert compiled.acked == general.acked


def test_stream_routes_the_compiler_refuses_say_why() -> None:
    doc = unchecked(SOLUTION)
    engines = build_engines(doc, {})
    routes = CompiledRoutes(doc, engines, streams=specs_of(doc))
    assert routes.compiled == ["sensor/two"] and routes.refused == REFUSED
    without = CompiledRoutes(doc, engines)  # no stream service: the general path warns "not running"
    assert without.refused["sensor/two"] == "data stream history is not running"


def test_the_bench_streams_route_compiles_and_queues_the_general_paths_rows(tmp_path: Path) -> None:
    doc = load_solution_report(streams_solution(tmp_path / "s.yaml", postgres=("127.0.0.1", 1)).read_bytes(),
                               source="bench", env={}).document
    devices = [Device(f"d{i}", "sensor") for i in range(3)]
    bodies = [{"seq": f"r-{i}", "ts": 1.5 + i, "temperature": 21.5 + i * 0.001, "humidity": 95 + i,
               "mode": ["auto", "manual", "other"][i % 3]} for i in range(9)]  # humidity 101+: a dead letter
    bodies += [{"seq": "x", "temperature": "hot"}, {"seq": 5, "humidity": 3}, {"temperature": 3.0}]
    msgs = [InboundMessage("mqttin", orjson.dumps(b), topic=f"bench/d{i % 4}/q0", id=f"m{i}", received_at=1.0 + i)
            for i, b in enumerate(bodies)]
    compiled = Run(doc, devices, compiled=True, max_rows=1000)
    general = Run(doc, devices, compiled=False, max_rows=1000)
    compiled.send(msgs)
    general.send(msgs)
    assert outcome(compiled) == outcome(general)
    assert compiled.queue.items == general.queue.items and len(compiled.queue.items) >= 4
    assert compiled.acked == general.acked
    assert compiled.counters.compiled >= 4 and compiled.dispatcher._compiled is not None
    assert compiled.dispatcher._compiled.compiled == ["sensor/telemetry"]
