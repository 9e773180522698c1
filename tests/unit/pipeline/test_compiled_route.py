"""A compiled route (issue 17) gives exactly what the general path gives, or hands the message over.

Two dispatchers on the same solution, one with compiled routes and one without, each with its own registry and
its own counting clock, take the same messages in the same order: every record (dead letters included), every
stored device state and the counters must be equal. The messages cover every field type, missing, empty, null
and invalid values, state machines, bodies that are not JSON objects, unknown devices and routes, and the
routes the compiler must refuse (each with its reason).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from runtime.adapters.scripting.engine import build_solution_scripts
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage, MessageRecord, PemStatus
from runtime.core.pipeline.compiled import CompiledRoutes
from runtime.core.solution.loader import load_solution_report
from runtime.core.solution.model import SolutionDocument
from runtime.core.solution.native import native_document, parse_tree
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters, RuntimeMetrics
from runtime.settings import load_settings
from tests.support.devices import Registry

ROOT = Path(__file__).resolve().parents[3]

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
    deviceIdParsers:
      - { key: deviceid, name: D, searchLocation: topic, topicLocator: "dev/{deviceid}/*" }
      - { key: deviceid, name: P, searchLocation: path, pathLocator: "/dev/{deviceid}/*" }
      - { key: hdr, name: H, searchLocation: headers, headerName: X-Device }
    messageTypeIdParsers:
      - { key: kind, name: K, searchLocation: body, contentType: json, jsonPath: kind, regExValidation: "^[a-z]+$" }
      - { key: msgtype, name: T, searchLocation: topic, topicLocator: "dev/*/{msgtype}" }
  deviceConfigurations:
    - key: sensor
      name: Sensor
      routes:
        - key: full
          name: Full
          isDefault: true
          messageDefinition: full
          steps:
            - { id: s, type: sentinel, module: anonymous, next: { to: t } }
            - id: t
              type: inputtranslator
              module: mt
              next:
                to: w
                mappings: { temp: temp, hum: hum, label: label, on: on, flag: flag, state: state, when: when,
                            where: where, nested: nested, count: count, scaled: scaled, txt: txtnum, mode: mode,
                            go: go, part: part, q: q, hdr: hdr, power: power, level: level }
            - { id: w, type: workflow, module: wfa, next: { to: o } }
            - { id: o, type: outputtranslator, module: ot, next: { to: x } }
            - { id: x, type: transmitter, module: tx }
        - key: two
          name: Two workflows
          messageDefinition: two
          steps:
            - { id: s, type: sentinel, module: anonymous, next: { to: t } }
            - id: t
              type: inputtranslator
              module: mt
              next: { to: w1, mappings: { temp: temp, mode: mode, bd: hum, alt: hum } }
              secondary: [ { to: w2, mappings: { temp: temp, mode: mode } } ]
            - { id: w1, type: workflow, module: wfa }
            - { id: w2, type: workflow, module: wfb }
        - key: scripted
          name: Scripted
          messageDefinition: scripted
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { temp: temp } } }
            - { id: w, type: workflow, module: wfs }
        - key: secure
          name: Secure
          messageDefinition: secure
          steps:
            - { id: s, type: sentinel, module: keyed, next: { to: t } }
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { temp: temp } } }
            - { id: w, type: workflow, module: wfa }
        - key: stream
          name: Stream
          messageDefinition: stream
          steps:
            - id: t
              type: inputtranslator
              module: mt
              next: { to: w, mappings: { temp: temp } }
              secondary: [ { to: d, mappings: { temp: temp } } ]
            - { id: w, type: workflow, module: wfa }
            - { id: d, type: datastream, module: ds }
        - key: text
          name: Text
          messageDefinition: text
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { a: temp } } }
            - { id: w, type: workflow, module: wfa }
        - key: selector
          name: Selector
          messageDefinition: selector
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { temp: temp } } }
            - { id: w, type: workflow, module: wfa }
        - key: alarm
          name: Alarm
          messageDefinition: alarm
          steps:
            - { id: t, type: inputtranslator, module: mt, next: { to: w, mappings: { mode: mode } } }
            - { id: w, type: workflow, module: wfalarm }
        - key: noworkflow
          name: No workflow
          messageDefinition: bare
          steps:
            - { id: t, type: inputtranslator, module: mt }

messages:
  - key: full
    name: Full
    messageId: full
    contentType: json
    fields:
      - { key: temp, name: T, searchLocation: body, jsonPath: temp, storageType: decimal,
          parsedStringFieldType: realnumber, isRequired: true }
      - { key: hum, name: H, jsonPath: hum, storageType: integer, parsedStringFieldType: wholenumber,
          minValue: 0, maxValue: 100 }
      - { key: label, name: L, jsonPath: label, storageType: string, regExValidation: "^[A-Za-z ]*$" }
      - { key: on, name: O, jsonPath: on, storageType: true-false, parsedStringFieldType: boolean }
      - { key: flag, name: F, jsonPath: flag, storageType: true-false }
      - { key: state, name: S, jsonPath: state, storageType: state, stateSet: onoff }
      - { key: when, name: W, jsonPath: when, storageType: datetime }
      - { key: where, name: G, jsonPath: where, storageType: geolocation }
      - { key: nested, name: N, jsonPath: "$.a.b", storageType: integer }
      - { key: count, name: C, jsonPath: count, storageType: integer, defaultValue: "5" }
      - { key: scaled, name: X, jsonPath: scaled, storageType: decimal, decimalScaler: 0.5 }
      - { key: txt, name: Tx, jsonPath: txt, storageType: string }
      - { key: mode, name: M, jsonPath: mode, storageType: string, parsedStringFieldType: string }
      - { key: go, name: Go, jsonPath: go, storageType: string }
      - { key: part, name: Part, searchLocation: topic, topicLocator: "dev/*/{part}" }
      - { key: q, name: Q, searchLocation: querystring, queryStringField: q, storageType: integer }
      - { key: hdr, name: Hd, searchLocation: headers, headerName: X-Note }
      - { key: power, name: Pw, jsonPath: power, storageType: valuewithunit, unitSet: watts }
      - { key: level, name: Lv, jsonPath: level, storageType: integer, parsedStringFieldType: realnumber }
  - key: two
    name: Two
    messageId: two
    contentType: json
    fields:
      - { key: temp, name: T, jsonPath: temp, storageType: decimal }
      - { key: mode, name: M, jsonPath: mode, storageType: string }
      - { key: bd, name: B, jsonPath: bd, storageType: integer, defaultValue: "x" }
      - { key: alt, name: A, jsonPath: alt, storageType: string }
  - { key: scripted, name: S, messageId: scripted, contentType: json,
      fields: [ { key: temp, name: T, jsonPath: temp, storageType: decimal } ] }
  - { key: secure, name: S, messageId: secure, contentType: json,
      fields: [ { key: temp, name: T, jsonPath: temp, storageType: decimal } ] }
  - { key: stream, name: S, messageId: stream, contentType: json,
      fields: [ { key: temp, name: T, jsonPath: temp, storageType: decimal } ] }
  - { key: text, name: S, messageId: text, contentType: delimited, delimiter: ",",
      fields: [ { key: a, name: A, delimitedIndex: 1, storageType: decimal } ] }
  - { key: selector, name: S, messageId: selector, contentType: json,
      fields: [ { key: temp, name: T, jsonPath: temp, storageType: decimal, regExValueSelector: "(\\\\d+)" } ] }
  - { key: alarm, name: S, messageId: alarm, contentType: json,
      fields: [ { key: mode, name: M, jsonPath: mode, storageType: string } ] }
  - { key: bare, name: S, messageId: bare, contentType: json, fields: [] }

stateSets:
  - { key: onoff, name: OnOff, states: [ { key: on, name: On, enumValue: 1 }, { key: off, name: Off, enumValue: 0 } ] }
unitSets:
  - { key: watts, name: Watts, units: [ { key: w, name: W, abbreviation: W, isDefault: true },
                                        { key: kw, name: kW, abbreviation: kW, conversionType: factor,
                                          conversionFactor: 1000 } ] }
sentinels:
  - { key: anonymous, name: A, securityFields: [] }
  - { key: keyed, name: K, securityFields: [ { key: k, name: K, fieldType: accesskey,
                                               locator: { key: k, name: K, searchLocation: headers, headerName: x-key } } ] }
inputTranslators:
  - { key: mt, name: MT, inputTranslatorType: message }
outputTranslators:
  - { key: ot, name: OT, outputTranslatorType: message }
dataStreams:
  - { key: ds, name: DS, streamType: pointarray, fields: [ { key: temp, name: T, fieldType: decimal } ] }

workflows:
  - key: wfa
    name: A
    inputs:
      - { key: temp, name: T, inputType: decimal, outgoingConnections: [ { nodeKey: temp, nodeType: attribute },
                                                                          { nodeKey: templabel, nodeType: attribute } ] }
      - { key: hum, name: H, inputType: integer, outgoingConnections: [ { nodeKey: hum, nodeType: attribute },
                                                                         { nodeKey: humf, nodeType: attribute } ] }
      - { key: label, name: L, inputType: string, outgoingConnections: [ { nodeKey: label, nodeType: attribute } ] }
      - { key: on, name: O, inputType: true-false, outgoingConnections: [ { nodeKey: power, nodeType: statemachine } ] }
      - { key: flag, name: F, inputType: string, outgoingConnections: [ { nodeKey: flag, nodeType: attribute } ] }
      - { key: state, name: S, inputType: state, stateSet: onoff,
          outgoingConnections: [ { nodeKey: st, nodeType: attribute } ] }
      - { key: when, name: W, inputType: datetime, outgoingConnections: [ { nodeKey: when, nodeType: attribute } ] }
      - { key: where, name: G, inputType: geolocation, outgoingConnections: [ { nodeKey: where, nodeType: attribute } ] }
      - { key: nested, name: N, inputType: decimal, outgoingConnections: [ { nodeKey: nested, nodeType: attribute } ] }
      - { key: count, name: C, inputType: integer, outgoingConnections: [ { nodeKey: count, nodeType: attribute } ] }
      - { key: scaled, name: X, inputType: decimal, outgoingConnections: [] }
      - { key: txtnum, name: Tn, inputType: integer, outgoingConnections: [ { nodeKey: txtnum, nodeType: attribute } ] }
      - { key: mode, name: M, inputType: string, outgoingConnections: [ { nodeKey: mode, nodeType: statemachine } ] }
      - { key: go, name: Go, inputType: string,
          outgoingConnections: [ { nodeKey: strict, nodeType: statemachine, event: manual } ] }
      - { key: part, name: P, inputType: string, outgoingConnections: [ { nodeKey: part, nodeType: attribute } ] }
      - { key: q, name: Q, inputType: integer, outgoingConnections: [ { nodeKey: q, nodeType: attribute } ] }
      - { key: hdr, name: Hd, inputType: string, outgoingConnections: [ { nodeKey: hdr, nodeType: attribute } ] }
      - { key: power, name: Pw, inputType: decimal, outgoingConnections: [ { nodeKey: power, nodeType: attribute } ] }
      - { key: level, name: Lv, inputType: integer, outgoingConnections: [ { nodeKey: level, nodeType: attribute } ] }
    attributes:
      - { key: temp, name: T, attributeType: decimal }
      - { key: templabel, name: TL, attributeType: string }
      - { key: hum, name: H, attributeType: integer }
      - { key: humf, name: HF, attributeType: decimal }
      - { key: label, name: L, attributeType: string }
      - { key: flag, name: F, attributeType: true-false }
      - { key: st, name: S, attributeType: state, stateSet: onoff }
      - { key: when, name: W, attributeType: datetime }
      - { key: where, name: G, attributeType: geolocation }
      - { key: nested, name: N, attributeType: integer }
      - { key: count, name: C, attributeType: integer }
      - { key: txtnum, name: Tn, attributeType: integer }
      - { key: part, name: P, attributeType: string }
      - { key: q, name: Q, attributeType: integer }
      - { key: hdr, name: Hd, attributeType: string }
      - { key: power, name: Pw, attributeType: decimal }
      - { key: level, name: Lv, attributeType: integer }
    stateMachines:
      - key: mode
        name: Mode
        states:
          - { key: automatic, name: A, isInitialState: true, transitions: [ { event: manual, newState: manualmode },
                                                                           { event: "true", newState: manualmode },
                                                                           { event: stay } ] }
          - { key: manualmode, name: M, transitions: [ { event: auto, newState: automatic } ] }
      - key: strict
        name: Strict
        exceptionOnUnhandledEvent: true
        events: [ auto, manual ]
        states:
          - { key: automatic, name: A, isInitialState: true, transitions: [ { event: manual, newState: manualmode } ] }
          - { key: manualmode, name: M, transitions: [ { event: auto, newState: automatic } ] }
      - key: power
        name: Power
        states:
          - { key: off, name: Off, isInitialState: true, transitions: [ { event: "true", newState: on } ] }
          - { key: on, name: On, transitions: [ { event: "false", newState: off } ] }
  - key: wfb
    name: B
    inputs:
      - { key: temp, name: T, inputType: decimal, outgoingConnections: [ { nodeKey: temp2, nodeType: attribute } ] }
      - { key: mode, name: M, inputType: string, outgoingConnections: [ { nodeKey: mode, nodeType: statemachine } ] }
    attributes:
      - { key: temp2, name: T2, attributeType: string }
      - { key: dflt, name: D, attributeType: integer, defaultValue: "7" }
    stateMachines:
      - key: mode
        name: Mode
        states:
          - { key: automatic, name: A, isInitialState: true, transitions: [ { event: manual, newState: manualmode } ] }
          - { key: manualmode, name: M, transitions: [ { event: auto, newState: automatic } ] }
  - key: wfs
    name: S
    preHandlerScript: "function preHandler() { }"
    inputs: [ { key: temp, name: T, inputType: decimal, outgoingConnections: [ { nodeKey: temp, nodeType: attribute } ] } ]
    attributes: [ { key: temp, name: T, attributeType: decimal } ]
  - key: wfalarm
    name: Alarm
    inputs: [ { key: mode, name: M, inputType: string, outgoingConnections: [ { nodeKey: mode, nodeType: statemachine } ] } ]
    stateMachines:
      - key: mode
        name: Mode
        states:
          - { key: automatic, name: A, isInitialState: true, transitions: [ { event: manual, newState: manualmode } ] }
          - { key: manualmode, name: M, isAlarmState: true, errorCode: E_MANUAL,
              transitions: [ { event: auto, newState: automatic } ] }
"""

