"""Rows of ``runtime.db``: the SQL the store runs, and the conversions values -> rows -> admin API JSON.

The JSON shapes are CONTRACT §4's: camelCase keys, times as ISO-8601 UTC strings with milliseconds and
``Z``. Rows are plain tuples in the column order of the ``*_COLUMNS`` constants below.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from runtime.core.devices import Device
from runtime.core.messages import MessageRecord
from runtime.core.timefmt import iso

Row = Sequence[Any]


class Insert:
    """An INSERT statement as data: its table, columns and conflict clause. ``many(k)`` is the same statement
    with ``k`` value tuples (one ``sqlite3_step`` for ``k`` rows, see ``engine.insert_many``), built from the
    parts, never by editing SQL text. Identity-hashed: the writer groups rows by statement."""

    __slots__ = ("_many", "columns", "conflict", "sql", "table", "values")

    def __init__(self, table: str, columns: str, conflict: str = "", values: tuple[str, ...] | None = None) -> None:
        """``values``: one SQL expression per column (``?`` or a constant, see ``usual_messages``); all ``?``
        when None."""
        self.table = table
        self.columns = tuple(c.strip() for c in columns.split(","))
        self.conflict = conflict
        self.values = values or ("?",) * len(self.columns)
        if len(self.values) != len(self.columns):
            raise ValueError(f"{len(self.values)} values for {len(self.columns)} columns")
        self._many: dict[int, str] = {}
        self.sql = self.many(1)

    def many(self, k: int) -> str:
        sql = self._many.get(k)
        if sql is None:
            group = "(" + ", ".join(self.values) + ")"
            sql = f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES " + ", ".join([group] * k)
            if self.conflict:
                sql += " " + self.conflict
            self._many[k] = sql
        return sql

    def __repr__(self) -> str:
        return f"Insert({self.table})"


# --- what a stored header may not keep -----------------------------------------------------------------

REDACTED = "[redacted]"
_SECRET_HEADER = re.compile(r"authorization|cookie|key|token|passw|secret|signature|credential|session", re.I)


@functools.lru_cache(maxsize=1024)
def _secret(name: str) -> bool:
    return _SECRET_HEADER.search(name) is not None


def redact_headers(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Headers with every credential-like value replaced (Authorization, cookies, *key*, *token*, ...)."""
    if headers is None:
        return None
    return {k: REDACTED if _secret(str(k)) else v for k, v in headers.items()}


_dumps = orjson.dumps
_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """Strict JSON for data (device state, message detail): a value orjson cannot encode is a bad row.

    Keys that are not strings are written as strings (``OPT_NON_STR_KEYS``); that option makes orjson take a
    slower path for every dict (~80 ns of ~200 per call), so it is only asked for when the plain call refuses
    (the output for string keys is the same)."""
    try:
        return _dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a key that is not a string, or a value that is not JSON
        return _dumps(value, option=_NON_STR_KEYS).decode()


