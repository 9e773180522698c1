"""Device system messages end to end: the real daemon, a real mosquitto, MQTT and REST devices."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.support.daemon import REPO, Daemon
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port

pytestmark = pytest.mark.integration

SOLUTION = REPO / "tests" / "fixtures" / "system-messages.yaml"
SYS = "nuviot/srvr/dvcsrvc"


class Env:
    def __init__(self, daemon: Daemon, broker: Mosquitto, telemetry_prefix: str, rest_port: int) -> None:
        self.daemon = daemon
        self.broker = broker
        self.telemetry_prefix = telemetry_prefix
        self.rest_port = rest_port

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await asyncio.to_thread(self.daemon.request, method, path, body)

    async def provision(self, **properties: Any) -> str:
        device_id = f"dev-{uuid.uuid4().hex[:10]}"
        code, _ = await self.api("PUT", f"/devices/{device_id}",
                                 {"deviceConfiguration": "sensor", "properties": properties})
        assert code in (200, 201)
        return device_id

    async def device(self, device_id: str) -> dict[str, Any]:
        code, body = await self.api("GET", f"/devices/{device_id}")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    async def device_until(self, device_id: str, pred: Callable[[dict[str, Any]], bool],
                           within: float = 10.0) -> dict[str, Any]:
        last: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    last = await self.device(device_id)
                    if pred(last):
                        return last
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"device never matched; last: {last}") from None

    async def records(self, device_id: str, within: float = 10.0, count: int = 1) -> list[dict[str, Any]]:
        """The device's message records (newest first) once there are at least ``count``."""
        async with asyncio.timeout(within):
            while True:
                code, rows = await self.api("GET", f"/messages?limit=100&deviceId={device_id}")
                assert code == 200
                if len(rows) >= count:
                    return rows  # type: ignore[no-any-return]
                await asyncio.sleep(0.05)

    async def publish(self, topic: str, payload: str | bytes) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, timeout=5) as client:
            await client.publish(topic, payload, qos=1)


