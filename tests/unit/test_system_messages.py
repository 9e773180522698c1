"""Device system messages: parsing (every type, bad input), planning the device update, the handler service."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.messages import InboundMessage, OutgoingMessage, PemStatus
from runtime.core.solution.model import DeviceConfiguration, SolutionDocument
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
    ON_BATTERY,
    RELAYS,
    TWIN,
    Kind,
    Pair,
    SystemMessage,
    parse,
)
from runtime.core.system_updates import plan_update
from runtime.services.devices import DeviceRegistry
from runtime.services.system_messages import SystemMessageHandler

NOW = 1_700_000_000.0
T = "nuviot/srvr/dvcsrvc/dev1"

CONFIG = DeviceConfiguration.model_validate({
    "key": "cfg",
    "properties": [
        {"key": "variable1", "fieldType": "integer"},
        {"key": "setpoint", "fieldType": "decimal", "defaultValue": "21.5"},
        {"key": "enabled", "fieldType": "true-false"},
        {"key": "label", "fieldType": "string"},
        {"key": "unset", "fieldType": "string"},
    ],
})


def dev(**kw: Any) -> Device:
    return Device(device_id="dev1", device_configuration="cfg", **kw)


# --------------------------------------------------------------------------- parse: good input

GOOD: list[tuple[str, str, SystemMessage]] = [
    (f"{T}/online", "", SystemMessage("dev1", Kind.ONLINE)),
    (f"/{T}/online", "firmwareSku=sensorapp,firmwareVersion=1.32.3,rssi=12,reconnect=false",
     SystemMessage("dev1", Kind.ONLINE, pairs=(Pair("firmwareSku", "sensorapp"), Pair("firmwareVersion", "1.32.3"),
                                               Pair("rssi", "12"), Pair("reconnect", "false")))),
    (f"{T}/state", "int-variable1=5150,readonly-firmwareVersion=1.54",
     SystemMessage("dev1", Kind.STATE, pairs=(Pair("variable1", 5150), Pair("firmwareVersion", "1.54")))),
    (f"{T}/state", " dbl-x = 2.5 , bool-on=yes,str-s=7,, my-key=a=b ",
     SystemMessage("dev1", Kind.STATE, pairs=(Pair("x", 2.5), Pair("on", True), Pair("s", "7"),
                                              Pair("my-key", "a=b")))),
    (f"{T}/state", '{"variable1": 7, "label": "x"}',
     SystemMessage("dev1", Kind.STATE, pairs=(Pair("variable1", 7), Pair("label", "x")))),
    (f"{T}/state", "a=1,a=2", SystemMessage("dev1", Kind.STATE, pairs=(Pair("a", "2"),))),
    (f"{T}/heartbeat", "lat=1.5,lon=2.5,batlvl=80",
     SystemMessage("dev1", Kind.HEARTBEAT, pairs=(Pair("lat", "1.5"), Pair("lon", "2.5"), Pair("batlvl", "80")))),
    (f"{T}/geo", "32.30442,-118.424511", SystemMessage("dev1", Kind.GEO, location=(32.30442, -118.424511, None))),
    (f"{T}/geo", "1,2,300.5", SystemMessage("dev1", Kind.GEO, location=(1.0, 2.0, 300.5))),
    (f"{T}/geo", "NoFix", SystemMessage("dev1", Kind.GEO)),
    (f"{T}/err/E101/raise", "sensor unplugged", SystemMessage("dev1", Kind.ERR_RAISE, code="E101",
                                                              details="sensor unplugged")),
    (f"{T}/err/E101/clear", "", SystemMessage("dev1", Kind.ERR_CLEAR, code="E101")),
    (f"{T}/err/raise", "E7,too hot", SystemMessage("dev1", Kind.ERR_RAISE, code="E7", details="too hot")),
    (f"{T}/err/raise", "code=E7,details=too hot,temp=99",
     SystemMessage("dev1", Kind.ERR_RAISE, code="E7", details="too hot,temp=99")),
    (f"{T}/err/clear", "errorCode=E7", SystemMessage("dev1", Kind.ERR_CLEAR, code="E7")),
    (f"{T}/relays", "1,0,1,0,0,0,0,1",
     SystemMessage("dev1", Kind.RELAYS, relays=(True, False, True, False, False, False, False, True))),
    (f"{T}/iovalues", "1.1,2.2,3.3,4.4,5.5,6.6,7.7,8.8,1.9,2.8,3.7,4.6,5.5,6.4,7.3,8.8",
     SystemMessage("dev1", Kind.IOVALUES, values=(1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8,
                                                  1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.8))),
    (f"{T}/iovalues", ",,,4,,,,,,,,,,,,", SystemMessage("dev1", Kind.IOVALUES, values=(None,) * 3 + (4.0,) + (None,) * 12)),
    (f"{T}/desiredconfig/send", "", SystemMessage("dev1", Kind.DESIRED_CONFIG_SEND)),
    (f"{T}/desiredconfig/lvl/12", "", SystemMessage("dev1", Kind.DESIRED_CONFIG_LEVEL, level=12)),
    (f"{T}/notification/hot", "it is hot", SystemMessage("dev1", Kind.NOTIFICATION, key="hot", text="it is hot")),
    (f"/{T}/online/", "", SystemMessage("dev1", Kind.ONLINE)),  # REST path with a trailing slash
]


@pytest.mark.parametrize(("address", "payload", "expected"), GOOD, ids=[f"{a[len(T):]}:{p[:20]}" for a, p, _ in GOOD])
def test_parse(address: str, payload: str, expected: SystemMessage) -> None:
    assert parse(address, payload.encode()) == expected


@pytest.mark.parametrize(("address", "message_id"), [
    (f"{T}/online", "system:online"),
    (f"{T}/err/E1/raise", "system:err-raise"),
    (f"{T}/desiredconfig/lvl/3", "system:desiredconfig-lvl"),
    (f"{T}/notification/hot", "system:notification-hot"),
])
def test_message_id(address: str, message_id: str) -> None:
    assert parse(address, b"").message_id == message_id


# --------------------------------------------------------------------------- parse: bad input

BAD: list[tuple[str, bytes, str]] = [
    ("nuviot/srvr/dvcsrvc/dev1", b"", "invalid_topic"),  # too few segments
    ("nuviot/srvr/dvcsrvc", b"", "invalid_topic"),
    ("nuviot/srvr/dvcsrvcx/dev1/online", b"", "invalid_topic"),
    ("nuviot/srvr/dvcsrvc//online", b"", "invalid_topic"),  # empty device id
    (f"{T}/err/E1/explode", b"", "unknown_system_message"),
    (f"{T}/notification", b"", "unknown_system_message"),
    (f"{T}/re boot", b"", "unknown_system_message"),
    (f"{T}/state", b"{not json", "invalid_payload"),
    (f"{T}/state", b'{"x": NaN}', "invalid_payload"),
    (f"{T}/state", b"\xff\xfe", "invalid_payload"),
    (f"{T}/state", b"int-variable1=abc", "MGV1008"),
    (f"{T}/state", b"dbl-x=1.2.3", "MGV1009"),
    (f"{T}/state", b"dbl-x=nan", "MGV1009"),
    (f"{T}/state", b"bool-x=maybe", "MGV1004"),  # NuvIoT MessageValue.Validate raises MGV1004 for a bad boolean
    (f"{T}/iovalues", b"1,2,3", "invalid_value_count"),
    (f"{T}/iovalues", b"", "invalid_value_count"),
    (f"{T}/relays", b"1,0,1", "invalid_value_count"),
    (f"{T}/geo", b"", "MGV1010"),
    (f"{T}/geo", b"north,south", "MGV1010"),
    (f"{T}/geo", b"91,0", "MGV1011"),
    (f"{T}/geo", b"0,-181", "MGV1011"),
    (f"{T}/desiredconfig/lvl/x", b"", "invalid_config_level"),
    (f"{T}/desiredconfig/lvl/-1", b"", "invalid_config_level"),
    (f"{T}/err/raise", b"", "missing_error_code"),
    (f"{T}/err/raise", b"details=no code", "missing_error_code"),
]


@pytest.mark.parametrize(("address", "payload", "code"), BAD, ids=[f"{a}:{p[:12]!r}" for a, p, _ in BAD])
def test_parse_refuses(address: str, payload: bytes, code: str) -> None:
    with pytest.raises(StageError) as info:
        parse(address, payload)
    assert (info.value.stage, info.value.code) == ("system", code)
    assert info.value.detail


# --------------------------------------------------------------------------- plan_update


def plan(address: str, payload: str, device: Device | None = None) -> Any:
    return plan_update(parse(f"{T}/{address}", payload.encode()), device or dev(), CONFIG, NOW)


def test_online_sets_firmware_connection_properties_and_replies_server_level() -> None:
    d = dev(property_bag={DESIRED_CONFIG_LEVEL: 4, FIRMWARE_VERSION: "1.0"})
    up = plan("online", "firmwareSku=sensorapp,firmwareVersion=1.32.3,rssi=-67,reconnect=true,"
                        "ipAddress=10.0.0.5,sim=8901,variable1=3,other=1", d)
    assert up.bag[FIRMWARE_SKU] == "sensorapp"
    assert up.bag[FIRMWARE_VERSION] == "1.32.3"
    assert up.notes["firmwareChanged"] == {"from": "1.0", "to": "1.32.3"}
    assert up.bag[CONNECTION] == {"at": NOW, "rssi": -67, "reconnect": True, "ipAddress": "10.0.0.5", "sim": "8901"}
    assert up.properties == {"variable1": 3}
    assert up.notes["ignored"] == ["other"]
    # NuvIoT's ListenerModule answers online with an empty payload on srvrlvl/{n}
    assert [(r.topic, r.payload) for r in up.replies] == [("nuviot/dvcsrvc/dev1/desiredconfig/srvrlvl/4", b"")]


def test_state_converts_to_property_types_and_skips_unchanged() -> None:
    d = dev(properties={"variable1": 5150, "label": "old"})
    up = plan("state", "int-variable1=5150,setpoint=22,bool-enabled=1,label=new,readonly-firmwareVersion=1.54,x=1", d)
    assert up.properties == {"setpoint": 22.0, "enabled": True, "label": "new"}
    assert up.notes["unchanged"] == ["variable1"]
    assert up.notes["ignored"] == ["x"]
    assert up.bag[FIRMWARE_VERSION] == "1.54"
    assert "firmwareChanged" not in up.notes  # first report is not a change
    assert up.bag[TWIN]["reported"]["variable1"] == 5150
    assert "firmwareVersion" not in up.properties  # read-only: never a property


def test_state_value_that_does_not_fit_the_property_type_is_refused() -> None:
    with pytest.raises(StageError) as info:
        plan("state", "variable1=abc")
    assert info.value.code == "MGV1008"


def test_heartbeat_location_battery_and_extras() -> None:
    up = plan("heartbeat", "lat=1.5,lon=2.5,batlvl=80,batvlt=3.7,onbat=1,phone=+15551234,int-mcc=310,_system.relays=x")
    assert up.location == (1.5, 2.5)
    assert up.bag[BATTERY_LEVEL] == 80.0
    assert up.bag[BATTERY_VOLTAGE] == 3.7
    assert up.bag[ON_BATTERY] is True
    assert up.bag[LAST_HEARTBEAT] == NOW
    assert up.bag["phone"] == "+15551234"  # unprefixed extras stay text
    assert up.bag["mcc"] == 310
    assert RELAYS not in up.bag and up.notes["ignored"] == ["_system.relays"]


def test_heartbeat_needs_lat_and_lon_together() -> None:
    with pytest.raises(StageError) as info:
        plan("heartbeat", "lat=1.5")
    assert info.value.code == "MGV1010"


@pytest.mark.parametrize("body", ["lat=,lon=5", "lat=5,lon="])
def test_heartbeat_with_an_empty_lat_or_lon_is_mgv1010_not_a_crash(body: str) -> None:
    with pytest.raises(StageError) as info:  # was a TypeError (internal_error) before the values were typed
        plan("heartbeat", body)
    assert info.value.code == "MGV1010"


def test_geo_fix_and_nofix() -> None:
    up = plan("geo", "10,20,30")
    assert up.location == (10.0, 20.0) and up.bag[ALTITUDE] == 30.0 and up.bag[GPS_FIX] is True
    up = plan("geo", "nofix")
    assert up.location is None and up.bag == {GPS_FIX: False}
    moved = up.applied_to(dev(latitude=1.0, longitude=2.0), NOW)
    assert (moved.latitude, moved.longitude) == (1.0, 2.0)  # nofix keeps the last location


def test_error_raise_again_then_clear() -> None:
    d = dev()
    up = plan("err/E101/raise", "unplugged", d)
    assert up.bag[ERRORS] == {"E101": {"raisedAt": NOW, "lastRaisedAt": NOW, "count": 1, "details": "unplugged",
                                        "source": "systemmessage"}}
    d = up.applied_to(d, NOW)
    up = plan_update(parse(f"{T}/err/E101/raise", b"still"), d, CONFIG, NOW + 5)
    assert up.bag[ERRORS]["E101"] == {"raisedAt": NOW, "lastRaisedAt": NOW + 5, "count": 2, "details": "still",
                                     "source": "systemmessage"}
    d = up.applied_to(d, NOW + 5)
    up = plan("err/clear", "code=E101", d)
    assert up.bag[ERRORS] == {} and up.notes["error"] == {"code": "E101", "action": "clear", "wasActive": True}


def test_relays_and_iovalues_keep_previous_readings_for_blanks() -> None:
    assert plan("relays", "1,1,0,0,0,0,0,1").bag[RELAYS] == [True, True, False, False, False, False, False, True]
    d = dev(property_bag={IO: [1.0] * 8, ADC: [2.0] * 8})
    up = plan("iovalues", ",5,,,,,,,,,,,,,,9", d)
    assert up.bag[IO] == [1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert up.bag[ADC] == [2.0] * 7 + [9.0]


def test_desiredconfig_send_replies_level_and_each_property_with_a_value() -> None:
    d = dev(properties={"variable1": 5150, "enabled": False, "label": "a,b"}, property_bag={DESIRED_CONFIG_LEVEL: 2})
    up = plan("desiredconfig/send", "", d)
    assert [(r.topic, r.payload) for r in up.replies] == [
        ("nuviot/dvcsrvc/dev1/desiredconfig/lvl/2", b""),  # NuvIoT: an empty payload, then each raw value
        ("nuviot/dvcsrvc/dev1/desiredconfig/prop/variable1", b"5150"),
        ("nuviot/dvcsrvc/dev1/desiredconfig/prop/setpoint", b"21.5"),  # the default
        ("nuviot/dvcsrvc/dev1/desiredconfig/prop/enabled", b"false"),
        ("nuviot/dvcsrvc/dev1/desiredconfig/prop/label", b"a,b"),
    ]  # "unset" has no value and no default: not sent; the runtime's _system. keys are not the device's
    assert up.bag == {} and up.properties == {}


def test_desiredconfig_level_and_notification() -> None:
    up = plan("desiredconfig/lvl/3", "", dev(property_bag={DESIRED_CONFIG_LEVEL: 3}))
    assert up.bag == {ACTUAL_CONFIG_LEVEL: 3} and up.notes["inSync"] is True
    up = plan("notification/hot", "43C")
    assert up.bag[LAST_NOTIFICATION] == {"key": "hot", "at": NOW, "payload": "43C"}
    assert [(r.topic, r.payload) for r in up.replies] == [("nuviot/dvcsrvc/dev1/notification/hot/ack", b"")]


def test_applied_to_copies_the_device() -> None:
    d = dev(properties={"label": "a"}, property_bag={"k": 1})
    up = plan("state", "label=b")
    new = up.applied_to(d, NOW)
    assert new is not d and d.properties == {"label": "a"} and new.properties == {"label": "b"}
    assert new.property_bag["k"] == 1 and new.last_seen == NOW and d.last_seen is None


# --------------------------------------------------------------------------- the handler service


class _Store:
    def __init__(self) -> None:
        self.saved: list[Device] = []

    async def load_devices(self) -> list[Device]:
        return []

    async def upsert_device(self, device: Device) -> None:
        return None

    async def delete_device(self, device_id: str) -> bool:
        return False

    def save_device_state(self, device: Device) -> None:
        self.saved.append(device)


class _Replies:
    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    def send(self, out: OutgoingMessage) -> None:
        self.sent.append(out)


DOC = SolutionDocument.model_validate({
    "solution": {"key": "s", "planner": {"key": "p"}, "deviceConfigurations": [CONFIG.model_dump(by_alias=True)]},
})


async def handler() -> tuple[SystemMessageHandler, DeviceRegistry, _Store]:
    store = _Store()
    devices = DeviceRegistry(store)
    await devices.provision("dev1", {"deviceConfiguration": "cfg"}, DOC)
    return SystemMessageHandler(DOC, devices, clock=lambda: NOW), devices, store


async def test_handler_updates_the_device_and_replies() -> None:
    h, devices, store = await handler()
    replies = _Replies()
    out = h.handle(InboundMessage("mq", b"firmwareVersion=2.0,variable1=9", topic=f"{T}/online", reply=replies))
    assert out.status is PemStatus.COMPLETED and out.error is None
    assert (out.device_id, out.message_id) == ("dev1", "system:online")
    device = devices.get("dev1")
    assert device is not None and store.saved == [device]
    assert device.properties == {"variable1": 9} and device.property_bag[FIRMWARE_VERSION] == "2.0"
    assert device.last_seen == NOW
    assert [(o.topic, o.payload) for o in replies.sent] == [("nuviot/dvcsrvc/dev1/desiredconfig/srvrlvl/0", b"")]
    assert out.detail is not None and out.detail["replies"] == ["nuviot/dvcsrvc/dev1/desiredconfig/srvrlvl/0"]


async def test_handler_rest_path_without_reply_channel() -> None:
    h, _, _ = await handler()
    out = h.handle(InboundMessage("rest", b"", path=f"/{T}/online", method="POST"))
    assert out.status is PemStatus.COMPLETED
    assert out.detail is not None and "repliesNotSent" in out.detail


@pytest.mark.parametrize(("topic", "payload", "stage", "code", "device_id"), [
    ("nuviot/srvr/dvcsrvc/ghost/online", b"", "planner", "CouldNotFindDevice", "ghost"),
    (f"{T}/iovalues", b"1,2,3", "system", "invalid_value_count", "dev1"),
    ("nuviot/srvr/dvcsrvc/x", b"", "system", "invalid_topic", None),
])
async def test_handler_failures_are_dead_letters(topic: str, payload: bytes, stage: str, code: str,
                                                 device_id: str | None) -> None:
    h, _, store = await handler()
    out = h.handle(InboundMessage("mq", payload, topic=topic))
    assert out.status is PemStatus.FAILED and out.stage == stage
    assert out.error is not None and out.error.startswith(code + ": ")
    assert out.device_id == device_id
    assert store.saved == []
