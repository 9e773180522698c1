"""Issue 18: what the store does when the disk or the file fails. Real files, a real small file system.

Nothing is acknowledged that is not committed: a full disk holds the acknowledgements (and /ready goes 503
through ``store.fault``) until space returns, then everything commits and is acknowledged; a damaged file is
refused at open with the reason, and a page damaged under a running store loses that batch, never acks it,
and tells the app (FatalError).
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.adapters.storage.faults import Fault
from runtime.adapters.storage.items import Limits
from runtime.adapters.storage.sqlite import Retention, SqliteStore
from runtime.core.devices import Device
from runtime.core.errors import StorageError, TransientError
from runtime.core.messages import MessageRecord, PemStatus
from tests.support.intake import until
from tests.support.tmpfs import remount, small_tmpfs

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def rec(i: int, *, failed: bool = False, payload: bytes | None = None, **kw: Any) -> MessageRecord:
    return MessageRecord(id=f"r{i:06d}", received_at=T0 + i / 1000, listener="mqtt1",
                         status=PemStatus.FAILED if failed else PemStatus.COMPLETED, device_id=f"d{i % 7}",
                         message_id="m", payload=payload, stage="planner" if failed else None,
                         error="bad: x" if failed else None, **kw)


def size(path: Path) -> int:
    return path.stat().st_size


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs mounted for the test (root only: the daemon's container runs as root too)."""
    with small_tmpfs(tmp_path, "size=16m,mode=0755") as mnt:
        yield mnt


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass


async def test_disk_full_holds_the_acks_reports_it_and_recovers_by_itself(small_fs: Path) -> None:
    db = small_fs / "data" / "runtime.db"
    acked: list[int] = []
    async with SqliteStore.open(db, busy_timeout_ms=50, lock_attempts=2) as store:
        await store.upsert_device(Device("d0", "motion"))
        filler = small_fs / "filler"
        fill(filler)
        n = 3000  # ~6 MB of dead letters: far more than any room left in the WAL
        for i in range(n):
            store.record_message(rec(i, failed=True, payload=os.urandom(2000)), lambda i=i: acked.append(i))
        await until(lambda: store.fault is not None, 20)
        assert "disk full" in (store.fault or ""), store.fault
        assert store.status()["fault"] == store.fault
        with pytest.raises(TransientError, match="disk full"):
            await store.flush()  # its callers hear the disk is full (not "database busy")
        with pytest.raises(TransientError, match="disk full"):
            await store.upsert_device(Device("d1", "motion"))
        committed = count(db, "SELECT count(*) FROM messages")
        assert len(acked) == committed < n  # every ack is for a committed record, and only those
        assert store.waiting_acks == n - committed

        filler.unlink()  # space returns: no restart, no call
        await asyncio.wait_for(store.flush(), 30)
        assert store.fault is None
        assert sorted(acked) == list(range(n))
        assert store.lost == {"event": 0, "log": 0, "message": 0, "device": 0} and store.unacked == 0
    assert count(db, "SELECT count(*) FROM messages") == n
    assert count(db, "SELECT count(*) FROM deadletters") == n


async def test_disk_full_at_open_is_named_not_busy(small_fs: Path) -> None:
    fill(small_fs / "filler")
    with pytest.raises(StorageError) as caught:
        async with SqliteStore.open(small_fs / "data" / "runtime.db"):
            pass
    assert "disk full" in str(caught.value) and "busy" not in str(caught.value)
    assert "free space" in str(caught.value)


async def test_read_only_data_dir_is_named_with_its_path(small_fs: Path) -> None:
    data = small_fs / "ro"
    data.mkdir()
    remount(small_fs, "ro")
    try:
        with pytest.raises(StorageError) as caught:
            async with SqliteStore.open(data / "runtime.db"):
                pass
    finally:
        remount(small_fs, "rw")
    assert str(data) in str(caught.value) and "storage unavailable" in str(caught.value)


