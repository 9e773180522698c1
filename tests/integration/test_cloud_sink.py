"""Cloud working storage against a local aiohttp server that fails, throttles, answers garbage, drops
connections, is slow and then recovers: every record is delivered (at least once), none lost, the
POST rate stays under the limit, outbox reads stay bounded, a 4xx batch is quarantined."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from runtime.adapters.cloud import CloudConfig, CloudRecords, CloudSink
from runtime.adapters.storage.sqlite import SqliteStore
from runtime.core.health import HealthEvent
from runtime.core.lifecycle import InstanceState
from runtime.core.messages import MessageRecord, PemStatus
from runtime.core.ports import StateChange
from tests.support.fake_cloud import FakeCloud

pytestmark = pytest.mark.integration
log = structlog.get_logger(__name__)


class SpyStore:
    """The real store, with every outbox read measured (the sender must never read the whole outbox)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.peek_limits: list[int] = []
        self.peek_sizes: list[int] = []

    async def outbox_put(self, kind: str, payloads: list[bytes]) -> int:
        return await self.store.outbox_put(kind, payloads)

    async def outbox_peek(self, limit: int) -> list[tuple[int, str, bytes]]:
        rows = await self.store.outbox_peek(limit)
        self.peek_limits.append(limit)
        self.peek_sizes.append(len(rows))
        return rows

    async def outbox_ack(self, ids: list[int]) -> None:
        await self.store.outbox_ack(ids)

    async def outbox_depth(self) -> int:
        return await self.store.outbox_depth()


def config(url: str, **kw: Any) -> CloudConfig:
    base: dict[str, Any] = dict(url=url, access_key="s3cret-key", batch_size=10, max_batches_per_second=20,
                                timeout=0.5, retry_base=0.05, retry_max=0.3)
    return CloudConfig(**{**base, **kw})


def message(i: int, status: PemStatus = PemStatus.COMPLETED) -> MessageRecord:
    return MessageRecord(id=f"m{i:05d}", received_at=time.time(), listener="rest", status=status,
                         device_id="dev1", message_id="telemetry", processing_ms=1.0, payload=b'{"t": 1}')


