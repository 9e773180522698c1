"""PostgreSQL data streams (asyncpg): rows in batches with COPY, one transaction a batch (a batch of new rows
is one COPY statement, which commits on its own: no BEGIN/COMMIT round trips).

Connection settings come from the stream (Database Url as ``host[:port]`` or a ``postgresql://`` URL,
Database Name, Schema, User, Password by reference); the password is never logged. At start: **Auto Create
Table** creates the table from the fields (or runs the given DDL), then **Validate Schema** checks it:
a missing table or column, or a column type that cannot hold its field, is ``StreamStartError`` (the
instance goes to FailedToStart naming stream, table and column). A database that cannot be reached at
start is not fatal: the rows wait in the durable queue and the checks run on the first connection.

Rows the database refuses themselves (SQLSTATE class 22, data exception: a value too long, out of range, badly
formed; class 23, integrity constraint violation: NOT NULL, CHECK, UNIQUE, a foreign key; and a value asyncpg
cannot encode for its column, such as 3,000,000,000 for an ``integer``) would stop the stream if their batch
were tried again: ``write`` then writes the batch again in one transaction, each part in a savepoint, halving a
refused part down to single rows, and returns the refused ones with the database's reason. A connection lost
meanwhile commits nothing (the batch is tried again whole); the usual batch is still one COPY.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from runtime.core.errors import TransientError
from runtime.core.solution.enums import ParameterType
from runtime.core.streams import (
    StreamSpec,
    StreamStartError,
    columns,
    parse_time,
    pg_type_fits,
    pg_type_of,
    stamped,
)

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 5.0
_TIME_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone"})
_INT_TYPES = frozenset({"smallint", "integer", "bigint"})
_FLOAT_TYPES = frozenset({"real", "double precision"})
_unreachable = (OSError, asyncio.TimeoutError, asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.InterfaceError)
_REFUSED_CLASSES = ("22", "23")  # SQLSTATE classes of rows refused for what they hold
# what asyncpg raises for a value it cannot encode for its column: OverflowError (3,000,000,000 for an integer
# in a COPY), TypeError ("x" for an integer), UnicodeEncodeError (a ValueError), its client-side DataError (a
# ValueError and an InterfaceError in asyncpg's docs; 0.32 raises the class-22 PostgresError for a parameter of
# an UPDATE, without the server's message); the record's own conversions raise the same
_ENCODING = (OverflowError, TypeError, ValueError)


def refusal(exc: BaseException) -> str | None:
    """Why the database refused the rows themselves (their values, its constraints), as its message names it;
    None when the error is anything else (the connection, the schema, permissions: the batch is tried again)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate or "")
        if state[:2] not in _REFUSED_CLASSES:
            return None
        if getattr(exc, "message", None) is None:  # asyncpg's own (a parameter it cannot encode): never sent
            return f"{type(exc).__name__}: {exc}"
        column = getattr(exc, "column_name", None)
        if not column:  # a COPY names it in its context: "COPY t, line 3, column humidity: ..."
            _, found, rest = str(getattr(exc, "context", "") or "").partition(", column ")
            column = rest.split(":", 1)[0].strip() if found else None
        return f"{exc.message}{f', column {column}' if column else ''} (SQLSTATE {state})"
    if isinstance(exc, _ENCODING):
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_S = 946_684_800  # 2000-01-01 in Unix seconds


def _timestamptz_out(value: Any) -> tuple[int]:
    """A ``timestamptz`` as PostgreSQL stores it (microseconds since 2000-01-01 UTC), from a datetime or from
    epoch seconds (a queued row's time: no datetime is made per row). Rounded as ``datetime.fromtimestamp``
    rounds (the fraction's microseconds, half to even), so a row's time is the same either way."""
    if type(value) is float or type(value) is int:
        whole = int(value)
        return ((whole - _PG_EPOCH_S) * 1_000_000 + round((value - whole) * 1_000_000),)
    delta = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _PG_EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,)


