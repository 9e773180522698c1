"""Admin API for data streams (CONTRACT §9), registered on the admin app (auth and errors are its own):

- ``GET /datastreams``: each stream's key, name, type, target, depth, lastWriteAt, lastError (and counts)
- ``GET /datastreams/{key}/records?deviceId=&from=&to=&limit=``: rows, newest first
- ``...&bucket=60s``: ``{from, to, count, averages: {field: value}}`` per time bucket, newest first
- ``GET /datastreams/{key}/rejected?limit=``: the rows the stream's database refused, kept aside, newest first
- ``POST /datastreams/{key}/rejected/requeue``: those rows back at the end of the stream's queue: ``{requeued: n}``

The last two extend CONTRACT §9 (README "Extensions to CONTRACT").
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from runtime.adapters.streams import DataStreams
from runtime.adapters.streams.queue import REJECTED_READ
from runtime.core.errors import TransientError
from runtime.core.streams import buckets, parse_bucket, parse_time
from runtime.services.commands import BadRequestError, NotFoundError
from runtime.services.streams import StreamService

MAX_LIMIT = 10_000
BUCKET_SCAN = 100_000  # rows read at most for a bucket query


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _time(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw:
        return None
    at = parse_time(raw)
    if at is None:
        raise BadRequestError("bad_time", f"{name} must be ISO 8601 or epoch seconds")
    return at


def _limit(request: web.Request, most: int = MAX_LIMIT) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequestError("bad_limit", f"limit must be a whole number from 1 to {most}")
    return int(raw)


def _unavailable(exc: TransientError) -> web.Response:
    return _json({"error": {"code": "datastream_unavailable", "message": str(exc)}}, 503)


def routes(streams: DataStreams) -> Callable[[web.Application], None]:
    def service_of(key: str) -> StreamService:
        service = streams.current
        if service is None or key not in service:
            raise NotFoundError("unknown_datastream", f"no data stream {key} in the running solution")
        return service

    async def list_streams(request: web.Request) -> web.Response:
        return _json(streams.status())

    async def records(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        service = service_of(key)
        spec = service.specs[key]
        device_id = request.query.get("deviceId") or None
        start, end = _time(request, "from"), _time(request, "to")
        limit = _limit(request)
        bucket = request.query.get("bucket")
        seconds = None
        if bucket:
            try:
                seconds = parse_bucket(bucket)
            except ValueError as exc:
                raise BadRequestError("bad_bucket", str(exc)) from None
        try:
            rows = await service.read(key, device_id, start, end, BUCKET_SCAN if seconds else limit)
        except TransientError as exc:
            return _unavailable(exc)
        if seconds:
            return _json(buckets(spec, rows, seconds)[:limit])
        return _json(rows)

    async def rejected(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        service = service_of(key)
        limit = _limit(request, REJECTED_READ)
        try:
            return _json(await service.rejected(key, limit))
        except TransientError as exc:  # the stream process is starting again, or does not answer
            return _unavailable(exc)

    async def requeue(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        service = service_of(key)
        try:
            return _json({"requeued": await service.requeue_rejected(key)})
        except TransientError as exc:
            return _unavailable(exc)

    def register(app: web.Application) -> None:
        app.router.add_get("/datastreams", list_streams)
        app.router.add_get("/datastreams/{key}/records", records)
        app.router.add_get("/datastreams/{key}/rejected", rejected)
        app.router.add_post("/datastreams/{key}/rejected/requeue", requeue)

    return register
