"""What a device system message changes and answers (``plan_update``): the planning half of NuvIoT's
ListenerModule ``HandleSystemMessageAsync`` (LagoVista/Runtime ``Module/ListenerModule.cs``); the message types,
the property bag keys and the replies are described in ``core/system_messages.py``. Pure: no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import cast

from runtime.core.devices import Device
from runtime.core.health import SYSTEM_MESSAGE, clear_error, current_errors, raise_error
from runtime.core.solution.enums import ParameterType
from runtime.core.solution.model import CustomField, DeviceConfiguration
from runtime.core.system_messages import (
    ACTUAL_CONFIG_LEVEL,
    ADC,
    ALTITUDE,
    BATTERY_LEVEL,
    BATTERY_VOLTAGE,
    CONNECTION,
    DESIRED_CONFIG_LEVEL,
    ERRORS,
    FIRMWARE_SKU,
    FIRMWARE_VERSION,
    GPS_FIX,
    IO,
    LAST_HEARTBEAT,
    LAST_NOTIFICATION,
    LAST_OTHER,
    LOCATION_AT,
    ON_BATTERY,
    RELAYS,
    RESERVED,
    TWIN,
    Kind,
    SystemMessage,
    checked_lat_lon,
    coerce,
    decimal_or_fail,
    fail,
)
from runtime.core.values import dotnet_text


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    payload: bytes


@dataclass(slots=True)
class SystemUpdate:
    """What a system message changes on its device and what it answers."""

    properties: dict[str, object] = field(default_factory=dict)  # changed values only
    bag: dict[str, object] = field(default_factory=dict)  # property-bag keys to set
    location: tuple[float, float] | None = None
    replies: list[Reply] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)  # for the message record's detail

    def applied_to(self, device: Device, now: float) -> Device:
        """A copy of ``device`` with the update applied (the original is untouched)."""
        lat, lon = self.location if self.location is not None else (device.latitude, device.longitude)
        return replace(
            device,
            properties={**device.properties, **self.properties},
            property_bag={**device.property_bag, **self.bag},
            attributes=dict(device.attributes),
            state_machines=dict(device.state_machines),
            latitude=lat,
            longitude=lon,
            last_seen=now,
            updated_at=now,
        )

    def detail(self) -> dict[str, object]:
        out = dict(self.notes)
        if self.properties:
            out["properties"] = self.properties
        if self.bag:
            out["propertyBag"] = sorted(self.bag)
        if self.location is not None:
            out["location"] = {"latitude": self.location[0], "longitude": self.location[1]}
        if self.replies:
            out["replies"] = [r.topic for r in self.replies]
        return out



def desired_level(device: Device) -> int:
    level = device.property_bag.get(DESIRED_CONFIG_LEVEL, 0)
    return level if isinstance(level, int) and not isinstance(level, bool) and level >= 0 else 0


def reply_topic(device_id: str, *tail: str) -> str:
    return "/".join(("nuviot", "dvcsrvc", device_id, *tail))


def plan_update(msg: SystemMessage, device: Device, config: DeviceConfiguration, now: float) -> SystemUpdate:
    """What ``msg`` changes on ``device`` (whose configuration is ``config``) and what to answer."""
    up = SystemUpdate()
    bag = device.property_bag
    kind = msg.kind
    if msg.skipped:
        up.notes["skipped"] = list(msg.skipped)
    if kind is Kind.ONLINE:
        values = {p.key: p.value for p in msg.pairs}
        _firmware(values, bag, up)
        up.bag[CONNECTION] = {
            "at": now,
            "rssi": _number(values.pop("rssi"), "rssi") if "rssi" in values else None,
            "reconnect": coerce(values.pop("reconnect"), ParameterType.TRUE_FALSE, "reconnect")
            if "reconnect" in values else None,
            "ipAddress": _text(values.pop("ipAddress", None)),
            "sim": _text(values.pop("sim", None)),
        }
        _properties(values, device, config, up)
        level = desired_level(device)
        up.replies.append(Reply(reply_topic(device.device_id, "desiredconfig", "srvrlvl", str(level)), b""))
    elif kind is Kind.STATE:
        values = {p.key: p.value for p in msg.pairs}
        up.bag[TWIN] = {"at": now, "reported": dict(values)}
        _firmware(values, bag, up)
        _properties(values, device, config, up)
    elif kind is Kind.HEARTBEAT:
        _heartbeat({p.key: p.value for p in msg.pairs}, now, up)
    elif kind is Kind.GEO:
        up.bag[GPS_FIX] = msg.location is not None
        if msg.location is not None:
            lat, lon, alt = msg.location
            up.location = (lat, lon)
            up.bag[LOCATION_AT] = now
            if alt is not None:
                up.bag[ALTITUDE] = alt
    elif kind in (Kind.ERR_RAISE, Kind.ERR_CLEAR):
        _error(msg, bag, now, up)
    elif kind is Kind.RELAYS:
        up.bag[RELAYS] = list(msg.relays)
    elif kind is Kind.IOVALUES:
        for key, chunk in ((IO, msg.values[:8]), (ADC, msg.values[8:])):
            previous = bag.get(key)
            old = previous if isinstance(previous, list) and len(previous) == 8 else [None] * 8
            up.bag[key] = [old[i] if v is None else v for i, v in enumerate(chunk)]
    elif kind is Kind.DESIRED_CONFIG_SEND:
        _send_config(device, config, up)
    elif kind is Kind.DESIRED_CONFIG_LEVEL:
        up.bag[ACTUAL_CONFIG_LEVEL] = msg.level
        up.notes["inSync"] = msg.level == desired_level(device)
    elif kind is Kind.NOTIFICATION:
        key = msg.key or ""
        up.bag[LAST_NOTIFICATION] = {"key": key, "at": now, "payload": msg.text}
        up.replies.append(Reply(reply_topic(device.device_id, "notification", key, "ack"), b""))
    elif kind is Kind.OTHER:
        up.bag[LAST_OTHER] = {"type": msg.key, "at": now, "payload": msg.text}
        up.notes["unhandled"] = f"{msg.key}: recorded; this runtime does not act on it (NuvIoT does not either)"
    return up


def _text(value: object) -> str | None:
    return None if value is None else cast(str, coerce(value, ParameterType.STRING, ""))  # text gives str


def _number(value: object, key: str) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return decimal_or_fail(text, key)


def _firmware(values: dict[str, object], bag: Mapping[str, object], up: SystemUpdate) -> None:
    for name, key in (("firmwareSku", FIRMWARE_SKU), ("firmwareVersion", FIRMWARE_VERSION)):
        if name not in values:
            continue
        new = _text(values.pop(name))
        old = bag.get(key)
        if new != old:
            up.bag[key] = new
            if name == "firmwareVersion" and old is not None:
                up.notes["firmwareChanged"] = {"from": old, "to": new}


def _properties(values: dict[str, object], device: Device, config: DeviceConfiguration, up: SystemUpdate) -> None:
    fields: dict[str, CustomField] = {f.key: f for f in config.properties}
    unchanged: list[str] = []
    ignored: list[str] = []
    for key, raw in values.items():
        spec = fields.get(key)
        if spec is None:
            ignored.append(key)
            continue
        value = coerce(raw, spec.field_type, key)
        old = device.properties.get(key)
        if type(old) is type(value) and old == value:
            unchanged.append(key)
        else:
            up.properties[key] = value
    if unchanged:
        up.notes["unchanged"] = unchanged
    if ignored:
        up.notes["ignored"] = ignored


def _heartbeat(values: dict[str, object], now: float, up: SystemUpdate) -> None:
    up.bag[LAST_HEARTBEAT] = now
    lat, lon = values.pop("lat", None), values.pop("lon", None)
    if lat is not None or lon is not None:
        if lat is None or lon is None:
            raise fail("MGV1010", "heartbeat: lat and lon must be sent together")
        la, lo = coerce(lat, ParameterType.DECIMAL, "lat"), coerce(lon, ParameterType.DECIMAL, "lon")
        if not isinstance(la, float) or not isinstance(lo, float):  # an empty one is no value
            raise fail("MGV1010", "heartbeat: lat and lon must be sent together")
        up.location = checked_lat_lon(la, lo)
        up.bag[LOCATION_AT] = now
    for name, key, kind in (("batlvl", BATTERY_LEVEL, ParameterType.DECIMAL),
                            ("batvlt", BATTERY_VOLTAGE, ParameterType.DECIMAL),
                            ("onbat", ON_BATTERY, ParameterType.TRUE_FALSE)):
        if name in values:
            up.bag[key] = coerce(values.pop(name), kind, name)
    ignored = [k for k in values if k.startswith(RESERVED)]
    for key, value in values.items():
        if not key.startswith(RESERVED):
            up.bag[key] = value
    if ignored:
        up.notes["ignored"] = ignored


def _error(msg: SystemMessage, bag: Mapping[str, object], now: float, up: SystemUpdate) -> None:
    """``err/raise``, ``err/clear``: the device's error codes (``core/health.py``), source ``systemmessage``."""
    errors = current_errors(bag)
    code = msg.code or ""
    was_active = code in errors
    if msg.kind is Kind.ERR_RAISE:
        raise_error(errors, code, now, msg.details, SYSTEM_MESSAGE)
    else:
        clear_error(errors, code)
    up.bag[ERRORS] = errors
    up.notes["error"] = {"code": code, "action": "raise" if msg.kind is Kind.ERR_RAISE else "clear",
                         "wasActive": was_active}


def _send_config(device: Device, config: DeviceConfiguration, up: SystemUpdate) -> None:
    """NuvIoT's replies byte for byte: ``lvl/{n}`` with an empty payload, then ``prop/{key}`` with the raw value
    of each property (booleans as NuvIoT stores them, ``true``/``false``), then of each property-bag key (the
    runtime's own ``_system.`` keys are not the device's)."""
    level = str(desired_level(device))
    up.replies.append(Reply(reply_topic(device.device_id, "desiredconfig", "lvl", level), b""))
    for spec in config.properties:
        value = device.properties.get(spec.key, spec.default_value)
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else dotnet_text(value)
        up.replies.append(Reply(reply_topic(device.device_id, "desiredconfig", "prop", spec.key), text.encode()))
    for key, value in device.property_bag.items():
        if value is None or key.startswith(RESERVED):
            continue
        up.replies.append(Reply(reply_topic(device.device_id, "desiredconfig", "prop", key),
                                dotnet_text(value).encode()))