def dumps_lenient(value: Any) -> str:
    """JSON for log fields: anything orjson does not know is written as ``str(value)``."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


# --- events and logs -------------------------------------------------------------------------------

INSERT_EVENT = Insert("events", "at, from_state, to_state, reason, kind, device_id, code, source")
SELECT_EVENTS = ("SELECT at, from_state, to_state, reason, kind, device_id, code, source FROM events "
                 "ORDER BY seq DESC LIMIT ?")
DEVICE_ERROR = "deviceError"  # the kind of an event row that is a device error raised or cleared


def select_events(kind: str | None, device_id: str | None) -> tuple[str, tuple[str, ...]]:
    """``SELECT_EVENTS`` narrowed to one kind and/or one device: (statement, its leading parameters; the
    limit comes last)."""
    where: list[str] = []
    params: list[str] = []
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if device_id is not None:
        where.append("device_id = ?")
        params.append(device_id)
    if not where:
        return SELECT_EVENTS, ()
    return SELECT_EVENTS.replace(" ORDER BY", f" WHERE {' AND '.join(where)} ORDER BY"), tuple(params)

INSERT_LOG = Insert("logs", "at, level, event, fields")
SELECT_LOGS = "SELECT at, level, event, fields FROM logs ORDER BY seq DESC LIMIT ?"


def event_dict(row: Row) -> dict[str, Any]:
    """A state transition ``{at, kind: state, from, to, reason}``; a device error raised or cleared
    ``{at, kind: deviceError, deviceId, code, action, source, reason}`` (docs/fidelity.md, "Device health")."""
    if row[4] == DEVICE_ERROR:
        return {"at": iso(row[0]), "kind": DEVICE_ERROR, "deviceId": row[5], "code": row[6], "action": row[2],
                "source": row[7], "reason": row[3]}
    return {"at": iso(row[0]), "kind": row[4] or "state", "from": row[1], "to": row[2], "reason": row[3]}


def log_dict(row: Row) -> dict[str, Any]:
    return {"at": iso(row[0]), "level": row[1], "event": row[2], "fields": _loads(row[3])}


# --- message records and dead letters ----------------------------------------------------------------

MESSAGE_COLUMNS = (
    "id, received_at, listener, status, device_id, message_id, stage, error, processing_ms, kind, detail"
)
INSERT_MESSAGE = Insert("messages", MESSAGE_COLUMNS)
INSERT_DEADLETTER = Insert(
    "deadletters", f"{MESSAGE_COLUMNS}, payload, topic, path, headers, payload_size, payload_sha256, bytes"
)
SELECT_MESSAGES = f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY seq DESC LIMIT ?"
SELECT_DEVICE_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE device_id = ? ORDER BY seq DESC LIMIT ?"
)
SELECT_DEADLETTERS = f"SELECT {MESSAGE_COLUMNS}, replayed_at FROM deadletters ORDER BY seq DESC LIMIT ? OFFSET ?"
SELECT_DEADLETTER = (
    f"SELECT {MESSAGE_COLUMNS}, replayed_at, payload, topic, path, headers, payload_size, payload_sha256 "
    "FROM deadletters WHERE id = ?"
)
DEADLETTER_PAYLOAD_MAX = 64 * 1024  # bytes of a dead letter's payload kept (its size and hash are always kept)
MARK_REPLAYED = "UPDATE deadletters SET replayed_at = ? WHERE id = ?"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@functools.lru_cache(maxsize=64)
def usual_messages(status: str, kind: str) -> Insert:
    """INSERT_MESSAGE for rows that all have this status and kind and no stage, error or detail: those five are
    constants in the SQL, the row binds the other 6 values (``usual_params``). The same rows as INSERT_MESSAGE's;
    SQLite with the bench's rows: ~1.0 us a row instead of ~2.0 (each bound value costs, even a NULL)."""
    values = tuple(_literal(status) if c == "status" else _literal(kind) if c == "kind"
                   else "NULL" if c in ("stage", "error", "detail") else "?" for c in INSERT_MESSAGE.columns)
    return Insert("messages", MESSAGE_COLUMNS, values=values)


def usual_params(rec: MessageRecord) -> tuple[Any, ...]:
    """The bound values of a ``usual_messages`` row (documentation of the order; ``batch`` inlines it)."""
    return (rec.id, rec.received_at, rec.listener, rec.device_id, rec.message_id, rec.processing_ms)


def message_params(rec: MessageRecord) -> tuple[Any, ...]:
    return (
        rec.id,
        rec.received_at,
        rec.listener,
        str(rec.status),
        rec.device_id,
        rec.message_id,
        rec.stage,
        rec.error,
        rec.processing_ms,
        str(rec.kind),
        None if rec.detail is None else dumps(rec.detail),
    )


def deadletter_params(
    rec: MessageRecord, base: tuple[Any, ...], payload_max: int = DEADLETTER_PAYLOAD_MAX
) -> tuple[Any, ...]:
    """The dead letter's row: the payload up to ``payload_max`` bytes with its full size and sha256, the
    headers with credentials redacted, and ``bytes`` (what the row weighs, for byte-based retention)."""
    headers = None if rec.headers is None else dumps(redact_headers(rec.headers))
    size: int | None = None
    digest: str | None = None
    payload: bytes | None = None
    if rec.payload is not None:
        full = bytes(rec.payload)
        size, digest, payload = len(full), hashlib.sha256(full).hexdigest(), full[: max(0, payload_max)]
    weight = len(payload or b"") + len(headers or "") + len(base[10] or "") + len(rec.error or "") + 200
    return (*base, payload, rec.topic, rec.path, headers, size, digest, weight)


def message_dict(row: Row) -> dict[str, Any]:
    return {
        "id": row[0],
        "receivedAt": iso(row[1]),
        "listener": row[2],
        "deviceId": row[4],
        "messageId": row[5],
        "status": row[3],
        "stage": row[6],
        "error": row[7],
        "processingMs": row[8],
    }


