"""NuvIoT device system messages (reference/nuviot-runtime.md §5.4, nuviot-spec.md §4.5): pure parsing and planning.

A message whose topic starts with ``nuviot/srvr/dvcsrvc`` (or path ``/nuviot/srvr/dvcsrvc``) never enters
the pipeline: ``parse`` reads it, ``plan_update`` (``core/system_updates.py``) says what changes on the device
and what to answer.
Both raise ``StageError("system", code, detail)`` on bad input; neither logs nor touches storage.

**Address.** ``nuviot/srvr/dvcsrvc/{deviceId}/{type}[/...]``, with or without a leading ``/`` (a trailing
``/`` is ignored); at least 5 segments, the first three exactly as shown. As in NuvIoT's ListenerModule
(LagoVista/Runtime ``Module/ListenerModule.cs``) the type is segment 4; further segments do not change it for
the types below. Any other type (the firmware's ``ioconfig``, ``fwupdate/start``) is recorded (message id
``system:{type}``, ``_system.lastUnhandled``) and still updates the device's last contact. Types:

=============================  ====================================================================
``online``                     ``firmwareSku``, ``firmwareVersion``, ``rssi``, ``reconnect``, ``ipAddress``,
                               ``sim``, plus property values. Replies ``srvrlvl``.
``state``                      property values (the device twin); ``[readonly-]firmwareSku|Version``.
``heartbeat``                  ``lat``, ``lon``, ``batlvl``, ``batvlt``, ``onbat``; any other key goes into
                               the property bag under its own name (never a ``_system.`` key).
``geo``                        ``lat,lon[,alt]`` (signed decimal degrees) or ``nofix``.
``err/{code}/{raise|clear}``   the payload is the error's details (free text).
``err/{raise|clear}``          the code is in the payload: ``code=E1,details=...`` (also ``errorCode``,
                               ``errCode``; other pairs become the details), or ``E1[,details...]``.
``relays``                     exactly 8 values: ``1`` on, ``0`` off, anything else unknown (``null``).
``iovalues``                   exactly 16 values: IO 0-7, then ADC 0-7 (values 8-15); a number, or a
                               quoted text (``"on"``, the firmware's ``setValue(idx, String)``; the quotes
                               are removed, as NuvIoT does). An empty value keeps the previous reading.
``desiredconfig/send``         replies ``lvl`` and one ``prop`` per property.
``desiredconfig/lvl/{n}``      the device now runs configuration revision ``n`` (an integer >= 0).
``notification/{key}``         replies ``notification/{key}/ack``.
=============================  ====================================================================

**Payload of key/value types** (online, state, heartbeat): comma-separated ``key=value`` pairs (blanks
around items ignored; empty items, and items that are not ``key=value``, skipped as NuvIoT skips them and
listed in the record's ``skipped``; a value may contain ``=``), or a JSON object. A key may carry
a type prefix ``type-key``: ``int``/``integer`` (int, else MGV1008), ``dbl``/``double``/``decimal``/``float``
(float, else MGV1009), ``bool``/``boolean`` (true/false/1/0/yes/no/on/off, else MGV1004), ``str``/``string``
and ``readonly`` (text). Any other text before a ``-`` is part of the key. Without a prefix the value
is text until it meets a typed target: a device-configuration property is converted to the property's
``fieldType`` (integer, decimal/valuewithunit, true-false; anything else stays text), and the system
fields below have fixed types. Only keys that match the configuration's property keys change
properties, and only when the converted value differs (type and value); others are listed as ignored.

**Property bag** (shown by ``GET /devices/{id}`` as ``propertyBag``; ``_system.`` keys are reserved):
``_system.firmwareSku``/``firmwareVersion`` (text), ``_system.connection`` ``{at, rssi, reconnect,
ipAddress, sim}`` (last ``online``), ``_system.twin`` ``{at, reported}`` (last ``state``, every pair as
sent), ``_system.lastHeartbeat`` (epoch s), ``_system.batteryLevel``/``batteryVoltage`` (float),
``_system.onBattery`` (bool), ``_system.gpsFix`` (bool), ``_system.altitude`` (float),
``_system.locationAt`` (epoch s), ``_system.errors`` ``{code: {raisedAt, lastRaisedAt, count, details}}``
(active errors only), ``_system.relays`` (8 bools), ``_system.io`` and ``_system.adc`` (8 numbers or
null each), ``_system.desiredConfigLevel`` (int, default 0; the cloud or a script sets it),
``_system.actualConfigLevel`` (int), ``_system.lastNotification`` ``{key, at, payload}``.
The location itself is the device's latitude/longitude.

**Replies** (byte for byte NuvIoT's, sent through the inbound message's reply channel):
``nuviot/dvcsrvc/{id}/desiredconfig/srvrlvl/{n}`` (after ``online``) and ``.../desiredconfig/lvl/{n}`` (first
answer to ``desiredconfig/send``): an empty payload, ``{n}`` the desired revision; then
``.../desiredconfig/prop/{key}``: the raw value of each property (the device's value, else the property's
default; booleans ``true``/``false``; a property with neither is not sent) and of each property-bag key
(not the runtime's ``_system.`` keys); ``.../notification/{key}/ack``: an empty payload.

**Error codes** (stage ``system``): ``invalid_topic``, ``unknown_system_message``, ``invalid_payload``,
``invalid_value_count``, ``invalid_config_level``, ``missing_error_code``, and NuvIoT's value codes
MGV1004 (bool, the code NuvIoT's MessageValue.Validate raises), MGV1008 (int), MGV1009 (decimal), MGV1010
(malformed location), MGV1011 (out of range). Typed values go through the one converter (``core/values.py``,
lenient: firmware writes booleans ``1``/``0``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from runtime.core.errors import StageError
from runtime.core.parsing.errors import INVALID_DECIMAL, shown
from runtime.core.solution.enums import ParameterType
from runtime.core.values import ValueProblem, to_double
from runtime.core.values import convert as convert_value

SYSTEM_PREFIXES = ("nuviot/srvr/dvcsrvc", "/nuviot/srvr/dvcsrvc")  # reference §2.3 step 1.1
STAGE = "system"
RESERVED = "_system."

FIRMWARE_SKU = "_system.firmwareSku"
FIRMWARE_VERSION = "_system.firmwareVersion"
CONNECTION = "_system.connection"
TWIN = "_system.twin"
LAST_HEARTBEAT = "_system.lastHeartbeat"
BATTERY_LEVEL = "_system.batteryLevel"
BATTERY_VOLTAGE = "_system.batteryVoltage"
ON_BATTERY = "_system.onBattery"
GPS_FIX = "_system.gpsFix"
ALTITUDE = "_system.altitude"
LOCATION_AT = "_system.locationAt"
ERRORS = "_system.errors"  # also core/devices.ERRORS
RELAYS = "_system.relays"
IO = "_system.io"
ADC = "_system.adc"
DESIRED_CONFIG_LEVEL = "_system.desiredConfigLevel"
ACTUAL_CONFIG_LEVEL = "_system.actualConfigLevel"
LAST_NOTIFICATION = "_system.lastNotification"
LAST_OTHER = "_system.lastUnhandled"

_DETAILS_MAX = 1000


class Kind(StrEnum):
    ONLINE = "online"
    STATE = "state"
    HEARTBEAT = "heartbeat"
    GEO = "geo"
    ERR_RAISE = "err-raise"
    ERR_CLEAR = "err-clear"
    RELAYS = "relays"
    IOVALUES = "iovalues"
    DESIRED_CONFIG_SEND = "desiredconfig-send"
    DESIRED_CONFIG_LEVEL = "desiredconfig-lvl"
    NOTIFICATION = "notification"
    OTHER = "other"  # a sub-type not modelled here (firmware's ioconfig, fwupdate/start): recorded, last contact


@dataclass(frozen=True, slots=True)
class Pair:
    key: str
    value: object  # str unless the key had a type prefix or the payload was JSON


@dataclass(frozen=True, slots=True)
class SystemMessage:
    """One parsed system message. Which fields are set depends on ``kind``."""

    device_id: str
    kind: Kind
    pairs: tuple[Pair, ...] = ()  # online, state, heartbeat
    location: tuple[float, float, float | None] | None = None  # geo with a fix
    code: str | None = None  # err-*
    details: str = ""  # err-*
    relays: tuple[bool | None, ...] = ()  # None: neither 1 nor 0 (NuvIoT's RelayStates.Unknown)
    values: tuple[float | str | None, ...] = ()  # iovalues (a quoted text value stays text)
    level: int | None = None  # desiredconfig-lvl
    key: str | None = None  # notification; the sub-type of ``other``
    text: str = ""  # notification and ``other`` payload
    skipped: tuple[str, ...] = ()  # items of a key=value payload that are not key=value (NuvIoT skips them)

    @property
    def message_id(self) -> str:
        """The record's message id: ``system:{kind}``; ``system:notification-{key}`` for notifications."""
        if self.kind is Kind.NOTIFICATION:
            return f"system:notification-{self.key}"
        return f"system:{self.key}" if self.kind is Kind.OTHER else f"system:{self.kind}"


