"""A scripted fake of the cloud sink (docs/cloud.md) for the cloud working-storage tests.

``FakeCloud`` answers ``POST /api/runtime/{instanceId}/{kind}`` by the next mode in ``script`` (then
``ok`` for good): ``ok``, ``500``, ``429`` (with ``Retry-After``), ``garbage`` (200 with a body that is
not the acknowledgement), ``close`` (drops the connection), ``slow`` (stores the batch, then answers
after ``slow_seconds``, longer than the client waits: the batch is sent again) and ``400``.
A record with ``"poison": true`` is always answered 400. Every request is kept with its time.

It runs in the test's event loop (``async with FakeCloud() as cloud``) or, for tests of the real daemon,
in a thread with its own loop (``FakeCloudThread``), on a fixed port so it can be started late.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Post:
    at: float
    kind: str
    instance_id: str
    authorization: str | None
    records: list[dict[str, Any]]
    answered: str


@dataclass
class FakeCloud:
    script: list[str] = field(default_factory=list)
    retry_after: str = "1"
    slow_seconds: float = 1.5
    port: int = 0
    posts: list[Post] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)  # every record the cloud stored (dups too)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted_ids(self, kind: str | None = None) -> Counter[str]:
        return Counter(r["id"] for r in self.accepted if kind is None or r.get("_kind") == kind)

    async def __aenter__(self) -> FakeCloud:
        app = web.Application()
        app.router.add_post("/api/runtime/{instance}/{kind}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        records = orjson.loads(await request.read())
        mode = self.script.pop(0) if self.script else "ok"
        if any(r.get("poison") for r in records):
            mode = "400"
        self.posts.append(Post(time.monotonic(), kind, request.match_info["instance"],
                               request.headers.get("Authorization"), records, mode))
        if mode == "ok":
            self._store(kind, records)
            return web.json_response({"accepted": len(records)})
        if mode == "500":
            return web.json_response({"error": "down"}, status=500)
        if mode == "429":
            return web.Response(status=429, headers={"Retry-After": self.retry_after}, text="slow down")
        if mode == "garbage":
            return web.Response(status=200, text="<html>proxy error</html>")
        if mode == "400":
            return web.json_response({"error": "bad record"}, status=400)
        if mode == "slow":
            self._store(kind, records)
            await asyncio.sleep(self.slow_seconds)
            return web.json_response({"accepted": len(records)})
        if mode == "close":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=200)
        raise AssertionError(f"unknown mode {mode}")

    def _store(self, kind: str, records: list[dict[str, Any]]) -> None:
        self.accepted.extend({**r, "_kind": kind} for r in records)


class FakeCloudThread:
    """The same server on its own loop in a thread (the real daemon is a subprocess: nothing to await)."""

    def __init__(self, port: int, **kw: Any) -> None:
        self.cloud = FakeCloud(port=port, **kw)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCloud:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.cloud.__aenter__(), self._loop).result(10)
        return self.cloud

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.cloud.__aexit__(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
