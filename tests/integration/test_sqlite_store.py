"""SqliteStore on a real file: batched writes, reads in the admin API's shapes, durability and limits."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import sqlite3
import sys
from asyncio.subprocess import PIPE
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import structlog

from runtime.adapters.storage.sqlite import MIGRATIONS, Retention, SqliteStore
from runtime.core.devices import Device
from runtime.core.errors import TransientError
from runtime.core.health import HealthEvent
from runtime.core.messages import MessageRecord, PemStatus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MESSAGE_KEYS = {
    "id",
    "receivedAt",
    "listener",
    "deviceId",
    "messageId",
    "status",
    "stage",
    "error",
    "processingMs",
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "runtime.db"  # the directory does not exist yet: open() makes it


def rec(i: int, *, status: PemStatus = PemStatus.COMPLETED, device: str = "dev1", **kw: Any) -> MessageRecord:
    return MessageRecord(
        id=f"r{i:06d}",
        received_at=T0 + i / 1000,
        listener="mqtt1",
        status=status,
        device_id=device,
        message_id="motion",
        processing_ms=1.5,
        **kw,
    )


async def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A separate, plain sqlite3 connection (off the loop): what another process would see."""

    def run() -> list[tuple[Any, ...]]:
        con = sqlite3.connect(path)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    return await asyncio.to_thread(run)


async def test_batch_commit_of_20k_records_then_newest_first(db_path: Path) -> None:
    async with SqliteStore.open(db_path) as store:
        for i in range(20_000):
            store.record_message(rec(i, device=f"dev{i % 7}"))
        assert store.queue_depth == 20_000  # queued without awaiting: nothing written yet
        await store.flush()
        assert store.queue_depth == 0
        assert store.written["message"] == 20_000
        assert store.dropped_total == 0

        newest = await store.list_messages(limit=3)
        assert [m["id"] for m in newest] == ["r019999", "r019998", "r019997"]
        assert set(newest[0]) == MESSAGE_KEYS
        assert newest[0]["status"] == "Completed"
        assert newest[0]["processingMs"] == 1.5
        assert ISO_MS.match(newest[0]["receivedAt"])
        assert newest[0]["receivedAt"] == "2023-11-14T22:13:39.999Z"

        dev3 = await store.list_messages(limit=2, device_id="dev3")
        assert [m["id"] for m in dev3] == ["r019995", "r019988"]
        assert await store.list_messages(limit=0) == []
    assert await query(db_path, "SELECT count(*) FROM messages") == [(20_000,)]


async def test_device_crud_round_trip_with_workflow_state(db_path: Path) -> None:
    device = Device(
        device_id="dev1",
        device_configuration="motion",
        name="Hall sensor",
        device_type="pir",
        primary_access_key="secret-1",
        secondary_access_key="secret-2",
        properties={"floor": 2},
        attributes={"motion": True, "temp": 21.5},
        state_machines={"occupancy": "occupied"},
        property_bag={"count": 3, "nested": {"a": [1, 2]}},
        latitude=52.1,
        longitude=4.3,
        last_seen=T0,
    )
    async with SqliteStore.open(db_path) as store:
        await store.upsert_device(device)
        got = await store.get_device("dev1")
        assert got is not None
        assert got.created_at is not None and got.updated_at is not None
        got.created_at = got.updated_at = None
        assert got == device  # keys included: the sentinel needs them
        view = got.public_view()
        assert "secret-1" not in repr(view) and "secret-2" not in repr(view)
        assert view["hasAccessKey"] is True

        device.name = "Renamed"
        device.state_machines = {"occupancy": "empty"}
        await store.upsert_device(device)
        assert [d.name for d in await store.load_devices()] == ["Renamed"]
        assert await store.get_device("nope") is None

    async with SqliteStore.open(db_path) as store:  # durable across a reopen
        again = await store.get_device("dev1")
        assert again is not None and again.state_machines == {"occupancy": "empty"}
        assert await store.delete_device("dev1") is True
        assert await store.delete_device("dev1") is False
        assert await store.get_device("dev1") is None
        assert await store.load_devices() == []


