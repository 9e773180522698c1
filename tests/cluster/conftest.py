"""The Cluster edition's fixtures: the machine's (or a private) PostgreSQL with a database per test, the
machine's (or a private) RabbitMQ with an instance id per test (its queues are named after it, and deleted)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from runtime.services.cluster import partition_queue
from tests.support import postgres, rabbitmq


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.Server]:
    server = postgres.find_or_start()
    yield server
    if server.private is not None:
        server.private.close()


@pytest.fixture
def database_url(pg_server: postgres.Server) -> Iterator[str]:
    name = pg_server.create()
    yield pg_server.url(name)
    pg_server.drop(name)


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbitmq.Rabbit]:
    found = rabbitmq.find_or_start(tmp_path_factory.mktemp("cluster-rabbit"))
    if found is None:
        pytest.fail("no RabbitMQ: run `make test` (it installs rabbitmq-server)")
    yield found
    if found.own:
        found.stop()


def amqp_url(r: rabbitmq.Rabbit) -> str:
    return f"amqp://{r.user}:{r.password}@{r.host}:{r.port}/"


@pytest.fixture
async def instance_id(rabbit: rabbitmq.Rabbit) -> AsyncIterator[str]:
    """An instance id of this test alone; its partition queues are deleted afterwards."""
    instance = f"t{uuid.uuid4().hex[:10]}"
    yield instance
    conn = await aio_pika.connect(amqp_url(rabbit))
    async with conn:
        channel = await conn.channel()
        for p in range(64):
            try:
                await channel.queue_delete(partition_queue(instance, p))
            except aio_pika.exceptions.ChannelClosed:
                channel = await conn.channel()


@pytest.fixture
def cluster_solution() -> Path:
    return Path(__file__).resolve().parents[1] / "fixtures" / "cluster.yaml"
