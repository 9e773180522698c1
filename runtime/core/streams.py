"""Data-stream rows (pure): what a stream is, how a row is built and checked, and how it is read back.

NuvIoT's DataStream (reference/nuviot-spec.md §1.15, §5.7): each row carries the device id and a timestamp
under the stream's **Device Id Field Name** and **Time Stamp Field Name**, in its **Date Storage Format**
(epoch seconds or ISO 8601, UTC), plus the stream's fields. A field may be required, have a min/max and a
number of decimals (rounded). A row that breaks them is a ``StreamRowError`` (the dispatcher makes it a
dead letter naming the stream and the field).

Three kinds run here: built-in storage (SQLite), PostgreSQL and Redis (one record per device). Any other
NuvIoT type (Azure Table, S3, SQL Server...) is written to built-in storage instead, with a warning.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import cast

from runtime.core.errors import ListenerBindError, Problem, StageError
from runtime.core.solution import codes
from runtime.core.solution.enums import ParameterType, PipelineModuleType
from runtime.core.solution.model import DataStream, Route, SolutionDocument
from runtime.core.timefmt import iso

STAGE = "datastream"
PT = PipelineModuleType


class StreamKind(StrEnum):
    BUILTIN = "builtin"
    POSTGRESQL = "postgresql"
    REDIS = "redis"


# NuvIoT's ids for built-in storage are not in the public model; these all mean it (and no type at all).
BUILTIN_IDS = frozenset({"", "builtin", "builtinstorage", "builtindatastream", "nuviot", "nuviotstorage", "local"})
EPOCH_IDS = frozenset({"epoch", "expoch", "unixepoch", "epochseconds"})  # NuvIoT's own id is "expoch"
NUMERIC = frozenset({ParameterType.INTEGER, ParameterType.DECIMAL, ParameterType.VALUE_WITH_UNIT})
INT64 = 2**63  # an integer field's values: -INT64 <= v < INT64 (PostgreSQL's bigint, the queue's JSON)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


class StreamRowError(StageError):
    """A row that breaks the stream's field definitions: a dead letter naming the stream and field."""

    def __init__(self, stream: str, column: str | None, reason: str) -> None:
        where = f"data stream {stream}" + (f", field {column}" if column else "")
        super().__init__(STAGE, "datastream_row_invalid", f"{where}: {reason}")
        self.stream = stream
        self.column = column


