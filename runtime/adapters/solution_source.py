"""Where the solution bytes come from: a file, or an http(s) URL with a last-good copy (CONTRACT §7).

URL fetches
- ``Authorization: Bearer <access key>`` (the key is never logged), a per-attempt timeout, retries with
  full-jitter backoff on network errors, timeouts, 408, 429 and 5xx.
- Version pinning: a requested version is sent as the ``version`` query parameter
  (``GET https://host/solution?version=1.2``); the answer's ``X-Solution-Version`` header, if any, is
  reported as the version, else the requested one.
- Bodies larger than the cap are refused (Content-Length first, then while reading).
- A 4xx other than 408/429 is an answer, not an outage: ``SolutionError`` at once, no fallback.
- When the URL stays unreachable, the last good copy (``DATA_DIR/solution.last-good`` plus
  ``solution.last-good.json``) is returned with ``from_cache=True``; with no copy, ``TransientError``.
- A copy becomes "last good" only when the caller says so with ``remember_good`` after validating it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from runtime.core.backoff import Backoff
from runtime.core.errors import Problem, SolutionError, TransientError
from runtime.core.solution import codes
from runtime.core.solution.native import MAX_SOLUTION_BYTES

log = logging.getLogger(__name__)

LAST_GOOD = "solution.last-good"
LAST_GOOD_META = "solution.last-good.json"
VERSION_PARAM = "version"
VERSION_HEADER = "X-Solution-Version"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class FetchedSolution:
    data: bytes
    origin: str  # the path or URL (without credentials) it came from
    from_cache: bool  # True: the URL was unreachable and this is the last good copy
    version: str | None
    fetched_at: float  # epoch seconds of the fetch (of the original fetch, for a cached copy)


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SolutionSource:
    def __init__(
        self,
        location: str,
        data_dir: Path,
        access_key: SecretStr | None = None,
        version: str | None = None,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: Backoff | None = None,
        max_bytes: int = MAX_SOLUTION_BYTES,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.location = location
        self.data_dir = Path(data_dir)
        self.version = version or None
        self._access_key = access_key
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff or Backoff(base=0.5, cap=5.0)
        self._max_bytes = max_bytes
        self._clock = clock
        self._sleep = sleep

    @property
    def is_url(self) -> bool:
        return _is_url(self.location)

    @property
    def origin(self) -> str:
        if not self.is_url:
            return self.location
        return str(URL(self.location).with_user(None).with_password(None))

    @property
    def last_good_path(self) -> Path:
        return self.data_dir / LAST_GOOD

    # ---------------------------------------------------------------- fetch
    async def fetch(self) -> FetchedSolution:
        if not self.is_url:
            return await self._fetch_file()
        last_reason = ""
        self._backoff.reset()
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._fetch_url()
            except _Retry as exc:
                last_reason = str(exc)
                log.warning(
                    "solution_fetch_failed",
                    extra={"attempt": attempt, "reason": last_reason, "url": self.origin},
                )
                if attempt < self._attempts:
                    await self._sleep(self._backoff.next_delay())
        cached = await asyncio.to_thread(self.read_last_good)
        if cached is not None:
            log.warning("solution_from_last_good", extra={"url": self.origin, "reason": last_reason})
            return cached
        raise TransientError(
            f"solution URL {self.origin} unreachable after {self._attempts} attempts ({last_reason}); "
            f"no last good copy in {self.data_dir}"
        )

    async def _fetch_file(self) -> FetchedSolution:
        path = Path(self.location.removeprefix("file://"))

        def read() -> bytes:
            size = path.stat().st_size
            if size > self._max_bytes:
                raise SolutionError(
                    [
                        Problem(
                            "",
                            codes.TOO_LARGE,
                            f"{path} is {size} bytes; the limit is {self._max_bytes} bytes",
                        )
                    ]
                )
            return path.read_bytes()

        try:
            data = await asyncio.to_thread(read)
        except OSError as exc:
            raise SolutionError(
                [
                    Problem(
                        str(path), codes.READ_FAILED, f"cannot read the solution file: {exc.strerror or exc}"
                    )
                ]
            ) from exc
        return FetchedSolution(data, str(path), False, self.version, self._clock())

    async def _fetch_url(self) -> FetchedSolution:
        url = URL(self.location)
        if self.version:
            url = url.update_query({VERSION_PARAM: self.version})
        headers = {"Accept": "application/json, application/yaml, text/yaml, */*"}
        if self._access_key is not None and self._access_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._access_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, headers=headers, allow_redirects=True) as resp,
            ):
                if resp.status in _RETRY_STATUS:
                    raise _Retry(f"HTTP {resp.status}")
                if resp.status >= 400:
                    hint = " (check NUVIOT_ACCESS_KEY)" if resp.status in (401, 403) else ""
                    raise SolutionError(
                        [
                            Problem(
                                self.origin,
                                codes.READ_FAILED,
                                f"the solution URL answered HTTP {resp.status}{hint}",
                            )
                        ]
                    )
                if resp.content_length is not None and resp.content_length > self._max_bytes:
                    raise self._too_large(resp.content_length)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise self._too_large(len(body))
                version = resp.headers.get(VERSION_HEADER) or self.version
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        return FetchedSolution(bytes(body), self.origin, False, version, self._clock())

    def _too_large(self, size: int) -> SolutionError:
        return SolutionError(
            [
                Problem(
                    self.origin,
                    codes.TOO_LARGE,
                    f"the solution is over {self._max_bytes} bytes ({size} so far)",
                )
            ]
        )

    # ---------------------------------------------------------------- last good copy
    async def remember_good(self, fetched: FetchedSolution) -> None:
        """Keep a validated download as the fallback copy (no-op for files and for copies from the cache)."""
        if fetched.from_cache or not _is_url(fetched.origin):
            return
        meta = {
            "origin": fetched.origin,
            "version": fetched.version,
            "fetchedAt": fetched.fetched_at,
            "size": len(fetched.data),
            "sha256": hashlib.sha256(fetched.data).hexdigest(),
        }

        def write() -> None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.data_dir / LAST_GOOD, fetched.data)
            _write_atomic(self.data_dir / LAST_GOOD_META, json.dumps(meta, indent=2).encode())

        await asyncio.to_thread(write)

    def read_last_good(self) -> FetchedSolution | None:
        """The saved copy, if present and intact (size and sha256 match its metadata)."""
        try:
            data = (self.data_dir / LAST_GOOD).read_bytes()
            meta = json.loads((self.data_dir / LAST_GOOD_META).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
            log.warning("solution_last_good_corrupt", extra={"path": str(self.data_dir / LAST_GOOD)})
            return None
        version = meta.get("version")
        fetched_at = meta.get("fetchedAt")
        return FetchedSolution(
            data,
            str(meta.get("origin") or self.origin),
            True,
            version if isinstance(version, str) else None,
            float(fetched_at) if isinstance(fetched_at, int | float) else 0.0,
        )
