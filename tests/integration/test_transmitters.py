"""Transmitters against a real mosquitto and a local aiohttp server on port 0."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import pytest
from aiohttp import web

from runtime.adapters.outbound.base import QueuedTransmitter
from runtime.adapters.outbound.factory import build_transmitter
from runtime.adapters.outbound.mqtt import MqttTransmitter
from runtime.adapters.outbound.original import OriginalListenerTransmitter
from runtime.adapters.outbound.rest import RestTransmitter, base_url, join_url
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Transmitter
from runtime.services.metrics import Counters
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def out(**kw: Any) -> OutgoingMessage:
    kw.setdefault("message_key", "m")
    kw.setdefault("message_id", "mid")
    kw.setdefault("device_id", "dev1")
    return OutgoingMessage(**kw)


async def until(pred: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110 - polling counters is what an operator does too
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- REST


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: Any  # case-insensitive (CIMultiDict)
    body: bytes


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order; then 200
    gate: asyncio.Event | None = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(url="")

    async def handle(request: web.Request) -> web.Response:
        srv.seen.append(Seen(request.method, request.path_qs, request.headers.copy(), await request.read()))
        if srv.gate is not None:
            await srv.gate.wait()
        status = srv.statuses.pop(0) if srv.statuses else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def rest_config(host_name: str, **kw: Any) -> Transmitter:
    return Transmitter(key="rt", transmitter_type="rest", host_name=host_name, **kw)


async def test_rest_method_path_headers_basic_auth_and_body(server: Server) -> None:
    cfg = rest_config(
        server.url + "/api/",
        anonymous=False,
        user_name="user",
        password="s3cret",
        headers=[{"name": "X-Both", "value": "transmitter"}, {"name": "X-Only", "value": "t"}],
    )
    counters = Counters()
    tx = RestTransmitter(cfg, counters=counters, **FAST)
    await tx.start()
    try:
        assert tx.submit(out(method="POST", path_and_query="/dev1/data?x=1", payload=b'{"a":1}',
                             headers=(("x-both", "message"),)))
        assert tx.submit(out(path_and_query="/dev1/get"))  # method defaults to GET
        await until(lambda: tx.status()["sent"] == 2)
    finally:
        await tx.stop(1.0)
    post, get = sorted(server.seen, key=lambda s: s.method, reverse=True)
    assert (post.method, post.path_qs, post.body) == ("POST", "/api/dev1/data?x=1", b'{"a":1}')
    assert post.headers["X-Both"] == "message"  # the message's header wins
    assert post.headers["X-Only"] == "t"
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Authorization"] == "Basic " + base64.b64encode(b"user:s3cret").decode()
    assert (get.method, get.path_qs, get.body) == ("GET", "/api/dev1/get", b"")
    assert counters.transmitted["rt"] == 2
    assert "s3cret" not in repr(tx.status())


async def test_rest_retries_a_500_and_then_succeeds(server: Server) -> None:
    server.statuses = [500, 503]
    tx = RestTransmitter(rest_config(server.url), max_attempts=3, **FAST)
    await tx.start()
    try:
        tx.submit(out(method="PUT", path_and_query="/x", payload=b"1"))
        await until(lambda: tx.status()["sent"] == 1)
    finally:
        await tx.stop(1.0)
    assert len(server.seen) == 3
    assert tx.status()["retried"] == 2
    assert tx.status()["failed"] == 0


async def test_rest_gives_up_after_max_attempts(server: Server) -> None:
    server.statuses = [500] * 10
    tx = RestTransmitter(rest_config(server.url), max_attempts=3, **FAST)
    await tx.start()
    try:
        tx.submit(out(path_and_query="/x"))
        await until(lambda: tx.status()["failed"] == 1)
    finally:
        await tx.stop(1.0)
    assert len(server.seen) == 3
    assert tx.status()["lastError"] == f"GET {server.url}: HTTP 500"


async def test_rest_does_not_retry_a_400(server: Server) -> None:
    server.statuses = [400]
    tx = RestTransmitter(rest_config(server.url), max_attempts=5, **FAST)
    await tx.start()
    try:
        tx.submit(out(path_and_query="/x"))
        await until(lambda: tx.status()["failed"] == 1)
        tx.submit(out(path_and_query="/marker"))  # the next message goes out; /x was not tried again before it
        await until(lambda: len(server.seen) >= 2)
    finally:
        await tx.stop(1.0)
    assert [s.path_qs for s in server.seen] == ["/x", "/marker"]


async def test_rest_connection_errors_are_retried_then_counted() -> None:
    tx = RestTransmitter(rest_config("http://127.0.0.1:1"), max_attempts=2, **FAST)
    await tx.start()
    try:
        tx.submit(out(path_and_query="/x"))
        await until(lambda: tx.status()["failed"] == 1)
    finally:
        await tx.stop(1.0)
    assert tx.status()["retried"] == 1


async def test_submit_never_blocks_full_queue_is_refused_and_stop_drops_the_rest(server: Server) -> None:
    server.gate = asyncio.Event()
    tx = RestTransmitter(rest_config(server.url), queue_size=2, concurrency=1, **FAST)
    assert not tx.submit(out())  # not started
    await tx.start()
    try:
        assert tx.submit(out(path_and_query="/1"))
        await until(lambda: len(server.seen) == 1)  # in flight, held by the server
        assert tx.submit(out(path_and_query="/2"))
        assert tx.submit(out(path_and_query="/3"))
        assert not tx.submit(out(path_and_query="/4"))
        assert tx.status()["refused"] == 2
    finally:
        await tx.stop(0.1)
        server.gate.set()
    assert tx.status()["dropped"] == 3  # the one in flight and the two queued
    assert tx.status()["state"] == "stopped"


@pytest.mark.parametrize(
    ("host", "secure", "port", "path", "url"),
    [
        ("https://myserver.com/api", False, None, "/dev1?x=1", "https://myserver.com/api/dev1?x=1"),
        ("https://myserver.com/api/", False, None, "/dev1", "https://myserver.com/api/dev1"),
        ("myserver.com", False, None, "/d", "http://myserver.com/d"),
        ("myserver.com", True, 8443, "/d", "https://myserver.com:8443/d"),
        ("http://h:81/base", False, 82, "?q=1", "http://h:81/base?q=1"),
        ("http://h/base", False, None, "dev", "http://h/base/dev"),
        ("http://h/base", False, None, None, "http://h/base"),
    ],
)
def test_rest_url(host: str, secure: bool, port: int | None, path: str | None, url: str) -> None:
    assert join_url(base_url(host, secure=secure, port=port), path) == url


# --------------------------------------------------------------------------- MQTT


def mqtt_config(broker: Mosquitto, key: str = "mqtx") -> Transmitter:
    return Transmitter(key=key, transmitter_type="mqttclient", host_name=broker.host, connect_to_port=broker.port)


async def collect(sub: aiomqtt.Client, n: int, within: float = 5.0) -> list[tuple[str, bytes, int]]:
    got: list[tuple[str, bytes, int]] = []
    async with asyncio.timeout(within):
        async for m in sub.messages:
            got.append((m.topic.value, bytes(m.payload), m.qos))  # type: ignore[arg-type]
            if len(got) == n:
                return got
    return got


async def test_mqtt_transmitter_publishes_to_the_topic_at_qos1(mosquitto: Mosquitto, unique_topic: str) -> None:
    tx = MqttTransmitter(mqtt_config(mosquitto, key=f"tx-{unique_topic}"), **FAST)
    assert tx.client_id == f"tx-{unique_topic}"  # NuvIoT: the key is the client id
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub:
        await sub.subscribe(f"{unique_topic}/#", qos=1)
        await tx.start()
        try:
            assert tx.submit(out(topic=f"{unique_topic}/dev1/cmd", payload=b"on"))
            assert tx.submit(out(payload=b"nowhere"))  # no topic: a counted failure
            got = await collect(sub, 1)
            await until(lambda: tx.status()["failed"] == 1)
        finally:
            await tx.stop(1.0)
    assert got == [(f"{unique_topic}/dev1/cmd", b"on", 1)]
    assert tx.status()["sent"] == 1


async def test_mqtt_transmitter_queues_while_the_broker_is_down(own_mosquitto: Mosquitto, unique_topic: str) -> None:
    own_mosquitto.stop()
    tx = MqttTransmitter(mqtt_config(own_mosquitto), connect_backoff_base=0.05, connect_backoff_cap=0.3, **FAST)
    await tx.start()
    try:
        assert tx.submit(out(topic=f"{unique_topic}/a", payload=b"queued"))
        await until(lambda: tx.status()["lastError"] is not None)
        assert tx.status()["state"] == "connecting"
        own_mosquitto.start()
        async with aiomqtt.Client(own_mosquitto.host, own_mosquitto.port) as sub:
            await sub.subscribe(f"{unique_topic}/#", qos=1)
            # it may have been sent before we subscribed: send a second one once connected
            await until(lambda: tx.status()["state"] == "connected")
            await until(lambda: tx.status()["sent"] == 1)
            tx.submit(out(topic=f"{unique_topic}/b", payload=b"live"))
            got = await collect(sub, 1)
            if got[0][1] == b"queued":  # the queued one was published after we subscribed
                got = await collect(sub, 1)
    finally:
        await tx.stop(1.0)
    assert got == [(f"{unique_topic}/b", b"live", 1)]
    assert tx.status()["sent"] == 2


def test_mqtt_client_id_suffix_option(mosquitto: Mosquitto) -> None:
    tx = build_transmitter(mqtt_config(mosquitto), instance_id="inst1", suffix_mqtt_client_id=True)
    assert isinstance(tx, MqttTransmitter)
    assert tx.client_id == "mqtx-inst1"


# --------------------------------------------------------------------------- original listener


class FakeReply:
    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    def send(self, out: OutgoingMessage) -> None:
        self.sent.append(out)


def test_original_listener_calls_the_reply_channel() -> None:
    tx = build_transmitter(Transmitter(key="orig", transmitter_type="originallistener"), instance_id="i")
    assert isinstance(tx, OriginalListenerTransmitter)
    reply = FakeReply()
    msg = out(payload=b"back")
    assert tx.submit(msg, InboundMessage("l", b"x", reply=reply))
    assert reply.sent == [msg]
    assert not tx.submit(msg, InboundMessage("inputcommand", b"x"))
    assert not tx.submit(msg, None)
    assert tx.status()["sent"] == 1
    assert tx.status()["noReplyChannel"] == 2


async def test_original_listener_replies_through_the_mqtt_listener(mosquitto: Mosquitto, unique_topic: str) -> None:
    from runtime.adapters.listeners.mqtt import MqttClientListener
    from runtime.core.solution.model import Listener
    from runtime.services.dataplane import Intake

    intake = Intake(10, Counters())
    cfg = Listener(key="mq", listener_type="mqttclient", host_name=mosquitto.host, connect_to_port=mosquitto.port,
                   client_id=f"cid-{unique_topic}", mqtt_subscriptions=[{"topic": f"{unique_topic}/in", "qos": "qos0"}])
    listener = MqttClientListener(cfg, instance_id="t")
    tx = build_transmitter(Transmitter(key="orig", transmitter_type="originallistener"), instance_id="t")
    await listener.start(intake)
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as dev:
            await dev.subscribe(f"{unique_topic}/in/reply", qos=1)
            await dev.publish(f"{unique_topic}/in", b"hello", qos=0)
            (inbound,) = await intake.take(1)
            assert tx.submit(out(payload=b"answer"), inbound)
            got = await collect(dev, 1)
    finally:
        await listener.stop()
    assert got == [(f"{unique_topic}/in/reply", b"answer", 1)]


# --------------------------------------------------------------------------- factory


def test_factory_builds_supported_types_and_refuses_others() -> None:
    rest = build_transmitter(rest_config("http://h"), instance_id="i")
    assert isinstance(rest, RestTransmitter)
    assert isinstance(rest, QueuedTransmitter)
    with pytest.raises(ValueError, match="transmitter type azureeventhub is not supported by this runtime"):
        build_transmitter(Transmitter(key="eh", transmitter_type="azureeventhub"), instance_id="i")