def fail(code: str, detail: str) -> StageError:
    return StageError(STAGE, code, detail)


# --------------------------------------------------------------------------- parsing


def parse(address: str, payload: bytes) -> SystemMessage:
    """Read a system message from its topic (or REST path) and payload."""
    return parse_body(*split_address(address), payload)


def split_address(address: str) -> tuple[str, list[str]]:
    """``(deviceId, [type, ...])`` from ``[/]nuviot/srvr/dvcsrvc/{deviceId}/{type}[/...]``."""
    parts = address.strip().strip("/").split("/")
    if len(parts) < 5 or parts[:3] != ["nuviot", "srvr", "dvcsrvc"] or not parts[3]:
        raise fail("invalid_topic", f"{shown(address)} is not nuviot/srvr/dvcsrvc/{{deviceId}}/{{type}}[/...]")
    return parts[3], parts[4:]


def parse_body(device_id: str, rest: list[str], payload: bytes) -> SystemMessage:
    """The message of type ``rest`` (the address segments after the device id) for ``device_id``."""
    try:
        text = payload.decode("utf-8").strip().strip("\x00").strip()
    except UnicodeDecodeError:
        raise fail("invalid_payload", f"the payload is not UTF-8 text: {shown(payload)}") from None
    head, n = rest[0], len(rest)
    # NuvIoT's ListenerModule reads the type from segment 4 only: further segments do not change it
    if head in ("online", "state", "heartbeat"):
        skipped: list[str] = []
        return SystemMessage(device_id, Kind(head), pairs=parse_pairs(text, skipped), skipped=tuple(skipped))
    if head == "geo":
        return _geo(device_id, text)
    if head == "err" and n in (2, 3) and rest[-1] in ("raise", "clear"):
        kind = Kind.ERR_RAISE if rest[-1] == "raise" else Kind.ERR_CLEAR
        code, details = (rest[1], text) if n == 3 else _error_from_payload(text)
        if not code:
            raise fail("missing_error_code", f"{'/'.join(rest)}: no error code (topic err/{{code}}/{rest[-1]} "
                                             "or payload code=...)")
        return SystemMessage(device_id, kind, code=code, details=details[:_DETAILS_MAX])
    if head == "relays":
        items = _items(text, 8, "relays")
        return SystemMessage(device_id, Kind.RELAYS, relays=tuple(_relay(i, v) for i, v in enumerate(items)))
    if head == "iovalues":
        items = _items(text, 16, "iovalues")
        return SystemMessage(device_id, Kind.IOVALUES,
                             values=tuple(_io_value(i, v) for i, v in enumerate(items)))
    if head == "desiredconfig" and rest[1:] == ["send"]:
        return SystemMessage(device_id, Kind.DESIRED_CONFIG_SEND)
    if head == "desiredconfig" and n == 3 and rest[1] == "lvl":
        if not rest[2].isdigit():
            raise fail("invalid_config_level", f"desiredconfig/lvl/{shown(rest[2])}: the level must be an integer >= 0")
        return SystemMessage(device_id, Kind.DESIRED_CONFIG_LEVEL, level=int(rest[2]))
    if head == "notification" and n == 2 and rest[1]:
        return SystemMessage(device_id, Kind.NOTIFICATION, key=rest[1], text=text[:_DETAILS_MAX])
    if head not in ("notification", "err") and all(p.replace("-", "").replace("_", "").isalnum() for p in rest):
        # NuvIoT's ListenerModule has no branch for it and still saves the device with its last contact
        return SystemMessage(device_id, Kind.OTHER, key="/".join(rest), text=text[:_DETAILS_MAX])
    raise fail("unknown_system_message", f"{shown('/'.join(rest))} is not a system message type (online, state, "
                                         "heartbeat, geo, err, relays, iovalues, desiredconfig, notification)")


