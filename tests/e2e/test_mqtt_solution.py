"""Issue 4: a native MQTT solution end to end through a real mosquitto.

Telemetry in on devices/{id}/telemetry -> state saved -> an output command published on the
~deviceid~ topic and received. Pause stops message intake (the broker keeps what arrives
meanwhile); start resumes it and takes the waiting message.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mqtt-telemetry.yaml"


async def wait_processed(d: Daemon, n: int, within: float = 10.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        status = (await asyncio.to_thread(d.request, "GET", "/status"))[1]
        if status["counters"]["processed"] + status["counters"]["failed"] >= n:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"only {status['counters']} after {within}s")
        await asyncio.sleep(0.05)


async def test_mqtt_telemetry_state_and_command_out(own_mosquitto: Mosquitto, tmp_path: Path) -> None:
    env = {"MQTT_HOST": own_mosquitto.host, "MQTT_PORT": str(own_mosquitto.port), "MQTT_CLIENT_ID": "rt-e2e"}
    d = Daemon(tmp_path / "data", "--solution", str(EXAMPLE), "--input-command-port", "0", env=env)
    with d:
        await asyncio.to_thread(d.wait_state, "Running")
        code, _ = await asyncio.to_thread(d.request, "PUT", "/devices/fan-001", {"deviceConfiguration": "fancontroller"})
        assert code in (200, 201)  # the example seeds fan-001; PUT updates it
        async with aiomqtt.Client(own_mosquitto.host, own_mosquitto.port, identifier="e2e-observer") as client:
            await client.subscribe("devices/fan-001/commands/#", qos=1)
            for _ in range(50):  # the listener is connected when /ready says so
                if (await asyncio.to_thread(d.request, "GET", "/ready"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            await client.publish("devices/fan-001/telemetry",
                                 json.dumps({"temperature": 27.5, "humidity": 55, "fan": "auto"}), qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    assert str(message.topic) == "devices/fan-001/commands/setfan"
                    assert json.loads(message.payload) == {"state": True}
                    break
            status = await wait_processed(d, 1)
            assert status["counters"]["processed"] == 1
            device = (await asyncio.to_thread(d.request, "GET", "/devices/fan-001"))[1]
            assert device["attributes"]["temperature"] == 27.5 and device["attributes"]["humidity"] == 55
            assert device["attributes"]["fanon"] is True

            # a bad message is a dead letter, and the listener keeps going
            await client.publish("devices/fan-001/telemetry", b"\x00\xffgarbage", qos=1)
            await client.publish("devices/fan-002/telemetry", json.dumps({"temperature": 20}), qos=1)
            await wait_processed(d, 3)
            letters = (await asyncio.to_thread(d.request, "GET", "/deadletters"))[1]
            assert {(x["deviceId"], x["stage"]) for x in letters} >= {("fan-001", "inputtranslator"),
                                                                       ("fan-002", "planner")}

            # pause: nothing is taken in, the broker keeps the session's messages; start: intake resumes
            assert (await asyncio.to_thread(d.request, "POST", "/control/pause"))[0] == 202
            await asyncio.to_thread(d.wait_state, "Paused")
            await client.publish("devices/fan-001/telemetry", json.dumps({"temperature": 20.0}), qos=1)
            paused = (await asyncio.to_thread(d.request, "GET", "/status"))[1]
            assert paused["state"] == "Paused" and paused["counters"]["received"] == 3
            assert (await asyncio.to_thread(d.request, "POST", "/control/start"))[0] == 202
            await asyncio.to_thread(d.wait_state, "Running")
            for _ in range(50):
                if (await asyncio.to_thread(d.request, "GET", "/ready"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            await client.publish("devices/fan-001/telemetry", json.dumps({"temperature": 19.0}), qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:  # fan goes off: a command with state false
                    assert json.loads(message.payload) == {"state": False}
                    break
            # the message sent while Paused waited at the broker and went through after start, with the later one
            status = await wait_processed(d, 5)
            assert status["counters"]["received"] == 5
            assert status["counters"]["processed"] + status["counters"]["failed"] == 5