def damage_page(path: Path, table: str, *, leaf: int = 0) -> None:
    """Write garbage over one page of ``table``'s b-tree (its root, or its ``leaf``-th leaf from the start)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if leaf:
            pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' "
                                                "ORDER BY pageno", (table,))]
            page = pages[leaf]
        else:
            page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(os.urandom(page_size))


async def test_a_damaged_page_is_refused_at_open_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "data" / "runtime.db"
    async with SqliteStore.open(db) as store:
        for i in range(3000):
            store.record_message(rec(i))
        await store.flush()
    damage_page(db, "messages", leaf=3)
    with pytest.raises(StorageError) as caught:
        async with SqliteStore.open(db):
            pass
    message = str(caught.value)
    assert message.startswith("database damaged: ") and str(db) in message
    assert "move runtime.db and its -wal/-shm files aside" in message


async def test_a_garbage_file_is_refused_at_open(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    db.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StorageError, match="database damaged"):
        async with SqliteStore.open(db):
            pass


async def test_a_page_damaged_while_running_loses_its_batch_unacked_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "data" / "runtime.db"
    async with SqliteStore.open(db, retention=Retention(messages=None)) as store:
        for i in range(3000):
            store.record_message(rec(i))
        await store.flush()
    damage_page(db, "messages", leaf=2)  # old rows: the next prune deletes from this page
    faults: list[tuple[Fault, str]] = []
    acked: list[int] = []
    # check=False: the damage appears after the start-up check (as a failing disk would do it)
    async with SqliteStore.open(db, retention=Retention(messages=100), check=False) as store:
        store.on_fault(lambda fault, reason: faults.append((fault, reason)))
        for i in range(3000, 3600):
            store.record_message(rec(i), lambda i=i: acked.append(i))
        await until(lambda: bool(faults), 20)
        await store.flush()
        assert faults[0][0] is Fault.DAMAGED and faults[0][1].startswith("database damaged")
        assert store.damaged is not None and store.fault is not None
        assert store.lost["message"] > 0
        assert store.unacked == store.lost["message"]  # what was lost was never acknowledged
        assert len(acked) + store.lost["message"] == 600
        assert len(faults) == 1  # the app is told once


async def test_data_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "data" / "runtime.db"
    async with SqliteStore.open(db) as store:
        store.record_message(rec(1))
        await store.flush()
        for name in ("runtime.db", "runtime.db-wal", "runtime.db-shm"):
            assert stat.S_IMODE((db.parent / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    os.chmod(db, 0o644)  # a database from before: tightened at the next open
    async with SqliteStore.open(db):
        assert stat.S_IMODE(db.stat().st_mode) == 0o600


async def test_dead_letters_keep_a_capped_payload_with_size_and_hash_and_no_credentials(tmp_path: Path) -> None:
    import hashlib

    body = os.urandom(300_000)
    headers = {"authorization": "Basic dXNlcjpwYXNz", "x-device-key": "k-123", "Cookie": "s=1",
               "x-api-token": "t", "content-type": "application/json"}
    async with SqliteStore.open(tmp_path / "runtime.db", limits=Limits(deadletter_payload=1024)) as store:
        store.record_message(rec(1, failed=True, payload=body, headers=headers))
        await store.flush()
        dl = await store.get_deadletter("r000001")
    assert dl is not None
    assert dl["payloadSize"] == 300_000 and dl["payloadSha256"] == hashlib.sha256(body).hexdigest()
    assert dl["payloadTruncated"] is True and len(dl["payload"]) == len(__import__("base64").b64encode(body[:1024]))
    assert dl["headers"] == {"authorization": "[redacted]", "x-device-key": "[redacted]", "Cookie": "[redacted]",
                             "x-api-token": "[redacted]", "content-type": "application/json"}
    with sqlite3.connect(tmp_path / "runtime.db") as conn:
        raw = conn.execute("SELECT headers FROM deadletters").fetchone()[0]
    assert "dXNlcjpwYXNz" not in raw and "k-123" not in raw  # not stored, not only hidden


async def test_dead_letter_retention_counts_bytes(tmp_path: Path) -> None:
    """300 failing 1 MB bodies: the data dir stays small (payload cap, byte-bounded retention, WAL bound)."""
    data = tmp_path / "data"
    retention = Retention(deadletter_bytes=2 * 1024 * 1024)
    async with SqliteStore.open(data / "runtime.db", retention=retention) as store:
        for i in range(300):
            store.record_message(rec(i, failed=True, payload=os.urandom(1024 * 1024)))
            if i % 20 == 0:
                await store.flush()
        await store.flush()
        store.record_event(T0, "a", "b", None)  # one more batch: the prune after the last dead letters
        await store.flush()
        kept = count(data / "runtime.db", "SELECT count(*) FROM deadletters")
        weight = count(data / "runtime.db", "SELECT sum(bytes) FROM deadletters")
        assert weight <= 2 * 1024 * 1024 + 2 * 70_000 and 0 < kept < 300
        assert count(data / "runtime.db", "SELECT max(payload_size) FROM deadletters") == 1024 * 1024
    size = sum(f.stat().st_size for f in data.iterdir())
    assert size < 40 * 1024 * 1024, size  # was 350 MB


async def test_no_sql_parameter_reaches_a_log_at_debug_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """aiosqlite logged every call with its arguments at DEBUG; the store's own thread logs none."""
    import logging

    import structlog

    secret = "Basic c2VjcmV0LXBhc3N3b3Jk"
    with caplog.at_level(logging.DEBUG), structlog.testing.capture_logs() as events:
        async with SqliteStore.open(tmp_path / "runtime.db") as store:
            await store.upsert_device(Device("d1", "motion", primary_access_key="device-key-42"))
            store.record_message(rec(1, failed=True, payload=b"x", headers={"authorization": secret}))
            await store.flush()
            await store.get_device("d1")
    logged = caplog.text + repr(events)
    assert "storage_opened" in logged  # the capture works
    assert "c2VjcmV0" not in logged and "device-key-42" not in logged