_PREFIXES = {
    "int": ParameterType.INTEGER, "integer": ParameterType.INTEGER,
    "dbl": ParameterType.DECIMAL, "double": ParameterType.DECIMAL, "decimal": ParameterType.DECIMAL,
    "float": ParameterType.DECIMAL,
    "bool": ParameterType.TRUE_FALSE, "boolean": ParameterType.TRUE_FALSE,
    "str": ParameterType.STRING, "string": ParameterType.STRING, "readonly": ParameterType.STRING,
}


def parse_pairs(text: str, skipped: list[str] | None = None) -> tuple[Pair, ...]:
    """``k=v,type-k=v`` (or a JSON object) -> pairs, typed by prefix. Later duplicates win. With ``skipped``,
    an item that is not ``key=value`` is listed there and left out, as NuvIoT's ListenerModule does."""
    if not text:
        return ()
    if text.startswith("{"):
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise fail("invalid_payload", f"the payload is not a JSON object: {exc}") from None
        if not isinstance(obj, dict):
            raise fail("invalid_payload", "the payload is not a JSON object")
        return tuple(Pair(str(k), v) for k, v in obj.items())
    pairs: dict[str, Pair] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if (not sep or not key) and skipped is not None:
            skipped.append(item[:80])
            continue
        if not sep or not key:
            raise fail("invalid_payload", f"{shown(item)} is not key=value (payload: comma-separated key=value pairs)")
        prefix, dash, name = key.partition("-")
        target = _PREFIXES.get(prefix.lower()) if dash and name else None
        if target is None:
            pairs[key] = Pair(key, raw)
        else:
            pairs[name] = Pair(name, coerce(raw, target, name))
    return tuple(pairs.values())


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


