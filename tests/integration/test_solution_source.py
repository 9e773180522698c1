"""SolutionSource against a real aiohttp server on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from runtime.adapters.solution_source import LAST_GOOD, LAST_GOOD_META, SolutionSource
from runtime.core.backoff import Backoff
from runtime.core.errors import SolutionError, TransientError
from runtime.core.solution import codes

pytestmark = pytest.mark.integration

BODY = b"schemaVersion: 1\nsolution: {key: s, planner: {key: p}}\n"


@dataclass
class Server:
    url: str
    runner: web.AppRunner
    requests: list[web.Request] = field(default_factory=list)
    fail_first: int = 0
    body: bytes = BODY

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state: dict[str, Server] = {}

    async def handler(request: web.Request) -> web.Response:
        srv = state["s"]
        srv.requests.append(request)
        if request.headers.get("Authorization") != "Bearer key-123":
            return web.Response(status=401)
        if len(srv.requests) <= srv.fail_first:
            return web.Response(status=500)
        headers = {"X-Solution-Version": request.query["version"]} if "version" in request.query else {}
        return web.Response(body=srv.body, headers=headers, content_type="application/yaml")

    app = web.Application()
    app.router.add_get("/solution", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv = Server(f"http://127.0.0.1:{port}/solution", runner)
    state["s"] = srv
    yield srv
    await runner.cleanup()


def _source(url: str, data_dir: Path, key: str | None = "key-123", **kw: object) -> SolutionSource:
    return SolutionSource(
        url,
        data_dir,
        access_key=SecretStr(key) if key else None,
        backoff=Backoff(base=0.001, cap=0.005),
        timeout=2.0,
        **kw,  # type: ignore[arg-type]
    )


async def test_bearer_key_is_sent(server: Server, tmp_path: Path) -> None:
    fetched = await _source(server.url, tmp_path).fetch()
    assert fetched.data == BODY and not fetched.from_cache and fetched.origin == server.url
    assert server.requests[0].headers["Authorization"] == "Bearer key-123"


async def test_wrong_key_is_refused_without_retry(server: Server, tmp_path: Path) -> None:
    with pytest.raises(SolutionError) as info:
        await _source(server.url, tmp_path, key="wrong").fetch()
    assert info.value.problems[0].code == codes.READ_FAILED
    assert "HTTP 401" in info.value.problems[0].message
    assert "wrong" not in str(info.value)
    assert len(server.requests) == 1


async def test_retries_after_500s(server: Server, tmp_path: Path) -> None:
    server.fail_first = 2
    fetched = await _source(server.url, tmp_path, attempts=4).fetch()
    assert fetched.data == BODY
    assert len(server.requests) == 3


async def test_version_is_sent_as_query(server: Server, tmp_path: Path) -> None:
    fetched = await _source(server.url, tmp_path, version="1.2").fetch()
    assert server.requests[0].query["version"] == "1.2"
    assert fetched.version == "1.2"


async def test_last_good_fallback(server: Server, tmp_path: Path) -> None:
    source = _source(server.url, tmp_path, attempts=2)
    fetched = await source.fetch()
    await source.remember_good(fetched)  # the caller validated it
    assert (tmp_path / LAST_GOOD).read_bytes() == BODY
    assert (tmp_path / LAST_GOOD_META).exists()
    assert b"key-123" not in (tmp_path / LAST_GOOD_META).read_bytes()
    await server.stop()
    cached = await source.fetch()
    assert cached.from_cache and cached.data == BODY
    assert cached.fetched_at == fetched.fetched_at
    await source.remember_good(cached)  # a no-op for cached copies


async def test_not_remembered_until_validated(server: Server, tmp_path: Path) -> None:
    source = _source(server.url, tmp_path, attempts=1)
    await source.fetch()
    await server.stop()
    with pytest.raises(TransientError, match="no last good copy"):
        await source.fetch()


async def test_corrupt_last_good_is_ignored(server: Server, tmp_path: Path) -> None:
    source = _source(server.url, tmp_path, attempts=1)
    await source.remember_good(await source.fetch())
    (tmp_path / LAST_GOOD).write_bytes(b"tampered")
    await server.stop()
    with pytest.raises(TransientError):
        await source.fetch()


async def test_server_keeps_failing_without_cache(server: Server, tmp_path: Path) -> None:
    server.fail_first = 100
    with pytest.raises(TransientError, match="HTTP 500"):
        await _source(server.url, tmp_path, attempts=3).fetch()
    assert len(server.requests) == 3


async def test_download_size_cap(server: Server, tmp_path: Path) -> None:
    server.body = b"#" * 5000
    with pytest.raises(SolutionError) as info:
        await _source(server.url, tmp_path, max_bytes=1000).fetch()
    assert info.value.problems[0].code == codes.TOO_LARGE


async def test_file_location(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(BODY)
    source = SolutionSource(str(path), tmp_path / "data")
    fetched = await source.fetch()
    assert (fetched.data, fetched.origin, fetched.from_cache) == (BODY, str(path), False)
    await source.remember_good(fetched)
    assert not (tmp_path / "data").exists()  # only downloads are kept


async def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SolutionError) as info:
        await SolutionSource(str(tmp_path / "nope.yaml"), tmp_path).fetch()
    assert info.value.problems[0].code == codes.READ_FAILED
