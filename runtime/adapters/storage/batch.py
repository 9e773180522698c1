"""A batch of queue items made ready for one transaction, and its accounting once committed (event loop side).

``prepare`` splits the batch at awaited operations into segments; a segment of records is converted once into
rows grouped by statement (what the bulk commit runs). The usual record (a message that did not fail, no
detail, no stage, no error) becomes its row tuple directly (6 values: ``rows.usual_messages``); device-state
saves of one device within a segment are coalesced: the last wins, counted as every call; they are saved in
device-id order. A record whose value cannot become a row (e.g. detail that is not JSON) fails alone, before
SQLite sees it. The rows per record (what the row-by-row retry runs) are only built when a bulk
commit failed on a row (``careful_units``): the usual batch never needs them.
"""

from __future__ import annotations

import time
from typing import Any, cast

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
    Unit,
    kind_of,
    statements,
)
from runtime.adapters.storage.retention import Pruner
from runtime.core.devices import Device
from runtime.core.messages import MessageRecord, PemStatus

_BAD_VALUE = (TypeError, ValueError, AttributeError, ArithmeticError)  # what converting a bad record raises
_TABLES = ("messages", "deadletters", "logs", "events")


def prepare(batch: list[Item], limits: Limits, ops: bool = True) -> Prepared:
    """``ops`` false: the caller knows that ``batch`` holds no awaited operation (one segment, no scan)."""
    prepared = Prepared([])
    if not ops:
        if batch:
            prepared.segments.append(_plain(cast("list[Record]", batch), prepared, limits))
        return prepared
    plain: list[Record] = []
    for item in batch:
        if isinstance(item, Op):
            if item.future.done():  # its caller gave up or was told it failed: do not apply it
                continue
            if plain:
                prepared.segments.append(_plain(plain, prepared, limits))
                plain = []
            prepared.segments.append(item)
        else:
            plain.append(item)
    if plain:
        prepared.segments.append(_plain(plain, prepared, limits))
    return prepared


def _plain(records: list[Record], prepared: Prepared, limits: Limits) -> Plain:
    """The segment's rows, grouped by statement, and its counts (hot path: one pass, one tuple per message)."""
    insert_message = rows.INSERT_MESSAGE
    messages: list[tuple[Any, ...]] = []
    grouped: dict[Any, list[tuple[Any, ...]]] = {insert_message: messages}
    devices: dict[str, Device] = {}
    device_calls = 0
    written = dict.fromkeys(KINDS, 0)
    tables = dict.fromkeys(_TABLES, 0)
    rows_total = dl_bytes = 0
    skip: set[int] | None = None
    failed_status = PemStatus.FAILED
    usual: tuple[Any, Any] | None = None  # the status and kind of the usual rows (constants of their statement)
    mixed = False  # message rows that cannot share one usual statement: all go through INSERT_MESSAGE, in order
    for record in records:
        kind_type = type(record)
        if kind_type is Device:
            devices[record.device_id] = record  # type: ignore[union-attr, index, assignment]  # a Device
            device_calls += 1
            continue
        try:
            if (kind_type is MessageRecord and record.detail is None and record.status != failed_status  # type: ignore[union-attr]
                    and record.stage is None and record.error is None):  # type: ignore[union-attr]
                # the usual record, as rows.usual_params (inlined: one tuple, no call)
                status, kind = record.status, record.kind  # type: ignore[union-attr]
                if usual is None:
                    usual = (status, kind)
                elif status is not usual[0] or kind is not usual[1]:
                    mixed = True
                messages.append((record.id, record.received_at, record.listener, record.device_id,  # type: ignore[union-attr]
                                 record.message_id, record.processing_ms))  # type: ignore[union-attr]
                continue
            stmts = statements(record, limits)
        except _BAD_VALUE as exc:  # e.g. detail that is not JSON: that record fails, not the batch
            prepared.rejected.append((kind_of(record), 1, exc))
            skip = skip or set()
            skip.add(id(record))
            continue
        written[kind_of(record)] += 1
        for stmt, params in stmts:
            if stmt is insert_message:
                mixed = True
            many = grouped.get(stmt)
            if many is None:
                many = grouped[stmt] = []
            many.append(params)
            tables[stmt.table] += 1
            rows_total += 1
            if stmt is rows.INSERT_DEADLETTER:
                dl_bytes += params[-1]
    fast = len(messages) - tables["messages"]  # the inlined ones (the others counted above)
    written[Kind.MESSAGE] += fast
    tables["messages"] += fast
    rows_total += fast
    now = time.time()
    if devices:
        saves = grouped[rows.SAVE_DEVICE_STATE] = []
        device_params = rows.device_params
        # in key order: each upsert's seek lands on or beside the previous one's b-tree page (SQLite alone, 637
        # devices a transaction: ~3.5 us a device row instead of ~4.4; the sort ~0.06 us a message)
        for device_id in sorted(devices):
            device = devices[device_id]
            try:
                saves.append(device_params(device, now))
            except _BAD_VALUE as exc:
                calls = sum(1 for r in records if type(r) is Device and r.device_id == device.device_id)
                prepared.rejected.append((Kind.DEVICE, calls, exc))
                device_calls -= calls
                skip = skip or set()
                skip.add(id(device))
        written[Kind.DEVICE] = device_calls
        rows_total += len(saves)
    if not messages:
        del grouped[insert_message]
    elif usual is not None:  # the message rows first, as before (the statement, not the rows, changes)
        del grouped[insert_message]
        if mixed:  # rare (a failed record, another status or kind): every message row whole, in queue order
            skipped = skip or set()
            grouped = {insert_message: [rows.message_params(r) for r in records
                                        if type(r) is MessageRecord and id(r) not in skipped], **grouped}
        else:
            grouped = {rows.usual_messages(str(usual[0]), str(usual[1])): messages, **grouped}
    return Plain(records, grouped, written, tables, rows_total, now, dl_bytes, skip)