SCRIPTED = ("workflow {} does not run straight (scripts, alarm states or mappings the straight run does not "
            "cover)")
REFUSED = {
    "sensor/scripted": "workflow wfs does not run straight",
    "sensor/secure": "sentinel keyed checks security fields",
    "sensor/stream": "data stream ds is not running",
    "sensor/text": "message text is delimited, not json",
    "sensor/selector": "field temp uses a value selector",
    "sensor/alarm": "workflow wfalarm does not run straight",
    "sensor/noworkflow": "the route runs no workflow",
}


def load(text: str | bytes, source: str = "test") -> SolutionDocument:
    report = load_solution_report(text.encode() if isinstance(text, str) else text, source=source,
                                  env=dict(os.environ))
    return report.document


def unchecked(text: str) -> SolutionDocument:
    """The test solution, read but not validated: validation refuses a mapping between types (decimal input ->
    string attribute...), which the general path still converts; the compiled route must convert them alike."""
    return native_document(parse_tree(text.encode()), env={}, read_file=lambda path: b"")


class Sink:
    def __init__(self) -> None:
        self.records: list[MessageRecord] = []
        self.acked: list[str] = []

    def record_message(self, rec: MessageRecord, on_commit: Any = None) -> None:
        self.records.append(rec)
        if on_commit is not None:
            on_commit()

    async def writable(self) -> None:
        return None


