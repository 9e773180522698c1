"""Device health as NuvIoT models it: a device's current error codes, raised and cleared by alarm states,
business rules, device and message watchdogs and the firmware's ``err`` system messages. Pure: time in, events out.

Where NuvIoT describes it (reference/nuviot-spec.md §2.3, docs/fidelity.md "Device health"):
- a device configuration lists its ``ErrorCodes`` (``DeviceErrorCode``: the ``Key`` is the code);
- a state machine state with ``IsAlarmState`` raises its ``ErrorCode`` when the machine enters it and clears it
  when the machine leaves it;
- a business rule returning false raises its error code; returning true clears it;
- a *device watchdog* (``WatchdogEnabledDefault``, ``WatchdogSeconds``) raises ``watchdog`` when the device has not
  called in for that long; any message from the device clears it;
- a *message watchdog* (``MessageWatchDogs``: ``DeviceMessageDefinition``, ``Timeout`` x ``TimeoutInterval``,
  ``StartupBufferMinutes``, ``DeviceErrorCode``) raises its code when that message has not arrived in time; the
  message clears it.

The current errors live in the device's property bag under ``_system.errors`` (the key the ``err`` system
messages use, ``core/system_messages.py``), so they are stored with the device state and survive a restart:
``{code: {raisedAt, lastRaisedAt, count, details, source}}``. The last arrival of each watched message is
``_system.messagesAt`` ``{message definition key: epoch s}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from runtime.core.devices import ERRORS, Device
from runtime.core.solution.model import DeviceConfiguration, MessageDefinition

MESSAGES_AT = "_system.messagesAt"
DEVICE_WATCHDOG_CODE = "watchdog"  # the code a device watchdog raises (NuvIoT's device status "timed out")

ALARM_STATE = "alarmstate"
BUSINESS_RULE = "businessrule"
DEVICE_WATCHDOG = "devicewatchdog"
MESSAGE_WATCHDOG = "messagewatchdog"
SYSTEM_MESSAGE = "systemmessage"

RAISED = "raised"
CLEARED = "cleared"
DETAILS_MAX = 500  # characters of an event's details kept in a log line or an ``/events`` row


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One change of a device's errors: ``action`` is ``raised`` or ``cleared``."""

    device_id: str
    code: str
    action: str
    source: str
    details: str
    at: float

    def as_dict(self) -> dict[str, object]:
        return {"deviceId": self.device_id, "code": self.code, "action": self.action, "source": self.source,
                "details": self.details, "at": self.at}


def current_errors(bag: Mapping[str, object]) -> dict[str, object]:
    """The device's active errors (a copy; ``{}`` when it has none or the stored value is not a map)."""
    found = bag.get(ERRORS)
    return dict(found) if isinstance(found, dict) else {}


def raise_error(errors: MutableMapping[str, object], code: str, now: float, details: str, source: str) -> bool:
    """Raise ``code`` in ``errors``; True when it was not active before (a new error, not a repeat)."""
    prev = errors.get(code)
    prev = prev if isinstance(prev, dict) else {}
    errors[code] = {"raisedAt": prev.get("raisedAt", now), "lastRaisedAt": now,
                    "count": int(prev.get("count", 0)) + 1, "details": details, "source": source}
    return not prev


def clear_error(errors: MutableMapping[str, object], code: str) -> bool:
    """Clear ``code``; True when it was active."""
    return errors.pop(code, None) is not None


class ErrorChanges:
    """Raise/clear on a working copy of a device's errors, keeping the events (what a run of the workflow does)."""

    __slots__ = ("_bag", "_errors", "device_id", "events", "now")

    def __init__(self, device_id: str, bag: MutableMapping[str, object], now: float) -> None:
        self.device_id = device_id
        self.now = now
        self._bag = bag
        self._errors: dict[str, object] | None = None
        self.events: list[HealthEvent] = []

    def _working(self) -> dict[str, object]:
        if self._errors is None:
            self._errors = current_errors(self._bag)
        return self._errors

    def raise_(self, code: str, details: str, source: str) -> None:
        errors = self._working()
        if raise_error(errors, code, self.now, details, source):
            self.events.append(HealthEvent(self.device_id, code, RAISED, source, details, self.now))
        self._bag[ERRORS] = errors

    def clear(self, code: str, source: str, details: str = "") -> None:
        errors = self._working()
        if clear_error(errors, code):
            self.events.append(HealthEvent(self.device_id, code, CLEARED, source, details, self.now))
            self._bag[ERRORS] = errors

    def is_active(self, code: str) -> bool:
        return code in self._working()


# --------------------------------------------------------------------------- watchdogs


