"""The MQTT command channel against a real mosquitto (CONTRACT §5)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import structlog
from pydantic import SecretStr

from runtime.adapters.command.mqtt import MqttCommandChannel
from runtime.core.backoff import Backoff
from runtime.core.lifecycle import InstanceState
from tests.fakes import FakeControl
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

S = InstanceState
TOKEN = "s3cret-token-for-tests"
REPO = Path(__file__).resolve().parents[2]
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def make_channel(broker: Mosquitto, instance_id: str, control: FakeControl, **kw: Any) -> MqttCommandChannel:
    kw.setdefault("backoff", Backoff(base=0.05, cap=0.3))
    return MqttCommandChannel(broker.url, instance_id, control, SecretStr(TOKEN), **kw)


@contextlib.asynccontextmanager
async def running(channel: MqttCommandChannel) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(channel.run(), name="test:command-mqtt")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(15):
                await task


class Observer:
    """A test client that keeps every message it saw, in order, and waits for the ones asked for."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client = client
        self.base = base
        self.history: list[tuple[str, bool, Any]] = []
        self._taken: set[int] = set()

    def _take(self, topic: str, where: Callable[[Any], bool]) -> Any:
        for i, (t, _, data) in enumerate(self.history):
            if i not in self._taken and t == topic and where(data):
                self._taken.add(i)
                return data
        return None

    async def expect(
        self, topic: str, where: Callable[[Any], bool] = lambda d: True, within: float = 15.0
    ) -> Any:
        found = self._take(topic, where)
        if found is not None:
            return found
        async with asyncio.timeout(within):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                data = orjson.loads(message.payload)
                self.history.append((message.topic.value, message.retain, data))
                found = self._take(topic, where)
                if found is not None:
                    return found
        raise AssertionError("unreachable")  # pragma: no cover

    async def expect_state(self, state: InstanceState, within: float = 15.0) -> Any:
        return await self.expect(f"{self.base}/status", lambda d: d["state"] == state.value, within)

    def states(self) -> list[str]:
        return [d["state"] for t, _, d in self.history if t == f"{self.base}/status"]

    async def send(self, verb: str, payload: bytes | None = None, request_id: str | None = None) -> str:
        rid = request_id or uuid.uuid4().hex
        body = payload if payload is not None else orjson.dumps({"token": TOKEN, "requestId": rid})
        await self.client.publish(f"{self.base}/control/{verb}", body, qos=1)
        return rid

    async def command(self, verb: str, token: str | None = TOKEN, within: float = 15.0) -> Any:
        rid = uuid.uuid4().hex
        body: dict[str, Any] = {"requestId": rid}
        if token is not None:
            body["token"] = token
        await self.send(verb, orjson.dumps(body))
        return await self.reply(verb, rid, within)

    async def reply(self, verb: str, request_id: str, within: float = 15.0) -> Any:
        return await self.expect(
            f"{self.base}/control/{verb}/reply", lambda d: d.get("requestId") == request_id, within
        )


@contextlib.asynccontextmanager
async def observer(broker: Mosquitto, instance_id: str) -> AsyncIterator[Observer]:
    base = f"nuviot/instances/{instance_id}"
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"obs-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{base}/status", qos=1)
        await client.subscribe(f"{base}/control/+/reply", qos=1)
        yield Observer(client, base)


async def eventually(condition: Callable[[], bool], within: float = 15.0) -> None:
    # the channel's connected/last_error are plain attributes (for GET /status): nothing to wait on
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def retained_status(broker: Mosquitto, instance_id: str) -> tuple[bool, Any]:
    """What a subscriber arriving now sees first on the status topic."""
    async with observer(broker, instance_id) as late:
        await late.expect(f"{late.base}/status")
        _, retain, data = late.history[0]
        return retain, data


# ---------------------------------------------------------------------------------------------------