class StreamStartError(ListenerBindError):
    """A stream that cannot start (schema check, table creation, bad settings): FailedToStart naming it."""

    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(f"datastream:{stream}", None, reason)
        self.args = (f"data stream {stream} cannot start: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class FieldSpec:
    key: str
    column: str
    type: ParameterType
    required: bool = False
    min: float | None = None
    max: float | None = None
    decimals: int | None = None


# (device id, time or None for no timestamp column, values) -> the row, or None: take the general path
FastBuilder = Callable[[str, float | None, Mapping[str, object]], dict[str, object] | None]


@dataclass(frozen=True, slots=True)
class StreamSpec:
    key: str
    name: str
    type_id: str  # NuvIoT's stream type id as written in the solution
    kind: StreamKind
    fallback: bool  # a type not reachable here, written to built-in storage
    device_field: str
    time_field: str
    epoch: bool
    fields: tuple[FieldSpec, ...]
    source: DataStream = field(repr=False, compare=False)
    names: frozenset[str] = frozenset()  # what a value may be keyed by: field keys, columns, id and time
    # the usual new row, worked out once per stream (``fast_builder``): None when the stream has a field it
    # does not cover, or (from the builder) when a row needs the general path
    fast: FastBuilder | None = field(default=None, repr=False, compare=False)
    # a route step's mappings -> its row builder, or None (``mapped_row``); filled on first use
    mapped: dict[tuple[tuple[str, str], ...], object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def by_name(self) -> dict[str, FieldSpec]:
        out = {f.column: f for f in self.fields}
        out.update({f.key: f for f in self.fields})
        return out

    @property
    def table(self) -> str:
        return self.source.db_table_name or self.key

    @property
    def target(self) -> str:
        """Where rows go, without secrets: the table, the Redis servers or the built-in file."""
        s = self.source
        if self.kind is StreamKind.POSTGRESQL:
            return f"{s.db_schema or 'public'}.{self.table}"
        if self.kind is StreamKind.REDIS:
            return f"redis {s.redis_server_uris or ''}".strip()
        return f"built-in {self.key}"


def kind_of(type_id: str | None) -> tuple[StreamKind, bool]:
    t = (type_id or "").strip().lower()
    if t == StreamKind.POSTGRESQL.value:
        return StreamKind.POSTGRESQL, False
    if t == StreamKind.REDIS.value:
        return StreamKind.REDIS, False
    return StreamKind.BUILTIN, t not in BUILTIN_IDS


def spec_of(ds: DataStream) -> StreamSpec:
    kind, fallback = kind_of(ds.stream_type)
    fields = tuple(
        FieldSpec(f.key, f.field_name or f.key, f.field_type, f.is_required, f.min_value, f.max_value,
                  f.number_decimal_point)
        for f in ds.fields
    )
    device_field, time_field = ds.device_id_field_name or "deviceId", ds.timestamp_field_name or "timeStamp"
    names = frozenset({device_field, time_field, *(f.key for f in fields), *(f.column for f in fields)})
    epoch = (ds.date_storage_format or "").lower() in EPOCH_IDS
    return StreamSpec(ds.key, ds.name or ds.key, ds.stream_type or "builtin", kind, fallback, device_field,
                      time_field, epoch, fields, ds, names, fast_builder(fields, names, device_field, time_field, epoch))


def specs_of(doc: SolutionDocument) -> dict[str, StreamSpec]:
    return {ds.key: spec_of(ds) for ds in doc.data_streams}


# --------------------------------------------------------------------------- rows


def passed_mark(before: int, after: int) -> bool:
    """A count went past 1, 10, 100, 1,000 or a multiple of 10,000: when a repeated event (a full queue's
    refusals, a database's refused rows) is logged again, not at each row."""
    return any(before < mark <= after for mark in (1, 10, 100, 1000)) or before // 10_000 != after // 10_000


def format_time(at: float, epoch: bool) -> int | str:
    return int(at) if epoch else iso(at)  # type: ignore[return-value]  # iso() of a float is a str


def parse_time(value: object) -> float | None:
    """A stored timestamp (epoch seconds, ISO 8601 text, or a datetime) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _number(spec: StreamSpec, f: FieldSpec, value: object) -> float | int:
    t = type(value)
    if t is float or t is int:  # the usual case, checked without the general path
        n = cast(float, value)  # an int or a float: the type test excludes bool
        if (t is float and not math.isfinite(n)) or (f.min is not None and n < f.min) or (
                f.max is not None and n > f.max):
            pass  # reported below
        elif f.type is ParameterType.INTEGER:
            if (t is int or n.is_integer()) and -INT64 <= n < INT64:
                return int(n)
        else:
            return round(float(n), f.decimals) if f.decimals is not None and f.decimals >= 0 else float(n)
    if isinstance(value, bool):
        raise StreamRowError(spec.key, f.column, f"{value!r} is not a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise StreamRowError(spec.key, f.column, f"{value!r} is not a number") from None
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        raise StreamRowError(spec.key, f.column, f"{value!r} is not a number")
    if f.min is not None and value < f.min:
        raise StreamRowError(spec.key, f.column, f"{value} is below the minimum {f.min:g}")
    if f.max is not None and value > f.max:
        raise StreamRowError(spec.key, f.column, f"{value} is above the maximum {f.max:g}")
    if f.type is ParameterType.INTEGER:
        if isinstance(value, float) and not value.is_integer():
            raise StreamRowError(spec.key, f.column, f"{value} is not a whole number")
        if not -INT64 <= value < INT64:
            shown = value if isinstance(value, float) or abs(value) < 10**30 else f"a {value.bit_length()}-bit integer"
            raise StreamRowError(spec.key, f.column, f"{shown} is outside the 64-bit integer range")
        return int(value)
    number = float(value)
    if f.decimals is not None and f.decimals >= 0:
        number = round(number, f.decimals)
    return number


def _cell(spec: StreamSpec, f: FieldSpec, value: object) -> object:
    if f.type in NUMERIC:
        return _number(spec, f, value)
    if f.type is ParameterType.TRUE_FALSE:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise StreamRowError(spec.key, f.column, f"{value!r} is not true or false")
    if f.type is ParameterType.DATETIME:
        at = parse_time(value)
        if at is None:
            raise StreamRowError(spec.key, f.column, f"{value!r} is not a date and time")
        return format_time(at, spec.epoch)
    if f.type is ParameterType.GEOLOCATION and isinstance(value, list | tuple) and len(value) == 2:
        return f"{value[0]},{value[1]}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def fast_builder(fields: Sequence[FieldSpec], names: frozenset[str], device_field: str, time_field: str,
                 epoch: bool, sources: Mapping[str, str] | None = None) -> FastBuilder | None:
    """The usual new row of a stream, with each field's checks worked out once: a text field takes a ``str``, a
    true/false field a ``bool``, a number an ``int`` or a finite ``float`` (min/max compared, whole for an
    integer field, rounded to its decimals). Anything else (a missing required field, a value to convert or to
    refuse, a name the stream does not have) returns None: ``build_row``'s general path decides, so the row (or
    the error) is the same either way. None for a stream with a date/time or location field (their values
    always take the general path).

    The function is written out for the stream's fields (Python source compiled once per solution load, as
    ``dataclasses`` writes ``__init__``): no loop over field specs, no test of a bound the field does not
    have. Only generated names are in the source; every key, column, bound and decimals value is passed in
    as a variable, never written into it.

    ``sources`` (column -> message field, ``mapped_row``): the values are the message's own, each field read
    from its mapped message field (none: missing), the names already checked against the stream."""
    env: dict[str, object] = {"known": names.issuperset, "isfinite": math.isfinite, "format_time": format_time,
                              "EPOCH": epoch, "DEVICE": device_field, "TIME": time_field}
    body = ["def build(device_id, at, values):"]
    if sources is None:
        body += ["    if not known(values):", "        return None"]
    body.append("    get = values.get")
    cells = []
    for i, f in enumerate(fields):
        if f.type in (ParameterType.DATETIME, ParameterType.GEOLOCATION):
            return None
        v = f"v{i}"
        env[f"K{i}"], env[f"C{i}"] = f.key, f.column
        cells.append(f"C{i}: {v}")
        if sources is not None:
            env[f"S{i}"] = sources.get(f.column)
            body.append(f"    {v} = get(S{i})" if f.column in sources else f"    {v} = None")
        else:
            body.append(f"    {v} = get(K{i})")
        if f.column != f.key and sources is None:
            env[f"A{i}"] = f.column
            body += [f"    if {v} is None:", f"        {v} = get(A{i})"]
        missing = "return None" if f.required else "pass"
        if f.type not in NUMERIC:
            wanted = "bool" if f.type is ParameterType.TRUE_FALSE else "str"
            body += [f"    if type({v}) is not {wanted} and ({v} is not None or {f.required}):", "        return None"]
            continue
        bounds = []
        if f.min is not None:
            env[f"LO{i}"] = f.min
            bounds.append(f"{v} < LO{i}")
        if f.max is not None:
            env[f"HI{i}"] = f.max
            bounds.append(f"{v} > HI{i}")
        integer = f.type is ParameterType.INTEGER
        if integer:
            env["INT64"] = INT64
            bounds.append(f"not -INT64 <= {v} < INT64")
        out_of_range = " or ".join(bounds) or "False"
        decimals = f.decimals if f.decimals is not None and f.decimals >= 0 and not integer else None
        env[f"D{i}"] = decimals
        body += [f"    t = type({v})", "    if t is int:", f"        if {out_of_range}:", "            return None"]
        if not integer:  # an int rounded to any decimals is itself: ``round(float(v), d) == float(v)``
            body.append(f"        {v} = float({v})")
        body += ["    elif t is float:", f"        if not isfinite({v}) or {out_of_range}:", "            return None"]
        if integer:
            body += [f"        if not {v}.is_integer():", "            return None", f"        {v} = int({v})"]
        elif decimals is not None and decimals <= 15:
            # a value that has no more decimals than the field keeps (the usual reading) is ``round``'s result
            # as it is: ``round(v * 10**d) / 10**d == v`` proves it in ~0.08 us, where ``round(v, d)`` takes
            # ~0.25 (a correctly rounded decimal conversion); any other value is rounded by ``round`` itself
            env[f"P{i}"], env[f"B{i}"] = 10.0 ** decimals, 2.0 ** 52 / 10.0 ** decimals
            body += [f"        if not (-B{i} < {v} < B{i} and round({v} * P{i}) / P{i} == {v}):",
                     f"            {v} = round({v}, D{i})"]
        elif decimals is not None:
            body.append(f"        {v} = round({v}, D{i})")
        body += [f"    elif {v} is not None:", "        return None"]
        if f.required:
            body += ["    elif True:", f"        {missing}"]
    cols = ", ".join(cells)
    body += ["    if at is None:", f"        return {{DEVICE: device_id{', ' if cols else ''}{cols}}}",
             f"    return {{DEVICE: device_id, TIME: format_time(at, EPOCH){', ' if cols else ''}{cols}}}"]
    exec(compile("\n".join(body), f"<data stream row builder {len(fields)} fields>", "exec"), env)
    return cast(FastBuilder, env["build"])


def build_row(spec: StreamSpec, device_id: str, at: float, values: Mapping[str, object], *,
              partial: bool = False, stamp: bool = True) -> dict[str, object]:
    """One row ``{column: value}`` with the device id and timestamp columns. ``values`` are keyed by field
    key or column name. ``partial`` (updates): only the given fields, no required check, no id/timestamp.
    ``stamp=False``: no timestamp column (the queue carries ``at``; ``stamped`` adds it where it is stored)."""
    if not partial and spec.fast is not None:
        fast = spec.fast(device_id, at if stamp else None, values)
        if fast is not None:
            return fast
    names = spec.names
    for name in values:
        if name not in names:
            raise StreamRowError(spec.key, name, "the stream has no such field")
    row: dict[str, object] = {}
    if not partial:
        row[spec.device_field] = device_id
        if stamp:
            row[spec.time_field] = format_time(at, spec.epoch)
    for f in spec.fields:
        value = values.get(f.key)
        if value is None and f.column != f.key:
            value = values.get(f.column)
        if value is None:
            if f.required and not partial:
                raise StreamRowError(spec.key, f.column, "is required and has no value")
            if not partial:
                row[f.column] = None
            continue
        row[f.column] = _number(spec, f, value) if f.type in NUMERIC else _cell(spec, f, value)
    return row


def mapped_row(spec: StreamSpec, mappings: tuple[tuple[str, str], ...], device_id: str,
               values: Mapping[str, object]) -> dict[str, object]:
    """The route step's row (no timestamp column) from the message's values and the step's (message field,
    stream field) mappings: ``build_row`` of ``{stream field: value}``, with the mapping compiled into the
    stream's row builder once per (stream, mappings) (the dispatcher calls this per message)."""
    build = mapped_builder(spec, mappings)
    if build is not None:
        row = build(device_id, None, values)
        if row is not None:
            return row
    return build_row(spec, device_id, 0.0, {dst: values[src] for src, dst in mappings if src in values}, stamp=False)


