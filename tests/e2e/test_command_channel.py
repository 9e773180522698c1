"""Issue 2: the real daemon on the MQTT command channel: retained status, verbs, a broker restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.e2e


async def retained_status(broker: Mosquitto, topic: str, want: str, within: float = 10.0) -> dict:
    async with asyncio.timeout(within):
        while True:
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.subscribe(topic, qos=1)
                try:
                    async with asyncio.timeout(1.0):
                        async for message in client.messages:
                            body = json.loads(message.payload)
                            if message.retain and body["state"] == want:
                                return body
                except TimeoutError:
                    pass
            await asyncio.sleep(0.1)


async def command(broker: Mosquitto, instance: str, verb: str, token: str, request_id: str) -> dict:
    base = f"nuviot/instances/{instance}/control/{verb}"
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(base + "/reply", qos=1)
        await client.publish(base, json.dumps({"token": token, "requestId": request_id}), qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                reply = json.loads(message.payload)
                if reply["requestId"] == request_id:
                    return reply
    raise AssertionError("no reply")


async def test_status_verbs_and_broker_restart(own_mosquitto: Mosquitto, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--listener-port", "restin=0", "--input-command-port", "0",
               "--control-mqtt", own_mosquitto.url)  # instance id: the demo solution's instance key
    with d:
        status = await asyncio.to_thread(d.wait_state, "Running")
        assert status["instanceId"] == "demo"
        topic = "nuviot/instances/demo/status"
        running = await retained_status(own_mosquitto, topic, "Running")
        assert running["since"].endswith("Z")

        reply = await command(own_mosquitto, "demo", "pause", "wrong", "r1")
        assert reply == {"requestId": "r1", "ok": False, "error": reply["error"]}
        assert reply["error"]["code"] == "unauthorized"
        reply = await command(own_mosquitto, "demo", "pause", d.token, "r2")
        assert reply["ok"] is True and reply["state"] in ("Pausing", "Paused")
        await retained_status(own_mosquitto, topic, "Paused")
        reply = await command(own_mosquitto, "demo", "pause", d.token, "r3")
        assert reply["ok"] is False and reply["error"]["code"] == "DEP1006"

        # the broker goes away; the operator starts the instance over HTTP meanwhile; the broker returns
        own_mosquitto.stop()
        assert (await asyncio.to_thread(d.request, "POST", "/control/start"))[0] == 202
        await asyncio.to_thread(d.wait_state, "Running")
        own_mosquitto.start()
        await retained_status(own_mosquitto, topic, "Running", within=20)
        reply = await command(own_mosquitto, "demo", "stop", d.token, "r4")
        assert reply["ok"] is True
        await retained_status(own_mosquitto, topic, "Stopped")
        status = (await asyncio.to_thread(d.request, "GET", "/status"))[1]
        assert status["commandChannel"]["connected"] is True
        assert await asyncio.to_thread(d.terminate) == 0
    # a clean exit leaves Stopped retained, not the last will
    await retained_status(own_mosquitto, topic, "Stopped")