def careful_units(prepared: Prepared, limits: Limits) -> None:
    """Fill ``units`` (one per record, or per coalesced device, with its statements) of every segment that
    lacks them: what the row-by-row retry runs and counts. The same rows as the bulk commit's (same records,
    same stamp); records refused then are left out (already counted)."""
    for seg in prepared.segments:
        if not isinstance(seg, Plain) or seg.units is not None:
            continue
        units: list[Unit] = []
        skip = seg.skip or set()
        devices: dict[str, list[Any]] = {}
        for record in seg.records:
            if type(record) is Device:
                entry = devices.get(record.device_id)
                if entry is None:
                    devices[record.device_id] = [record, 1]
                else:
                    entry[0] = record
                    entry[1] += 1
                continue
            if id(record) in skip:
                continue
            try:
                units.append((kind_of(record), statements(record, limits), 1))
            except _BAD_VALUE as exc:  # only if the record was changed after it was queued
                prepared.rejected.append((kind_of(record), 1, exc))
        for device, calls in (devices[key] for key in sorted(devices)):  # the bulk commit's order
            if id(device) in skip:
                continue
            try:
                units.append((Kind.DEVICE, ((rows.SAVE_DEVICE_STATE, rows.device_params(device, seg.now)),), calls))
            except _BAD_VALUE as exc:
                prepared.rejected.append((Kind.DEVICE, calls, exc))
        seg.units = units


def account(prepared: Prepared, written: dict[str, int], pruner: Pruner,
            limits: Limits) -> dict[str, tuple[int, BaseException]]:
    """Resolve the awaited operations, count what was written (into ``written``, ``pruner``); return the
    failures per kind: (records, first error)."""
    failures: dict[Kind, tuple[int, BaseException]] = {}
    if any(isinstance(seg, Plain) and seg.error is not None and seg.units is None for seg in prepared.segments):
        careful_units(prepared, limits)  # a whole segment failed: counted per record
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
            pruner.added(seg.tables, seg.deadletter_bytes, seg.rows)
            for counted, calls in seg.written.items():
                written[counted] += calls
            continue
        units = seg.units or []
        errors: list[BaseException | None] = (seg.errors or []) if seg.error is None else [seg.error] * len(units)
        for (kind, stmts, calls), error in zip(units, errors, strict=True):
            if error is None:
                written[kind] += calls
                tables = {stmt.table: 1 for stmt, _ in stmts if stmt.table != "devices"}
                dl = sum(p[-1] for stmt, p in stmts if stmt is rows.INSERT_DEADLETTER)
                pruner.added(tables, dl, len(stmts))
            else:
                count, first = failures.get(kind, (0, error))
                failures[kind] = (count + calls, first)
    return {kind.value: v for kind, v in failures.items()}