class Run:
    """One dispatcher, its registry, record sink, counters and counting clock."""

    def __init__(self, doc: SolutionDocument, devices: list[Device], *, compiled: bool,
                 counters: Counters | None = None, scripts: bool = True) -> None:
        self.registry, self.sink, self.counters = Registry(devices), Sink(), counters or Counters()
        clock = itertools.count(1_700_000_000.0, 0.25)
        self.dispatcher = Dispatcher(doc, self.registry, self.sink, self.counters,  # type: ignore[arg-type]  # the registry's two methods
                                     build_engines(doc, build_solution_scripts(doc) if scripts else {}), {},
                                     clock=lambda: next(clock), compiled_routes=compiled)

    def send(self, messages: list[InboundMessage]) -> None:
        for m in messages:
            copy = InboundMessage(m.listener, m.payload, m.topic, m.path, m.method, dict(m.headers), dict(m.query),
                                  id=m.id, received_at=m.received_at, ack=lambda: None)
            self.dispatcher.handle(copy)


def outcome(run: Run) -> tuple[Any, ...]:
    records = [{**{k: getattr(r, k) for k in r.__dataclass_fields__}, "processing_ms": None} for r in run.sink.records]
    c = run.counters
    return records, run.registry.saved, run.registry.devices, (c.processed, c.failed, c.dead_lettered,
                                                               dict(c.failed_by_stage))


