"""The MQTT client listener against a real mosquitto: delivery, limits, acks after record, reconnects, replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest

from runtime.adapters.listeners.mqtt import MqttClientListener
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.support.intake import only_the_marker_arrives, running, take, until
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration
both_modes = pytest.mark.usefixtures("mqtt_mode")  # fast path and plain-aiomqtt fallback


def listener_config(broker: Mosquitto, subs: list[tuple[str, str]], **extra: Any) -> Listener:
    # sessions are persistent: a client id of its own per test, so no test inherits another's session
    extra.setdefault("client_id", f"cid-{subs[0][0].split('/')[0]}")
    return Listener(
        key="mq",
        listener_type="mqttclient",
        host_name=broker.host,
        connect_to_port=broker.port,
        mqtt_subscriptions=[{"topic": t, "qos": q} for t, q in subs],
        **extra,
    )


def make_listener(config: Listener, **kw: Any) -> MqttClientListener:
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.5)
    kw.setdefault("ack_wait", 0.3)
    kw.setdefault("connect_timeout", 2.0)
    return MqttClientListener(config, instance_id="test", **kw)


@asynccontextmanager
async def publisher(broker: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, timeout=5) as client:
        yield client





@pytest.fixture
def intake() -> Intake:
    return Intake(1000, Counters())


async def test_qos0_and_qos1_messages_arrive_with_topic_and_payload(
    mosquitto: Mosquitto, unique_topic: str, intake: Intake, mqtt_mode: str
) -> None:
    cfg = listener_config(mosquitto, [(f"{unique_topic}/a", "qos0"), (f"{unique_topic}/b", "qos1")])
    async with running(make_listener(cfg), intake) as lst, publisher(mosquitto) as pub:
        assert lst.status()["state"] == "connected"
        assert lst.status()["fastPath"] is (mqtt_mode == "fastpath")
        await pub.publish(f"{unique_topic}/a", b"zero", qos=0)
        await pub.publish(f"{unique_topic}/b", b"one", qos=1)
        got = sorted(await take(intake, 2), key=lambda m: m.topic or "")
        assert callable(got[1].ack)
        got[1].ack()
    assert [(m.listener, m.topic, m.payload) for m in got] == [
        ("mq", f"{unique_topic}/a", b"zero"),
        ("mq", f"{unique_topic}/b", b"one"),
    ]
    assert got[0].ack is None  # QoS 0: nothing to acknowledge
    status = lst.status()
    assert status["state"] == "stopped"
    assert status["port"] == mosquitto.port
    assert status["received"] == 2
    assert status["clientId"] == f"cid-{unique_topic}"


def test_client_id_defaults_to_instance_and_listener_key(mosquitto: Mosquitto) -> None:
    cfg = listener_config(mosquitto, [("x/#", "qos0")], client_id=None)
    assert make_listener(cfg).client_id == "test-mq"


@both_modes
async def test_wildcard_subscriptions(mosquitto: Mosquitto, unique_topic: str, intake: Intake) -> None:
    cfg = listener_config(mosquitto, [(f"{unique_topic}/+/data", "qos0"), (f"{unique_topic}/deep/#", "qos1")])
    async with running(make_listener(cfg), intake), publisher(mosquitto) as pub:
        await pub.publish(f"{unique_topic}/dev1/data", b"1", qos=1)
        await pub.publish(f"{unique_topic}/dev1/other", b"x", qos=1)  # matches nothing
        await pub.publish(f"{unique_topic}/deep/a/b/c", b"2", qos=1)
        got = await take(intake, 2)
        for m in got:
            if m.ack:
                m.ack()
        await only_the_marker_arrives(intake, lambda marker: pub.publish(f"{unique_topic}/deep/marker", marker, qos=1))
    assert sorted(m.topic or "" for m in got) == [f"{unique_topic}/deep/a/b/c", f"{unique_topic}/dev1/data"]


@both_modes
async def test_oversized_payload_is_refused_and_counted_and_the_listener_goes_on(
    mosquitto: Mosquitto, unique_topic: str, intake: Intake
) -> None:
    cfg = listener_config(mosquitto, [(f"{unique_topic}/#", "qos1")])
    async with running(make_listener(cfg, max_payload=100), intake) as lst, publisher(mosquitto) as pub:
        await pub.publish(f"{unique_topic}/x", b"x" * 101, qos=1)
        await pub.publish(f"{unique_topic}/x", b"small", qos=1)
        (got,) = await take(intake, 1)
        got.ack()  # type: ignore[misc]
        assert got.payload == b"small"
        assert lst.status()["oversized"] == 1
        assert lst.status()["received"] == 1
        assert lst.status()["state"] == "connected"


@both_modes
async def test_puback_is_withheld_until_ack(mosquitto: Mosquitto, unique_topic: str) -> None:
    """A persistent session redelivers a message that was taken in but never acknowledged."""
    cfg = listener_config(mosquitto, [(f"{unique_topic}/#", "qos1")], client_id=f"cid-{unique_topic}")
    intake = Intake(100, Counters())
    async with running(make_listener(cfg), intake), publisher(mosquitto) as pub:
        await pub.publish(f"{unique_topic}/m", b"keep-me", qos=1)
        (first,) = await take(intake, 1)
        assert first.payload == b"keep-me"
        # not acknowledged: the record was never committed

    async with running(make_listener(cfg), intake):
        (again,) = await take(intake, 1)
        assert again.payload == b"keep-me"
        again.ack()  # type: ignore[misc]

    async with running(make_listener(cfg), intake), publisher(mosquitto) as pub:
        await only_the_marker_arrives(intake, lambda marker: pub.publish(f"{unique_topic}/marker", marker, qos=1))


@both_modes
async def test_refused_qos1_messages_are_redelivered_once_the_intake_has_room(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    intake = Intake(2, Counters())
    cfg = listener_config(mosquitto, [(f"{unique_topic}/#", "qos1")], client_id=f"cid-{unique_topic}")
    lst = make_listener(cfg, redeliver_wait=5.0)
    async with running(lst, intake), publisher(mosquitto) as pub:
        for i in range(5):
            await pub.publish(f"{unique_topic}/m", str(i).encode(), qos=1)
        await until(lambda: lst.status()["refused"] >= 3)
        got: list[InboundMessage] = []
        async with asyncio.timeout(10):
            while len(got) < 5:
                batch = await intake.take(10)  # room again: the listener reconnects, the broker redelivers
                for m in batch:
                    m.ack()  # type: ignore[misc]
                got.extend(batch)
        assert sorted(m.payload for m in got) == [b"0", b"1", b"2", b"3", b"4"]
        assert lst.status()["redeliveries"] >= 1


async def test_a_full_intake_parks_the_socket_and_every_message_arrives_once_there_is_room(
    mosquitto: Mosquitto, unique_topic: str
) -> None:
    """Fast path only (the fallback refuses instead, see the redelivery test): back-pressure costs no CPU.
    While the intake is full the socket is off the event loop (it used to wake the loop on every turn, a
    core's worth of spinning while the store caught up); then reading resumes."""
    intake = Intake(4000, Counters())
    cfg = listener_config(mosquitto, [(f"{unique_topic}/#", "qos0")], client_id=f"cid-{unique_topic}")
    lst = make_listener(cfg)
    n = 5000
    async with running(lst, intake), publisher(mosquitto) as pub:
        for i in range(n):
            await pub.publish(f"{unique_topic}/m", str(i).encode(), qos=0)
        await until(lambda: len(intake) >= intake.low_water)
        await asyncio.sleep(0.2)  # whatever was already read is in
        parked = len(intake)
        assert parked < n  # reading stopped with messages still waiting at the broker / in the kernel
        cpu = time.process_time()
        await asyncio.sleep(0.5)
        assert time.process_time() - cpu < 0.25  # idle, not polling a socket it may not read
        assert len(intake) == parked
        got = await take(intake, n)
        assert [int(m.payload) for m in got] == list(range(n))
        assert lst.status()["refused"] == 0


@both_modes
async def test_reconnects_by_itself_after_the_broker_restarts(
    own_mosquitto: Mosquitto, unique_topic: str, intake: Intake
) -> None:
    cfg = listener_config(own_mosquitto, [(f"{unique_topic}/#", "qos1")])
    lst = make_listener(cfg)
    async with running(lst, intake):
        own_mosquitto.stop()
        await until(lambda: lst.status()["state"] == "disconnected")
        assert lst.status()["lastError"]
        own_mosquitto.start()
        await until(lambda: lst.status()["state"] == "connected")
        async with publisher(own_mosquitto) as pub:
            await pub.publish(f"{unique_topic}/after", b"back", qos=1)
            (got,) = await take(intake, 1)
        got.ack()  # type: ignore[misc]
        assert got.payload == b"back"
        assert lst.status()["lastError"] is None


@both_modes
async def test_broker_down_at_start_is_not_a_failure_and_connects_when_it_appears(
    own_mosquitto: Mosquitto, unique_topic: str, intake: Intake
) -> None:
    own_mosquitto.stop()
    cfg = listener_config(own_mosquitto, [(f"{unique_topic}/#", "qos0")])
    lst = make_listener(cfg)
    async with running(lst, intake):
        status = lst.status()
        assert status["state"] == "connecting"
        assert status["lastError"]
        own_mosquitto.start()
        await until(lambda: lst.status()["state"] == "connected")
        async with publisher(own_mosquitto) as pub:
            await pub.publish(f"{unique_topic}/x", b"hello", qos=0)
            (got,) = await take(intake, 1)
        assert got.payload == b"hello"


@both_modes
async def test_reply_channel_publishes_back_on_the_same_connection(
    mosquitto: Mosquitto, unique_topic: str, intake: Intake
) -> None:
    cfg = listener_config(mosquitto, [(f"{unique_topic}/in/+", "qos1")])
    async with running(make_listener(cfg), intake) as lst, publisher(mosquitto) as pub:
        await pub.subscribe(f"{unique_topic}/#", qos=1)
        await pub.publish(f"{unique_topic}/in/dev1", b"ping", qos=1)
        (got,) = await take(intake, 1)
        got.ack()  # type: ignore[misc]
        assert got.reply is not None
        got.reply.send(OutgoingMessage("m", "mid", "dev1", payload=b"default-topic"))
        got.reply.send(OutgoingMessage("m", "mid", "dev1", payload=b"own-topic", topic=f"{unique_topic}/out/dev1"))
        seen: list[tuple[str, bytes]] = []
        async with asyncio.timeout(5):
            async for m in pub.messages:
                if m.topic.value != f"{unique_topic}/in/dev1":
                    seen.append((m.topic.value, bytes(m.payload)))  # type: ignore[arg-type]
                if len(seen) == 2:
                    break
        assert seen == [
            (f"{unique_topic}/in/dev1/reply", b"default-topic"),
            (f"{unique_topic}/out/dev1", b"own-topic"),
        ]
        await until(lambda: lst.status()["repliesSent"] == 2)  # the PUBACK may come after delivery


@both_modes
async def test_refused_when_the_intake_is_not_accepting(mosquitto: Mosquitto, unique_topic: str) -> None:
    intake = Intake(10, Counters())
    intake.stop_accepting()
    cfg = listener_config(mosquitto, [(f"{unique_topic}/#", "qos0")])
    async with running(make_listener(cfg), intake) as lst, publisher(mosquitto) as pub:
        await pub.publish(f"{unique_topic}/x", b"1", qos=0)
        await until(lambda: lst.status()["refused"] == 1)
        assert lst.status()["received"] == 0


@both_modes
async def test_stop_keeps_the_session_so_what_is_published_while_stopped_arrives_on_the_next_start(
    mosquitto: Mosquitto, unique_topic: str, intake: Intake
) -> None:
    """A stop (and so a pause or a restart) never unsubscribes: the broker queues QoS 1 messages for the
    persistent session and delivers them when the listener starts again (issue 18.2)."""
    cfg = listener_config(mosquitto, [(f"{unique_topic}/#", "qos1")])
    async with running(make_listener(cfg), intake):
        pass
    async with publisher(mosquitto) as pub:
        for i in range(50):
            await pub.publish(f"{unique_topic}/m", str(i).encode(), qos=1)
    async with running(make_listener(cfg), intake):
        got = await take(intake, 50)
        for m in got:
            m.ack()  # type: ignore[misc]
    assert sorted(int(m.payload) for m in got) == list(range(50))


@both_modes
async def test_a_hung_broker_is_detected_within_one_and_a_half_keepalives_and_reconnected_to(
    own_mosquitto: Mosquitto, unique_topic: str, intake: Intake
) -> None:
    """SIGSTOP: the broker's socket stays open and silent. The listener must not wait for TCP to notice
    (it never would) nor for paho's keep-alive (up to two periods): disconnected within 1.5 periods."""
    keepalive = 2
    cfg = listener_config(own_mosquitto, [(f"{unique_topic}/#", "qos1")])
    lst = make_listener(cfg, keepalive=keepalive)
    async with running(lst, intake):
        assert lst.status()["state"] == "connected"
        own_mosquitto.hang()
        hung_at = time.monotonic()
        try:
            await until(lambda: lst.status()["state"] != "connected", within=3 * keepalive)
            noticed = time.monotonic() - hung_at
            assert lst.status()["state"] == "disconnected"
            assert "did not answer" in lst.status()["lastError"]
        finally:
            own_mosquitto.unhang()
        assert noticed <= 1.5 * keepalive, f"noticed after {noticed:.2f}s"
        await until(lambda: lst.status()["state"] == "connected", within=30)
        async with publisher(own_mosquitto) as pub:
            await pub.publish(f"{unique_topic}/after", b"back", qos=1)
            (got,) = await take(intake, 1)
        got.ack()  # type: ignore[misc]
        assert got.payload == b"back"