_UNSET = object()


def mapped_builder(spec: StreamSpec, mappings: tuple[tuple[str, str], ...]) -> FastBuilder | None:
    """``mapped_row``'s row builder for these mappings (made once per stream and mappings), or None: a row that
    needs ``build_row``. Its row, when it gives one, is ``mapped_row``'s; None from it: call ``mapped_row``."""
    build = spec.mapped.get(mappings, _UNSET)
    if build is _UNSET:
        build = spec.mapped[mappings] = _mapped_builder(spec, mappings)
    return cast(FastBuilder | None, build)


def _mapped_builder(spec: StreamSpec, mappings: tuple[tuple[str, str], ...]) -> FastBuilder | None:
    """A row builder reading each field from its mapped message field; None (``build_row`` per message) unless
    every mapping names a field of the stream and no field is fed twice."""
    by_name = spec.by_name
    sources: dict[str, str] = {}
    for src, dst in mappings:
        f = by_name.get(dst)
        if f is None or f.column in sources:
            return None
        sources[f.column] = src
    return fast_builder(spec.fields, spec.names, spec.device_field, spec.time_field, spec.epoch, sources)


def stamped(spec: StreamSpec, item: Mapping[str, object]) -> dict[str, object]:
    """A queued row with its timestamp column, in the stream's date format (the queue carries ``at``)."""
    row = cast(dict[str, object], item["row"])  # the queue's row, as build_row made it
    at = item.get("at")
    if at is None or spec.time_field in row:
        return row
    return {**row, spec.time_field: format_time(cast(float, at), spec.epoch)}  # the queue's epoch seconds


