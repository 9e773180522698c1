"""The PostgreSQL store (adapters/storage/postgres.py) against a real PostgreSQL: the same port as the
SQLite store. A record's ``on_commit`` (a worker's RabbitMQ ack) runs only after its transaction committed;
a PostgreSQL that goes away loses nothing queued (private server, stopped and started again)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from runtime.adapters.storage.postgres import PostgresStore
from runtime.core.devices import Device
from runtime.core.health import HealthEvent
from runtime.core.messages import MessageRecord, PemStatus
from tests.support import postgres

pytestmark = pytest.mark.integration


def record(n: int, status: PemStatus = PemStatus.COMPLETED, device: str = "d1") -> MessageRecord:
    return MessageRecord(id=f"m{n}", received_at=1000.0 + n, listener="mqttin", status=status, device_id=device,
                         message_id=str(n), stage="inputtranslator" if status is PemStatus.FAILED else None,
                         error="MGV1003: bad" if status is PemStatus.FAILED else None,
                         payload=b"\x00\xff" if status is PemStatus.FAILED else None, topic="t/1")


async def test_records_devices_and_deadletters_round_trip(database_url: str) -> None:
    committed: list[int] = []
    async with PostgresStore.open(database_url) as store:
        await store.upsert_device(Device("d1", "counter", name="One", primary_access_key="secret"))
        for n in range(1, 6):
            store.record_message(record(n), lambda n=n: committed.append(n))
        store.record_message(record(6, PemStatus.FAILED))
        device = Device("d1", "counter", name="One", attributes={"seq": 5})
        store.save_device_state(device)
        store.record_event(1.0, "Starting", "Running", "listeners started")
        await store.flush()
        assert committed == [1, 2, 3, 4, 5]
        # on_commit ran after the commit: another connection sees the rows
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM messages") == 6
        finally:
            await conn.close()
        listed = await store.list_messages(limit=3)
        assert [m["messageId"] for m in listed] == ["6", "5", "4"]  # newest first
        assert [m["messageId"] for m in await store.list_messages(device_id="nobody")] == []
        letters = await store.list_deadletters()
        assert [(x["id"], x["stage"]) for x in letters] == [("m6", "inputtranslator")]
        detail = await store.get_deadletter("m6")
        assert detail is not None and detail["payload"] == "AP8=" and detail["topic"] == "t/1"
        got = await store.get_device("d1")
        assert got is not None and got.attributes == {"seq": 5} and got.primary_access_key == "secret"
        assert [e["to"] for e in await store.list_events()] == ["Running"]
        store.record_device_error(HealthEvent("d1", "E42", "raised", "businessrule", "too hot", 2.0))
        await store.flush()
        assert [e["kind"] for e in await store.list_events()] == ["deviceError", "state"]
        assert [e["to"] for e in await store.list_events(kind="state")] == ["Running"]
        assert [e["code"] for e in await store.list_events(kind="deviceError", device_id="d1")] == ["E42"]
        assert await store.list_events(device_id="d2") == []
        assert await store.delete_device("d1") is True
        assert await store.delete_device("d1") is False


async def test_a_postgres_outage_loses_nothing_and_acks_only_after_commit(pg_server: postgres.Server) -> None:
    private = postgres.Private()  # stopped below: never the machine's
    try:
        url = f"postgresql://postgres@{private.host}:{private.port}/postgres"
        committed: list[int] = []
        async with PostgresStore.open(url) as store:
            store.record_message(record(1), lambda: committed.append(1))
            await store.flush()
            await asyncio.to_thread(private.stop, "immediate")
            for n in range(2, 52):
                store.record_message(record(n), lambda n=n: committed.append(n))
            await asyncio.sleep(0)  # the writer tries, fails, retries with backoff
            assert committed == [1]  # nothing acked while PostgreSQL is down

            async def down_then_up() -> None:
                deadline = asyncio.get_running_loop().time() + 20
                while store.last_error is None:
                    assert asyncio.get_running_loop().time() < deadline, "the writer never saw the outage"
                    await asyncio.sleep(0.05)
                assert committed == [1]
                await asyncio.to_thread(private.start)

            await down_then_up()
            await asyncio.wait_for(store.flush(), timeout=60)
            assert committed == list(range(1, 52))
            assert [m["messageId"] for m in await store.list_messages(limit=1000)] == [str(n) for n in range(51, 0, -1)]
    finally:
        await asyncio.to_thread(private.close)


async def test_numbered_records_commit_their_cursor_and_a_duplicate_is_not_recorded_twice(database_url: str) -> None:
    """Two workers (two stores) record the same numbered messages, as a worker that lost its RabbitMQ
    connection and its successor would: each number is recorded once, every ack still runs, and the
    cursor a newly gaining worker reads is the last number committed."""
    acked: list[str] = []
    async with PostgresStore.open(database_url) as first, PostgresStore.open(database_url) as second:
        assert await second.committed("q.p000") == {}
        for n in range(1, 4):
            first.sequence(f"m{n}", "q.p000", "ingest-a", n)
            first.record_message(record(n), lambda n=n: acked.append(f"first {n}"))
        await first.flush()
        assert await second.committed("q.p000") == {"ingest-a": 3}
        for n in range(2, 6):  # 2 and 3 again (redelivered to the successor), then 4 and 5
            second.sequence(f"m{n}", "q.p000", "ingest-a", n)
            second.record_message(record(n), lambda n=n: acked.append(f"second {n}"))
        second.record_message(record(9))  # not numbered (late after a gap): recorded as it is
        await second.flush()
        assert acked == ["first 1", "first 2", "first 3", "second 2", "second 3", "second 4", "second 5"]
        ids = sorted(m["id"] for m in await second.list_messages(limit=100))
        assert ids == ["m1", "m2", "m3", "m4", "m5", "m9"]
        assert second.duplicates_dropped == 2
        assert await first.committed("q.p000") == {"ingest-a": 5}
        assert await first.committed("q.p001") == {}


async def test_a_number_twice_in_one_batch_is_recorded_once(database_url: str) -> None:
    acked: list[int] = []
    async with PostgresStore.open(database_url) as store:
        for n in (1, 2, 2, 3):
            store.sequence(f"m{n}", "q.p001", "ingest-b", n)
            store.record_message(record(n), lambda n=n: acked.append(n))
        await store.flush()
        assert acked == [1, 2, 2, 3]
        assert sorted(m["id"] for m in await store.list_messages()) == ["m1", "m2", "m3"]
        assert store.duplicates_dropped == 1