def both(doc: SolutionDocument, devices: list[Device], messages: list[InboundMessage], *,
         scripts: bool = True) -> tuple[Run, Run]:
    compiled = Run(doc, devices, compiled=True, scripts=scripts)
    general = Run(doc, devices, compiled=False, scripts=scripts)
    compiled.send(messages)
    general.send(messages)
    assert general.counters.compiled == 0 and general.counters.compiled_fallback == 0
    return compiled, general


BIG = "x" * (70 * 1024)
DEVICES = [
    Device("d1", "sensor"),
    Device("d2", "sensor", attributes={"temp": 1.5, "old": "kept", "gone": None},
           state_machines={"mode": "manualmode", "strict": "automatic", "power": "on"},
           properties={"p": 1, "q": None}, property_bag={"b": [1]}, latitude=1.0, longitude=2.0, name="two",
           status="Ready", last_seen=5.0, created_at=1.0, updated_at=2.0),
    Device("d3", "sensor", state_machines={"mode": "nosuchstate"}),  # the general run warns: hand over
    Device("d4", "sensor", state_machines={"strict": "manualmode"}),  # the strict machine refuses "manual"
    Device("d5", "sensor", attributes={"dflt": 1}),  # has wfb's defaulted attribute
    Device("d6", "sensor", property_bag={"big": BIG}),  # over the size limit: a dead letter
    Device("d7", "nosuchconfig"),
]

