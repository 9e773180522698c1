"""What the writer's queue holds, typed: records (message, device state, log line, event) and awaited operations.

A record is queued as the value it is (a ``MessageRecord``, a ``Device``, a ``LogLine``, an ``EventLine``):
no wrapper on the hot path. ``kind_of`` names its counter; ``statements`` turns it into rows when its batch
is written (on the event loop, before the batch goes to the SQLite thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runtime.adapters.storage import rows
from runtime.adapters.storage.rows import Insert
from runtime.core.devices import Device
from runtime.core.messages import MessageRecord, PemStatus


class Kind(StrEnum):
    EVENT = "event"
    LOG = "log"
    MESSAGE = "message"
    DEVICE = "device"


KINDS = tuple(k.value for k in Kind)  # counter keys: plain strings


@dataclass(slots=True, frozen=True)
class LogLine:
    at: float
    level: str
    event: str
    fields: dict[str, Any]


@dataclass(slots=True, frozen=True)
class EventLine:
    """A row of ``/events``: an instance state transition (``kind`` ``state``), or a device error raised or cleared
    (``deviceError``: ``to_state`` is the action, ``device_id``/``code``/``source`` say which, ``reason`` the details)."""

    at: float
    from_state: str
    to_state: str
    reason: str | None
    kind: str = "state"
    device_id: str | None = None
    code: str | None = None
    source: str | None = None


Operation = Callable[[sqlite3.Connection], Any]  # runs on the writer's thread, inside its transaction


@dataclass(slots=True, eq=False)
class Op:
    """An awaited operation (device CRUD, outbox): its caller awaits ``future`` (resolved on the loop)."""

    fn: Operation
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


Record = MessageRecord | Device | LogLine | EventLine
Item = Record | Op
Statement = tuple[Insert, tuple[Any, ...]]

_KIND_OF: dict[type, Kind] = {MessageRecord: Kind.MESSAGE, Device: Kind.DEVICE, LogLine: Kind.LOG,
                              EventLine: Kind.EVENT}


def kind_of(record: Record) -> Kind:
    return _KIND_OF[type(record)]


@dataclass(frozen=True, slots=True)
class Limits:
    """Byte limits applied when a record becomes rows."""

    deadletter_payload: int = rows.DEADLETTER_PAYLOAD_MAX


def statements(record: Record, limits: Limits) -> tuple[Statement, ...]:
    """One record's rows (a Failed message is two: the record and its dead letter). Devices are not here:
    the writer coalesces them per batch (``rows.device_params``)."""
    if type(record) is MessageRecord:
        base = rows.message_params(record)
        if record.status == PemStatus.FAILED:
            return ((rows.INSERT_MESSAGE, base),
                    (rows.INSERT_DEADLETTER, rows.deadletter_params(record, base, limits.deadletter_payload)))
        return ((rows.INSERT_MESSAGE, base),)
    if type(record) is LogLine:
        return ((rows.INSERT_LOG, (record.at, record.level, record.event, rows.dumps_lenient(record.fields))),)
    if type(record) is EventLine:
        return ((rows.INSERT_EVENT, (record.at, record.from_state, record.to_state, record.reason, record.kind,
                                     record.device_id, record.code, record.source)),)
    raise TypeError(f"not a record: {type(record).__name__}")


Unit = tuple[Kind, tuple[Statement, ...], int]  # kind, its statements, calls it stands for


@dataclass(slots=True, eq=False)
class Plain:
    """The records between two awaited operations, converted once into rows.

    ``grouped`` (statement -> rows, in queue order) is what the bulk commit runs. ``units`` (one per record,
    or per coalesced device) is what the row-by-row retry runs: built from ``records`` only for that retry
    (``batch.careful_units``), and ``errors`` is filled then. ``written``/``tables``/``deadletter_bytes`` are
    the counts when the whole segment commits.
    """

    records: list[Record]  # as queued (the careful retry converts them again, device rows stamped ``now``)
    grouped: dict[Insert, list[tuple[Any, ...]]]
    written: dict[str, int]  # per Kind value (a StrEnum: Kind.MESSAGE is the key "message")
    tables: dict[str, int]
    rows: int
    now: float
    deadletter_bytes: int = 0
    skip: set[int] | None = None  # id() of the records (and coalesced devices) refused when converted
    units: list[Unit] | None = None
    errors: list[BaseException | None] | None = None  # per unit, after a careful commit
    error: BaseException | None = None  # the whole segment failed (closing on a stuck database)


Segment = Plain | Op


@dataclass(slots=True)
class Prepared:
    segments: list[Segment]
    rejected: list[tuple[Kind, int, BaseException]] = field(default_factory=list)  # bad values, never sent