async def test_a_checkpoint_after_seeding_truncates_the_wal(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    async with SqliteStore.open(db) as store:
        for i in range(2000):  # as DeviceRegistry.seed does: one awaited upsert per device
            await store.upsert_device(Device(f"dev{i:05d}", "motion", name="x" * 200))
        wal = Path(f"{db}-wal")
        assert size(wal) > 100_000
        await store.checkpoint()
        assert size(wal) == 0
        assert len(await store.load_devices()) == 2000


async def test_cloud_outbox_writes_that_fail_are_never_acknowledged(small_fs: Path) -> None:
    from runtime.adapters.cloud import CloudConfig, CloudRecords, CloudSink
    from tests.support.net import free_port

    data = small_fs / "data"
    config = CloudConfig(url=f"http://127.0.0.1:{free_port()}/", batch_size=10, timeout=0.2, retry_base=0.05,
                         retry_max=0.2)
    acked: list[int] = []
    async with SqliteStore.open(data / "runtime.db", busy_timeout_ms=50, lock_attempts=1) as store:
        async with CloudSink(store, config, instance_id=lambda: "i1", data_dir=data) as sink:
            records = CloudRecords(store, sink)
            records.record_message(rec(0), lambda: acked.append(0))
            await until(lambda: acked == [0], 20)  # in the outbox: acknowledged
            fill(small_fs / "filler")
            for i in range(1, 41):
                records.record_message(rec(i, payload=os.urandom(20_000)), lambda i=i: acked.append(i))
            await until(lambda: sink.stats.dropped >= 40, 30)
            assert acked == [0]  # the outbox could not take them: none acknowledged
            (small_fs / "filler").unlink()


async def test_closing_on_a_stuck_database_acknowledges_nothing_it_gave_up(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    acked: list[int] = []
    async with asyncio.timeout(20):
        async with SqliteStore.open(db, batch_size=5, busy_timeout_ms=20, lock_attempts=2) as store:
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            for i in range(20):
                store.record_message(rec(i), lambda i=i: acked.append(i))
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.failed["message"] == 20 and acked == [] and store.unacked == 20


async def test_closing_the_store_ends_its_threads(tmp_path: Path) -> None:
    import threading

    def sqlite_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith(("sqlite-", "sqlite_"))]

    before = sqlite_threads()
    async with SqliteStore.open(tmp_path / "runtime.db", batch_size=10) as store:
        for i in range(20_000):
            store.record_message(rec(i))
        await store.flush()
        assert len(sqlite_threads()) > len(before)  # the writer's, the reader's (and the checkpointer's)
    assert sqlite_threads() == before


def test_cloud_dead_letters_carry_no_credentials_either() -> None:
    from runtime.adapters.cloud import message_json

    out = message_json(rec(1, failed=True, payload=b"x", headers={"Authorization": "Bearer abc", "x-trace": "t1"}))
    assert out["headers"] == {"Authorization": "[redacted]", "x-trace": "t1"}


async def test_a_wal_that_grew_shrinks_back_to_its_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 9: the WAL is bounded (journal_size_limit). A reader that holds a snapshot lets the WAL
    grow past the limit; once it is checkpointed and reset by the next write, the file is cut back."""
    from runtime.adapters.storage import engine

    limit = 64 * 1024
    monkeypatch.setattr(engine, "JOURNAL_SIZE_LIMIT", limit)
    db = tmp_path / "runtime.db"
    async with SqliteStore.open(db) as store:
        await store.upsert_device(Device("dev-first", "motion"))
        reader = sqlite3.connect(db)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM devices").fetchall()  # a snapshot: no checkpoint can finish
        for i in range(1000):
            await store.upsert_device(Device(f"dev{i:05d}", "motion", name="x" * 200))
        wal = Path(f"{db}-wal")
        assert size(wal) > 4 * limit
        reader.rollback()
        reader.close()
        with sqlite3.connect(db) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
        await store.upsert_device(Device("dev-last", "motion"))  # the writer resets the WAL: cut to the limit
        assert size(wal) <= limit
        assert len(await store.load_devices()) == 1002