async def test_save_device_state_coalesces_and_keeps_identity(db_path: Path) -> None:
    async with SqliteStore.open(db_path) as store:
        await store.upsert_device(Device("dev1", "motion", name="Hall", primary_access_key="k1"))

    def add_audit() -> None:
        con = sqlite3.connect(db_path)
        with con:
            con.executescript(
                """
                CREATE TABLE audit (device_id TEXT);
                CREATE TRIGGER audit_u AFTER UPDATE ON devices BEGIN INSERT INTO audit VALUES (new.device_id); END;
                CREATE TRIGGER audit_i AFTER INSERT ON devices BEGIN INSERT INTO audit VALUES (new.device_id); END;
                """
            )
        con.close()

    await asyncio.to_thread(add_audit)  # counts the row writes the store makes from here on
    async with SqliteStore.open(db_path) as store:
        for n in range(3):  # separate objects: the last one queued wins
            store.save_device_state(
                Device(
                    "dev1",
                    "other",
                    name="ignored",
                    primary_access_key="ignored",
                    attributes={"n": n},
                    state_machines={"m": f"s{n}"},
                    latitude=1.0 + n,
                    longitude=2.0,
                    last_seen=T0 + n,
                )
            )
        store.save_device_state(Device("dev2", "motion", attributes={"x": 1}))  # unknown device: inserted
        await store.flush()
        assert store.written["device"] == 4

        dev1 = await store.get_device("dev1")
        assert dev1 is not None
        assert (dev1.attributes, dev1.state_machines, dev1.latitude, dev1.last_seen) == (
            {"n": 2},
            {"m": "s2"},
            3.0,
            T0 + 2,
        )
        # identity and secrets are the admin API's business, not the data plane's
        assert (dev1.name, dev1.device_configuration, dev1.primary_access_key) == ("Hall", "motion", "k1")
        assert (await store.get_device("dev2")) is not None
    assert sorted(await query(db_path, "SELECT device_id FROM audit")) == [("dev1",), ("dev2",)]


async def test_flush_semantics(db_path: Path) -> None:
    async with SqliteStore.open(db_path, batch_size=100) as store:
        await store.flush()  # nothing queued: returns at once
        for i in range(1000):
            store.record_message(rec(i))
        first = asyncio.create_task(store.flush(), name="flush-first")
        await asyncio.sleep(0)
        for i in range(1000, 3000):
            store.record_message(rec(i))
        await first
        # everything queued before the first flush is committed and visible to another connection
        assert (await query(db_path, "SELECT count(*) FROM messages WHERE id < 'r001000'")) == [(1000,)]
        await store.flush()
        assert (await query(db_path, "SELECT count(*) FROM messages")) == [(3000,)]
        # several concurrent flushes all return
        store.record_event(T0, "Offline", "StartingRuntime", None)
        await asyncio.gather(store.flush(), store.flush(), store.flush())
        assert len(await store.list_events()) == 1


async def test_queue_full_counts_drops_and_never_raises(db_path: Path) -> None:
    async with SqliteStore.open(db_path, batch_size=5, queue_size=10) as store:
        for i in range(25):  # no await: the writer cannot take anything meanwhile
            store.record_message(rec(i))
        store.record_log(T0, "info", "x", {})
        store.record_event(T0, "Offline", "StartingRuntime", None)
        store.save_device_state(Device("dev1", "motion"))
        assert store.queue_depth == 10
        assert store.dropped == {"event": 1, "log": 1, "message": 15, "device": 1}
        assert store.dropped_total == 18
        await store.flush()
        assert store.written["message"] == 10
        assert [m["id"] for m in await store.list_messages()] == [f"r{i:06d}" for i in range(9, -1, -1)]
    store.record_message(rec(99))  # after close: refused and counted, not raised
    assert store.dropped["message"] == 16


