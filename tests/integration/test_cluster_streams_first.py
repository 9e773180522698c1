"""The worker's record sink (runtime/cluster_app.py ``StreamsFirst``) over a real durable stream queue: a
message's record, which carries its partition cursor to PostgreSQL, is handed on only once the stream rows
queued before it are committed to the queue's file, and records keep their order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiosqlite

from runtime.adapters.streams.queue import StreamQueue
from runtime.cluster_app import StreamsFirst
from runtime.core.messages import MessageRecord, PemStatus

T0 = 1_767_225_600.0


class Recorded:
    """The inner sink: what was handed on, and how many stream rows the queue's file held at that moment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got: list[tuple[str, int]] = []
        self.rows_in_file: Callable[[], int] = lambda: 0

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        self.got.append((rec.id, self.rows_in_file()))
        if on_commit is not None:
            on_commit()

    async def writable(self) -> None:
        return None


def rec(n: int) -> MessageRecord:
    return MessageRecord(f"m{n}", T0 + n, "mqttin", PemStatus.COMPLETED, "dev1", str(n))


async def test_a_record_waits_for_its_stream_rows_to_be_committed_and_records_keep_their_order(
        tmp_path: Path) -> None:
    async with StreamQueue(tmp_path / "q.db") as q:
        inner = Recorded(tmp_path / "q.db")
        inner.rows_in_file = lambda: q.committed["s"]
        first = StreamsFirst(inner, q)
        first.record_message(rec(0))  # no rows queued: handed on at once
        assert inner.got == [("m0", 0)]
        acked: list[str] = []
        for n in (1, 2, 3):
            assert q.put("s", {"op": "add", "row": {"n": n}, "at": T0 + n})
            first.record_message(rec(n), lambda n=n: acked.append(f"m{n}"))
        assert inner.got == [("m0", 0)] and acked == []  # the rows are not in the file yet: nor is the record
        await q.flush()
        assert [r for r, _ in inner.got] == ["m0", "m1", "m2", "m3"]
        assert all(rows == 3 for _, rows in inner.got[1:]), inner.got  # each handed on after the commit
        assert acked == ["m1", "m2", "m3"]
        first.record_message(rec(4))  # a message without rows while nothing is pending: at once, after the rest
        assert [r for r, _ in inner.got][-1] == "m4"
    async with aiosqlite.connect(tmp_path / "q.db") as db, db.execute("SELECT SUM(n) FROM chunks") as cur:
        assert ((await cur.fetchone()) or [0])[0] == 3  # the rows stay in the file until a drainer acks them