GOOD = {"temp": 21.5, "hum": 40, "label": "Hall", "on": True, "flag": True, "state": "on",
        "when": "2024-01-02T03:04:05Z", "where": "1.5,2.5", "a": {"b": 3}, "scaled": 3.0, "txt": "12",
        "mode": "manual", "go": "x", "power": "2 kW", "level": 3}
PAYLOADS: list[object] = [
    GOOD,
    {"temp": 21, "hum": 40.0, "mode": "auto", "on": False, "level": 4.0},  # values that need converting
    {"temp": "22.5", "hum": "41", "mode": "other", "flag": "true", "on": "0"},  # text values
    {"temp": 1.0, "hum": 101},  # over the maximum
    {"temp": 1.0, "hum": -1.5},  # not whole
    {"hum": 3},  # the required field missing
    {"temp": None, "hum": None, "mode": None},  # null: absent, the required field missing
    {"temp": "", "label": ""},  # empty: absent
    {"temp": "warm"},  # does not convert
    {"temp": 1e300},  # too large for a decimal
    {"temp": 2, "hum": 2**40},  # out of the integer range
    {"temp": 2, "hum": True},  # a boolean is not an integer
    {"temp": 2, "label": "Hall 9"},  # fails the regex
    {"temp": 2, "state": "maybe"},  # not a state of the set
    {"temp": 2, "state": 1},  # a state set's enum value (not required: refused)
    {"temp": 2, "when": "yesterday"},
    {"temp": 2, "where": "north"},
    {"temp": 2, "a": 5},  # the nested path's parent is not an object
    {"temp": 2, "a": {"b": "7"}},
    {"temp": 2, "txt": "twelve"},  # a string field that is not the integer input's
    {"temp": 2, "mode": True},  # the event is named "true"
    {"temp": 2, "mode": "stay"},  # a transition without a new state
    {"temp": 2, "go": "x"},
    {"temp": 2, "power": 5},
    {"temp": 2, "power": "5 parsecs"},
    {"temp": 2, "level": 2.5},
    {"temp": 2, "count": 9, "scaled": "x"},
    {"temp": 2, "unmapped": [1, 2]},
    {"kind": "two", "temp": 3.5, "mode": "manual"},  # two workflows; bd's default does not convert
    {"kind": "two", "temp": 3.5, "mode": "manual", "bd": 4},  # bd present: both workflows run
    {"kind": "two", "temp": 3.5, "mode": "auto", "bd": 4, "alt": "9"},  # two fields to one input: the last wins
    {"kind": "two", "temp": 3.5, "bd": "x"},
    {"kind": "scripted", "temp": 1.0},
    {"kind": "secure", "temp": 1.0},
    {"kind": "stream", "temp": 1.0},
    {"kind": "selector", "temp": "a12"},
    {"kind": "alarm", "mode": "manual"},
    {"kind": "bare"},
    {"kind": "Two", "temp": 1.0},  # fails the message id's validation: the topic's id
    {"kind": "nosuch", "temp": 1.0},  # no route for it: the default route
    {"kind": 7, "temp": 1.0},
    {"kind": {"x": 1}, "temp": 1.0},
    [1, 2],  # JSON, not an object
    "text",
]
RAW = [b"not json", b"", b"\xef\xbb\xbf" + orjson.dumps(GOOD), b"{'temp': 2, 'mode': 'manual'}", b'{"temp": NaN}',
       b"\xff\xfe"]