class Replies:
    """Subscribed to ``nuviot/dvcsrvc/{id}/#`` before the device speaks."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def take(self, n: int, within: float = 10.0) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        async with asyncio.timeout(within):
            async for m in self.client.messages:
                got.append((m.topic.value, bytes(m.payload)))  # type: ignore[arg-type]
                if len(got) == n:
                    return got
        return got


class _Subscribed:
    def __init__(self, env: Env, device_id: str) -> None:
        self._client = aiomqtt.Client(env.broker.host, env.broker.port, timeout=5)
        self._topic = f"nuviot/dvcsrvc/{device_id}/#"

    async def __aenter__(self) -> Replies:
        await self._client.__aenter__()
        await self._client.subscribe(self._topic, qos=1)
        return Replies(self._client)

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(*exc)


@pytest.fixture(scope="module")
def env(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tag = uuid.uuid4().hex[:10]
    rest_port = free_port()
    daemon = Daemon(
        Path(tmp_path_factory.mktemp("sysmsg")),
        "--solution", str(SOLUTION), "--listener-port", f"restin={rest_port}",
        env={"MQTT_HOST": mosquitto.host, "MQTT_PORT": str(mosquitto.port), "MQTT_CLIENT_ID": f"sysmsg-{tag}",
             "TELEMETRY_PREFIX": f"tele{tag}", "NUVIOT_INPUT_COMMAND_PORT": "0"},
    )
    with daemon:
        daemon.wait_state("Running")
        _wait_ready(daemon)
        yield Env(daemon, mosquitto, f"tele{tag}", rest_port)


def _wait_ready(daemon: Daemon, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = daemon.request("GET", "/ready")
        if code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"never ready: {body}\n" + "\n".join(daemon.lines[-30:]))


def bag(device: dict[str, Any]) -> dict[str, Any]:
    return device["propertyBag"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- MQTT


async def test_online_updates_firmware_and_replies_server_level(env: Env) -> None:
    device_id = await env.provision()
    async with _Subscribed(env, device_id) as replies:
        await env.publish(f"{SYS}/{device_id}/online",
                          "firmwareSku=sensorapp,firmwareVersion=1.32.3,rssi=-60,reconnect=false,"
                          "ipAddress=10.1.2.3,variable1=7")
        got = await replies.take(1)
    assert got == [(f"nuviot/dvcsrvc/{device_id}/desiredconfig/srvrlvl/0", b"")]  # NuvIoT: an empty payload
    device = await env.device_until(device_id, lambda d: "_system.firmwareVersion" in bag(d))
    assert bag(device)["_system.firmwareSku"] == "sensorapp"
    assert bag(device)["_system.firmwareVersion"] == "1.32.3"
    connection = bag(device)["_system.connection"]
    assert (connection["rssi"], connection["reconnect"], connection["ipAddress"]) == (-60, False, "10.1.2.3")
    assert device["properties"] == {"variable1": 7}
    assert device["lastSeen"] is not None
    [record] = await env.records(device_id)
    assert (record["messageId"], record["status"], record["listener"]) == ("system:online", "Completed", "mqttin")


async def test_state_geo_and_heartbeat_update_the_device(env: Env) -> None:
    device_id = await env.provision(variable1=1)
    await env.publish(f"{SYS}/{device_id}/state", "int-variable1=5150,enabled=true,readonly-firmwareVersion=1.54,"
                                                  "unknown=3")
    await env.publish(f"{SYS}/{device_id}/geo", "32.30442,-118.424511,12")
    await env.publish(f"{SYS}/{device_id}/heartbeat", "batlvl=80,batvlt=3.9,onbat=0,phone=5551234")
    await env.records(device_id, count=3)
    device = await env.device(device_id)
    assert device["properties"] == {"variable1": 5150, "enabled": True}
    assert bag(device)["_system.firmwareVersion"] == "1.54"
    assert bag(device)["_system.twin"]["reported"]["unknown"] == "3"
    assert device["location"] == {"latitude": 32.30442, "longitude": -118.424511}
    assert bag(device)["_system.altitude"] == 12.0 and bag(device)["_system.gpsFix"] is True
    assert bag(device)["_system.batteryLevel"] == 80.0
    assert bag(device)["_system.batteryVoltage"] == 3.9
    assert bag(device)["_system.onBattery"] is False
    assert bag(device)["phone"] == "5551234"
    ids = [r["messageId"] for r in await env.records(device_id, count=3)]
    assert ids == ["system:heartbeat", "system:geo", "system:state"]


async def test_error_raise_then_clear(env: Env) -> None:
    device_id = await env.provision()
    await env.publish(f"{SYS}/{device_id}/err/E101/raise", "sensor unplugged")
    device = await env.device_until(device_id, lambda d: bool(bag(d).get("_system.errors")))
    assert bag(device)["_system.errors"]["E101"]["details"] == "sensor unplugged"
    assert bag(device)["_system.errors"]["E101"]["count"] == 1
    await env.publish(f"{SYS}/{device_id}/err/clear", "code=E101")
    await env.device_until(device_id, lambda d: bag(d).get("_system.errors") == {})
    ids = [r["messageId"] for r in await env.records(device_id, count=2)]
    assert ids == ["system:err-clear", "system:err-raise"]


async def test_desiredconfig_send_replies_level_and_each_property(env: Env) -> None:
    device_id = await env.provision(variable1=42, enabled=False)
    async with _Subscribed(env, device_id) as replies:
        await env.publish(f"{SYS}/{device_id}/desiredconfig/send", "")
        got = await replies.take(4)
    p = f"nuviot/dvcsrvc/{device_id}/desiredconfig"
    assert got == [
        (f"{p}/lvl/0", b""),  # NuvIoT's ListenerModule: an empty payload, then each property's raw value
        (f"{p}/prop/variable1", b"42"),
        (f"{p}/prop/setpoint", b"21.5"),
        (f"{p}/prop/enabled", b"false"),
    ]
    await env.publish(f"{SYS}/{device_id}/desiredconfig/lvl/0", "")
    device = await env.device_until(device_id, lambda d: "_system.actualConfigLevel" in bag(d))
    assert bag(device)["_system.actualConfigLevel"] == 0


async def test_garbage_is_a_dead_letter_and_the_listener_goes_on(env: Env) -> None:
    device_id = await env.provision()
    await env.publish(f"{SYS}/{device_id}/iovalues", "1,2,3")
    await env.publish(f"{SYS}/{device_id}/online", "firmwareVersion=2.0")
    await env.publish(f"{env.telemetry_prefix}/{device_id}/telemetry", json.dumps({"temperature": 22.5}))
    rows = await env.records(device_id, count=3)
    by_id = {r["messageId"]: r for r in rows}
    failed = next(r for r in rows if r["status"] == "Failed")
    assert failed["stage"] == "system" and failed["error"].startswith("invalid_value_count: ")
    assert by_id["system:online"]["status"] == "Completed"
    assert by_id["telemetry"]["status"] == "Completed"  # an ordinary message still runs its route
    code, dead = await env.api("GET", "/deadletters?limit=50")
    assert code == 200 and failed["id"] in [d["id"] for d in dead]
    code, detail = await env.api("GET", f"/deadletters/{failed['id']}")
    assert code == 200 and detail["payloadText"] == "1,2,3" and detail["topic"] == f"{SYS}/{device_id}/iovalues"
    device = await env.device(device_id)
    assert device["attributes"]["temperature"] == 22.5
    assert bag(device)["_system.firmwareVersion"] == "2.0"


async def test_unknown_device_is_could_not_find_device(env: Env) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    await env.publish(f"{SYS}/{ghost}/online", "")
    [record] = await env.records(ghost)
    assert (record["status"], record["stage"]) == ("Failed", "planner")
    assert record["error"].startswith("CouldNotFindDevice: ")


# --------------------------------------------------------------------------- REST


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_rest_online_replies_in_the_response(env: Env) -> None:
    device_id = await env.provision()
    base = f"http://127.0.0.1:{env.rest_port}/{SYS}/{device_id}"
    code, body = await asyncio.to_thread(_post, f"{base}/online", b"firmwareSku=rest,firmwareVersion=9.9")
    assert (code, body) == (200, b"")  # keepAliveToSendReply: the srvrlvl reply (empty, as NuvIoT's) is the body
    device = await env.device(device_id)
    assert bag(device)["_system.firmwareVersion"] == "9.9"
    code, body = await asyncio.to_thread(_post, f"{base}/relays", b"1,0")
    assert code == 400
    error = json.loads(body)["error"]
    assert (error["code"], error["stage"]) == ("invalid_value_count", "system")
