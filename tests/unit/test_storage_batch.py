"""The writer's batch: the bulk commit's rows and the row-by-row retry's rows are the same rows.

The usual record becomes its row in one pass (``batch.prepare``); the per-record statements the careful retry
runs are only built when a bulk commit failed on a row (``batch.careful_units``). A record saved by the retry
must be the row the bulk commit would have saved, and every record must be counted once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from runtime.adapters.storage import engine, rows
from runtime.adapters.storage.batch import careful_units, prepare
from runtime.adapters.storage.items import EventLine, Item, Limits, LogLine, Op, Plain
from runtime.adapters.storage.schema import migrate
from runtime.core.devices import Device
from runtime.core.messages import MessageKind, MessageRecord, PemStatus

T0 = 1_700_000_000.0


def _record(i: int, **kw: Any) -> MessageRecord:
    base: dict[str, Any] = {"id": f"r{i:04d}", "received_at": T0 + i, "listener": "mqtt1",
                            "status": PemStatus.COMPLETED, "device_id": f"d{i % 3}", "message_id": "m",
                            "processing_ms": 0.5}
    return MessageRecord(**{**base, **kw})


def _batch() -> list[Item]:
    return [
        Device("d0", "sensor", attributes={"t": 1}),
        _record(1),
        _record(2, status=PemStatus.FAILED, stage="sentinel", error="unauthorized_device: no key",
                payload=b'{"x": 1}', topic="t/d0", headers={"authorization": "secret", "x-a": "1"}),
        LogLine(T0, "warning", "something_happened", {"n": 1, 2: "non-string key"}),
        _record(3, detail={"warnings": ["w"]}, status=PemStatus.COMPLETED_WITH_WARNINGS),
        Device("d1", "sensor", attributes={"t": 2}),
        _record(4, detail={"bad": object()}),  # not JSON: refused before SQLite
        Device("d0", "sensor", attributes={"t": 3}, state_machines={"mode": "auto"}),  # coalesced: the last wins
        EventLine(T0, "Running", "Paused", None),
        _record(5, kind=MessageKind.INPUT_COMMAND),
        Device("d2", "sensor", attributes={"bad": object()}),  # a device row that cannot be encoded
    ]


def _bulk_rows(seg: Plain) -> dict[str, list[tuple[Any, ...]]]:
    return {stmt.table: many for stmt, many in seg.grouped.items()}


def _careful_rows(seg: Plain) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for _kind, stmts, _calls in seg.units or []:
        for stmt, params in stmts:
            out.setdefault(stmt.table, []).append(params)
    return out


def test_the_retry_writes_the_rows_the_bulk_commit_would_and_counts_each_record_once() -> None:
    prepared = prepare(_batch(), Limits())
    (seg,) = prepared.segments
    assert isinstance(seg, Plain)
    assert [(k, n) for k, n, _ in prepared.rejected] == [("message", 1), ("device", 1)]
    assert seg.written == {"event": 1, "log": 1, "message": 4, "device": 3}  # d0 twice (coalesced) + d1
    assert seg.tables == {"messages": 4, "deadletters": 1, "logs": 1, "events": 1}
    bulk = _bulk_rows(seg)
    assert [r[0] for r in bulk["messages"]] == ["r0001", "r0002", "r0003", "r0005"]  # queue order
    assert bulk["messages"][0] == rows.message_params(_record(1))
    devices = {r[0]: r for r in bulk["devices"]}
    assert sorted(devices) == ["d0", "d1"] and devices["d0"][8] == '{"t":3}' and devices["d0"][9] == '{"mode":"auto"}'
    assert bulk["logs"][0][3] == '{"n":1,"2":"non-string key"}'
    assert seg.rows == sum(len(v) for v in bulk.values()) == 9

    careful_units(prepared, Limits())
    assert _careful_rows(seg) == bulk
    assert [(k, n) for k, n, _ in prepared.rejected] == [("message", 1), ("device", 1)]  # not counted again
    assert sum(calls for _, _, calls in seg.units or []) == sum(seg.written.values())


def test_awaited_operations_split_the_batch_in_queue_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        op = Op(lambda conn: None, loop.create_future())
        given_up = Op(lambda conn: None, loop.create_future())
        given_up.future.cancel()
        prepared = prepare([_record(1), op, given_up, _record(2)], Limits())
        kinds = [type(s).__name__ for s in prepared.segments]
        assert kinds == ["Plain", "Op", "Plain"]
        assert prepared.segments[1] is op
        without = prepare([_record(1), _record(2)], Limits(), ops=False)
        assert [r[0] for r in _bulk_rows(without.segments[0])["messages"]] == ["r0001", "r0002"]  # type: ignore[arg-type]
    finally:
        loop.close()


def test_usual_and_mixed_batches_store_the_same_message_rows_in_queue_order(tmp_path: Path) -> None:
    """The usual batch's statement has its status, kind and detail as constants in the SQL: what is stored
    must be exactly INSERT_MESSAGE's row; a batch that mixes statuses or kinds keeps queue order."""
    conn = engine._connect(tmp_path / "runtime.db", 1000, reader=False)
    try:
        migrate(conn)
        usual = [_record(i) for i in range(1, 7)]
        mixed = [_record(7), _record(8, kind=MessageKind.INPUT_COMMAND), _record(12, stage="x", error="e'q"),
                 _record(9, status=PemStatus.FAILED, stage="sentinel", error="bad"), _record(10),
                 _record(11, detail={"warnings": ["w"]}, status=PemStatus.COMPLETED_WITH_WARNINGS)]
        for batch in (usual, mixed):
            prepared = prepare(list(batch), Limits(), ops=False)
            (seg,) = prepared.segments
            assert isinstance(seg, Plain)
            assert (rows.INSERT_MESSAGE in seg.grouped) is (batch is mixed)
            engine.commit(conn, prepared.segments, [], careful=False)
        stored = conn.execute(f"SELECT {rows.MESSAGE_COLUMNS} FROM messages ORDER BY seq").fetchall()
        assert stored == [rows.message_params(r) for r in usual + mixed]
    finally:
        conn.close()
