"""Input commands on the MQTT command channel against a real mosquitto, with a stand-in executor (issue 20).

The real daemon and the demo's ``setpoint`` are in ``tests/e2e/test_mqtt_input_commands.py``; these pin the
channel's own rules: retained messages never run, commands wait for a settling state, the session resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import orjson
import pytest
import structlog
from pydantic import SecretStr

from runtime.adapters.command.mqtt import MqttCommandChannel
from runtime.core.backoff import Backoff
from runtime.core.lifecycle import InstanceState
from runtime.core.messages import MessageRecord, PemStatus
from runtime.services.input_commands import InputCommands
from tests.fakes import FakeControl
from tests.support.intake import until
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

S = InstanceState
TOKEN = "another-s3cret-for-tests"
PATH = "cfg/route/wf/cmd/dev1"


class Executor:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run_input_command(self, **kw: Any) -> MessageRecord:
        self.calls.append(kw)
        return MessageRecord(id=f"m{len(self.calls)}", received_at=0, listener="inputcommand",
                             status=PemStatus.COMPLETED)


def make_channel(broker: Mosquitto, instance: str, control: FakeControl, executor: Executor,
                 **kw: Any) -> MqttCommandChannel:
    commands = InputCommands(lambda: control.state, lambda: executor)
    return MqttCommandChannel(broker.url, instance, control, SecretStr(TOKEN), input_commands=commands,
                              backoff=Backoff(base=0.05, cap=0.3), **kw)


@contextlib.asynccontextmanager
async def running(channel: MqttCommandChannel) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(channel.run(), name="test:command-mqtt")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(15):
                await task


class Client:
    def __init__(self, client: aiomqtt.Client, instance: str) -> None:
        self.client = client
        self.base = f"nuviot/instances/{instance}"
        self.replies: dict[str, dict[str, Any]] = {}

    async def send(self, request_id: str | None = None, *, retain: bool = False, **body: Any) -> str:
        rid = request_id or uuid.uuid4().hex
        payload = orjson.dumps({"token": TOKEN, "requestId": rid, **body})
        await self.client.publish(f"{self.base}/commands/{PATH}", payload, qos=1, retain=retain)
        return rid

    async def reply(self, request_id: str, within: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while request_id not in self.replies:
                message = await anext(aiter(self.client.messages))
                if message.topic.value.endswith("/reply"):
                    body = orjson.loads(message.payload)  # type: ignore[arg-type]
                    self.replies[body["requestId"]] = body
        return self.replies[request_id]

    async def status(self, state: InstanceState, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            async for message in self.client.messages:
                if message.topic.value.endswith("/status") and orjson.loads(message.payload)["state"] == state:  # type: ignore[arg-type]
                    return


@contextlib.asynccontextmanager
async def client(broker: Mosquitto, instance: str) -> AsyncIterator[Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"cli-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(f"nuviot/instances/{instance}/commands/{PATH}/reply", qos=1)
        await c.subscribe(f"nuviot/instances/{instance}/status", qos=1)
        yield Client(c, instance)


async def test_a_retained_input_command_is_never_run(mosquitto: Mosquitto, unique_topic: str) -> None:
    control, executor = FakeControl(S.RUNNING), Executor()
    async with client(mosquitto, unique_topic) as cli:
        await cli.send("old", retain=True, parameters={"level": 1})
        try:
            async with running(make_channel(mosquitto, unique_topic, control, executor)):
                await cli.status(S.RUNNING)  # connected and subscribed
                live = await cli.reply(await cli.send(parameters={"level": 2}))  # handled after the retained one
        finally:
            await cli.client.publish(f"{cli.base}/commands/{PATH}", b"", qos=1, retain=True)
    assert live["status"] == 202 and live["messageId"] == "m1"
    assert [c["body"] for c in executor.calls] == [{"level": 2}]
    assert "old" not in cli.replies


async def test_a_command_arriving_while_the_state_moves_waits_for_it_to_settle(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    control, executor = FakeControl(S.STOPPED), Executor()
    control.transition(S.STARTING, "start requested")
    async with client(mosquitto, unique_topic) as cli, running(make_channel(mosquitto, unique_topic, control,
                                                                             executor)):
        await cli.status(S.STARTING)
        with structlog.testing.capture_logs() as logs:
            rid = await cli.send(parameters={"level": 3})
            await until(lambda: any(e["event"] == "input_command_waiting" for e in logs))
        assert executor.calls == []  # held while Starting, not refused
        control.transition(S.RUNNING, "started")
        reply = await cli.reply(rid)
        assert reply["status"] == 202 and len(executor.calls) == 1
        # Stopping settles in Stopped: refused then, not while moving
        control.transition(S.STOPPING, "stop requested")
        with structlog.testing.capture_logs() as logs:
            rid = await cli.send(parameters={"level": 4})
            await until(lambda: any(e["event"] == "input_command_waiting" for e in logs))
        control.transition(S.STOPPED, "stopped")
        refused = await cli.reply(rid)
    assert refused["status"] == 503 and refused["error"]["code"] == "not_serving"
    assert len(executor.calls) == 1


async def test_the_session_resumes_and_delivers_what_was_sent_meanwhile(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    control, executor = FakeControl(S.RUNNING), Executor()
    client_id = f"nuviot-runtime-{unique_topic}-test"
    async with client(mosquitto, unique_topic) as cli:
        async with running(make_channel(mosquitto, unique_topic, control, executor, client_id=client_id)):
            await cli.status(S.RUNNING)
            assert (await cli.reply(await cli.send(parameters={"level": 1})))["status"] == 202
        meanwhile = await cli.send(parameters={"level": 2})  # the channel is disconnected now
        async with running(make_channel(mosquitto, unique_topic, control, executor, client_id=client_id)):
            resumed = await cli.reply(meanwhile)
    assert resumed["status"] == 202 and resumed["messageId"] == "m2"
    assert [c["body"] for c in executor.calls] == [{"level": 1}, {"level": 2}]