# --------------------------------------------------------------------------- the route's data-stream step


@dataclass(frozen=True, slots=True)
class StreamStep:
    """One data-stream step of a route: the stream, and which message fields / workflow values feed which
    stream fields. ``by_name``: no mappings given, so values go to fields of the same key or column."""

    stream: str
    from_message: tuple[tuple[str, str], ...] = ()
    from_workflow: tuple[tuple[str, str], ...] = ()
    by_name: bool = False


def stream_steps(route: Route) -> tuple[StreamStep, ...]:
    """The route's data-stream steps with their mappings, in route order (NuvIoT maps message field key ->
    stream field key on the input translator's secondary output; a workflow edge maps attribute or input
    key -> stream field key)."""
    feeds: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
    for step in route.steps:
        if step.type not in (PT.INPUT_TRANSLATOR, PT.WORKFLOW):
            continue
        for conn in (step.next, *step.secondary):
            target = route.step_by_id.get(conn.to) if conn is not None else None
            if conn is None or target is None or target.type is not PT.DATA_STREAM:
                continue
            pairs = [(src, dst) for src, dst in conn.mappings.items() if isinstance(dst, str) and dst]
            feed = feeds.setdefault(target.id, ([], []))
            feed[0 if step.type is PT.INPUT_TRANSLATOR else 1].extend(pairs)
    out = []
    for step in route.steps:
        if step.type is PT.DATA_STREAM:
            msg, wf = feeds.get(step.id, ([], []))
            out.append(StreamStep(step.module, tuple(msg), tuple(wf), by_name=not msg and not wf))
    return tuple(out)