def messages() -> list[InboundMessage]:
    out: list[InboundMessage] = []
    bodies = [orjson.dumps(p) for p in PAYLOADS] + RAW
    for device in [*(d.device_id for d in DEVICES), "nobody"]:
        for body in bodies:
            out.append(InboundMessage("mqttin", body, topic=f"dev/{device}/full", received_at=100.0))
        for body in bodies[:8]:
            out.append(InboundMessage("mqttin", body, topic=f"dev/{device}/two", received_at=100.0))
            out.append(InboundMessage("restin", body, path=f"/dev/{device}/x?q=1", method="POST",
                                      query={"q": "12"}, headers={"x-note": "hi", "X-Note": "HI"},
                                      received_at=100.0))
            out.append(InboundMessage("restin", body, path="/elsewhere", query={"q": "x"},
                                      headers={"x-device": device}, received_at=100.0))
    out.append(InboundMessage("mqttin", orjson.dumps(GOOD), topic="dev/d1", received_at=100.0))  # no device id
    out.append(InboundMessage("mqttin", orjson.dumps(GOOD), topic="nuviot/srvr/dvcsrvc/d1/ping", received_at=100.0))
    return out


def test_compiled_routes_give_the_general_paths_records_device_states_and_counters() -> None:
    doc = unchecked(SOLUTION)
    msgs = messages()
    compiled, general = both(doc, DEVICES, msgs)
    assert outcome(compiled) == outcome(general)
    c = compiled.counters
    assert c.compiled > 60 and c.compiled_fallback > 300  # both paths were taken, many times
    assert c.compiled + c.compiled_fallback == len(msgs) - 1  # every message but the system message tried it
    kinds = {r.status for r in compiled.sink.records}
    assert kinds == {PemStatus.COMPLETED, PemStatus.COMPLETED_WITH_WARNINGS, PemStatus.FAILED}
    stages = set(compiled.counters.failed_by_stage)
    assert {"planner", "inputtranslator", "workflow"} <= stages


