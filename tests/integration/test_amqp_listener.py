"""The AMQP/RabbitMQ client listener against a real RabbitMQ: delivery, bindings, acks, requeue, reconnects.

Uses the RabbitMQ on 127.0.0.1:5672 when it answers, else starts one (``rabbitmq-server``, installed by
``make test``); without one the tests skip, and a skip fails the run (tests/conftest.py).
Every test declares its own exchange and queue (unique names) and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest

from runtime.adapters.listeners.amqp import AmqpListener, binding_pattern, pattern_matches
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.support.intake import only_the_marker_arrives, running, take, until
from tests.support.net import free_port
from tests.support.rabbitmq import Rabbit, find_or_start

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    try:
        rabbit = find_or_start(tmp_path_factory.mktemp("rabbitmq"))
    except (OSError, RuntimeError) as exc:
        pytest.fail(f"no RabbitMQ answers on 127.0.0.1:5672 and starting rabbitmq-server failed: {exc}")
    if rabbit is None:
        pytest.skip("no RabbitMQ answers on 127.0.0.1:5672 and rabbitmq-server is not installed")
    try:
        yield rabbit
    finally:
        rabbit.stop()


class Names:
    def __init__(self) -> None:
        u = uuid.uuid4().hex[:10]
        self.word = f"t{u}"
        self.exchange = f"test.x.{u}"
        self.queue = f"test.q.{u}"


@pytest.fixture
async def names(rabbitmq: Rabbit) -> AsyncIterator[Names]:
    n = Names()
    yield n
    conn = await aio_pika.connect(host=rabbitmq.host, port=rabbitmq.port, timeout=5)
    async with conn:
        for delete in ("queue_delete", "exchange_delete"):
            ch = await conn.channel()
            with contextlib.suppress(Exception):
                await getattr(ch, delete)(n.queue if delete == "queue_delete" else n.exchange)


def config(rabbit: Rabbit, names: Names, subs: list[str], **extra: Any) -> Listener:
    extra.setdefault("host_name", rabbit.host)
    extra.setdefault("connect_to_port", rabbit.port)
    return Listener(key="aq", listener_type="rabbitmqclient", exchange_name=names.exchange, queue=names.queue,
                    amqp_subscriptions=subs, **extra)


def make(cfg: Listener, **kw: Any) -> AmqpListener:
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.5)
    kw.setdefault("ack_wait", 0.3)
    kw.setdefault("connect_timeout", 3.0)
    kw.setdefault("requeue_delay", 0.05)
    return AmqpListener(cfg, instance_id="test", **kw)


@asynccontextmanager
async def publisher(rabbit: Rabbit, names: Names) -> AsyncIterator[Callable[..., Any]]:
    conn = await aio_pika.connect(host=rabbit.host, port=rabbit.port, timeout=5)
    async with conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)

        async def publish(routing_key: str, body: bytes, **props: Any) -> None:
            await ex.publish(aio_pika.Message(body, **props), routing_key)

        yield publish





@pytest.fixture
def intake() -> Intake:
    return Intake(1000, Counters())


class Proxy:
    """A TCP proxy in front of the broker whose connections the test can cut (a network failure)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Proxy:
        await self.resume()
        return self

    async def resume(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Cut every connection and refuse new ones until ``resume()``."""
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
            w.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()
            w.close()

        for coro in (pipe(reader, up_w), pipe(up_r, writer)):
            task = asyncio.get_running_loop().create_task(coro, name="proxy:pipe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


# ---------------------------------------------------------------------- pure helpers


def test_binding_patterns_accept_slashes_and_plus() -> None:
    assert binding_pattern("dev/+/motion") == "dev.*.motion"
    assert binding_pattern(" dev.# ") == "dev.#"


@pytest.mark.parametrize(
    ("pattern", "key", "hit"),
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#.c", "a.b.c", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.b", "a.b.reply", False),
        ("#", "anything.at.all", True),
    ],
)
def test_topic_matching(pattern: str, key: str, hit: bool) -> None:
    assert pattern_matches(pattern, key) is hit


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="subscription"):
        AmqpListener(Listener(key="a", listener_type="amqp", host_name="h"), instance_id="i")
    with pytest.raises(ValueError, match="userName"):
        AmqpListener(Listener(key="a", listener_type="amqp", host_name="h", amqp_subscriptions=["x"],
                              anonymous=False), instance_id="i")
    lst = AmqpListener(Listener(key="a", listener_type="amqp", host_name="h", amqp_subscriptions=["x"]),
                       instance_id="i")
    assert (lst.type, lst.queue_name, lst.exchange_name) == ("amqp", "nuviot.i.a", "amq.topic")
    assert lst.status()["port"] == 5672


# ---------------------------------------------------------------------- against RabbitMQ


async def test_delivery_with_topic_headers_and_ack(rabbitmq: Rabbit, names: Names, intake: Intake) -> None:
    w = names.word
    lst = make(config(rabbitmq, names, [f"{w}.#"], anonymous=False, user_name=rabbitmq.user,
                      password=rabbitmq.password))
    async with running(lst, intake), publisher(rabbitmq, names) as publish:
        assert lst.status()["state"] == "connected"
        await publish(f"{w}.dev1.motion", b'{"m":1}', content_type="application/json", headers={"X-K": "v"})
        (got,) = await take(intake, 1)
        got.ack()  # type: ignore[misc]
    assert (got.listener, got.topic, got.payload) == ("aq", f"{w}/dev1/motion", b'{"m":1}')
    assert got.headers["amqp-routing-key"] == f"{w}.dev1.motion"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-k"] == "v"
    status = lst.status()
    assert (status["state"], status["type"], status["received"]) == ("stopped", "rabbitmqclient", 1)
    assert status["queue"] == names.queue and status["exchange"] == names.exchange


async def test_wildcard_bindings(rabbitmq: Rabbit, names: Names, intake: Intake) -> None:
    w = names.word
    async with running(make(config(rabbitmq, names, [f"{w}/+/data", f"{w}.deep.#"])), intake), \
            publisher(rabbitmq, names) as publish:
        await publish(f"{w}.dev1.data", b"1")
        await publish(f"{w}.dev1.other", b"x")  # matches nothing
        await publish(f"{w}.deep", b"2")
        await publish(f"{w}.deep.a.b", b"3")
        got = await take(intake, 3)
        for m in got:
            m.ack()  # type: ignore[misc]
        await only_the_marker_arrives(intake, lambda marker: publish(f"{w}.deep.marker", marker))
    assert sorted(m.payload for m in got) == [b"1", b"2", b"3"]


async def test_unacked_message_is_redelivered_after_a_restart(rabbitmq: Rabbit, names: Names) -> None:
    intake = Intake(100, Counters())
    cfg = config(rabbitmq, names, [f"{names.word}.#"])
    async with running(make(cfg), intake), publisher(rabbitmq, names) as publish:
        await publish(f"{names.word}.m", b"keep-me")
        (first,) = await take(intake, 1)
        # never acknowledged: the record was not committed
    first.ack()  # too late: that connection has ended, the ack is dropped

    async with running(make(cfg), intake):
        (again,) = await take(intake, 1)
        assert again.payload == b"keep-me"
        again.ack()  # type: ignore[misc]

    async with running(make(cfg), intake), publisher(rabbitmq, names) as publish:
        await only_the_marker_arrives(intake, lambda marker: publish(f"{names.word}.marker", marker))


async def test_refused_messages_are_requeued_and_come_back(rabbitmq: Rabbit, names: Names) -> None:
    intake = Intake(2, Counters())
    lst = make(config(rabbitmq, names, [f"{names.word}.#"]))
    async with running(lst, intake), publisher(rabbitmq, names) as publish:
        for i in range(5):
            await publish(f"{names.word}.m", str(i).encode())
        await until(lambda: lst.status()["refused"] >= 3)
        got: list[InboundMessage] = []
        async with asyncio.timeout(10):
            while len(got) < 5:
                batch = await intake.take(10)
                for m in batch:
                    m.ack()  # type: ignore[misc]
                got.extend(batch)
        await only_the_marker_arrives(intake, lambda marker: publish(f"{names.word}.marker", marker))
    assert sorted(m.payload for m in got) == [b"0", b"1", b"2", b"3", b"4"]
    assert lst.status()["requeued"] >= 3


async def test_reconnects_after_the_network_drops(rabbitmq: Rabbit, names: Names, intake: Intake) -> None:
    async with Proxy((rabbitmq.host, rabbitmq.port)) as proxy:
        lst = make(config(rabbitmq, names, [f"{names.word}.#"], host_name="127.0.0.1",
                          connect_to_port=proxy.port))
        async with running(lst, intake), publisher(rabbitmq, names) as publish:
            await publish(f"{names.word}.before", b"1")
            (first,) = await take(intake, 1)
            await proxy.down()
            await until(lambda: lst.status()["state"] == "connecting")
            assert lst.status()["lastError"]
            first.ack()  # dropped: the delivery belonged to the cut connection
            await proxy.resume()
            await until(lambda: lst.status()["state"] == "connected")
            (again,) = await take(intake, 1)  # the unacked message came back
            again.ack()  # type: ignore[misc]
            await publish(f"{names.word}.after", b"2")
            (after,) = await take(intake, 1)
            after.ack()  # type: ignore[misc]
    assert (again.payload, after.payload) == (b"1", b"2")
    assert lst.status()["reconnects"] >= 1
    assert lst.status()["lastError"] is None


async def test_reconnects_after_the_server_closes_the_connection(
    rabbitmq: Rabbit, names: Names, intake: Intake
) -> None:
    lst = make(config(rabbitmq, names, [f"{names.word}.#"]))
    async with running(lst, intake), publisher(rabbitmq, names) as publish:
        try:
            closed = await asyncio.to_thread(rabbitmq.close_connection, lst.connection_name)
        except (RuntimeError, OSError) as exc:
            pytest.skip(f"cannot close a connection from the server side here: {exc}")
        assert closed == 1
        await until(lambda: lst.status()["reconnects"] >= 1 and lst.status()["state"] == "connected")
        await publish(f"{names.word}.after", b"back")
        (got,) = await take(intake, 1)
        got.ack()  # type: ignore[misc]
    assert got.payload == b"back"


async def test_broker_down_at_start_is_not_a_failure(names: Names, intake: Intake) -> None:
    cfg = Listener(key="aq", listener_type="amqp", host_name="127.0.0.1", connect_to_port=free_port(),
                   amqp_subscriptions=["x.#"])
    lst = make(cfg)
    async with running(lst, intake):
        assert lst.status()["state"] == "connecting"
        assert lst.status()["lastError"]
    assert lst.status()["state"] == "stopped"


async def test_replies_go_to_the_reply_routing_key_or_reply_to(
    rabbitmq: Rabbit, names: Names, intake: Intake
) -> None:
    w = names.word
    conn = await aio_pika.connect(host=rabbitmq.host, port=rabbitmq.port, timeout=5)
    async with conn:
        ch = await conn.channel()
        async with running(make(config(rabbitmq, names, [f"{w}.in.#"])), intake), \
                publisher(rabbitmq, names) as publish:
            ex = await ch.get_exchange(names.exchange)
            replies = await ch.declare_queue(exclusive=True)
            await replies.bind(ex, f"{w}.in.dev1.reply")
            rpc = await ch.declare_queue(exclusive=True)
            await publish(f"{w}.in.dev1", b"a")
            await publish(f"{w}.in.dev2", b"b", reply_to=rpc.name, correlation_id="c-7")
            got = sorted(await take(intake, 2), key=lambda m: m.payload)
            for m in got:
                m.ack()  # type: ignore[misc]
                m.reply.send(OutgoingMessage("k", "mid", "dev", payload=b"re-" + m.payload))  # type: ignore[union-attr]
            first = await _get(replies)
            second = await _get(rpc)
    assert first.body == b"re-a"
    assert (second.body, second.correlation_id) == (b"re-b", "c-7")


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    async with asyncio.timeout(5):
        while True:
            m = await queue.get(timeout=5, fail=False, no_ack=True)
            if m is not None:
                return m
            await asyncio.sleep(0.05)