_COERCED = frozenset({ParameterType.INTEGER, ParameterType.DECIMAL, ParameterType.VALUE_WITH_UNIT,
                      ParameterType.TRUE_FALSE, ParameterType.STRING})


def coerce(value: object, field_type: ParameterType, key: str) -> object:
    """A value converted to a property type by the one converter (``core/values.py``, lenient like input
    commands: firmware writes booleans as 1/0); other types are kept as they come."""
    if field_type not in _COERCED:
        return value
    try:
        return convert_value(value, field_type, lenient=True)
    except ValueProblem as exc:
        raise fail(exc.code, f"{key}: {exc.detail}") from None


def decimal_or_fail(text: str, key: str) -> float:
    try:
        return to_double(text, INVALID_DECIMAL)
    except ValueProblem as exc:
        raise fail(exc.code, f"{key}: {exc.detail}") from None


def _items(text: str, count: int, what: str) -> list[str]:
    items = [v.strip() for v in text.split(",")] if text else []
    if len(items) != count:
        raise fail("invalid_value_count", f"{what} expects {count} comma-separated values, got {len(items)}")
    return items


def _relay(index: int, text: str) -> bool | None:
    """``1`` on, ``0`` off, anything else unknown (NuvIoT: ``RelayStates.Unknown``)."""
    return True if text == "1" else (False if text == "0" else None)


def _io_value(index: int, text: str) -> float | str | None:
    """An io value as the firmware writes it: a number, a quoted text (``"on"``), or empty (keep the last)."""
    value = text.replace('"', "").strip()  # NuvIoT removes the quotes
    if not value:
        return None
    try:
        return to_double(value, INVALID_DECIMAL)
    except ValueProblem:
        return value  # a text reading, kept as NuvIoT keeps a sensor's value


def _geo(device_id: str, text: str) -> SystemMessage:
    if text.lower() == "nofix":
        return SystemMessage(device_id, Kind.GEO)
    parts = [p.strip() for p in text.split(",")][:3]  # NuvIoT reads lat, lon and an altitude; more is ignored
    if len(parts) < 2:
        raise fail("MGV1010", f"geo: {shown(text)} is not lat,lon[,alt] or nofix")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise fail("MGV1010", f"geo: {shown(text)} is not lat,lon[,alt] in decimal degrees") from None
    lat, lon = checked_lat_lon(nums[0], nums[1])
    alt = nums[2] if len(nums) == 3 else None
    if alt is not None and not math.isfinite(alt):
        raise fail("MGV1010", f"geo: altitude {shown(parts[2])} is not a number")
    return SystemMessage(device_id, Kind.GEO, location=(lat, lon, alt))


def checked_lat_lon(lat: float, lon: float) -> tuple[float, float]:
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise fail("MGV1011", f"latitude {lat} is outside -90..90")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise fail("MGV1011", f"longitude {lon} is outside -180..180")
    return lat, lon


def _error_from_payload(text: str) -> tuple[str, str]:
    first = text.split(",", 1)[0]
    if "=" not in first:
        code, _, details = text.partition(",")
        return code.strip(), details.strip()
    pairs = {p.key: p.value for p in parse_pairs(text)}
    code = ""
    for name in ("code", "errorCode", "errCode", "errorcode", "errcode"):
        if name in pairs:
            code = str(pairs.pop(name)).strip()
            break
    given = pairs.pop("details", None)
    parts = [] if given is None else [str(given)]
    parts += [f"{k}={v}" for k, v in pairs.items()]
    return code, ",".join(parts)


# --------------------------------------------------------------------------- planning