@dataclass(frozen=True, slots=True)
class MessageWatch:
    key: str
    message: str  # message definition key
    seconds: float
    startup_seconds: float
    error_code: str


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """What a device configuration watches; ``None`` from ``watch_plan`` when it watches nothing."""

    device_seconds: float | None
    messages: tuple[MessageWatch, ...]

    @property
    def watched_messages(self) -> frozenset[str]:
        return frozenset(w.message for w in self.messages)


def message_key(ref: str | None, messages: Iterable[MessageDefinition]) -> str | None:
    """A watchdog's ``DeviceMessageDefinition`` (key, message id or entity id) as a message definition key."""
    if not ref:
        return None
    candidates = list(messages)
    for attr in ("key", "message_id", "id"):
        for m in candidates:
            if getattr(m, attr, None) == ref:
                return m.key
    return None


def watch_plan(config: DeviceConfiguration, messages: Iterable[MessageDefinition]) -> WatchPlan | None:
    candidates = list(messages)
    device_seconds = (
        float(config.watchdog_seconds)
        if config.watchdog_enabled_default and config.watchdog_seconds and config.watchdog_seconds > 0
        else None
    )
    watches = []
    for wd in config.message_watch_dogs:
        seconds = wd.timeout_seconds
        message = message_key(wd.device_message_definition, candidates)
        if seconds is None or message is None:
            continue  # validate says so (PYRT2091, `messageWatchDogs`)
        watches.append(MessageWatch(wd.key, message, seconds, wd.startup_buffer_minutes * 60.0,
                                    wd.device_error_code or wd.key))
    if device_seconds is None and not watches:
        return None
    return WatchPlan(device_seconds, tuple(watches))


def _messages_at(bag: Mapping[str, object]) -> dict[str, object]:
    found = bag.get(MESSAGES_AT)
    return found if isinstance(found, dict) else {}


def message_seen(plan: WatchPlan, device: Device, message_key: str | None, now: float) -> list[HealthEvent]:
    """A message from ``device`` (already a working copy) arrived: note it, clear the watchdogs it satisfies.
    Replaces ``device.property_bag`` with a new dict when something changes (the old one may be shared)."""
    bag = device.property_bag
    changed: dict[str, object] | None = None
    if message_key is not None and message_key in plan.watched_messages:
        changed = dict(bag)
        changed[MESSAGES_AT] = {**_messages_at(bag), message_key: now}
    errors = bag.get(ERRORS)
    events: list[HealthEvent] = []
    if isinstance(errors, dict) and errors:
        target = changed if changed is not None else dict(bag)
        changes = ErrorChanges(device.device_id, target, now)
        if plan.device_seconds is not None:
            changes.clear(DEVICE_WATCHDOG_CODE, DEVICE_WATCHDOG, "the device called in")
        for w in plan.messages:
            if w.message == message_key:
                changes.clear(w.error_code, MESSAGE_WATCHDOG, f"message {message_key} arrived")
        if changes.events:
            changed = target
            events = changes.events
    if changed is not None:
        device.property_bag = changed
    return events


def _deadlines(plan: WatchPlan, device: Device, started: float) -> list[tuple[float, str, str, str]]:
    """(due time, code, source, details) for each watchdog of the device that is not already raised."""
    errors = device.property_bag.get(ERRORS)
    active = errors if isinstance(errors, dict) else {}
    out: list[tuple[float, str, str, str]] = []
    since = device.last_seen or device.created_at or started
    if plan.device_seconds is not None and DEVICE_WATCHDOG_CODE not in active:
        out.append((since + plan.device_seconds, DEVICE_WATCHDOG_CODE, DEVICE_WATCHDOG,
                    f"no message for {plan.device_seconds:g} s"))
    seen = _messages_at(device.property_bag)
    for w in plan.messages:
        if w.error_code in active:
            continue
        last = seen.get(w.message)
        base = float(last) if isinstance(last, (int, float)) else (device.created_at or started)
        due = max(base + w.seconds, started + w.startup_seconds)
        out.append((due, w.error_code, MESSAGE_WATCHDOG,
                    f"message watchdog {w.key}: no {w.message} message for {w.seconds:g} s"))
    return out


def next_due(plan: WatchPlan, device: Device, started: float) -> float | None:
    """When the device's next watchdog falls due (epoch s), or None when every one is already raised."""
    times = [d[0] for d in _deadlines(plan, device, started)]
    return min(times) if times else None


def expired(plan: WatchPlan, device: Device, now: float, started: float) -> tuple[Device, list[HealthEvent]] | None:
    """A copy of ``device`` with the watchdogs that fell due by ``now`` raised, and their events; None if none."""
    due = [d for d in _deadlines(plan, device, started) if d[0] <= now]
    if not due:
        return None
    updated = device.copy()
    updated.property_bag = dict(device.property_bag)
    changes = ErrorChanges(device.device_id, updated.property_bag, now)
    for _at, code, source, details in due:
        changes.raise_(code, details, source)
    updated.updated_at = now
    return updated, changes.events
