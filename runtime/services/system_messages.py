"""Device system messages (reference/nuviot-runtime.md §5.4): the imperative shell around ``core.system_messages``.

The dispatcher hands over every message whose topic starts with ``nuviot/srvr/dvcsrvc`` (or path
``/nuviot/srvr/dvcsrvc``) before its pipeline; ``SystemMessageHandler.handle`` parses it, finds the device,
applies the update to a copy of the device, writes it behind through ``DeviceRegistry.state_changed`` and
sends the replies through the inbound message's reply channel (MQTT: published on the listener's own
connection; REST with ``keepAliveToSendReply``: the first reply is the response body; other listeners or
none: the replies are only listed in the record). It returns an ``Outcome`` that the dispatcher turns into
a normal message record (message id ``system:{kind}``). This is the catch site for the system-message path,
as the dispatcher is for the pipeline: a ``StageError`` is a Failed record (dead letter) with its stage and
code; any other exception is logged with its stack and recorded as ``internal_error``.

No sentinel runs (NuvIoT's ``HandleSystemMessageAsync`` does not authenticate them either); an unknown device
is the planner's ``CouldNotFindDevice``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import structlog

from runtime.core.errors import StageError
from runtime.core.health import CLEARED, RAISED, SYSTEM_MESSAGE, HealthEvent
from runtime.core.messages import InboundMessage, OutgoingMessage, PemStatus
from runtime.core.pipeline.planner import planned_device
from runtime.core.solution.model import SolutionDocument
from runtime.core.system_messages import parse_body, split_address
from runtime.core.system_updates import plan_update
from runtime.services.devices import DeviceRegistry
from runtime.services.health import HealthMonitor, report_health
from runtime.services.metrics import Counters

log = structlog.get_logger(__name__)


class Outcome(NamedTuple):
    """What the dispatcher records for one system message."""

    status: PemStatus
    stage: str | None
    error: str | None  # "CODE: detail"
    device_id: str | None
    message_id: str | None
    detail: dict[str, Any] | None


class SystemMessageHandler:
    def __init__(self, doc: SolutionDocument, devices: DeviceRegistry,
                 clock: Callable[[], float] = time.time, *, health: HealthMonitor | None = None,
                 counters: Counters | None = None) -> None:
        self.doc = doc
        self._devices = devices
        self._clock = clock
        self._health = health  # a system message is a call-in too: it satisfies the device watchdog
        self._counters = counters

    def handle(self, msg: InboundMessage) -> Outcome:
        device_id: str | None = None
        message_id: str | None = None
        stage = "system"
        try:
            device_id, rest = split_address(msg.topic if msg.topic is not None else msg.path or "")
            parsed = parse_body(device_id, rest, msg.payload)
            message_id = parsed.message_id
            device, config = planned_device(self.doc, device_id, self._devices.get(device_id))
            now = self._clock()
            update = plan_update(parsed, device, config, now)
            updated = update.applied_to(device, now)
            events = self._health.seen(updated, None, now) if self._health is not None else []
            events += _error_events(device_id, update.notes.get("error"), parsed.details, now)
            self._devices.state_changed(updated)
            detail = update.detail()
            if events and self._counters is not None:
                report_health(self._counters, events)
            if update.replies:
                if msg.reply is None:
                    detail["repliesNotSent"] = f"listener {msg.listener} has no reply channel"
                else:
                    for reply in update.replies:
                        msg.reply.send(OutgoingMessage(message_key="system", message_id=message_id,
                                                       device_id=device_id, payload=reply.payload,
                                                       content_type="text/plain", topic=reply.topic))
            return Outcome(PemStatus.COMPLETED, None, None, device_id, message_id, detail or None)
        except StageError as exc:
            return Outcome(PemStatus.FAILED, exc.stage, f"{exc.code}: {exc.detail}", device_id, message_id, None)
        except Exception as exc:
            log.exception("stage_crashed", stage=stage, message=msg.id, listener=msg.listener)
            return Outcome(PemStatus.FAILED, stage, f"internal_error: {type(exc).__name__}: {exc}", device_id,
                           message_id, None)


def _error_events(device_id: str, note: object, details: str, now: float) -> list[HealthEvent]:
    """The health event of an ``err/raise`` or ``err/clear`` that changed the device's errors."""
    if not isinstance(note, dict) or not note:  # the update's notes["error"], a dict when set
        return []
    if note["action"] == "raise" and not note["wasActive"]:
        return [HealthEvent(device_id, note["code"], RAISED, SYSTEM_MESSAGE, details, now)]
    if note["action"] == "clear" and note["wasActive"]:
        return [HealthEvent(device_id, note["code"], CLEARED, SYSTEM_MESSAGE, details, now)]
    return []
