"""Input commands in the Cluster edition (docs/cluster.md, "Input commands"): a command served by any
replica changes the device's state in order with the device's messages, on the worker that owns the
device, even while that worker is busy with them. Real daemons: 1 ingest + 1 worker, mosquitto, RabbitMQ,
PostgreSQL; the input command counter/reading/counterwf/setmark/{device}?value=N sets the attribute "mark"
while QoS1 readings set "seq"."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import pytest

from tests.cluster.test_cluster_e2e import call, replica, replica_env, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.rabbitmq import Rabbit

pytestmark = pytest.mark.e2e

READINGS = 1500
COMMANDS = 20


def command(port: int, device: str, value: int) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/counter/reading/counterwf/setmark/{device}?value={value}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_input_commands_on_the_ingest_apply_in_order_with_the_busy_workers_messages(
        tmp_path: Path, own_mosquitto: Mosquitto, rabbit: Rabbit, database_url: str, instance_id: str,
        cluster_solution: Path) -> None:
    env = replica_env(rabbit, database_url, instance_id, own_mosquitto, 8)
    ingest = replica(tmp_path, "ingest", "ingest", cluster_solution, env)
    worker = replica(tmp_path, "worker", "worker", cluster_solution, env)
    with ingest, worker:
        for d in (ingest, worker):
            await asyncio.to_thread(d.wait_state, "Running", timeout=60)
        port = (await call(ingest, "GET", "/status"))[1]["inputCommandPort"]
        assert port
        answers: list[tuple[int, dict[str, Any]]] = []

        async def readings() -> None:
            async with aiomqtt.Client(own_mosquitto.host, own_mosquitto.port, identifier=f"r-{instance_id}") as c:
                for seq in range(1, READINGS + 1):
                    await c.publish("cluster/dev0/reading", json.dumps({"seq": seq}), qos=1)

        async def commands() -> None:
            for value in range(1, COMMANDS + 1):
                answers.append(await asyncio.to_thread(command, port, "dev0", value))
                await asyncio.sleep(0.02)

        publishing = asyncio.create_task(readings())
        await commands()
        await publishing
        assert [code for code, _ in answers] == [202] * COMMANDS, answers

        last: list[dict[str, Any]] = []

        async def settled() -> bool:
            code, body = await call(ingest, "GET", "/devices/dev0")
            last[:] = [body.get("attributes", {}) if code == 200 else {}]
            return last[0].get("seq") == READINGS and last[0].get("mark") == COMMANDS

        # the last reading's and the last command's effects, both kept (before: the worker's next write of
        # its copy overwrote the command's, or the command's stale copy the worker's)
        try:
            await wait_for("the last reading's and the last command's state", settled, within=20)
        except AssertionError:
            raise AssertionError(f"dev0's attributes: {last}") from None
        conn = await asyncpg.connect(database_url)
        try:
            ran = [r[0] for r in await conn.fetch("SELECT id FROM messages WHERE listener = 'inputcommand'")]
        finally:
            await conn.close()
        assert sorted(ran) == sorted(body["messageId"] for _, body in answers)  # each recorded once
        # Paused: no worker consumes; the serving replica runs it on the committed state, and the worker that
        # takes the device again on start keeps it
        assert (await call(worker, "POST", "/control/pause"))[0] == 202
        for d in (ingest, worker):
            await asyncio.to_thread(d.wait_state, "Paused", timeout=20)
        code, body = await asyncio.to_thread(command, port, "dev0", 99)
        assert code == 202, body
        assert (await call(ingest, "POST", "/control/start"))[0] == 202
        for d in (ingest, worker):
            await asyncio.to_thread(d.wait_state, "Running", timeout=20)
        async with aiomqtt.Client(own_mosquitto.host, own_mosquitto.port, identifier=f"r2-{instance_id}") as c:
            await c.publish("cluster/dev0/reading", json.dumps({"seq": READINGS + 1}), qos=1)

        async def resumed() -> bool:
            code, body = await call(ingest, "GET", "/devices/dev0")
            last[:] = [body.get("attributes", {}) if code == 200 else {}]
            return last[0].get("seq") == READINGS + 1 and last[0].get("mark") == 99

        try:
            await wait_for("the command run while Paused, kept after start", resumed, within=20)
        except AssertionError:
            raise AssertionError(f"dev0's attributes: {last}") from None
        # the refusals still come from the command's own rules
        code, body = await asyncio.to_thread(command, port, "ghost", 1)
        assert (code, body["error"]["code"]) == (404, "unknown_device")
