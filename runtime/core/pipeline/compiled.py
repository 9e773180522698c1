"""Routes compiled once per solution load (issue 17): a script-free JSON route without the general machinery.

``CompiledRoutes`` is built with the dispatcher, for one document. Per message ``run`` does what
``Dispatcher.handle`` does on the usual path, with the same result: the body decoded once; the planner's
device-id and message-id parsers as direct steps (topic and path locators, query, header, JSON paths); the
device and its configuration's route; the route's message fields read from the decoded body, converted and
checked as ``FieldReader`` does (the common JSON scalars that are already of their storage type pass as they
are); each workflow's straight run (``straight.py``) fused into one pass over fresh copies of the device's
attributes and state machines, with conversions left out where the value is already of the target type;
the device updated once. It returns ``(device id, message id, updated device, stream rows)``; the caller stores
the device, queues the rows and writes the Completed record.

It hands the message back (returns None, having changed nothing and called no clock) on anything the general
path treats specially: a body that is not a JSON object, a locator that finds nothing the planner needs, an
unknown device or configuration, a route that was not compiled, a missing required field, a value that does
not convert or fails its checks, a machine in a state it does not know or refusing an event, a defaulted
attribute the device lacks, a value over the size limit. The general path then gives its own outcome
(record, dead letter, warnings). ``refused`` says, per route, why it was not compiled (scripts, alarm states,
mappings the straight run does not cover, a sentinel with security fields, unknown steps, a data-stream step
fed by workflow values or by name or to a stream that is not running, a message that is not JSON or a field read
some other way, a configuration whose device health is watched).

A data-stream step fed by message fields only is compiled: its row is built from the route's field values with
``streams.mapped_row`` (as ``Dispatcher._write_streams`` builds it) before anything changes; a row that breaks the
stream's checks hands the message over (the general path gives its dead letter). The rows come back with the
device, queued by the dispatcher as the general path queues them (the ack waits for the queue's commit).
``tests/unit/pipeline/test_compiled_route.py`` holds both paths equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

import orjson

from runtime.core.devices import VALUE_MAX_BYTES, Device, oversized_value
from runtime.core.errors import StageError
from runtime.core.messages import InboundMessage
from runtime.core.parsing.errors import ParseError
from runtime.core.parsing.fields import FieldReader
from runtime.core.parsing.locate import MISSING, as_text
from runtime.core.parsing.patterns import compile_regex, segment_locator
from runtime.core.pipeline.straight import event_name
from runtime.core.pipeline.typed import convert
from runtime.core.pipeline.wiring import input_mappings
from runtime.core.pipeline.workflow import WorkflowEngine
from runtime.core.solution.enums import ContentType, ParameterType, ParseStringValueType, SearchLocation
from runtime.core.solution.enums import PipelineModuleType as PT
from runtime.core.solution.model import (
    DeviceConfiguration,
    FieldParser,
    MessageDefinition,
    MessageField,
    Route,
    SolutionDocument,
    StateSet,
)
from runtime.core.streams import FastBuilder, StreamSpec, mapped_builder, mapped_row, stream_steps

__all__ = ["CompiledRoutes", "RefusedError"]

# Where a value is read, as (kind, argument): a topic or path locator (a SegmentLocator), one JSON name (str),
# a dotted JSON path (tuple of names), a query-string field or a header name (str).
_TOPIC, _PATH, _JSON, _JSON_PATH, _QUERY, _HEADER = range(6)
Where = tuple[int, object]
# A planner parser: where, and its reg_ex_validation.
Parser = tuple[int, object, re.Pattern[str] | None]
# A message field: key, where, the exact type and bounds of a raw value that is already stored as it comes (else
# None), the reader's conversion, required, and the default (a value, MISSING, or _FAILS: the general path raises).
Field = tuple[str, int, object, type | None, int, int, Callable[[object], object], bool, object]
# An attribute step: (attribute, its type, its state set, whether the input's value needs converting to it).
SetStep = tuple[str, ParameterType | None, StateSet | None, bool]
# A machine step: (machine, its moves: state -> event -> new state or None, refuses unhandled events, the
# mapping's own event or None: the value names the event).
MoveStep = tuple[str, Mapping[str, Mapping[str, str | None]], bool, str | None]
# A workflow input fed by the route: the field of the last mapping to it and whether its value needs converting
# to the input's type, the other fields mapped to it (earlier mappings, last first: the last present one wins),
# the input's type and state set, its attribute steps and its machine steps.
Input = tuple[str, bool, tuple[tuple[str, bool], ...], ParameterType, StateSet | None, tuple[SetStep, ...],
              tuple[MoveStep, ...]]

_ALREADY: Final = {ParameterType.STRING: str, ParameterType.INTEGER: int, ParameterType.DECIMAL: float,
                   ParameterType.TRUE_FALSE: bool}
_DECIMAL_MAX: Final = 79228162514264337593543950335  # as values.to_decimal checks it (an int: compared exactly)
_BOUNDS: Final[dict[type, tuple[int, int]]] = {int: (-(2**31), 2**31 - 1), float: (-_DECIMAL_MAX, _DECIMAL_MAX)}
_WIRE_CHECKED: Final = (ParseStringValueType.BOOLEAN, ParseStringValueType.WHOLE_NUMBER,
                        ParseStringValueType.REAL_NUMBER)
_CHECKED_BY_STORAGE: Final = frozenset({(ParameterType.INTEGER, ParseStringValueType.WHOLE_NUMBER),
                                        (ParameterType.DECIMAL, ParseStringValueType.REAL_NUMBER),
                                        (ParameterType.TRUE_FALSE, ParseStringValueType.BOOLEAN)})
_KNOWN_STEPS: Final = frozenset({PT.LISTENER, PT.PLANNER, PT.SENTINEL, PT.INPUT_TRANSLATOR, PT.WORKFLOW,
                                 PT.OUTPUT_TRANSLATOR, PT.TRANSMITTER, PT.DATA_STREAM})
# A data-stream step fed by message fields only: the stream, its spec, the (message field, stream field) mappings
# and their row builder (``streams.mapped_builder``; None: ``mapped_row`` each time).
StreamWrite = tuple[str, StreamSpec, tuple[tuple[str, str], ...], FastBuilder | None]
# A queued stream row, as the dispatcher's general path queues it: (stream, {"op": "add", "at": ..., "row": ...}).
QueuedRow = tuple[str, dict[str, object]]


class _Fails:
    __slots__ = ()


_FAILS: Final = _Fails()


class RefusedError(Exception):
    """Why a route (or the planner) is not compiled; the message names what."""


class _Workflow:
    """One workflow step of a route, fused: the straight run's work on the route's typed field values."""

    __slots__ = ("defaulted", "initial_states", "inputs")

    def __init__(self, engine: WorkflowEngine, mappings: tuple[tuple[str, str], ...],
                 field_types: Mapping[str, ParameterType]) -> None:
        straight = engine.straight
        if straight is None:
            raise RefusedError(f"workflow {engine.workflow.key} does not run straight (scripts, alarm states or "
                               "mappings the straight run does not cover)")
        self.defaulted = straight.defaulted
        self.initial_states = straight.initial_states
        feeds: dict[str, list[str]] = {}
        for field_key, input_key in mappings:
            feeds.setdefault(input_key, []).append(field_key)
        inputs: list[Input] = []
        for input_key, plan_steps in straight.plan:
            if input_key not in feeds:
                continue
            itype, iset = straight.input_types[input_key]
            exact = _ALREADY.get(itype)
            candidates = [(f, not (exact is not None and field_types.get(f) is itype))
                          for f in reversed(feeds[input_key])]
            sets: list[SetStep] = []
            moves: list[MoveStep] = []
            for target, atype, aset, machine, event in plan_steps:
                if machine is None:  # the value is of the input's exact type: the same type needs no converting
                    sets.append((target, atype, aset, not (exact is not None and atype is itype)))
                    continue
                table = {state_key: {ev: t.new_state or None for ev, t in straight.transitions[id(state)].items()}
                         for state_key, state in straight.states[id(machine)].items() if state_key is not None}
                moves.append((target, table, machine.exception_on_unhandled_event, event))
            # attributes and machines are apart (and all or nothing): setting them apart keeps each one's order
            inputs.append((*candidates[0], tuple(candidates[1:]), itype, iset, tuple(sets), tuple(moves)))
        self.inputs = tuple(inputs)

    def run(self, attributes: dict[str, object], machines: dict[str, str], values: Mapping[str, object]) -> bool:
        """Set the attributes and move the machines (fresh dicts, changed in place); False: hand the message over."""
        if self.defaulted and not self.defaulted.issubset(attributes):
            return False
        for machine_key, initial in self.initial_states:
            if machine_key not in machines:
                machines[machine_key] = initial
        for field_key, converts, others, itype, iset, sets, moves in self.inputs:
            value = values.get(field_key, MISSING)
            if value is MISSING:
                value, converts = _earlier(others, values)
                if value is MISSING:
                    continue
            if converts:
                value = convert(value, itype, iset)
            for target, atype, aset, sets_converted in sets:
                attributes[target] = convert(value, atype, aset) if sets_converted else value  # type: ignore[arg-type]  # an attribute step has its type
            for target, table, refuses, event in moves:
                events = table.get(machines.get(target))  # type: ignore[arg-type]  # None: not in a known state
                if events is None:
                    return False
                name = event or event_name(value)
                if name in events:
                    new_state = events[name]
                    if new_state is not None:
                        machines[target] = new_state
                elif refuses:
                    return False
        return True


def _earlier(others: tuple[tuple[str, bool], ...], values: Mapping[str, object]) -> tuple[object, bool]:
    for field_key, converts in others:
        if field_key in values:
            return values[field_key], converts
    return MISSING, False


class _Route:
    __slots__ = ("fields", "message_id", "streams", "workflows")

    def __init__(self, doc: SolutionDocument, route: Route, engines: Mapping[str, WorkflowEngine],
                 specs: Mapping[str, StreamSpec]) -> None:
        streams: list[StreamWrite] = []
        for writes in stream_steps(route):
            if writes.by_name or writes.from_workflow:
                raise RefusedError(f"the data-stream step to {writes.stream} takes values other than message fields")
            spec = specs.get(writes.stream)
            if spec is None:
                raise RefusedError(f"data stream {writes.stream} is not running")
            streams.append((writes.stream, spec, writes.from_message, mapped_builder(spec, writes.from_message)))
        self.streams = tuple(streams)
        for step in route.steps:
            if step.type not in _KNOWN_STEPS:
                raise RefusedError(f"step {step.id} ({step.type.value}) is not compiled")
            if step.type is PT.SENTINEL:
                sentinel = doc.sentinel_by_key.get(step.module)
                if sentinel is not None and sentinel.security_fields:
                    raise RefusedError(f"sentinel {sentinel.key} checks security fields")
        message = doc.message_by_key[route.message_definition]
        if message.content_type is not ContentType.JSON:
            raise RefusedError(f"message {message.key} is {message.content_type.value}, not json")
        self.message_id = message.message_id
        self.fields = tuple(_field(doc, message, f) for f in message.fields)
        types = {f.key: f.storage_type for f in message.fields}
        workflows = []
        for step in route.steps:
            engine = engines.get(step.module) if step.type is PT.WORKFLOW else None
            if engine is not None:  # a workflow the solution lacks is skipped, as the dispatcher skips it
                workflows.append(_Workflow(engine, input_mappings(route, step.module), types))
        if not workflows:
            raise RefusedError("the route runs no workflow")
        self.workflows = tuple(workflows)

    def run(self, device_id: str, device: Device, body: dict[str, object], msg: InboundMessage
            ) -> tuple[Device, Sequence[QueuedRow]] | None:
        """The device as the route leaves it (times not stamped) and the data-stream rows to queue, or None: hand
        the message over. A row that fails its checks raises ``StreamRowError`` (the general path's dead letter)."""
        values: dict[str, object] = {}
        for key, kind, where, exact, low, high, typed, required, default in self.fields:
            raw = body.get(where) if kind == _JSON else _read(kind, where, msg, body)  # type: ignore[call-overload]  # a JSON name is a str
            if raw is None or raw == "":
                if required or default is _FAILS:
                    return None
                if default is not MISSING:
                    values[key] = default
            elif type(raw) is exact and (exact is str or exact is bool or low <= raw <= high):  # type: ignore[operator]  # a number here
                values[key] = raw
            else:
                values[key] = typed(raw)
        attributes, machines = device.attributes, device.state_machines
        for workflow in self.workflows:
            attributes, machines = dict(attributes), dict(machines)
            if not workflow.run(attributes, machines, values):
                return None
            if None in attributes.values():
                attributes = {k: v for k, v in attributes.items() if v is not None}
        updated = device.copy()
        updated.attributes = attributes
        updated.state_machines = machines
        properties = device.properties
        updated.properties = ({k: v for k, v in properties.items() if v is not None} if None in properties.values()
                              else dict(properties))
        updated.property_bag = dict(device.property_bag)
        if not (_small(attributes) and _small(updated.property_bag)) and oversized_value(updated) is not None:
            return None
        if not self.streams:
            return updated, ()
        rows: list[QueuedRow] = []
        at = msg.received_at
        for stream, spec, mappings, build in self.streams:  # as Dispatcher._write_streams: all built, then queued
            row = build(device_id, None, values) if build is not None else None
            if row is None:  # the general checks: the row, or StreamRowError
                row = mapped_row(spec, mappings, device_id, values)
            rows.append((stream, {"op": "add", "at": at, "row": row}))
        return updated, rows


def _small(values: Mapping[str, object]) -> bool:
    """No value can be over the size limit (numbers, booleans, None, short text): ``oversized_value`` need not look."""
    for value in values.values():
        kind = type(value)
        if kind is str:
            if len(value) > VALUE_MAX_BYTES:  # type: ignore[arg-type]  # a str
                return False
        elif kind is not float and kind is not int and kind is not bool and value is not None:
            return False
    return True


def _field(doc: SolutionDocument, message: MessageDefinition, field: MessageField) -> Field:
    if field.storage_type is ParameterType.GEOLOCATION and any(
            getattr(field, f"{a}_{b}") for a in ("lat", "lon") for b in ("json_path", "query_string_field")):
        raise RefusedError(f"field {field.key} reads a geolocation from two locators")
    kind, where = _where(field, f"field {field.key}", is_field=True)
    reader = FieldReader(doc, message, field)
    default = reader.default
    exact: type | None = None
    storage, wire = field.storage_type, field.parsed_string_field_type
    plain = (field.min_value is None and field.max_value is None and not field.reg_ex_validation
             and field.decimal_scaler == 1.0)
    if plain and (wire not in _WIRE_CHECKED or (storage, wire) in _CHECKED_BY_STORAGE):
        exact = _ALREADY.get(storage)
    low, high = _BOUNDS.get(exact, (0, 0)) if exact is not None else (0, 0)
    return (field.key, kind, where, exact, low, high, reader.typed, reader.required,
            _FAILS if isinstance(default, ParseError) else default)


def _where(parser: FieldParser, label: str, *, is_field: bool) -> Where:
    """Where ``parser`` reads its value; RefusedError for reads that are not compiled."""
    if parser.reg_ex_value_selector:
        raise RefusedError(f"{label} uses a value selector")
    location = parser.search_location or SearchLocation.BODY
    try:
        if location is SearchLocation.TOPIC and parser.topic_locator:
            return _TOPIC, segment_locator(parser.topic_locator, is_path=False, prefer=parser.key)
        if location is SearchLocation.PATH and parser.path_locator:
            return _PATH, segment_locator(parser.path_locator, is_path=True, prefer=parser.key)
    except ParseError as exc:
        raise RefusedError(f"{label}: {exc.code} {exc.detail}") from None
    if location is SearchLocation.QUERY_STRING and parser.query_string_field:
        return _QUERY, parser.query_string_field
    if location is SearchLocation.HEADERS and parser.header_name:
        return _HEADER, parser.header_name
    if location is SearchLocation.BODY and (is_field or parser.content_type is ContentType.JSON) and parser.json_path:
        path = parser.json_path.strip().removeprefix("$.")
        names = tuple(path.split("."))
        if not path or not all(names):
            raise RefusedError(f"{label}: json_path {parser.json_path!r} is not a dotted name path")
        return (_JSON, names[0]) if len(names) == 1 else (_JSON_PATH, names)
    raise RefusedError(f"{label} is read from the {location.value} in a way that is not compiled")


def _read(kind: int, where: object, msg: InboundMessage, body: dict[str, object]) -> object:
    """The raw value at ``where``, None when it is not there (a JSON null is not there either)."""
    if kind == _TOPIC:
        return where.capture(msg.topic)  # type: ignore[attr-defined]  # a SegmentLocator
    if kind == _PATH:
        return where.capture(msg.path)  # type: ignore[attr-defined]  # a SegmentLocator
    if kind == _JSON:
        return body.get(where)  # type: ignore[call-overload]  # a str
    if kind == _QUERY:
        return msg.query.get(where)  # type: ignore[call-overload]  # a str
    if kind == _HEADER:
        return _header(msg.headers, where)  # type: ignore[arg-type]  # a str
    node: object = body
    for name in where:  # type: ignore[attr-defined]  # a tuple of names
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    folded, found = name.lower(), None
    for key, value in headers.items():  # as MessageView.header: the last of the names that fold alike
        if key.lower() == folded:
            found = value
    return found


class _Table:
    """A configuration's routes as ``select_route`` chooses them: a compiled route or the reason it is not."""

    __slots__ = ("by_message_id", "default", "only")

    def __init__(self, doc: SolutionDocument, config: DeviceConfiguration,
                 compiled: Mapping[int, _Route | str]) -> None:
        self.by_message_id: dict[str, _Route | str] = {}
        self.default: _Route | str | None = None
        handled: dict[str, _Route | str] = {}
        for route in config.routes:
            message = doc.message_by_key.get(route.message_definition)
            if message is None:
                continue
            entry = compiled[id(route)]
            self.by_message_id.setdefault(message.message_id, entry)
            handled.setdefault(message.key, entry)
            if route.is_default and self.default is None:
                self.default = entry
        self.only = next(iter(handled.values())) if len(handled) == 1 else None

    def select(self, message_id: str | None) -> _Route | None:
        entry = self.by_message_id.get(message_id) if message_id is not None else None
        if entry is None:
            entry = self.default if self.default is not None else (self.only if message_id is None else None)
        return entry if isinstance(entry, _Route) else None


class CompiledRoutes:
    """The document's compiled routes; ``run`` per message (see the module's doc)."""

    def __init__(self, doc: SolutionDocument, engines: Mapping[str, WorkflowEngine],
                 watched_configurations: Collection[str] = (), streams: Mapping[str, StreamSpec] | None = None
                 ) -> None:
        specs = streams if streams is not None else {}
        self.doc = doc
        self.compiled: list[str] = []  # "configuration/route"
        self.refused: dict[str, str] = {}  # "configuration/route" or "planner" -> why
        self._tables: dict[str, _Table] = {}
        planner = doc.solution.planner
        try:
            self._device_ids = tuple(_parser(p) for p in planner.device_id_parsers)
            self._message_ids = tuple(_parser(p) for p in planner.message_type_id_parsers)
        except RefusedError as exc:
            self.refused["planner"] = str(exc)
            return
        if not self._device_ids:
            self.refused["planner"] = "the planner has no device id parsers"
            return
        for config in doc.solution.device_configurations:
            entries: dict[int, _Route | str] = {}
            for route in config.routes:
                name = f"{config.key}/{route.key}"
                try:
                    if config.key in watched_configurations:
                        raise RefusedError("device health is watched for this configuration")
                    if route.message_definition not in doc.message_by_key:
                        raise RefusedError(f"message {route.message_definition} is not in the solution")
                    entries[id(route)] = _Route(doc, route, engines, specs)
                    self.compiled.append(name)
                except RefusedError as exc:
                    entries[id(route)] = self.refused[name] = str(exc)
            self._tables[config.key] = _Table(doc, config, entries)

    @property
    def active(self) -> bool:
        return bool(self.compiled)

    def run(self, msg: InboundMessage, devices: Callable[[str], Device | None], clock: Callable[[], float]
            ) -> tuple[str, str, Device, Sequence[QueuedRow]] | None:
        """``(device id, message id, the device as the route leaves it, the stream rows to queue)``, or None: the
        general path takes the message. ``clock`` stamps the device as the dispatcher does (``last_seen`` first, then ``updated_at`` once
        per workflow), and only once nothing can hand the message over any more."""
        try:
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return None
        if type(body) is not dict:
            return None
        device_id = _first(self._device_ids, msg, body)
        if device_id is None:
            return None
        message_id = _first(self._message_ids, msg, body)
        device = devices(device_id)
        if device is None:
            return None
        table = self._tables.get(device.device_configuration)
        route = table.select(message_id) if table is not None else None
        if route is None:
            return None
        try:
            done = route.run(device_id, device, body, msg)
        except (ParseError, ValueError, StageError):  # a field that does not convert or check; an input or
            return None  # attribute value; a stream row that breaks the stream's checks (the general path's error)
        if done is None:
            return None
        updated, rows = done
        updated.last_seen = updated.updated_at = clock()
        for _ in route.workflows:
            updated.updated_at = clock()
        return device_id, message_id if message_id is not None else route.message_id, updated, rows


def _parser(parser: FieldParser) -> Parser:
    label = f"planner parser {parser.key}"
    kind, where = _where(parser, label, is_field=False)
    try:
        validation = compile_regex(parser.reg_ex_validation) if parser.reg_ex_validation else None
    except ParseError as exc:
        raise RefusedError(f"{label}: reg_ex_validation {exc.code}") from None
    return kind, where, validation


def _first(parsers: tuple[Parser, ...], msg: InboundMessage, body: dict[str, object]) -> str | None:
    """``planner._first``: the first parser whose value is there, not empty and valid."""
    for kind, where, validation in parsers:
        raw = where.capture(msg.topic) if kind == _TOPIC else _read(kind, where, msg, body)  # type: ignore[attr-defined]  # a SegmentLocator
        if raw is None:
            continue
        try:
            value = raw.strip() if type(raw) is str else as_text(raw).strip()
        except ParseError:
            continue
        if not value:
            continue
        if validation is not None and validation.search(value) is None:
            continue
        return value
    return None