async def wait_until(cond: Any, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - a test polls counters it does not own
            await asyncio.sleep(0.02)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with SqliteStore.open(tmp_path / "runtime.db", outbox_max_rows=1_000) as s:
        yield s


async def test_every_record_survives_failures_then_recovery(store: SqliteStore, tmp_path: Path) -> None:
    script = ["500", "429", "garbage", "close", "slow", "500"]
    async with FakeCloud(script=list(script), retry_after="1", slow_seconds=1.0) as cloud:
        spy = SpyStore(store)
        async with CloudSink(spy, config(cloud.url), instance_id=lambda: "inst-1", data_dir=tmp_path) as sink:
            records = CloudRecords(store, sink)
            acked: list[str] = []
            for i in range(120):
                rec = message(i)
                records.record_message(rec, on_commit=lambda rec=rec: acked.append(rec.id))
            for i in range(30):
                sink.record_log(time.time(), "warning", "something_happened", {"n": i, "logger": "x"})
            change = StateChange(time.time(), InstanceState.STARTING, InstanceState.RUNNING, "started")
            sink.record_event(change)
            sink.record_device_error(HealthEvent("dev1", "E42", "raised", "systemmessage", "overheated", time.time()))
            sink.report_status(change, "1.0")
            await wait_until(lambda: len(cloud.accepted_ids()) == 153 and sink.depth == 0)
            status = sink.status()

        expected = {f"m{i:05d}" for i in range(120)}
        got = cloud.accepted_ids("message")
        dups = sum(n - 1 for n in got.values())
        log.info("cloud_delivery_counts", expected=len(expected) + 33, distinct=len(cloud.accepted_ids()),
                 duplicates=sum(n - 1 for n in cloud.accepted_ids().values()), posts=len(cloud.posts))
        assert set(got) == expected, "a message record was lost"
        assert dups <= sink.config.batch_size  # only the 'slow' batch (stored, then timed out) comes twice
        assert set(cloud.accepted_ids("log")) and len(cloud.accepted_ids("log")) == 30
        events = [r for r in cloud.accepted if r["_kind"] == "event"]
        assert [r["to"] for r in events if "to" in r] == ["Running"]
        assert [(r["kind"], r["deviceId"], r["code"], r["action"], r["source"], r["reason"]) for r in events
                if "to" not in r] == [("deviceError", "dev1", "E42", "raised", "systemmessage", "overheated")]
        (st,) = [r for r in cloud.accepted if r["_kind"] == "status"]
        assert st["state"] == "Running" and st["isDeployed"] is True and st["instanceId"] == "inst-1"
        assert sorted(acked) == sorted(expected)  # each message acknowledged once its row was in the outbox
        assert [p.answered for p in cloud.posts[: len(script)]] == script
        assert all(p.authorization == "Bearer s3cret-key" for p in cloud.posts)
        assert all(p.instance_id == "inst-1" for p in cloud.posts)
        # order within a kind is kept
        first_seen = list(dict.fromkeys(r["id"] for r in cloud.accepted if r["_kind"] == "message"))
        assert first_seen == sorted(first_seen)
        # Retry-After honoured: nothing was sent for a second after the 429
        i429 = next(i for i, p in enumerate(cloud.posts) if p.answered == "429")
        assert cloud.posts[i429 + 1].at - cloud.posts[i429].at >= 0.95
        # memory bounded: never more than one batch read from the outbox
        assert spy.peek_limits and max(spy.peek_limits) == 10 and max(spy.peek_sizes) <= 10
        assert status["depth"] == 0 and status["lastDeliveryAt"] and status["quarantined"] == 0
        assert status["lastError"]  # the last failure is remembered
        assert await store.outbox_depth() == 0


async def test_replay_after_outage_is_rate_limited(store: SqliteStore) -> None:
    async with FakeCloud(script=["500"] * 3) as cloud:
        cfg = config(cloud.url, batch_size=5, max_batches_per_second=10)
        async with CloudSink(store, cfg, instance_id=lambda: "inst-1") as sink:
            for i in range(100):
                sink.record_message(message(i))
            await wait_until(lambda: len(cloud.accepted_ids()) == 100)
        times = [p.at for p in cloud.posts]
        gaps = [b - a for a, b in pairwise(times)]
        log.info("cloud_replay_pacing", posts=len(times), min_gap=round(min(gaps), 4),
                 seconds=round(times[-1] - times[0], 2))
        assert len(times) >= 23  # 20 batches of 5 plus the failures
        assert min(gaps) >= 0.1 - 0.01  # at most 10 POSTs a second
        ok = [p.at for p in cloud.posts if p.answered == "ok"]
        assert ok[-1] - ok[0] >= (len(ok) - 1) * 0.1 - 0.02


async def test_client_error_batch_is_quarantined_not_retried(store: SqliteStore, tmp_path: Path) -> None:
    async with FakeCloud() as cloud:
        async with CloudSink(store, config(cloud.url), instance_id=lambda: "inst-1", data_dir=tmp_path) as sink:
            sink.offer("event", {"id": "good-1", "to": "Running"})
            await wait_until(lambda: "good-1" in cloud.accepted_ids())
            sink.offer("message", {"id": "bad-1", "poison": True})
            await wait_until(lambda: sink.status()["quarantined"] == 1)
            sink.offer("message", {"id": "good-2"})
            await wait_until(lambda: "good-2" in cloud.accepted_ids() and sink.depth == 0)
            status = sink.status()
        assert [p.answered for p in cloud.posts].count("400") == 1  # sent once, never again
        assert "bad-1" not in cloud.accepted_ids()
        assert status["quarantined"] == 1 and "HTTP 400" in status["lastError"]
        lines = (tmp_path / "cloud-quarantine.jsonl").read_bytes().splitlines()
        quarantined = orjson.loads(lines[0])
        assert quarantined["kind"] == "message" and quarantined["record"]["id"] == "bad-1"
        assert await store.outbox_depth() == 0
    # a restart counts what is already in the quarantine file
    async with CloudSink(store, config("http://127.0.0.1:9"), instance_id=lambda: "i", data_dir=tmp_path) as again:
        assert again.status()["quarantined"] == 1


async def test_overflow_is_counted_never_silent(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "small.db", outbox_max_rows=50) as small:
        # nothing listens on port 9: every POST fails, the outbox fills up
        cfg = config("http://127.0.0.1:9", queue_size=40, retry_base=1, retry_max=1)
        async with CloudSink(small, cfg, instance_id=lambda: "inst-1") as sink:
            offered = [sink.offer("log", {"n": i}) for i in range(100)]  # one tick: the queue cannot drain
            assert offered.count(False) == 60 and sink.stats.dropped == 60
            await wait_until(lambda: sink.depth == 40)  # spooled into the outbox
            for i in range(40):
                assert sink.offer("log", {"n": i})
            await wait_until(lambda: small.outbox_refused_total == 30 and sink.depth == 50)
            assert sink.status()["refused"] == 60 and sink.status()["depth"] == 50
        assert await small.outbox_depth() == 50  # what was accepted stays for the next start


async def test_not_mirroring_keeps_records_local_only(store: SqliteStore) -> None:
    async with FakeCloud() as cloud:
        async with CloudSink(store, config(cloud.url), instance_id=lambda: "inst-1", mirror=lambda: False) as sink:
            records = CloudRecords(store, sink)
            records.record_message(message(1))
            sink.record_log(time.time(), "error", "boom", {})
            sink.record_event(StateChange(time.time(), None, InstanceState.STARTING_RUNTIME, None))
            sink.record_device_error(HealthEvent("dev1", "E42", "raised", "systemmessage", "", time.time()))
            sink.report_status(StateChange(time.time(), None, InstanceState.STARTING_RUNTIME, None), None)
            await wait_until(lambda: len(cloud.accepted) == 1)
        await store.flush()
        assert [r["_kind"] for r in cloud.accepted] == ["status"]  # status reporting needs only the URL
        assert cloud.accepted[0]["isDeployed"] is False
        assert [m["id"] for m in await store.list_messages()] == ["m00001"]
