"""A batch of queue items made ready for one transaction, and its accounting once committed (event loop side).

``prepare`` splits the batch at awaited operations into segments; a segment of records is converted once into
rows, grouped by statement (what the bulk commit runs) and kept per record (what the row-by-row retry runs).
Device-state saves of one device within a segment are coalesced: the last wins, counted as every call.
A record whose value cannot become a row (e.g. detail that is not JSON) fails alone, before SQLite sees it.
"""

from __future__ import annotations

import time
from typing import Any

from runtime.adapters.storage import rows
from runtime.adapters.storage.items import (
    KINDS,
    Item,
    Kind,
    Limits,
    Op,
    Plain,
    Prepared,
    Record,
    kind_of,
    statements,
)
from runtime.adapters.storage.retention import Pruner
from runtime.core.devices import Device
from runtime.core.messages import MessageRecord, PemStatus

_BAD_VALUE = (TypeError, ValueError, AttributeError, ArithmeticError)  # what converting a bad record raises


def prepare(batch: list[Item], limits: Limits) -> Prepared:
    prepared = Prepared([])
    plain: list[Record] = []
    for item in batch:
        if isinstance(item, Op):
            if item.future.done():  # its caller gave up or was told it failed: do not apply it
                continue
            if plain:
                prepared.segments.append(_units(plain, prepared, limits))
                plain = []
            prepared.segments.append(item)
        else:
            plain.append(item)
    if plain:
        prepared.segments.append(_units(plain, prepared, limits))
    return prepared

def _units(records: list[Record], prepared: Prepared, limits: Limits) -> Plain:
    units: list[tuple[Kind, tuple[Any, ...], int]] = []
    grouped: dict[Any, list[tuple[Any, ...]]] = {}
    written = dict.fromkeys(KINDS, 0)
    tables = {"messages": 0, "deadletters": 0, "logs": 0, "events": 0}
    rows_total = dl_bytes = 0
    devices: dict[str, tuple[Device, int]] = {}
    failed_status = PemStatus.FAILED
    insert_message, message_params = rows.INSERT_MESSAGE, rows.message_params
    for record in records:
        if type(record) is Device:
            previous = devices.get(record.device_id)
            devices[record.device_id] = (record, 1 if previous is None else previous[1] + 1)
            continue
        kind = Kind.MESSAGE if type(record) is MessageRecord else kind_of(record)
        try:
            if kind is Kind.MESSAGE and record.status != failed_status:  # type: ignore[union-attr]  # the usual record, inlined
                stmts: tuple[Any, ...] = ((insert_message, message_params(record)),)  # type: ignore[arg-type]  # kind MESSAGE: a MessageRecord
            else:
                stmts = statements(record, limits)
        except _BAD_VALUE as exc:  # e.g. detail that is not JSON: that record fails, not the batch
            prepared.rejected.append((kind, 1, exc))
            continue
        units.append((kind, stmts, 1))
        written[kind] += 1
        for stmt, params in stmts:
            many = grouped.get(stmt)
            if many is None:
                many = grouped[stmt] = []
            many.append(params)
            tables[stmt.table] += 1
            rows_total += 1
            if stmt is rows.INSERT_DEADLETTER:
                dl_bytes += params[-1]
    now = time.time()
    for device, calls in devices.values():
        try:
            params = rows.device_params(device, now)
        except _BAD_VALUE as exc:
            prepared.rejected.append((Kind.DEVICE, calls, exc))
            continue
        units.append((Kind.DEVICE, ((rows.SAVE_DEVICE_STATE, params),), calls))
        written[Kind.DEVICE] += calls
        grouped.setdefault(rows.SAVE_DEVICE_STATE, []).append(params)
        rows_total += 1
    return Plain(units, grouped, written, tables, rows_total, dl_bytes)

def account(prepared: Prepared, written: dict[str, int], pruner: Pruner) -> dict[str, tuple[int, BaseException]]:
    """Resolve the awaited operations, count what was written (into ``written``, ``pruner``); return the
    failures per kind: (records, first error)."""
    failures: dict[Kind, tuple[int, BaseException]] = {}
    for kind, calls, exc in prepared.rejected:
        count, first = failures.get(kind, (0, exc))
        failures[kind] = (count + calls, first)
    for seg in prepared.segments:
        if isinstance(seg, Op):
            if seg.future.done():
                continue
            if seg.error is None:
                seg.future.set_result(seg.result)
            else:
                seg.future.set_exception(seg.error)
            continue
        if seg.error is None and seg.errors is None:  # the whole segment committed (the usual case)
            pruner.added({t: n for t, n in seg.tables.items() if t != "devices"}, seg.deadletter_bytes,
                               seg.rows)
            for counted, calls in seg.written.items():
                written[counted] += calls
            continue
        errors: list[BaseException | None] = (seg.errors or []) if seg.error is None else [seg.error] * len(seg.units)
        for (kind, stmts, calls), error in zip(seg.units, errors, strict=True):
            if error is None:
                written[kind] += calls
                tables = {stmt.table: 1 for stmt, _ in stmts if stmt.table != "devices"}
                dl = sum(p[-1] for stmt, p in stmts if stmt is rows.INSERT_DEADLETTER)
                pruner.added(tables, dl, len(stmts))
            else:
                count, first = failures.get(kind, (0, error))
                failures[kind] = (count + calls, first)
    return {kind.value: v for kind, v in failures.items()}

