"""The dry run (CONTRACT §11): one message through every stage of its route, with no side effect.

It is the real ``Dispatcher`` (the planner, sentinel, translators, workflow and output code of the data plane),
built for one message with effect ports that record instead of act:

- the device repository answers reads from the real one (or from the solution's devices, for the CLI) and
  keeps the changed device in memory: nothing is saved;
- the record sink keeps the message record: no record, no dead letter, no counter moves;
- each transmitter is a port that lists what it would send: nothing leaves the process;
- the workflow scripts are a fresh copy (the caller compiles them), so a script's globals cannot leak
  into the live engines; scripts have no I/O of their own (docs/scripting.md);
- log lines carry ``dry_run=true`` and are not stored (logsetup skips its sinks for them).

The dispatcher tells the run each stage's result through its ``trace`` hook; the answer is
``{ok, status, stages: [{stage, ok, output | error: {code, message}}], warnings}`` with the stages in
order: planner, sentinel, inputtranslator, workflow, outputtranslator, transmitter. Where the message
stops, the last stage has ``ok: false`` and NuvIoT's code (``CouldNotFindDevice``, ``MGV1003``, ...).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog

from runtime.core.devices import Device
from runtime.core.messages import InboundMessage, MessageRecord, OutgoingMessage, PemStatus
from runtime.core.pipeline.output import OutputResult
from runtime.core.pipeline.workflow import WorkflowResult
from runtime.core.solution.model import SolutionDocument
from runtime.core.streams import specs_of
from runtime.services.commands import BadRequestError
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters
from runtime.services.streams import StreamService

MAX_PAYLOAD = 1024 * 1024
NO_SIDE_EFFECTS = "none: no device state saved, no record kept, nothing transmitted"


class DryRunRequestError(BadRequestError):
    """The request itself is wrong (unknown listener, no payload): a 400 with a stable code."""


@dataclass(frozen=True, slots=True)
class DryRunMessage:
    listener: str
    payload: bytes
    topic: str | None = None
    path: str | None = None
    method: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Any) -> DryRunMessage:
        """``{listener, topic?|path?, method?, headers?, payload | payloadBase64}`` (the admin API's body)."""
        if not isinstance(body, dict):
            raise DryRunRequestError("bad_body", "the body must be a JSON object")
        listener = body.get("listener")
        if not isinstance(listener, str) or not listener:
            raise DryRunRequestError("missing_listener", "listener (a listener key of the solution) is required")
        for key in ("topic", "path", "method"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise DryRunRequestError("bad_field", f"{key} must be a string")
        headers = body.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise DryRunRequestError("bad_field", "headers must be an object of strings")
        if body.get("payloadBase64") is not None:
            raw = body["payloadBase64"]
            if not isinstance(raw, str):
                raise DryRunRequestError("bad_field", "payloadBase64 must be a string")
            try:
                payload = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise DryRunRequestError("bad_payload", "payloadBase64 is not valid base64") from None
        elif isinstance(body.get("payload"), str):
            payload = body["payload"].encode()
        elif body.get("payload") is None:
            payload = b""
        else:
            raise DryRunRequestError("bad_field", "payload must be a string (payloadBase64 for binary)")
        return cls(listener, payload, body.get("topic") or None, body.get("path") or None,
                   body.get("method") or None, {str(k): v for k, v in headers.items()})


# ---------------------------------------------------------------------------- recording ports


class RecordingDevices:
    """Reads from ``lookup``; a changed device stays here (never saved)."""

    def __init__(self, lookup: Callable[[str], Device | None]) -> None:
        self._lookup = lookup
        self.changed: dict[str, Device] = {}

    def get(self, device_id: str) -> Device | None:
        """A copy, dicts included: the dispatcher may stamp ``last_seen`` on what it gets."""
        found = self.changed.get(device_id) or self._lookup(device_id)
        if found is None:
            return None
        device = found.copy()
        device.properties = dict(found.properties)
        device.attributes = dict(found.attributes)
        device.state_machines = dict(found.state_machines)
        device.property_bag = dict(found.property_bag)
        return device

    def state_changed(self, device: Device) -> None:
        self.changed[device.device_id] = device


class RecordingSink:
    def __init__(self) -> None:
        self.record: MessageRecord | None = None

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        self.record = rec

    async def writable(self) -> None:
        return None


class RecordingTransmitter:
    def __init__(self, key: str, kind: str, sent: list[dict[str, Any]]) -> None:
        self.key = key
        self.kind = kind
        self._sent = sent

    def submit(self, out: OutgoingMessage, inbound: InboundMessage | None = None) -> bool:
        self._sent.append({"transmitter": self.key, "transmitterType": self.kind, **outgoing_json(out)})
        return True


class _Reply:
    """The original listener's reply channel (system messages answer on it): kept, never sent."""

    def __init__(self, sent: list[dict[str, Any]], listener: str) -> None:
        self._sent = sent
        self._listener = listener

    def send(self, out: OutgoingMessage) -> None:
        self._sent.append({"transmitter": f"reply on {self._listener}", "transmitterType": "originallistener",
                           **outgoing_json(out)})


class RecordingStreamQueue:
    """The data-stream queue of a dry run: the rows that would be written, kept in the answer, never stored."""

    def __init__(self, written: list[dict[str, Any]]) -> None:
        self._written = written

    def put(self, stream: str, item: dict[str, Any]) -> bool:
        self._written.append({"stream": stream, "op": item["op"], "row": _jsonable(item["row"]),
                              **({"where": _jsonable(item["where"])} if "where" in item else {})})
        return True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Nothing is ever committed here."""


# ---------------------------------------------------------------------------- the run


def run_dry(
    doc: SolutionDocument,
    scripts: Mapping[str, Any],
    devices: Callable[[str], Device | None],
    message: DryRunMessage,
    *,
    clock: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Run ``message`` through its route with recording ports; return the stage-by-stage answer."""
    listener = next((x for x in doc.solution.listeners if x.key == message.listener), None)
    if listener is None:
        known = ", ".join(sorted(x.key for x in doc.solution.listeners)) or "none"
        raise DryRunRequestError("unknown_listener", f"no listener '{message.listener}' in the solution (known: {known})")
    if message.topic is None and message.path is None:
        raise DryRunRequestError("missing_address", "give the message's topic (MQTT, AMQP) or path (REST)")
    if len(message.payload) > MAX_PAYLOAD:
        raise DryRunRequestError("payload_too_large", f"the payload is larger than {MAX_PAYLOAD} bytes")
    trace = _Trace()
    sent: list[dict[str, Any]] = []
    transmitters = {t.key: RecordingTransmitter(t.key, t.transmitter_type.value, sent) for t in doc.transmitters}
    repo = RecordingDevices(devices)
    sink = RecordingSink()
    written: list[dict[str, Any]] = []
    specs = specs_of(doc)
    streams = StreamService(specs, dict.fromkeys(specs), RecordingStreamQueue(written))  # type: ignore[arg-type]  # no sink is ever started
    dispatcher = Dispatcher(doc, repo, sink, Counters(), build_engines(doc, scripts), transmitters,  # type: ignore[arg-type]  # RecordingDevices has what the dispatcher calls of the registry
                            clock=clock or time.time, trace=trace.see, streams=streams)
    path, query = message.path, {}
    if path is not None and "?" in path:
        parts = urlsplit(path)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
    inbound = InboundMessage(
        listener=message.listener, payload=message.payload, topic=message.topic, path=path,
        method=(message.method or ("POST" if path is not None else None)),
        headers={k.lower(): v for k, v in message.headers.items()}, query=query,
        reply=_Reply(sent, message.listener),
    )
    with structlog.contextvars.bound_contextvars(dry_run=True):
        record = dispatcher.handle(inbound)
    return trace.answer(record, sent, written)


def _code_and_message(error: str | None) -> tuple[str, str]:
    code, _, detail = (error or "internal_error").partition(": ")
    return code, detail or code


class _Trace:
    """What the dispatcher told us, stage by stage."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self._workflows: list[dict[str, Any]] = []
        self._outgoing: list[dict[str, Any]] = []
        self._output_warnings: list[str] = []
        self._output_seen = False

    def see(self, stage: str, data: Any) -> None:
        if stage == "planner":
            device_id, message_id, route, _device, config = data
            self.stages.append(_ok("planner", {
                "deviceId": device_id, "messageId": message_id, "route": route.key,
                "deviceConfiguration": config.key, "messageDefinition": route.message_definition,
            }))
        elif stage == "sentinel":
            self.stages.append(_ok("sentinel", {"sentinels": [s.key for s in data] or ["none on this route"]}))
        elif stage == "inputtranslator":
            message_def, values = data
            fields = []
            for key, value in values.items():
                spec = message_def.field_by_key.get(key)
                fields.append({"key": key, "name": spec.name if spec else key,
                               "type": spec.storage_type.value if spec else type(value).__name__,
                               "value": _jsonable(value)})
            self.stages.append(_ok("inputtranslator", {"message": message_def.key, "fields": fields}))
        elif stage == "workflow":
            module, before, result = data
            self._workflows.append(_workflow_json(module, before, result))
        elif stage == "outputtranslator":
            out: OutputResult = data
            self._output_seen = True
            self._output_warnings += out.warnings
            for outgoing, steps in out.messages:
                self._outgoing.append({**outgoing_json(outgoing), "transmitters": [s.module for s in steps]})

    def answer(self, record: MessageRecord, sent: list[dict[str, Any]], written: list[dict[str, Any]]) -> dict[str, Any]:
        if record.message_id is not None and record.message_id.startswith("system:"):
            return self._system_answer(record, sent)
        failed = record.status is PemStatus.FAILED
        stages = list(self.stages)
        workflow = {"workflows": self._workflows, "deviceSaved": False}
        output = {"messages": self._outgoing, "warnings": self._output_warnings}
        if failed:
            code, message = _code_and_message(record.error)
            stage = record.stage or "unknown"
            error = {"code": code, "message": message}
            if stage == "workflow":
                stages.append({"stage": "workflow", "ok": False, "output": workflow, "error": error})
            elif stage == "outputtranslator":
                stages.append(_ok("workflow", workflow))
                stages.append({"stage": stage, "ok": False, "error": error})
            else:
                stages.append({"stage": stage, "ok": False, "error": error})
        else:
            stages.append(_ok("workflow", workflow))
            if written:
                stages.append(_ok("datastream", {"wouldWrite": written}))
            stages += [_ok("outputtranslator", output), _ok("transmitter", {"wouldSend": sent})]
        detail = record.detail or {}
        return {
            "ok": not failed,
            "status": record.status.value,
            "listener": record.listener,
            "deviceId": record.device_id,
            "messageId": record.message_id,
            "stages": stages,
            "warnings": detail.get("warnings", []),
            "logs": detail.get("logs", []),
            "sideEffects": NO_SIDE_EFFECTS,
        }

    def _system_answer(self, record: MessageRecord, sent: list[dict[str, Any]]) -> dict[str, Any]:
        failed = record.status is PemStatus.FAILED
        if failed:
            code, message = _code_and_message(record.error)
            stage: dict[str, Any] = {"stage": record.stage or "system", "ok": False,
                                     "error": {"code": code, "message": message}}
        else:
            stage = _ok("system", {"deviceId": record.device_id, "messageId": record.message_id,
                                   "detail": _jsonable(record.detail or {}), "wouldSend": sent})
        return {"ok": not failed, "status": record.status.value, "listener": record.listener,
                "deviceId": record.device_id, "messageId": record.message_id, "stages": [stage],
                "warnings": [], "logs": [], "sideEffects": NO_SIDE_EFFECTS}


def _ok(stage: str, output: dict[str, Any]) -> dict[str, Any]:
    return {"stage": stage, "ok": True, "output": output}


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            out[key] = {"from": _jsonable(old), "to": _jsonable(new)}
    return out


def _workflow_json(module: str, before: Device, result: WorkflowResult) -> dict[str, Any]:
    return {
        "workflow": module,
        "attributes": _changes(before.attributes, result.attributes),
        "stateMachines": _changes(before.state_machines, result.state_machines),
        "properties": _changes(before.property_bag, result.property_bag),
        "outputCommands": [{"key": key, "fields": _jsonable(dict(values))} for key, values in result.output_commands],
        "warnings": list(result.warnings) + [f"business rule {c}: {why}" for c, why in result.rule_failures],
        "logs": list(result.logs),
        "scriptCalls": result.script_calls,
    }


def outgoing_json(out: OutgoingMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messageKey": out.message_key, "messageId": out.message_id, "deviceId": out.device_id,
        "contentType": out.content_type,
    }
    if out.topic:
        body["topic"] = out.topic
    if out.path_and_query:
        body["method"] = out.method
        body["pathAndQuery"] = out.path_and_query
    if out.headers:
        body["headers"] = dict(out.headers)
    try:
        body["payload"] = out.payload.decode("utf-8")
    except UnicodeDecodeError:
        body["payloadBase64"] = base64.b64encode(out.payload).decode("ascii")
    return body


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    return str(value)