async def test_retained_status_is_visible_to_a_late_subscriber(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    control = FakeControl(S.RUNNING, reason="booted")
    channel = make_channel(mosquitto, unique_topic, control)
    async with running(channel), observer(mosquitto, unique_topic) as obs:
        await obs.expect_state(S.RUNNING)
        await eventually(lambda: channel.connected and channel.last_error is None)  # its PUBACK may come later
        retain, status = await retained_status(mosquitto, unique_topic)
    assert retain is True
    assert status["state"] == "Running" and status["reason"] == "booted"
    assert ISO_MS_Z.match(status["since"]), status["since"]
    assert set(status) == {"state", "since", "reason"}
    assert control.listener_count == 0  # unsubscribed on cancellation
    assert not channel.connected


async def test_each_verb_is_answered_and_the_status_follows(mosquitto: Mosquitto, unique_topic: str) -> None:
    control = FakeControl(S.RUNNING)
    channel = make_channel(mosquitto, unique_topic, control)
    async with running(channel), observer(mosquitto, unique_topic) as obs:
        await obs.expect_state(S.RUNNING)
        for verb, final, path in [
            ("pause", S.PAUSED, [S.PAUSING, S.PAUSED]),
            ("start", S.RUNNING, [S.STARTING, S.RUNNING]),
            ("reload", S.RUNNING, [S.INITIALIZING, S.STARTING, S.RUNNING]),
            ("stop", S.STOPPED, [S.STOPPING, S.STOPPED]),
        ]:
            seen = len(obs.states())
            reply = await obs.command(verb)
            assert reply["ok"] is True and reply["state"] == final.value, reply
            assert set(reply) == {"requestId", "ok", "state"}
            for state in path:
                await obs.expect_state(state)
            assert obs.states()[seen:] == [s.value for s in path]
        _, status = await retained_status(mosquitto, unique_topic)
    assert status["state"] == "Stopped" and status["reason"] == "stop requested"
    assert [v.value for v in control.calls] == ["pause", "start", "reload", "stop"]


async def test_wrong_or_missing_token_is_refused_and_never_logged(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    control = FakeControl(S.RUNNING)
    channel = make_channel(mosquitto, unique_topic, control)
    async with running(channel), observer(mosquitto, unique_topic) as obs:
        await obs.expect_state(S.RUNNING)
        with structlog.testing.capture_logs() as logs:
            wrong = await obs.command("pause", token="guess-" + TOKEN)
            missing = await obs.command("stop", token=None)
            not_a_string = await obs.reply(
                "pause", await obs.send("pause", b'{"requestId":"n1","token":42}', "n1")
            )
    for reply in (wrong, missing, not_a_string):
        assert reply["ok"] is False and reply["error"]["code"] == "unauthorized", reply
        assert set(reply) == {"requestId", "ok", "error"}
    assert control.calls == [] and control.state is S.RUNNING and control.changes == []
    rejected = [e for e in logs if e["event"] == "command_rejected"]
    assert len(rejected) == 3 and all(
        e["log_level"] == "warning" and e["code"] == "unauthorized" for e in rejected
    )
    assert TOKEN not in repr(logs)


async def test_bad_requests_are_refused_and_the_channel_keeps_answering(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    control = FakeControl(S.RUNNING)
    channel = make_channel(mosquitto, unique_topic, control, max_payload=512)
    async with running(channel), observer(mosquitto, unique_topic) as obs:
        await obs.expect_state(S.RUNNING)
        # unreadable and no requestId to be found: only logged
        await obs.send("pause", b"{not json")
        await obs.send("pause", b"[1, 2]")
        await obs.send("pause", orjson.dumps({"token": TOKEN}))
        await obs.send("pause", orjson.dumps({"token": TOKEN, "requestId": {"a": 1}}))
        await obs.send("pause", b"x" * 2000)
        # unreadable, but the requestId can be recovered: answered with bad_request
        broken = await obs.reply(
            "pause", await obs.send("pause", b'{"requestId": "r-broken", "token": ', "r-broken")
        )
        big = orjson.dumps({"requestId": "r-big", "token": TOKEN, "pad": "x" * 2000})
        oversized = await obs.reply("pause", await obs.send("pause", big, "r-big"))
        unknown = await obs.command("explode")
        # still answering, and nothing above reached the control port
        ok = await obs.command("pause")
    assert broken["ok"] is False and broken["error"]["code"] == "bad_request"
    assert "JSON" in broken["error"]["message"]
    assert (
        oversized["error"]["code"] == "bad_request"
        and "exceeds the limit of 512" in oversized["error"]["message"]
    )
    assert unknown["ok"] is False and unknown["error"]["code"] == "unknown_verb"
    assert ok["ok"] is True and ok["state"] == "Paused"
    assert [v.value for v in control.calls] == ["pause"]
    replies = [d for t, _, d in obs.history if t.endswith("/reply")]
    assert [r["requestId"] for r in replies] == ["r-broken", "r-big", unknown["requestId"], ok["requestId"]]


async def test_a_refused_verb_answers_with_its_code(mosquitto: Mosquitto, unique_topic: str) -> None:
    control = FakeControl(S.PAUSED)
    channel = make_channel(mosquitto, unique_topic, control)
    async with running(channel), observer(mosquitto, unique_topic) as obs:
        await obs.expect_state(S.PAUSED)
        paused = await obs.command("pause")
        control.transition(S.STARTING)
        control.transition(S.RUNNING)
        await obs.expect_state(S.RUNNING)
        running_already = await obs.command("start")
        control.fail_with = RuntimeError("boom")
        crashed = await obs.command("stop")
        after = await obs.command("stop")
    assert paused == {
        "requestId": paused["requestId"],
        "ok": False,
        "error": {"code": "DEP1006", "message": "cannot pause: instance is Paused, not Running"},
    }
    assert running_already["error"]["code"] == "DEP1005"
    assert crashed["ok"] is False and crashed["error"]["code"] == "internal_error"
    assert after["ok"] is True and after["state"] == "Stopped"


async def test_retained_commands_are_ignored(mosquitto: Mosquitto, unique_topic: str) -> None:
    base = f"nuviot/instances/{unique_topic}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(
            f"{base}/control/stop", orjson.dumps({"token": TOKEN, "requestId": "old"}), 1, True
        )
    control = FakeControl(S.RUNNING)
    channel = make_channel(mosquitto, unique_topic, control)
    try:
        async with running(channel), observer(mosquitto, unique_topic) as obs:
            await obs.expect_state(S.RUNNING)
            reply = await obs.command("pause")  # commands are handled in order: the retained one came first
    finally:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(f"{base}/control/stop", b"", 1, True)
    assert reply["ok"] is True
    assert [v.value for v in control.calls] == ["pause"]
    assert not [d for t, _, d in obs.history if t.endswith("/stop/reply")]


async def test_cancel_publishes_the_latest_state_and_disconnects_cleanly(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    control = FakeControl(S.RUNNING)
    channel = make_channel(mosquitto, unique_topic, control)
    async with observer(mosquitto, unique_topic) as obs:
        async with running(channel):
            await obs.expect_state(S.RUNNING)
            # the supervisor stops, then the app cancels the channel before its publisher has run
            control.transition(S.STOPPING, "SIGTERM")
            control.transition(S.STOPPED, "SIGTERM")
        await obs.expect_state(S.STOPPED)
        # a clean disconnect: the broker dropped the will. A marker published after the channel ended comes
        # after anything the broker sent for that disconnect
        await obs.client.publish(f"{obs.base}/status", b'{"state":"marker"}', qos=1)
        await obs.expect(f"{obs.base}/status", lambda d: d["state"] == "marker")
        assert "Offline" not in obs.states()
    _, status = await retained_status(mosquitto, unique_topic)
    assert status["state"] == "Stopped" and status["reason"] == "SIGTERM"


_CHILD = """
import asyncio, sys
from pydantic import SecretStr
from runtime.adapters.command.mqtt import MqttCommandChannel
from tests.fakes import FakeControl
channel = None
async def main():
    global channel
    channel = MqttCommandChannel(sys.argv[1], sys.argv[2], FakeControl(), SecretStr("t"))
    await channel.run()
asyncio.run(main())
"""


async def test_last_will_marks_a_crashed_instance_offline(mosquitto: Mosquitto, unique_topic: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        mosquitto.url,
        unique_topic,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with observer(mosquitto, unique_topic) as obs:
            await obs.expect_state(S.RUNNING, within=15)
            proc.send_signal(signal.SIGKILL)  # no DISCONNECT packet: the broker must publish the will
            async with asyncio.timeout(10):
                await proc.wait()
            offline = await obs.expect(f"{obs.base}/status", lambda d: d["state"] == "Offline")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert offline == {"state": "Offline"}
    retain, status = await retained_status(mosquitto, unique_topic)
    assert retain is True and status == {"state": "Offline"}


async def test_broker_restart_is_survived(own_mosquitto: Mosquitto, unique_topic: str) -> None:
    control = FakeControl(S.RUNNING)
    channel = make_channel(own_mosquitto, unique_topic, control)
    async with running(channel):
        async with observer(own_mosquitto, unique_topic) as obs:
            await obs.expect_state(S.RUNNING)
        await asyncio.to_thread(own_mosquitto.stop)
        await eventually(lambda: not channel.connected)
        control.transition(S.PAUSING, "operator")
        control.transition(S.PAUSED, "operator")
        await eventually(lambda: channel.last_error is not None)
        await asyncio.to_thread(own_mosquitto.start)  # same port, retained messages gone (no persistence)
        async with observer(own_mosquitto, unique_topic) as obs:
            status = await obs.expect(f"{obs.base}/status", within=10)
            assert status["state"] == "Paused" and status["reason"] == "operator"  # only the latest
            # the retained status can reach the observer before its PUBACK reaches the channel
            await eventually(lambda: channel.connected and channel.last_error is None)
            reply = await obs.command("start")
            assert reply["ok"] is True and reply["state"] == "Running"
            await obs.expect_state(S.RUNNING)


async def test_broker_absent_at_start_then_appears(own_mosquitto: Mosquitto, unique_topic: str) -> None:
    own_mosquitto.stop()
    control = FakeControl(S.RUNNING)
    backoff = Backoff(base=0.05, cap=0.3)
    channel = make_channel(own_mosquitto, unique_topic, control, backoff=backoff)
    async with running(channel) as task:
        await eventually(lambda: channel.last_error is not None and backoff.attempt >= 3)  # a few failed attempts
        assert not task.done() and not channel.connected
        control.transition(S.STOPPING)
        control.transition(S.STOPPED)
        await asyncio.to_thread(own_mosquitto.start)
        async with observer(own_mosquitto, unique_topic) as obs:
            status = await obs.expect(f"{obs.base}/status", within=10)
            assert status["state"] == "Stopped"
            reply = await obs.command("start")
            assert reply["ok"] is True and reply["state"] == "Running"
        assert channel.status()["connected"] is True


def test_token_and_instance_id_are_checked() -> None:
    control = FakeControl()
    with pytest.raises(ValueError, match="non-empty token"):
        MqttCommandChannel("mqtt://h:1", "i", control, SecretStr(""))
    with pytest.raises(ValueError, match="MQTT topic"):
        MqttCommandChannel("mqtt://h:1", "a/+", control, SecretStr("t"))
    with pytest.raises(ValueError, match="invalid MQTT URL"):
        MqttCommandChannel("http://h:1", "i", control, SecretStr("t"))
    channel = MqttCommandChannel("mqtt://u:pw@h:1", "i", control, SecretStr("t"))
    assert channel.status() == {"url": "mqtt://u:***@h:1", "connected": False, "lastError": None}


async def test_cancel_while_the_broker_does_not_answer_leaves_nothing_behind(unique_topic: str) -> None:
    """A peer that accepts TCP but never sends CONNACK: cancelling mid-connect must still clean up."""
    accepted: list[asyncio.StreamWriter] = []
    connect_sent = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        if await reader.read(1):  # the CONNECT packet: the client now waits for a CONNACK that never comes
            connect_sent.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = MqttCommandChannel(
        f"mqtt://127.0.0.1:{port}", unique_topic, FakeControl(), SecretStr(TOKEN), final_timeout=0.3
    )
    try:
        async with running(channel):
            async with asyncio.timeout(15):
                await connect_sent.wait()
        assert not channel.connected
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