def test_the_usual_message_takes_the_compiled_route_and_sets_every_type() -> None:
    doc = unchecked(SOLUTION)
    run = Run(doc, [Device("d1", "sensor")], compiled=True)
    run.send([InboundMessage("mqttin", orjson.dumps(GOOD), topic="dev/d1/full", received_at=100.0)])
    assert run.counters.compiled == 1 and run.counters.compiled_fallback == 0
    (rec,) = run.sink.records
    assert (rec.status, rec.device_id, rec.message_id, rec.detail) == (PemStatus.COMPLETED, "d1", "full", None)
    device = run.registry.devices["d1"]
    assert device.attributes == {
        "temp": 21.5, "templabel": "21.5", "hum": 40, "humf": 40.0, "label": "Hall", "flag": True, "st": "on",
        "when": "2024-01-02T03:04:05.000Z", "where": "1.500000,2.500000", "nested": 3, "count": 5, "txtnum": 12,
        "part": "full", "power": 2000.0, "level": 3,
    }
    assert device.state_machines == {"mode": "manualmode", "strict": "manualmode", "power": "on"}
    assert device.last_seen == 1_700_000_000.0 and device.updated_at == 1_700_000_000.25


def test_routes_the_compiler_refuses_say_why() -> None:
    doc = unchecked(SOLUTION)
    routes = CompiledRoutes(doc, build_engines(doc, build_solution_scripts(doc)))
    assert sorted(routes.compiled) == ["sensor/full", "sensor/two"]
    assert {k: v[:len(REFUSED[k])] for k, v in routes.refused.items() if k in REFUSED} == REFUSED
    assert set(routes.refused) == set(REFUSED)
    watched = CompiledRoutes(doc, build_engines(doc, {}), watched_configurations={"sensor"})
    assert not watched.active and watched.refused["sensor/full"] == "device health is watched for this configuration"


def test_a_planner_it_cannot_compile_turns_the_compiled_routes_off() -> None:
    doc = unchecked(SOLUTION.replace('headerName: X-Device }', 'headerName: X-Device, regExValueSelector: "(.*)" }'))
    routes = CompiledRoutes(doc, build_engines(doc, {}))
    assert not routes.active and routes.refused == {"planner": "planner parser hdr uses a value selector"}


