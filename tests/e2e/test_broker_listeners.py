"""Issue 8: the built-in MQTT listener and the AMQP client listener, end to end into device state."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aio_pika
import aiomqtt
import pytest

from tests.support.daemon import Daemon
from tests.support.rabbitmq import find_or_start

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "broker-listeners.yaml"


async def attribute(d: Daemon, device: str, within: float = 10.0) -> object:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = (await asyncio.to_thread(d.request, "GET", f"/devices/{device}"))[1]["attributes"].get("last")
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    return None


async def test_builtin_mqtt_and_amqp_listeners_reach_device_state(tmp_path: Path) -> None:
    rabbit = find_or_start(tmp_path / "rabbit")
    if rabbit is None:
        pytest.skip("no RabbitMQ answers on 127.0.0.1:5672 and rabbitmq-server is not installed")
    try:
        prefix = f"e2e{uuid.uuid4().hex[:8]}"
        env = {"AMQP_HOST": rabbit.host, "AMQP_PORT": str(rabbit.port), "AMQP_USER": rabbit.user,
               "AMQP_PASSWORD": rabbit.password, "AMQP_QUEUE": f"{prefix}.queue", "AMQP_PREFIX": prefix}
        with Daemon(tmp_path / "data", "--solution", str(FIXTURE), "--input-command-port", "0", env=env) as d:
            status = await asyncio.to_thread(d.wait_state, "Running")
            for _ in range(100):
                code, ready = await asyncio.to_thread(d.request, "GET", "/ready")
                if code == 200:
                    break
                await asyncio.sleep(0.1)
            assert code == 200, ready
            status = (await asyncio.to_thread(d.request, "GET", "/status"))[1]
            builtin = next(lst for lst in status["listeners"] if lst["key"] == "builtin")
            async with aiomqtt.Client("127.0.0.1", builtin["port"], identifier="device-b1") as device:
                await device.publish("meters/b1/reading", json.dumps({"value": 11}), qos=1)
            assert await attribute(d, "b1") == 11

            connection = await aio_pika.connect(host=rabbit.host, port=rabbit.port, login=rabbit.user,
                                                password=rabbit.password)
            async with connection:
                channel = await connection.channel()
                exchange = await channel.get_exchange("amq.topic")
                await exchange.publish(aio_pika.Message(json.dumps({"value": 22}).encode()),
                                       routing_key=f"{prefix}.a1.reading")
            assert await attribute(d, "a1") == 22
            records = (await asyncio.to_thread(d.request, "GET", "/messages?limit=10"))[1]
            assert {(r["listener"], r["status"]) for r in records} == {("builtin", "Completed"), ("amqpin", "Completed")}
            assert await asyncio.to_thread(d.terminate) == 0
    finally:
        await asyncio.to_thread(rabbit.stop)  # our own node, if we started one