def deadletter_dict(row: Row) -> dict[str, Any]:
    """A row of SELECT_DEADLETTERS: the message shape plus ``replayedAt``."""
    return {**message_dict(row), "replayedAt": iso(row[11])}


def deadletter_detail(row: Row) -> dict[str, Any]:
    """A row of SELECT_DEADLETTER: adds the raw payload (base64, and as text when it is UTF-8) and its origin."""
    payload: bytes | None = row[12]
    text: str | None = None
    if payload is not None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return {
        **deadletter_dict(row),
        "kind": row[9],
        "detail": _loads(row[10]),
        "payload": None if payload is None else base64.b64encode(payload).decode("ascii"),
        "payloadText": text,
        "topic": row[13],
        "path": row[14],
        "headers": redact_headers(_loads(row[15])),  # rows written before redaction existed
        "payloadSize": row[16] if row[16] is not None else (None if payload is None else len(payload)),
        "payloadSha256": row[17],
        "payloadTruncated": row[16] is not None and payload is not None and row[16] > len(payload),
    }


# --- devices -------------------------------------------------------------------------------------------

DEVICE_COLUMNS = (
    "device_id, device_configuration, name, device_type, primary_access_key, secondary_access_key, status, "
    "properties, attributes, state_machines, property_bag, latitude, longitude, last_seen, created_at, updated_at"
)
_DEVICE_VALUES = "VALUES (" + ", ".join("?" * 16) + ")"
UPSERT_DEVICE = (
    f"INSERT INTO devices ({DEVICE_COLUMNS}) {_DEVICE_VALUES} ON CONFLICT (device_id) DO UPDATE SET "
    "device_configuration = excluded.device_configuration, name = excluded.name, "
    "device_type = excluded.device_type, primary_access_key = excluded.primary_access_key, "
    "secondary_access_key = excluded.secondary_access_key, status = excluded.status, "
    "properties = excluded.properties, attributes = excluded.attributes, "
    "state_machines = excluded.state_machines, property_bag = excluded.property_bag, "
    "latitude = excluded.latitude, longitude = excluded.longitude, last_seen = excluded.last_seen, "
    "created_at = coalesce(devices.created_at, excluded.created_at), updated_at = excluded.updated_at"
)
# The data plane's write: only what workflows change. A device not yet in the table is inserted whole.
SAVE_DEVICE_STATE = Insert(
    "devices", DEVICE_COLUMNS,
    "ON CONFLICT (device_id) DO UPDATE SET "
    "attributes = excluded.attributes, state_machines = excluded.state_machines, "
    "property_bag = excluded.property_bag, latitude = excluded.latitude, longitude = excluded.longitude, "
    "last_seen = excluded.last_seen, updated_at = excluded.updated_at",
)
SELECT_DEVICE = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?"
SELECT_DEVICES = f"SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id"
DELETE_DEVICE = "DELETE FROM devices WHERE device_id = ?"


def device_params(d: Device, now: float) -> tuple[Any, ...]:
    return (
        d.device_id,
        d.device_configuration,
        d.name,
        d.device_type,
        d.primary_access_key,
        d.secondary_access_key,
        d.status,
        "{}" if not d.properties and type(d.properties) is dict else dumps(d.properties),  # empty: as dumps
        dumps(d.attributes),
        dumps(d.state_machines),
        "{}" if not d.property_bag and type(d.property_bag) is dict else dumps(d.property_bag),
        d.latitude,
        d.longitude,
        d.last_seen,
        now if d.created_at is None else d.created_at,
        now,
    )


def device_from_row(row: Row) -> Device:
    return Device(
        device_id=row[0],
        device_configuration=row[1],
        name=row[2],
        device_type=row[3],
        primary_access_key=row[4],
        secondary_access_key=row[5],
        status=row[6],
        properties=orjson.loads(row[7]),
        attributes=orjson.loads(row[8]),
        state_machines=orjson.loads(row[9]),
        property_bag=orjson.loads(row[10]),
        latitude=row[11],
        longitude=row[12],
        last_seen=row[13],
        created_at=row[14],
        updated_at=row[15],
    )


# --- outbox --------------------------------------------------------------------------------------------

COUNT_OUTBOX = "SELECT count(*) FROM outbox"
INSERT_OUTBOX = "INSERT INTO outbox (kind, payload, created_at) VALUES (?, ?, ?)"
SELECT_OUTBOX = "SELECT id, kind, payload FROM outbox ORDER BY id LIMIT ?"
DELETE_OUTBOX = "DELETE FROM outbox WHERE id = ?"
