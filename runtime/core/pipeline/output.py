"""The output translator stage: output commands -> outgoing messages -> the transmitters that send them.

Pure (reference/nuviot-spec.md §2.6, §1.7 route mappings 2 and 3):
- the route's workflow -> outputtranslator connection maps each output command key to an
  ``OutputCommandMapping{outgoing_message, field_mappings}``; ``Fields`` = the command's fields renamed by
  ``field_mappings`` (parameter key -> message field key; an unmapped parameter keeps its key);
- the payload: JSON from the message's ``getOutputMessage()`` (through the scripts port), or the JSON of
  ``Fields`` when it has no script; ``nocontent`` -> empty; ``delimited`` -> the message's fields in order,
  joined by its delimiter; ``xml`` -> ``<messageId><field>v</field>...</messageId>``; any other content type:
  the script's text (or JSON) when there is a script, else the JSON of ``Fields``;
- ``~deviceid~`` and ``~messageid~`` are replaced in the topic, path/query and header values; the method is
  the message's ``rest_method`` (default GET), upper-cased;
- the transmitters: the steps at the end of the output translator step's ``next`` and ``secondary``
  connections whose ``mappings`` name the outgoing message (by key, or by its NuvIoT id);
  only steps of type transmitter count.
A command with no mapping, a mapping to an unknown message, or a message no transmitter takes is a warning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from runtime.core.errors import StageError
from runtime.core.messages import OutgoingMessage
from runtime.core.scripting import SCRIPT_ERROR_CODES, OutputScripts, ScriptError, hook_output_message
from runtime.core.solution.enums import ContentType, PipelineModuleType
from runtime.core.solution.model import (
    MessageDefinition,
    OutputCommandMapping,
    Route,
    RouteStep,
    SolutionDocument,
)

STAGE = "outputtranslator"

_MEDIA_TYPES = {
    ContentType.JSON: "application/json",
    ContentType.NO_CONTENT: "",
    ContentType.XML: "application/xml",
    ContentType.DELIMITED: "text/plain",
    ContentType.STRING_POSITION: "text/plain",
    ContentType.STRING_REGEX: "text/plain",
    ContentType.BINARY: "application/octet-stream",
}


@dataclass(slots=True)
class OutputResult:
    """``messages``: each outgoing message with the transmitter steps that should send it, in command order."""

    messages: list[tuple[OutgoingMessage, tuple[RouteStep, ...]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)


def workflow_step(route: Route, workflow_key: str | None = None) -> RouteStep | None:
    for step in route.steps:
        if step.type is PipelineModuleType.WORKFLOW and (workflow_key is None or step.module == workflow_key):
            return step
    return None


def _command_mappings(
    route: Route, wf_step: RouteStep
) -> tuple[dict[str, OutputCommandMapping], RouteStep | None]:
    """The workflow step's command -> message mappings, and the output translator step they lead to."""
    mappings: dict[str, OutputCommandMapping] = {}
    target: RouteStep | None = None
    for conn in (wf_step.next, *wf_step.secondary):
        if conn is None:
            continue
        step = route.step_by_id.get(conn.to)
        if step is None or step.type is not PipelineModuleType.OUTPUT_TRANSLATOR:
            continue
        target = target or step
        for key, m in conn.mappings.items():
            if isinstance(m, OutputCommandMapping):
                mappings.setdefault(key, m)
    return mappings, target


def _transmitters(
    route: Route, ot_step: RouteStep | None, message: MessageDefinition
) -> tuple[RouteStep, ...]:
    if ot_step is None:
        return ()
    names = {message.key} | ({message.id} if message.id else set())
    out: list[RouteStep] = []
    for conn in (ot_step.next, *ot_step.secondary):
        if conn is None or not names.intersection(conn.mappings):
            continue
        step = route.step_by_id.get(conn.to)
        if step is not None and step.type is PipelineModuleType.TRANSMITTER and step not in out:
            out.append(step)
    return tuple(out)


def _tokens(text: str | None, device_id: str, message_id: str) -> str | None:
    if not text:
        return None
    return text.replace("~deviceid~", device_id).replace("~messageid~", message_id)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _payload(
    message: MessageDefinition,
    fields: Mapping[str, object],
    device_id: str,
    scripts: OutputScripts | None,
    logs: list[str],
) -> bytes:
    ctype = message.content_type
    if ctype is ContentType.NO_CONTENT:
        return b""
    hook = hook_output_message(message.key)
    if scripts is not None and scripts.has(hook):
        try:
            result = scripts.output_message(message.key, fields, device_id)
        except ScriptError as exc:
            raise StageError(STAGE, SCRIPT_ERROR_CODES[exc.kind], exc.detail) from exc
        logs.extend(result.logs)
        if result.is_text:
            return str(result.value).encode()
        if ctype is ContentType.BINARY and isinstance(result.value, list):
            try:
                return bytes(result.value)
            except (TypeError, ValueError) as exc:
                raise StageError(STAGE, "invalid_output", f"{hook}: not a list of bytes: {exc}") from None
        return _json(result.value)
    if ctype is ContentType.DELIMITED:
        order = [f.key for f in message.fields] or list(fields)
        return (message.delimiter or ",").join(_text(fields.get(k)) for k in order).encode()
    if ctype is ContentType.XML:
        root = message.message_id or message.key
        body = "".join(f"<{k}>{escape(_text(v))}</{k}>" for k, v in fields.items())
        return f"<{root}>{body}</{root}>".encode()
    return _json(dict(fields))


def build_outgoing(
    doc: SolutionDocument,
    route: Route,
    device_id: str,
    commands: Sequence[tuple[str, Mapping[str, object]]],
    scripts: OutputScripts | None = None,
    *,
    workflow_key: str | None = None,
) -> OutputResult:
    """One ``OutgoingMessage`` per mapped output command, each with the transmitter steps that send it.

    Raises ``StageError("outputtranslator", "script_error" | "script_timeout" | ...)`` when a
    ``getOutputMessage()`` script fails; everything else that does not fit is a warning.
    """
    result = OutputResult()
    if not commands:
        return result
    wf_step = workflow_step(route, workflow_key)
    if wf_step is None:
        result.warnings.append(
            f"route {route.key} has no workflow step: {len(commands)} output command(s) dropped"
        )
        return result
    mappings, ot_step = _command_mappings(route, wf_step)
    for key, fields in commands:
        mapping = mappings.get(key)
        if mapping is None:
            result.warnings.append(
                f"output command {key} is not mapped to an outgoing message on route {route.key}"
            )
            continue
        message = doc.message_by_key.get(mapping.outgoing_message)
        if message is None:
            result.warnings.append(f"output command {key} maps to unknown message {mapping.outgoing_message}")
            continue
        mapped = {mapping.field_mappings.get(k, k): v for k, v in fields.items()}
        payload = _payload(message, mapped, device_id, scripts, result.logs)
        mid = message.message_id
        out = OutgoingMessage(
            message_key=message.key,
            message_id=mid,
            device_id=device_id,
            payload=payload,
            content_type=_MEDIA_TYPES.get(message.content_type, "application/json"),
            topic=_tokens(message.topic, device_id, mid),
            method=(message.rest_method.value if message.rest_method is not None else "get").upper(),
            path_and_query=_tokens(message.path_and_query_string, device_id, mid),
            headers=tuple((h.name, _tokens(h.value, device_id, mid) or "") for h in message.headers),
        )
        transmitters = _transmitters(route, ot_step, message)
        if not transmitters:
            result.warnings.append(
                f"outgoing message {message.key} is sent by no transmitter on route {route.key}"
            )
        result.messages.append((out, transmitters))
    return result