def step_values(step: StreamStep, message: Mapping[str, object], workflow: Mapping[str, object],
                names: frozenset[str] = frozenset()) -> dict[str, object]:
    """The stream's values for one message; ``names`` (the stream's field keys and columns) picks them for a
    step without mappings (the message's fields win over workflow attributes of the same key)."""
    if step.by_name:
        out = {k: v for k, v in workflow.items() if k in names}
        out.update({k: v for k, v in message.items() if k in names})
        return out
    out = {dst: message[src] for src, dst in step.from_message if src in message}
    out.update({dst: workflow[src] for src, dst in step.from_workflow if src in workflow})
    return out


# --------------------------------------------------------------------------- reading back


def parse_bucket(text: str) -> int:
    """``60s``, ``5m``, ``1h``, ``1d`` or plain seconds -> seconds (1 s .. 31 d)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "")
    if not m:
        raise ValueError("bucket must look like 60s, 5m, 1h or 1d")
    seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= seconds <= 31 * 86400:
        raise ValueError("bucket must be from 1 second to 31 days")
    return seconds


def numeric_columns(spec: StreamSpec) -> tuple[str, ...]:
    return tuple(f.column for f in spec.fields if f.type in NUMERIC)


def buckets(spec: StreamSpec, rows: Iterable[Mapping[str, object]], seconds: int) -> list[dict[str, object]]:
    """NuvIoT's time-series query: per time bucket, the count and the average of each numeric field;
    newest bucket first."""
    cols = numeric_columns(spec)
    acc: dict[int, tuple[list[int], dict[str, list[float]]]] = {}
    for row in rows:
        at = parse_time(row.get(spec.time_field))
        if at is None:
            continue
        start = int(at // seconds) * seconds
        count, sums = acc.setdefault(start, ([0], {}))
        count[0] += 1
        for c in cols:
            v = row.get(c)
            if isinstance(v, int | float) and not isinstance(v, bool):
                s = sums.setdefault(c, [0.0, 0])
                s[0] += v
                s[1] += 1
    return [
        {"from": iso(start), "to": iso(start + seconds), "count": count[0],
         "averages": {c: (s[0] / s[1]) for c, s in sums.items() if s[1]}}
        for start, (count, sums) in sorted(acc.items(), reverse=True)
    ]


def select(spec: StreamSpec, rows: Iterable[Mapping[str, object]], device_id: str | None, start: float | None,
           end: float | None, limit: int | None) -> list[dict[str, object]]:
    """Rows of one device (or all) in [start, end], newest first, at most ``limit``."""
    picked = []
    for row in rows:
        if device_id is not None and row.get(spec.device_field) != device_id:
            continue
        at = parse_time(row.get(spec.time_field))
        if at is None or (start is not None and at < start) or (end is not None and at > end):
            continue
        picked.append((at, dict(row)))
    picked.sort(key=lambda p: p[0], reverse=True)
    return [r for _, r in (picked[:limit] if limit is not None else picked)]


# --------------------------------------------------------------------------- validation


STREAM_UNREACHABLE = codes.STREAM_UNREACHABLE  # warning
STREAM_INVALID = codes.STREAM_INVALID


def stream_problems(doc: SolutionDocument) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for the solution's data streams; paths are wire paths."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for i, ds in enumerate(doc.data_streams):
        path = f"dataStreams[{i}]"
        spec = spec_of(ds)
        if spec.fallback:
            warnings.append(Problem(f"{path}.streamType", STREAM_UNREACHABLE,
                                    f"data stream {ds.key}: type {ds.stream_type} cannot be reached from this "
                                    "runtime; its rows are written to built-in storage instead"))
        for name, wire in ((spec.device_field, "deviceIdFieldName"), (spec.time_field, "timestampFieldName")):
            if not _NAME.match(name):
                errors.append(Problem(f"{path}.{wire}", STREAM_INVALID, f"{name!r} is not a valid column name"))
        seen: set[str] = {spec.device_field, spec.time_field}
        for k, f in enumerate(spec.fields):
            if not _NAME.match(f.column):
                errors.append(Problem(f"{path}.fields[{k}].fieldName", STREAM_INVALID,
                                      f"{f.column!r} is not a valid column name"))
            elif f.column in seen:
                errors.append(Problem(f"{path}.fields[{k}].fieldName", STREAM_INVALID,
                                      f"column {f.column!r} appears twice"))
            seen.add(f.column)
        if spec.kind is StreamKind.POSTGRESQL:
            if not ds.db_url:
                errors.append(Problem(f"{path}.dbUrl", STREAM_INVALID, "a PostgreSQL stream needs dbUrl"))
            if not _NAME.match(spec.table):
                errors.append(Problem(f"{path}.dbTableName", STREAM_INVALID,
                                      f"{spec.table!r} is not a valid table name"))
            if ds.db_schema and not _NAME.match(ds.db_schema):
                errors.append(Problem(f"{path}.dbSchema", STREAM_INVALID,
                                      f"{ds.db_schema!r} is not a valid schema name"))
        if spec.kind is StreamKind.REDIS and not ds.redis_server_uris:
            errors.append(Problem(f"{path}.redisServerUris", STREAM_INVALID, "a Redis stream needs redisServerUris"))
    return errors, warnings


# PostgreSQL column types that can hold each field type (Validate Schema).
PG_TYPES: dict[ParameterType, frozenset[str]] = {
    ParameterType.INTEGER: frozenset({"smallint", "integer", "bigint", "numeric", "real", "double precision"}),
    ParameterType.DECIMAL: frozenset({"numeric", "real", "double precision"}),
    ParameterType.VALUE_WITH_UNIT: frozenset({"numeric", "real", "double precision"}),
    ParameterType.TRUE_FALSE: frozenset({"boolean", "smallint", "integer", "bigint"}),
}
PG_TEXT = frozenset({"text", "character varying", "character", "json", "jsonb"})
PG_TIME = frozenset({"timestamp with time zone", "timestamp without time zone"})


def pg_type_of(spec: StreamSpec, f: FieldSpec | None) -> str:
    """The column type Auto Create Table uses (``f`` None: the timestamp column)."""
    if f is None or f.type is ParameterType.DATETIME:
        return "bigint" if spec.epoch else "timestamptz"
    return {ParameterType.INTEGER: "bigint", ParameterType.DECIMAL: "double precision",
            ParameterType.VALUE_WITH_UNIT: "double precision", ParameterType.TRUE_FALSE: "boolean"}.get(f.type, "text")


def pg_type_fits(spec: StreamSpec, f: FieldSpec | None, data_type: str) -> bool:
    if f is None or f.type is ParameterType.DATETIME:
        return data_type in (PG_TIME | PG_TEXT | {"bigint", "numeric", "double precision"})
    allowed = PG_TYPES.get(f.type)
    return data_type in allowed if allowed is not None else data_type in PG_TEXT


def columns(spec: StreamSpec) -> Sequence[tuple[str, FieldSpec | None]]:
    """Every column of the stream, the device id and timestamp first (the field spec None for those)."""
    return [(spec.device_field, None), (spec.time_field, None), *((f.column, f) for f in spec.fields)]