def _timestamptz_in(value: tuple[int]) -> datetime:
    if value[0] >= 2**63 - 1:  # PostgreSQL's 'infinity' / '-infinity'
        return datetime.max.replace(tzinfo=UTC)
    if value[0] <= -(2**63):
        return datetime.min.replace(tzinfo=UTC)
    return _PG_EPOCH + timedelta(microseconds=value[0])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect_args(spec: StreamSpec) -> dict[str, Any]:
    s = spec.source
    url = (s.db_url or "").strip()
    args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    if "://" in url:
        args["dsn"] = url
    else:
        host, _, port = url.partition(":")
        args["host"] = host or "localhost"
        if port:
            args["port"] = int(port)
    if s.db_name:
        args["database"] = s.db_name
    if s.db_user_name:
        args["user"] = s.db_user_name
    if s.db_password is not None:
        args["password"] = s.db_password.get_secret_value()
    return args


def where_of(url: str | None) -> str:
    """The database's address for logs and status: never the user or password."""
    if not url:
        return ""
    if "://" in url:
        parts = urlsplit(url)
        return f"{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    return url


class PostgresSink:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.schema = spec.source.db_schema or "public"
        self.table = spec.table
        self._conn: asyncpg.Connection | None = None
        self._types: dict[str, str] = {}  # column -> data_type, read on each connection
        self._conv: list[tuple[str, Any]] = []
        self._time_from_at = False
        self._fast = False
        self._names: list[str] = [c for c, _ in columns(spec)]  # the COPY's columns, in record order
        self._fast_values: Any = None  # itemgetter of the device id and field columns (the fast path)

    # ------------------------------------------------------------------ connection and schema
    async def start(self) -> None:
        try:
            await self._connection()
        except StreamStartError:
            raise
        except TransientError as exc:
            log.warning("datastream_database_unreachable_at_start", stream=self.spec.key,
                        database=where_of(self.spec.source.db_url), error=str(exc))

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        try:
            conn = await asyncpg.connect(**connect_args(self.spec))
        except asyncpg.exceptions.InvalidPasswordError as exc:
            raise TransientError(f"PostgreSQL refused the credentials: {type(exc).__name__}") from None
        except (*_unreachable, asyncpg.PostgresError) as exc:
            raise TransientError(f"cannot reach PostgreSQL at {where_of(self.spec.source.db_url)}: "
                                 f"{type(exc).__name__}: {exc}") from None
        try:
            await self._prepare(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._conn = conn
        return conn

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        s = self.spec.source
        await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_timestamptz_out,
                                  decoder=_timestamptz_in, format="tuple")
        if s.auto_create_sql_table:
            ddl = s.create_table_ddl or self.create_table_sql()
            try:  # workers of a cluster start together: PostgreSQL's IF NOT EXISTS does not hold between
                # concurrent creators (a duplicate key in pg_type); a lock per table makes them take turns
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                       f"nuviot-datastream:{self.schema}.{self.table}")
                    await conn.execute(ddl)
            except asyncpg.PostgresError as exc:
                raise StreamStartError(self.spec.key, f"table {self.schema}.{self.table}: Auto Create Table "
                                       f"failed: {exc}") from None
        types = await self._column_types(conn)
        if s.db_validate_schema:
            self.validate(types)
        self._types = types
        self._time_from_at = types.get(self.spec.time_field, "") in _TIME_TYPES | _INT_TYPES
        field_columns = [f.column for f in self.spec.fields]
        self._fast = (not self.spec.epoch and types.get(self.spec.time_field) == "timestamp with time zone"
                      and types.get(self.spec.device_field) == "text"
                      and all(types.get(f.column) == pg_type_of(self.spec, f) and f.type is not ParameterType.DATETIME
                              for f in self.spec.fields))
        # the table as Auto Create Table makes it: a record is the row's values as they are, the time last
        self._names = ([self.spec.device_field, *field_columns, self.spec.time_field] if self._fast
                       else [c for c, _ in columns(self.spec)])
        dev = self.spec.device_field
        self._fast_values = itemgetter(dev, *field_columns) if field_columns else lambda row: (row[dev],)
        self._conv = [(c, self._converter(c)) for c in self._names]

    async def _column_types(self, conn: asyncpg.Connection) -> dict[str, str]:
        rows = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2", self.schema, self.table)
        return {r["column_name"]: r["data_type"] for r in rows}

    def validate(self, types: dict[str, str]) -> None:
        key, table = self.spec.key, f"{self.schema}.{self.table}"
        if not types:
            raise StreamStartError(key, f"table {table} does not exist (Validate Schema)")
        for column, f in columns(self.spec):
            found = types.get(column)
            if found is None:
                raise StreamStartError(key, f"table {table} has no column {column} (Validate Schema)")
            if column == self.spec.device_field:
                ok = found in ("text", "character varying", "character")
            else:
                ok = pg_type_fits(self.spec, f, found)
            if not ok:
                want = "text" if column == self.spec.device_field else pg_type_of(self.spec, f)
                raise StreamStartError(key, f"table {table}, column {column}: type {found} cannot hold the "
                                       f"field (expected {want} or compatible) (Validate Schema)")

    def create_table_sql(self) -> str:
        # no id column: the query API reads by device and time (the index), and a sequence and a primary key
        # cost PostgreSQL ~0.8 us of CPU a row (3.7 -> 2.9 us a row, COPY of 1,100 rows, measured)
        cols = [f"{_q(self.spec.device_field)} text NOT NULL",
                f"{_q(self.spec.time_field)} {pg_type_of(self.spec, None)} NOT NULL"]
        cols += [f"{_q(f.column)} {pg_type_of(self.spec, f)}" for f in self.spec.fields]
        name = f"{_q(self.schema)}.{_q(self.table)}"
        index = _q(f"{self.table}_device_time")
        return (f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols)}); "
                f"CREATE INDEX IF NOT EXISTS {index} ON {name} "
                f"({_q(self.spec.device_field)}, {_q(self.spec.time_field)})")

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 2)
            self._conn = None

    # ------------------------------------------------------------------ writing
    def _converter(self, column: str) -> Any:
        """value -> what asyncpg's COPY wants for the column's actual type (read once per connection)."""
        t = self._types.get(column, "text")
        if t in _TIME_TYPES or (column == self.spec.time_field and t in _INT_TYPES):
            return lambda v, c=column: self._value(c, v)
        if t in _INT_TYPES:
            return lambda v: None if v is None else int(v)
        if t in _FLOAT_TYPES:
            return lambda v: None if v is None else float(v)
        if t in ("text", "character varying", "character"):
            return lambda v: v if v is None or type(v) is str else str(v)
        return lambda v, c=column: self._value(c, v)

    def _record(self, op: dict[str, Any]) -> tuple[Any, ...]:
        row = op["row"]
        at = op.get("at")
        if self._fast and at is not None:  # build_row made the row: every column there, of the table's type
            try:
                return (*self._fast_values(row), at)  # epoch seconds: _timestamptz_out encodes them
            except KeyError:  # not a row build_row made: the general path
                pass
        if self.spec.time_field not in row and at is not None and not self._time_from_at:
            row = stamped(self.spec, op)  # a text timestamp column
        at = at if self._time_from_at else None
        time_field = self.spec.time_field
        return tuple(conv(at if c == time_field and at is not None else row.get(c)) for c, conv in self._conv)

    def _value(self, column: str, value: Any) -> Any:
        if value is None:
            return None
        t = self._types.get(column, "text")
        if t in _TIME_TYPES:
            at = parse_time(value)
            return None if at is None else datetime.fromtimestamp(at, UTC).replace(
                tzinfo=UTC if t == "timestamp with time zone" else None)
        if t in _INT_TYPES:
            return int(parse_time(value) or 0) if column == self.spec.time_field else int(value)
        if t in _FLOAT_TYPES:
            return float(value)
        if t == "numeric":
            return Decimal(str(value))
        if t == "boolean":
            return bool(value)
        return value if isinstance(value, str) else str(value)

    async def write(self, ops: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        conn = await self._connection()
        try:
            try:
                if all(op["op"] == "add" for op in ops):  # the usual batch: one COPY, a transaction of its own
                    await self._copy(conn, self._names, [self._record(op) for op in ops])
                else:
                    async with conn.transaction():
                        await self._in_order(conn, ops)
                return []
            except Exception as exc:
                reason = refusal(exc)
                if reason is None:
                    raise
            # nothing of the batch was committed (the COPY, or the transaction, failed whole)
            return await self._isolate(conn, ops, reason)
        except (*_unreachable, asyncpg.exceptions.AdminShutdownError,
                asyncpg.exceptions.CannotConnectNowError) as exc:
            await self.close()
            raise TransientError(f"PostgreSQL at {where_of(self.spec.source.db_url)} went away: "
                                 f"{type(exc).__name__}") from None
        except asyncpg.PostgresError:
            await self.close()  # re-read the schema on the next connection
            raise

    async def _in_order(self, conn: asyncpg.Connection, ops: list[dict[str, Any]]) -> None:
        """Adds and updates in their order (inside the caller's transaction): each run of adds one COPY."""
        names = self._names
        adds: list[tuple[Any, ...]] = []
        for op in ops:
            if op["op"] == "add":
                adds.append(self._record(op))
                continue
            if adds:
                await self._copy(conn, names, adds)
                adds = []
            await self._update(conn, op["row"], op.get("where") or {})
        if adds:
            await self._copy(conn, names, adds)

    async def _isolate(self, conn: asyncpg.Connection, ops: list[dict[str, Any]],
                       reason: str) -> list[tuple[dict[str, Any], str]]:
        """The batch again, all or nothing: one transaction, each part in a savepoint (asyncpg's nested
        transaction), a refused part halved down to single rows (one refused row among n: ~2 log2(n) savepoints;
        every row refused: 2n). The refused ops with the database's reasons; any other error ends it with nothing
        committed. Deferred constraints are checked per statement here, so a violation is a part's own and
        not the commit's."""
        if len(ops) == 1:
            return [(ops[0], reason)]
        refused: list[tuple[dict[str, Any], str]] = []
        async with conn.transaction():
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            await self._halves(conn, ops, refused)
        return refused

    async def _halves(self, conn: asyncpg.Connection, ops: list[dict[str, Any]],
                      refused: list[tuple[dict[str, Any], str]]) -> None:
        """``ops``, known to hold a refused one, as two halves in order, each in a savepoint."""
        middle = len(ops) // 2
        for part in (ops[:middle], ops[middle:]):
            try:
                async with conn.transaction():
                    await self._in_order(conn, part)
            except Exception as exc:
                reason = refusal(exc)
                if reason is None:
                    raise
                if len(part) == 1:
                    refused.append((part[0], reason))
                else:
                    await self._halves(conn, part, refused)

    async def _copy(self, conn: asyncpg.Connection, names: list[str], records: list[tuple[Any, ...]]) -> None:
        await conn.copy_records_to_table(self.table, records=records, columns=names, schema_name=self.schema)

    async def _update(self, conn: asyncpg.Connection, row: dict[str, Any], where: dict[str, Any]) -> None:
        if not row:
            return
        sets = list(row)
        conds = list(where)
        sql = (f"UPDATE {_q(self.schema)}.{_q(self.table)} SET "
               + ", ".join(f"{_q(c)} = ${i + 1}" for i, c in enumerate(sets))
               + (" WHERE " + " AND ".join(f"{_q(c)} = ${len(sets) + i + 1}" for i, c in enumerate(conds))
                  if conds else ""))
        await conn.execute(sql, *(self._value(c, row[c]) for c in sets), *(self._value(c, where[c]) for c in conds))

    # ------------------------------------------------------------------ reading
    async def read(self, device_id: str | None, start: float | None, end: float | None,
                   limit: int) -> list[dict[str, Any]]:
        conn = await self._connection()
        dev, ts = _q(self.spec.device_field), _q(self.spec.time_field)
        conds: list[str] = []
        args: list[object] = []
        if device_id is not None:
            args.append(device_id)
            conds.append(f"{dev} = ${len(args)}")
        for bound, op in ((start, ">="), (end, "<=")):
            if bound is not None:
                args.append(self._value(self.spec.time_field, bound))
                conds.append(f"{ts} {op} ${len(args)}")
        args.append(limit)
        names = ", ".join(_q(c) for c, _ in columns(self.spec))
        sql = (f"SELECT {names} FROM {_q(self.schema)}.{_q(self.table)}"
               + (" WHERE " + " AND ".join(conds) if conds else "")
               + f" ORDER BY {ts} DESC LIMIT ${len(args)}")
        try:
            records = await conn.fetch(sql, *args)
        except _unreachable as exc:
            await self.close()
            raise TransientError(f"PostgreSQL is not reachable: {type(exc).__name__}") from None
        return [{k: self._out(k, v) for k, v in r.items()} for r in records]

    def _out(self, column: str, value: Any) -> Any:
        if isinstance(value, datetime):
            at = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
            return int(at) if self.spec.epoch else value.astimezone(UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z")
        if isinstance(value, Decimal):
            return float(value)
        return value
