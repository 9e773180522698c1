"""System messages exactly as NuvIoT's public firmware sends them (issue 12, done-when 4).

Topics and payloads from softwarelogistics/nuviot ``src/``: ``IOValues.h`` ``toString`` (16 values; a text value
is written quoted, ``setValue(idx, String)``), ``RelayManager.h`` ``toString``, ``NuvIoTClient.cpp`` (the
cellular ``online`` payload: rssi, reconnect, ipAddress, sim and ``NuvIoTState::getRemoteProperties``),
``NuvIoTMQTT.cpp`` (the WiFi ``online`` payload, ``fwupdate/start`` with ``{'url':'...'}``), ``GPSData.h``
``toCSV`` (``lat,lon,alt`` or ``nofix``), ``NuvIoT.h`` ``handleError`` (``err/{code}/raise``),
``NuvIoTClient.cpp`` ``ioconfig`` (``NuvIoTState::getIOConfigSettings``, ending in a newline).
What NuvIoT does with them, and its replies: LagoVista/Runtime ``Module/ListenerModule.cs``
``HandleSystemMessageAsync`` (a sub-type it has no branch for still saves the device with its last contact;
replies on ``srvrlvl``, ``lvl`` and ``notification/{key}/ack`` carry an empty payload).
"""

from __future__ import annotations

import pytest

from runtime.core.messages import InboundMessage, PemStatus
from runtime.core.system_messages import (
    ADC,
    CONNECTION,
    FIRMWARE_VERSION,
    IO,
    RELAYS,
    Kind,
    parse,
)
from runtime.core.system_updates import plan_update
from tests.unit.test_system_messages import CONFIG, NOW, T, _Replies, dev, handler

IOVALUES = b'12.34,,"on",5.00,,,,,,,,,"idle",0.25,,'
ONLINE_CELL = (b"rssi=-67,reconnect=false,ipAddress=10.0.0.5,sim=8901260882301234567,firmwareSku=NVIOT-ESP32,"
               b"firmwareVersion=3.1.4,Boolean-enabled=true,Integer-variable1=5,Decimal-setpoint=1.50,"
               b"String-label=tank 1")
ONLINE_WIFI = b"firmwareVersion=3.1.4,firmwareSku=NVIOT-ESP32,ipAddress=192.168.1.44,rssi=-58"
IOCONFIG = (b"1,1.00,0,1.00,0,1.00,0,1.00,0,1.00,0,1.00,0,1.00,0,1.00,"
            b"2,1.00,0,1.00,0,1.00,0,1.00,0,1.00,0,1.00,0,1.00,0,1.00\n")


def test_iovalues_with_quoted_text_and_blanks() -> None:
    msg = parse(f"{T}/iovalues", IOVALUES)
    assert msg.values[:4] == (12.34, None, "on", 5.0)
    up = plan_update(msg, dev(property_bag={IO: [0.0] * 8, ADC: [1.0] * 8}), CONFIG, NOW)
    assert up.bag[IO] == [12.34, 0.0, "on", 5.0, 0.0, 0.0, 0.0, 0.0]
    assert up.bag[ADC] == [1.0, 1.0, 1.0, 1.0, "idle", 0.25, 1.0, 1.0]


def test_relays_and_an_unknown_relay_state() -> None:
    assert parse(f"{T}/relays", b"1,0,0,0,0,0,0,0").relays == (True,) + (False,) * 7
    up = plan_update(parse(f"{T}/relays", b"1,0,x,0,0,0,0,0"), dev(), CONFIG, NOW)
    assert up.bag[RELAYS][:3] == [True, False, None]  # NuvIoT: RelayStates.Unknown


@pytest.mark.parametrize("payload", [ONLINE_CELL, ONLINE_WIFI], ids=["cellular", "wifi"])
def test_online_as_the_firmware_sends_it(payload: bytes) -> None:
    up = plan_update(parse(f"{T}/online", payload), dev(), CONFIG, NOW)
    assert up.bag[FIRMWARE_VERSION] == "3.1.4"
    assert up.bag[CONNECTION]["rssi"] in (-67, -58)
    assert [(r.topic, r.payload) for r in up.replies] == [("nuviot/dvcsrvc/dev1/desiredconfig/srvrlvl/0", b"")]


def test_online_properties_typed_by_the_firmwares_prefixes() -> None:
    up = plan_update(parse(f"{T}/online", ONLINE_CELL), dev(), CONFIG, NOW)
    assert up.properties == {"enabled": True, "variable1": 5, "setpoint": 1.5, "label": "tank 1"}
    assert up.bag[CONNECTION]["sim"] == "8901260882301234567"


@pytest.mark.parametrize(("payload", "location"), [(b"28.54,-81.37,12.00", (28.54, -81.37, 12.0)),
                                                   (b"nofix", None)])
def test_geo(payload: bytes, location: tuple[float, float, float] | None) -> None:
    assert parse(f"{T}/geo", payload).location == location


def test_error_raised_by_handle_error() -> None:
    msg = parse(f"{T}/err/MQTT002/raise", b"Failed to authenticate to m_mqtt: mqtt.example.com")
    assert (msg.kind, msg.code) == (Kind.ERR_RAISE, "MQTT002")


@pytest.mark.parametrize(("sub", "payload"), [
    ("ioconfig", IOCONFIG),
    ("fwupdate/start", b"{'url':'http://firmware.nuviot.com:14236/api/firmware/download/4F2A'}"),
])
async def test_sub_types_not_modelled_are_recorded_and_update_last_contact(sub: str, payload: bytes) -> None:
    h, devices, _store = await handler()
    out = h.handle(InboundMessage("mq", payload, topic=f"{T}/{sub}", reply=_Replies()))
    assert out.status is PemStatus.COMPLETED and out.message_id == f"system:{sub}"
    device = devices.get("dev1")
    assert device is not None and device.last_seen == NOW
    assert device.property_bag["_system.lastUnhandled"]["type"] == sub
    assert out.detail is not None and "unhandled" in out.detail


def test_malformed_items_are_skipped_as_nuviot_does() -> None:
    up = plan_update(parse(f"{T}/state", b"firmwareVersion=3.1.4,garbage,Integer-variable1=7"), dev(), CONFIG, NOW)
    assert up.properties == {"variable1": 7} and up.notes["skipped"] == ["garbage"]
