"""Issue 20: input commands over the MQTT command channel, with the real daemon and the suite's mosquitto."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.e2e.conftest import http
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.e2e

SETPOINT = "thermostat/telemetry/thermostatwf/setpoint/thermo-001"


class Operator:
    """An MQTT client that sends input commands and collects every reply, by requestId."""

    def __init__(self, client: aiomqtt.Client, instance: str, token: str) -> None:
        self.client = client
        self.base = f"nuviot/instances/{instance}/commands"
        self.token = token
        self.replies: dict[str, list[dict[str, Any]]] = {}

    async def send(self, path: str, parameters: dict[str, Any] | None = None, *, request_id: str | None = None,
                   token: str | None = None, **extra: Any) -> str:
        rid = request_id or uuid.uuid4().hex
        body: dict[str, Any] = {"token": self.token if token is None else token, "requestId": rid, **extra}
        if parameters is not None:
            body["parameters"] = parameters
        await self.client.publish(f"{self.base}/{path}", json.dumps(body), qos=1)
        return rid

    async def reply(self, request_id: str, nth: int = 1, within: float = 20.0) -> dict[str, Any]:
        """The ``nth`` reply to ``request_id`` (replies to other requests are kept for later)."""
        async with asyncio.timeout(within):
            while len(self.replies.get(request_id, [])) < nth:
                message = await anext(aiter(self.client.messages))
                assert message.topic.value.endswith("/reply") and not message.retain
                body = json.loads(message.payload)
                self.replies.setdefault(body["requestId"], []).append({"topic": message.topic.value, **body})
        return self.replies[request_id][nth - 1]

    async def call(self, path: str, parameters: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return await self.reply(await self.send(path, parameters, **kw))


@asynccontextmanager
async def operator(broker: Mosquitto, instance: str, token: str) -> AsyncIterator[Operator]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"op-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"nuviot/instances/{instance}/commands/+/+/+/+/+/reply", qos=1)
        yield Operator(client, instance, token)


def target(d: Daemon) -> float:
    return d.request("GET", "/devices/thermo-001")[1]["attributes"]["targettemperature"]


def input_records(d: Daemon) -> int:
    return sum(1 for r in d.request("GET", "/messages?limit=1000")[1] if r["listener"] == "inputcommand")


async def test_setpoint_over_mqtt_in_running_and_paused_and_every_refusal(mosquitto: Mosquitto,
                                                                           tmp_path: Path) -> None:
    instance = f"ic{uuid.uuid4().hex[:10]}"
    d = Daemon(tmp_path / "data", "--listener-port", "restin=0", "--input-command-port", "0",
               "--control-mqtt", mosquitto.url, "--instance-id", instance)
    with d:
        await asyncio.to_thread(d.wait_state, "Running")
        async with operator(mosquitto, instance, d.token) as op:
            ok = await op.call(SETPOINT, {"value": 24})
            assert ok == {"topic": f"{op.base}/{SETPOINT}/reply", "requestId": ok["requestId"], "ok": True,
                          "status": 202, "messageId": ok["messageId"]}
            assert await asyncio.to_thread(target, d) == 24.0
            records = await asyncio.to_thread(d.request, "GET", "/messages?limit=5")
            assert records[1][0]["messageId"] == "setpoint" and records[1][0]["id"] == ok["messageId"]
            # the demo's onArrive sends "ack" to the original listener, which an input command does not have
            assert records[1][0]["status"] == "CompletedWithWarnings"

            # Paused: served as over HTTP
            assert (await asyncio.to_thread(d.request, "POST", "/control/pause"))[0] == 202
            await asyncio.to_thread(d.wait_state, "Paused")
            paused = await op.call(SETPOINT, {"value": "25.5"})  # text converts as a query-string value does
            assert paused["ok"] is True and paused["status"] == 202
            assert await asyncio.to_thread(target, d) == 25.5

            missing = await op.call(SETPOINT, {})
            assert missing["status"] == 400 and missing["ok"] is False
            assert missing["error"]["code"] == "missing_parameter" and "value" in missing["error"]["message"]
            # the input-command port answers the same (one implementation serves both)
            port = (await asyncio.to_thread(d.request, "GET", "/status"))[1]["inputCommandPort"]
            code, body, _ = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/{SETPOINT}")
            assert (code, body["error"]) == (missing["status"], missing["error"])
            out_of_range = await op.call(SETPOINT, {"value": 99})
            assert out_of_range["status"] == 400 and out_of_range["error"]["code"] == "invalid_parameter"
            unknown = await op.call("thermostat/telemetry/thermostatwf/nosuch/thermo-001", {"value": 20})
            assert unknown["status"] == 404 and unknown["error"]["code"] == "unknown_command"
            no_device = await op.call("thermostat/telemetry/thermostatwf/setpoint/ghost", {"value": 20})
            assert no_device["status"] == 404 and no_device["error"]["code"] == "unknown_device"
            wrong_method = await op.call(SETPOINT, {"value": 20}, method="POST")
            assert wrong_method["status"] == 405 and wrong_method["error"]["code"] == "method_not_allowed"
            wrong_token = await op.call(SETPOINT, {"value": 20}, token="guess-" + d.token)
            assert wrong_token == {"topic": wrong_token["topic"], "requestId": wrong_token["requestId"],
                                   "ok": False, "status": 401,
                                   "error": {"code": "unauthorized", "message": "missing or wrong token"}}
            assert await asyncio.to_thread(target, d) == 25.5  # none of the refusals ran

            # the same requestId twice: runs once, the reply repeats
            rid = await op.send(SETPOINT, {"value": 30})
            first = await op.reply(rid)
            before = await asyncio.to_thread(input_records, d)
            await op.send(SETPOINT, {"value": 31}, request_id=rid)
            again = await op.reply(rid, nth=2)
            assert again == first and first["status"] == 202
            assert await asyncio.to_thread(target, d) == 30.0
            assert await asyncio.to_thread(input_records, d) == before

            # Stopped: refused with 503, nothing runs
            assert (await asyncio.to_thread(d.request, "POST", "/control/stop"))[0] == 202
            await asyncio.to_thread(d.wait_state, "Stopped")
            stopped = await op.call(SETPOINT, {"value": 22})
            assert stopped["status"] == 503 and stopped["error"]["code"] == "not_serving"
            assert await asyncio.to_thread(target, d) == 30.0
        assert await asyncio.to_thread(d.terminate) == 0
    logged = "\n".join(d.lines)
    assert d.token not in logged  # neither the real token nor the wrong one is logged
    rejected = [line for line in d.json_lines() if line.get("event") == "command_rejected"]
    assert [line["code"] for line in rejected] == ["unauthorized"]
    assert rejected[0]["request_id"] == wrong_token["requestId"]


async def test_a_command_sent_while_the_daemon_was_down_runs_once_it_is_back(mosquitto: Mosquitto,
                                                                             tmp_path: Path) -> None:
    instance = f"ic{uuid.uuid4().hex[:10]}"
    data = tmp_path / "data"
    args = ("--listener-port", "restin=0", "--input-command-port", "0", "--control-mqtt", mosquitto.url,
            "--instance-id", instance)
    first = Daemon(data, *args)
    with first:
        await asyncio.to_thread(first.wait_state, "Running")
        async with operator(mosquitto, instance, first.token) as op:
            assert (await op.call(SETPOINT, {"value": 20}))["status"] == 202
    assert first.proc is not None and first.proc.returncode == 0
    async with operator(mosquitto, instance, first.token) as op:
        # the daemon is down: the broker keeps both in the daemon's persistent session
        late = await op.send(SETPOINT, {"value": 12})
        expired = await op.send(SETPOINT, {"value": 13}, expiresAt=time.time() - 1)
        second = Daemon(data, *args, env={"NUVIOT_ADMIN_TOKEN": first.token})
        second.token = first.token
        with second:
            ran = await op.reply(late)
            refused = await op.reply(expired)
            assert ran["ok"] is True and ran["status"] == 202
            assert refused["status"] == 408 and refused["error"]["code"] == "command_expired"
            await asyncio.to_thread(second.wait_state, "Running")
            assert await asyncio.to_thread(target, second) == 12.0