async def test_dead_letters_keep_raw_payload_topic_and_headers(db_path: Path) -> None:
    binary = bytes(range(256))
    async with SqliteStore.open(db_path) as store:
        store.record_message(rec(1, payload=b"not kept", topic="t/ok"))  # Completed: not a dead letter
        store.record_message(
            rec(
                2,
                status=PemStatus.FAILED,
                stage="sentinel",
                error="unauthorized_device: bad key",
                payload=binary,
                topic="devices/dev1/motion",
                headers={"content-type": "application/octet-stream"},
                detail={"warnings": ["w1"]},
            )
        )
        store.record_message(
            rec(
                3,
                status=PemStatus.FAILED,
                stage="planner",
                error="CouldNotFindDevice: dev9",
                payload='{"temp": "21°"}'.encode(),
                path="/api/dev9",
                headers={"x-a": "1"},
            )
        )
        await store.flush()

        listed = await store.list_deadletters()
        assert [d["id"] for d in listed] == ["r000003", "r000002"]
        assert set(listed[0]) == MESSAGE_KEYS | {"replayedAt"}
        assert listed[0]["status"] == "Failed" and listed[0]["stage"] == "planner"
        assert [m["status"] for m in await store.list_messages()] == ["Failed", "Failed", "Completed"]

        dl = await store.get_deadletter("r000002")
        assert dl is not None
        assert base64.b64decode(dl["payload"]) == binary
        assert dl["payloadText"] is None  # not UTF-8
        assert dl["topic"] == "devices/dev1/motion" and dl["path"] is None
        assert dl["headers"] == {"content-type": "application/octet-stream"}
        assert dl["error"] == "unauthorized_device: bad key" and dl["detail"] == {"warnings": ["w1"]}
        assert dl["replayedAt"] is None

        text = await store.get_deadletter("r000003")
        assert text is not None and text["payloadText"] == '{"temp": "21°"}' and text["path"] == "/api/dev9"
        assert await store.get_deadletter("r000001") is None

        await store.mark_replayed("r000002", T0 + 60)
        replayed = await store.get_deadletter("r000002")
        assert replayed is not None and replayed["replayedAt"] == "2023-11-14T22:14:20.000Z"


async def test_events_and_logs_newest_first_with_limit(db_path: Path) -> None:
    states = ["Offline", "StartingRuntime", "Initializing", "Starting", "Running", "Pausing"]
    async with SqliteStore.open(db_path) as store:
        for n, (a, b) in enumerate(pairwise(states)):
            store.record_event(T0 + n, a, b, "pause requested" if b == "Pausing" else None)
        store.record_log(T0, "warning", "listener_failed", {"listener": "mqtt1", "path": Path("/x"), "n": 1})
        store.record_log(T0 + 1, "info", "state_changed", {"to": "Running"})
        await store.flush()

        events = await store.list_events(limit=3)
        assert events == [
            {
                "at": "2023-11-14T22:13:24.000Z",
                "kind": "state",
                "from": "Running",
                "to": "Pausing",
                "reason": "pause requested",
            },
            {"at": "2023-11-14T22:13:23.000Z", "kind": "state", "from": "Starting", "to": "Running", "reason": None},
            {"at": "2023-11-14T22:13:22.000Z", "kind": "state", "from": "Initializing", "to": "Starting",
             "reason": None},
        ]
        assert len(await store.list_events()) == 5
        # a device error raised or cleared is an event row of its own kind (docs/fidelity.md, "Device health")
        store.record_device_error(HealthEvent("dev1", "E42", "raised", "businessrule", "too hot " * 100, T0 + 9))
        await store.flush()
        assert (await store.list_events(limit=1))[0] == {
            "at": "2023-11-14T22:13:29.000Z", "kind": "deviceError", "deviceId": "dev1", "code": "E42",
            "action": "raised", "source": "businessrule", "reason": ("too hot " * 100)[:500]}
        # narrowed to one kind and/or one device (a flapping device's errors do not hide the transitions)
        store.record_device_error(HealthEvent("dev2", "E7", "cleared", "alarmstate", "", T0 + 10))
        await store.flush()
        assert [e["to"] for e in await store.list_events(limit=2, kind="state")] == ["Pausing", "Running"]
        assert [(e["deviceId"], e["code"]) for e in await store.list_events(kind="deviceError")] == [
            ("dev2", "E7"), ("dev1", "E42")]
        assert [e["code"] for e in await store.list_events(device_id="dev1")] == ["E42"]
        assert await store.list_events(kind="state", device_id="dev1") == []
        logs = await store.list_logs(limit=10)
        assert [entry["event"] for entry in logs] == ["state_changed", "listener_failed"]
        assert logs[1]["fields"] == {"listener": "mqtt1", "path": "/x", "n": 1}  # odd values as text
        assert ISO_MS.match(logs[0]["at"]) and logs[0]["level"] == "info"