def test_the_switch_turns_the_compiled_routes_off_and_metrics_count_both_paths() -> None:
    doc = unchecked(SOLUTION)
    good = InboundMessage("mqttin", orjson.dumps(GOOD), topic="dev/d1/full", received_at=100.0)
    bad = InboundMessage("mqttin", b'{"temp": "warm"}', topic="dev/d1/full", received_at=100.0)
    off = Run(doc, [Device("d1", "sensor")], compiled=False)
    off.send([good, bad])
    assert (off.counters.compiled, off.counters.compiled_fallback, off.counters.processed) == (0, 0, 1)
    metrics = RuntimeMetrics()
    on = Run(doc, [Device("d1", "sensor")], compiled=True, counters=metrics.counters)
    on.send([good, bad, InboundMessage("mqttin", b'{"temp": 3}', topic="dev/d1/full", received_at=100.0)])
    text = generate_latest(metrics.registry).decode()
    assert "nuviot_messages_compiled_total 2.0" in text
    assert "nuviot_messages_compiled_fallback_total 1.0" in text


@pytest.mark.parametrize(("name", "scripts"), [("nuviot-motionhandler-2018.json", True),
                                              ("nuviot-motionhandler-2018.json", False), ("bench", True)])
def test_the_fixtures_run_through_both_paths_alike(name: str, scripts: bool) -> None:
    """The 2018 export (path planner, REST) with its scripts, and without them (its motion route compiles)."""
    if name == "bench":
        doc = load((ROOT / "bench" / "solution.yaml").read_bytes())
        devices = [Device(f"d{i}", "sensor") for i in range(3)]
        bodies = [{"seq": f"r-{i}", "ts": 1.5 + i, "temperature": 21.5 + i, "humidity": 40 + i,
                   "mode": ["auto", "manual", "other"][i % 3]} for i in range(9)]
        bodies += [{"seq": "x", "temperature": "hot"}, {"seq": 5, "humidity": 3}]
        msgs = [InboundMessage("mqttin", orjson.dumps(b), topic=f"bench/d{i % 4}/q0", received_at=1.0)
                for i, b in enumerate(bodies)]
        msgs += [InboundMessage("restin", orjson.dumps(b), path=f"/bench/d{i % 3}/rest", received_at=1.0)
                 for i, b in enumerate(bodies)]
        expected: list[str] = ["sensor/telemetry"]
    else:
        doc = load((ROOT / "tests" / "fixtures" / name).read_bytes(), source=name)
        devices = [Device("m1", "genericmd"), Device("h1", "hottub"),
                   Device("m2", "genericmd", attributes={"motion": True, "counter": 3})]
        bodies = [{"motion": True, "level": 3, "temperature": 21.5, "itemstatus": "on"},
                  {"motion": "false", "level": "4", "temperature": 20},
                  {"status": "ok", "setpoint": 38, "temperature": 37.5, "flow": "on"},
                  {"level": "high"}, {"msgid": "motion001", "motion": 1}]
        msgs = [InboundMessage("restin", orjson.dumps(b), path=f"/sensor/{dev}/{mid}", method="POST",
                               received_at=1.0)
                for dev in ("m1", "h1", "m2", "zz") for mid in ("motion001", "hottubmsg01", "ack", "pumpstatus")
                for b in bodies]
        # with its scripts every route runs the general way, and says why; without them the motion route compiles
        expected = [] if scripts else ["genericmd/routeone"]
    compiled, general = both(doc, devices, msgs, scripts=scripts)
    assert outcome(compiled) == outcome(general)
    routes = CompiledRoutes(doc, build_engines(doc, build_solution_scripts(doc) if scripts else {}))
    assert routes.compiled == expected, routes.refused
    assert (compiled.counters.compiled > 0) is bool(expected)
    if not expected:
        assert routes.refused == {
            "genericmd/routeone": SCRIPTED.format("simplemotion"),
            "genericmd/setpumpstatus": "message setpumpstatus is nocontent, not json",
            "genericmd/pixupload": "message picturetest is media, not json",
            "hottub/statusupdate": "data stream simpletable is not running",
            "hottub/pumpstatus": "message setpumpstatus is nocontent, not json",
        }


def test_the_setting_reads_the_environment() -> None:
    assert load_settings(None, {}).compiled_routes is True
    assert load_settings(None, {"NUVIOT_COMPILED_ROUTES": "0"}).compiled_routes is False