async def test_outbox_is_bounded_and_acked_rows_leave(db_path: Path) -> None:
    async with SqliteStore.open(db_path, outbox_max_rows=5) as store:
        assert await store.outbox_put("log", [b"a", b"b", b"c"]) == 3
        assert await store.outbox_put("telemetry", [b"d", b"e", b"f", b"g"]) == 2
        assert store.outbox_refused == {"telemetry": 2} and store.outbox_refused_total == 2
        assert await store.outbox_depth() == 5

        rows = await store.outbox_peek(10)
        assert [(kind, payload) for _, kind, payload in rows] == [
            ("log", b"a"),
            ("log", b"b"),
            ("log", b"c"),
            ("telemetry", b"d"),
            ("telemetry", b"e"),
        ]
        ids = [row_id for row_id, _, _ in rows]
        assert ids == sorted(ids)

        await store.outbox_ack(ids[:2])
        await store.outbox_ack([])
        await store.outbox_ack([10_000])  # unknown id: nothing to do
        assert await store.outbox_depth() == 3
        assert await store.outbox_put("log", [b"\x00\xff", b"i", b"j"]) == 2
        later = await store.outbox_peek(2)
        assert [payload for _, _, payload in later] == [b"c", b"d"]
    async with SqliteStore.open(db_path, outbox_max_rows=5) as store:  # survives a restart
        assert [p for _, _, p in await store.outbox_peek(10)] == [b"c", b"d", b"e", b"\x00\xff", b"i"]


async def test_wal_mode_and_idempotent_versioned_schema(db_path: Path) -> None:
    async with SqliteStore.open(db_path) as store:
        store.record_event(T0, "Offline", "StartingRuntime", None)
        await store.flush()
        assert await query(db_path, "PRAGMA journal_mode") == [("wal",)]
    async with SqliteStore.open(db_path) as store:  # second open: no migration replayed, data intact
        assert len(await store.list_events()) == 1
    assert await query(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]  # 4: event kinds (device errors)
    assert await query(db_path, "PRAGMA integrity_check") == [("ok",)]



async def test_a_version_1_database_loses_the_per_device_index_and_keeps_its_records(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO messages (id, received_at, listener, status, device_id) "
                     "VALUES ('old1', ?, 'mq', 'Completed', 'dev1')", (T0,))
        conn.execute("INSERT INTO events (at, from_state, to_state) VALUES (?, 'Starting', 'Running')", (T0,))
    assert await query(db_path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'") \
        == [("messages_device_received",)]
    async with SqliteStore.open(db_path) as store:
        store.record_message(MessageRecord(id="new1", received_at=T0 + 1, listener="mq",
                                           status=PemStatus.COMPLETED, device_id="dev1"))
        await store.flush()
        assert [m["id"] for m in await store.list_messages(device_id="dev1")] == ["new1", "old1"]
        assert await store.list_events() == [  # an event from before version 4 is a state transition
            {"at": "2023-11-14T22:13:20.000Z", "kind": "state", "from": "Starting", "to": "Running", "reason": None}]
    assert await query(db_path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'") \
        == []
    assert await query(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]  # 4: event kinds (device errors)

CHILD = """
import asyncio, sys, time
from asyncio.subprocess import PIPE
from itertools import pairwise
from pathlib import Path
from runtime.adapters.storage.sqlite import SqliteStore
from runtime.core.messages import MessageRecord, PemStatus

async def main(path):
    async with SqliteStore.open(Path(path), batch_size=500) as store:
        n = 0
        while True:
            for _ in range(500):
                store.record_message(MessageRecord(id=f"{n:09d}", received_at=time.time(), listener="kill",
                                                   status=PemStatus.COMPLETED, device_id=f"d{n % 50}"))
                n += 1
            while store.queue_depth > 5000:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            print("COMMITTED", store.written["message"], flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_kill_9_never_corrupts_and_keeps_committed_rows(db_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db_path), cwd=REPO, stdout=PIPE, stderr=PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    committed = 0
    try:
        async with asyncio.timeout(60):
            while committed < 30_000:
                line = await proc.stdout.readline()
                if not line:
                    raise AssertionError(f"writer died early: {(await proc.stderr.read()).decode()}")
                if line.startswith(b"COMMITTED "):
                    committed = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)  # the writer is mid-batch here, nearly always
        await proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert await query(db_path, "PRAGMA integrity_check") == [("ok",)]
    ((count, lowest, highest),) = await query(db_path, "SELECT count(*), min(id), max(id) FROM messages")
    assert count >= committed  # every row reported committed is there
    assert (lowest, highest) == ("000000000", f"{count - 1:09d}")  # whole batches only, in order
    async with SqliteStore.open(db_path) as store:  # and the store opens and writes again
        store.record_message(rec(1))
        await store.flush()
        assert (await store.list_messages(limit=1))[0]["id"] == "r000001"


async def test_retention_prunes_to_the_newest_rows(db_path: Path) -> None:
    retention = Retention(messages=100, deadletters=20, logs=50, events=10)
    async with SqliteStore.open(db_path, batch_size=50, retention=retention) as store:
        for i in range(1000):
            store.record_message(
                rec(i, status=PemStatus.FAILED if i % 5 == 0 else PemStatus.COMPLETED, payload=b"p")
            )
            store.record_log(T0 + i, "info", f"line{i}", {})
        await store.flush()
        store.record_event(T0, "Offline", "StartingRuntime", None)
        await store.flush()  # pruning runs after a batch commits: this batch comes after the last prune
        assert store.written["message"] == 1000
        ((messages,),) = await query(db_path, "SELECT count(*) FROM messages")
        ((deadletters,),) = await query(db_path, "SELECT count(*) FROM deadletters")
        ((logs,),) = await query(db_path, "SELECT count(*) FROM logs")
        assert 100 <= messages < 110 and 20 <= deadletters < 22 and 50 <= logs < 55
        assert (await store.list_messages(limit=1))[0]["id"] == "r000999"
        assert (await store.list_deadletters(limit=1))[0]["id"] == "r000995"
        assert (await store.list_logs(limit=1))[0]["event"] == "line999"
    # a smaller limit applies at the next start
    async with SqliteStore.open(db_path, retention=Retention(messages=10)) as store:
        store.record_event(T0, "Offline", "StartingRuntime", None)
        await store.flush()
        assert [m["id"] for m in await store.list_messages(limit=100)] == [
            f"r{i:06d}" for i in range(999, 989, -1)
        ]


async def test_writer_survives_bad_rows(db_path: Path) -> None:
    async with SqliteStore.open(db_path) as store:
        with structlog.testing.capture_logs() as logs:
            store.record_message(rec(1))
            store.record_message(
                MessageRecord(
                    id="bad-null",
                    received_at=T0,
                    listener=None,  # type: ignore[arg-type]
                    status=PemStatus.COMPLETED,
                )
            )  # NOT NULL violation
            store.record_message(rec(2, device=object()))  # type: ignore[arg-type]  # cannot be bound
            store.record_message(rec(3, detail={"x": object()}))  # not JSON
            store.record_message(rec(4))
            await store.flush()  # no exception for the caller
        assert store.failed["message"] == 3
        assert store.written["message"] == 2
        assert [m["id"] for m in await store.list_messages()] == ["r000004", "r000001"]
        failures = [e for e in logs if e["event"] == "storage_rows_failed"]
        assert failures and sum(e["count"] for e in failures) == 3
        # the writer is still there
        for i in range(10, 20):
            store.record_message(rec(i))
        await store.upsert_device(Device("dev1", "motion"))
        await store.flush()
        assert store.written["message"] == 12 and store.failed["message"] == 3


async def test_locked_database_retries_then_raises_transient_to_flush(db_path: Path) -> None:
    async with SqliteStore.open(db_path, busy_timeout_ms=20, lock_attempts=2) as store:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            store.record_event(T0, "Offline", "StartingRuntime", None)
            with pytest.raises(TransientError):
                await store.flush()
            with pytest.raises(TransientError):
                await store.upsert_device(Device("dev1", "motion"))
            assert await store.list_events() == []  # reads go on meanwhile
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        await store.flush()  # the writer kept retrying: the event is in
        assert [e["to"] for e in await store.list_events()] == ["StartingRuntime"]
        assert await store.get_device("dev1") is None  # its caller was told it failed
        assert store.failed["event"] == 0


def test_iso_times_are_utc_with_milliseconds() -> None:
    from runtime.core.timefmt import iso

    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(T0 + 0.1234) == "2023-11-14T22:13:20.123Z"
    assert iso(None) is None


async def test_close_on_a_locked_database_gives_up_counted_not_forever(db_path: Path) -> None:
    async with asyncio.timeout(10):
        async with SqliteStore.open(db_path, batch_size=5, busy_timeout_ms=20, lock_attempts=2) as store:
            blocker = sqlite3.connect(db_path, isolation_level=None)
            try:
                blocker.execute("BEGIN EXCLUSIVE")
                for n in range(20):
                    store.record_event(T0 + n, "Running", "Stopping", None)
            except BaseException:
                blocker.close()
                raise
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.failed["event"] == 20 and store.written["event"] == 0
    assert await query(db_path, "SELECT count(*) FROM events") == [(0,)]


async def test_on_commit_runs_only_after_the_record_is_readable(db_path: Path) -> None:
    """The QoS1 acknowledgement hook: run once committed, in order, never before."""
    async with SqliteStore.open(db_path, batch_size=50) as store:
        seen: list[tuple[str, int]] = []

        def acker(rec_id: str) -> Any:
            def ack() -> None:
                # synchronous sqlite read on another connection: the row must already be there
                with sqlite3.connect(db_path) as other:
                    found = other.execute("SELECT count(*) FROM messages WHERE id = ?", (rec_id,)).fetchone()[0]
                seen.append((rec_id, found))

            return ack

        ids = [f"r{i:04d}" for i in range(120)]
        for rec_id in ids:
            store.record_message(MessageRecord(id=rec_id, received_at=1.0, listener="l", status=PemStatus.COMPLETED),
                                 acker(rec_id))
        assert seen == []  # nothing acknowledged before the writer ran
        await store.flush()
        assert [r for r, _ in seen] == ids
        assert all(found == 1 for _, found in seen)


async def test_on_commit_runs_at_once_when_the_record_cannot_be_queued(db_path: Path) -> None:
    async with SqliteStore.open(db_path, batch_size=5, queue_size=1) as store:
        calls: list[int] = []
        for i in range(3):
            store.record_message(MessageRecord(id=f"q{i}", received_at=1.0, listener="l", status=PemStatus.COMPLETED),
                                 lambda i=i: calls.append(i))
        assert 1 in calls and 2 in calls  # refused ones are acknowledged at once (processed, record dropped)
        await store.flush()
        assert sorted(calls) == [0, 1, 2]
        assert store.dropped["message"] == 2
