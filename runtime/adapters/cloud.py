"""Cloud working storage (CONTRACT §8) and NuvIoT-style status reporting (reference §1.5).

Producers never block and never await: ``offer`` encodes one record as JSON and puts it on a bounded
in-memory queue (full: counted in ``dropped``). The *spooler* task moves that queue into the SQLite
outbox in batches (``store.outbox_put``; rows over ``outbox_max_rows`` are refused by the store and
counted in ``store.outbox_refused``). The *sender* task peeks at most ``batch_size`` rows, groups them
by kind, POSTs each group to ``{url}/api/runtime/{instanceId}/{kind}`` as one JSON array, and acks the
rows only after a 2xx whose body is ``{"accepted": <count>}``. The wire format is in ``docs/cloud.md``.

- 5xx, 408, 425, 429, 401, 403, timeouts, refused/closed connections and garbage answers: the rows stay
  in the outbox; the sender waits ``max(Retry-After, full-jitter backoff)`` and tries again.
- Any other 4xx: the group is *quarantined*: appended to ``DATA_DIR/cloud-quarantine.jsonl`` (bounded,
  rotated once), acked, counted and logged; it is never retried on its own.
- POSTs are paced to at most ``max_batches_per_second``, so the replay after an outage cannot flood the
  cloud; memory stays bounded by the queue size and one peeked batch.

Delivery is at least once: a POST that the cloud stored but whose answer was lost (or a process killed
between the 2xx and the ack) is sent again. Every record carries an ``id`` for the cloud to de-duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from runtime import __version__
from runtime.adapters.storage.rows import redact_headers
from runtime.core.backoff import Backoff
from runtime.core.errors import Problem, SolutionError
from runtime.core.health import DETAILS_MAX, HealthEvent
from runtime.core.lifecycle import InstanceState
from runtime.core.messages import MessageRecord, PemStatus
from runtime.core.ports import StateChange
from runtime.core.solution.enums import WorkingStorage
from runtime.core.timefmt import iso

log = structlog.get_logger(__name__)

KINDS = ("log", "event", "message", "status")
RETRYABLE_4XX = frozenset({401, 403, 408, 425, 429})  # auth may be fixed; the rest are "try later"
DEPLOYED_STATES = frozenset({InstanceState.STARTING, InstanceState.RUNNING, InstanceState.PAUSING,
                             InstanceState.PAUSED})
MAX_ANSWER_BYTES = 64 * 1024
MAX_RETRY_AFTER = 300.0
QUARANTINE_FILE = "cloud-quarantine.jsonl"
# never mirror these log events: they describe the outbox itself and would feed back into it
_SELF_EVENTS = frozenset({"outbox_full"})


class Outbox(Protocol):
    async def outbox_put(self, kind: str, payloads: list[bytes]) -> int: ...
    async def outbox_peek(self, limit: int) -> list[tuple[int, str, bytes]]: ...
    async def outbox_ack(self, ids: list[int]) -> None: ...
    async def outbox_depth(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CloudConfig:
    url: str
    access_key: str | None = None
    batch_size: int = 200
    max_batches_per_second: float = 5.0
    timeout: float = 10.0
    retry_base: float = 0.5
    retry_max: float = 30.0
    queue_size: int = 10_000
    quarantine_max_bytes: int = 50 * 1024 * 1024


@dataclass(slots=True)
class _Outcome:
    ok: bool = False
    quarantine: bool = False
    retry_after: float | None = None
    error: str | None = None


@dataclass(slots=True)
class _Pending:
    kind: str
    payload: bytes
    on_commit: Callable[[], None] | None = None


@dataclass
class CloudStats:
    delivered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    dropped: int = 0  # the in-memory queue was full (or the sink closed)
    quarantined: int = 0
    failures: int = 0  # POSTs that will be retried
    posts: int = 0


class CloudSink:
    """``async with CloudSink(store, config, ...) as sink``: spooler + sender run until the block ends."""

    def __init__(self, store: Outbox, config: CloudConfig, *, instance_id: Callable[[], str],
                 mirror: Callable[[], bool] = lambda: True, data_dir: Path | None = None) -> None:
        self._store = store
        self.config = config
        self._instance_id = instance_id
        self._mirror = mirror
        self._quarantine_path = (data_dir / QUARANTINE_FILE) if data_dir is not None else None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=config.queue_size)
        self._wake = asyncio.Event()  # new rows in the outbox
        self._idle = asyncio.Event()  # the sender found the outbox empty
        self._backoff = Backoff(base=config.retry_base, cap=config.retry_max)
        self._next_post_at = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._open = False
        self.stats = CloudStats()
        self.depth = 0
        self.last_delivery_at: float | None = None
        self.last_error: str | None = None
        self.quarantined_before = 0  # lines already in the quarantine file at start

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> CloudSink:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout))
        self.depth = await self._store.outbox_depth()
        if self._quarantine_path is not None:
            self.quarantined_before = await asyncio.to_thread(_count_lines, self._quarantine_path)
        self._open = True
        self._tasks = [asyncio.create_task(self._spool(), name="cloud:spooler"),
                       asyncio.create_task(self._send(), name="cloud:sender")]
        log.info("cloud_sink_started", url=self.config.url, outbox_depth=self.depth,
                 batch_size=self.config.batch_size, max_batches_per_second=self.config.max_batches_per_second)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, grace: float = 2.0) -> None:
        """Spool what is queued into the outbox, give a healthy sender ``grace`` seconds to empty it, stop.

        Rows not yet acknowledged stay in the outbox for the next start (at least once)."""
        if not self._open:
            return
        self._open = False
        spooler, sender = self._tasks
        await self._queue.put(_Pending("", b""))  # sentinel: the spooler drains up to it, then ends
        await spooler
        if self._backoff.attempt == 0 and self.depth:
            self._idle.clear()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        log.info("cloud_sink_stopped", outbox_depth=self.depth, delivered=self.stats.delivered,
                 dropped=self.stats.dropped, quarantined=self.stats.quarantined)

    # ------------------------------------------------------------------ producers (sync, never block)
    def mirroring(self) -> bool:
        """True when logs, events and message records go to the cloud (effective working storage)."""
        return self._mirror()

    def offer(self, kind: str, record: dict[str, Any], on_commit: Callable[[], None] | None = None) -> bool:
        record.setdefault("id", uuid.uuid4().hex)
        try:
            if not self._open:
                raise asyncio.QueueFull
            self._queue.put_nowait(_Pending(kind, orjson.dumps(record, default=str), on_commit))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            if on_commit is not None:
                on_commit()
            return False
        return True

    def record_log(self, at: float, level: str, event: str, fields: dict[str, Any]) -> None:
        if not self.mirroring() or event in _SELF_EVENTS or fields.get("logger") == __name__:
            return
        self.offer("log", {"at": iso(at), "level": level, "event": event, "fields": fields})

    def record_event(self, change: StateChange) -> None:
        if self.mirroring():
            self.offer("event", {"at": iso(change.at), "from": change.previous.value if change.previous else "",
                                 "to": change.state.value, "reason": change.reason})

    def record_device_error(self, event: HealthEvent) -> None:
        """A device error raised or cleared: an event row as ``GET /events`` shows it (kind ``deviceError``)."""
        if self.mirroring():
            self.offer("event", {"at": iso(event.at), "kind": "deviceError", "deviceId": event.device_id,
                                 "code": event.code, "action": event.action, "source": event.source,
                                 "reason": event.details[:DETAILS_MAX]})

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        self.offer("message", message_json(rec), on_commit)

    def report_status(self, change: StateChange, solution_version: str | None) -> None:
        """NuvIoT's UpdateInstanceStatusAsync(status, isDeployed, version), through the outbox."""
        self.offer("status", {"instanceId": self._instance_id(), "state": change.state.value,
                              "isDeployed": change.state in DEPLOYED_STATES, "version": __version__,
                              "solutionVersion": solution_version, "at": iso(change.at), "reason": change.reason})

    def status(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "lastDeliveryAt": iso(self.last_delivery_at),
            "lastError": self.last_error,
            "quarantined": self.quarantined_before + self.stats.quarantined,
            "refused": self.stats.dropped,
            "delivered": dict(self.stats.delivered),
            "retrying": self._backoff.attempt > 0,
        }

    # ------------------------------------------------------------------ spooler: memory -> outbox
    async def _spool(self) -> None:
        done = False
        while not done:
            batch = [await self._queue.get()]
            while len(batch) < self.config.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if not batch[-1].kind:
                batch.pop()
                done = True
            for kind, items in _runs(batch):
                accepted = await self._put(kind, [p.payload for p in items])
                for p in items if accepted is not None else ():
                    # accepted, or refused by the outbox bound (counted by the store; the local copy is
                    # committed): never hold the sender. A failed write (disk full) is never acknowledged.
                    if p.on_commit is not None:
                        try:
                            p.on_commit()
                        except Exception:
                            log.exception("cloud_commit_callback_failed", kind=kind)
                self.depth += accepted or 0
            if batch:
                self._wake.set()

    async def _put(self, kind: str, payloads: list[bytes]) -> int | None:
        """Rows accepted by the outbox; None when the store could not write them (counted, not acknowledged)."""
        for attempt in range(3):
            try:
                return await self._store.outbox_put(kind, payloads)
            except Exception as exc:  # noqa: BLE001 - TransientError (DB locked) or a closed store
                log.warning("cloud_spool_failed", kind=kind, rows=len(payloads), attempt=attempt + 1,
                            error=str(exc))
                await asyncio.sleep(0.2 * (attempt + 1))
        self.stats.dropped += len(payloads)
        return None

    # ------------------------------------------------------------------ sender: outbox -> cloud
    async def _send(self) -> None:
        while True:
            try:
                await self._send_once()
            except Exception as exc:  # the store failed under us: keep the rows, try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("cloud_sender_failed")
                await asyncio.sleep(self._backoff.next_delay())

    async def _send_once(self) -> None:
        self._wake.clear()
        rows = await self._store.outbox_peek(self.config.batch_size)
        if not rows:
            self.depth = 0
            self._idle.set()
            await self._wake.wait()
            return
        delay = None
        for kind, group in _runs(rows, key=lambda r: r[1]):
            outcome = await self._post(kind, [r[2] for r in group])
            ids = [r[0] for r in group]
            if outcome.ok:
                await self._store.outbox_ack(ids)
                self.stats.delivered[kind] = self.stats.delivered.get(kind, 0) + len(ids)
                self.last_delivery_at = time.time()
                self._backoff.reset()
            elif outcome.quarantine:
                await self._quarantine(kind, group, outcome.error)
                await self._store.outbox_ack(ids)
            else:
                self.stats.failures += 1
                self.last_error = outcome.error
                delay = max(outcome.retry_after or 0.0, self._backoff.next_delay())
                log.warning("cloud_delivery_failed", kind=kind, rows=len(ids), error=outcome.error,
                            retry_in=round(delay, 2))
                break
        self.depth = await self._store.outbox_depth()
        if delay is not None:
            await asyncio.sleep(delay)

    async def _pace(self) -> None:
        now = time.monotonic()
        if self._next_post_at > now:
            await asyncio.sleep(self._next_post_at - now)
            now = time.monotonic()
        self._next_post_at = max(now, self._next_post_at) + 1.0 / self.config.max_batches_per_second

    async def _post(self, kind: str, payloads: list[bytes]) -> _Outcome:
        assert self._session is not None
        await self._pace()
        self.stats.posts += 1
        url = f"{self.config.url.rstrip('/')}/api/runtime/{quote(self._instance_id(), safe='')}/{kind}"
        headers = {"Content-Type": "application/json", "X-Nuviot-Instanceid": self._instance_id(),
                   "X-Nuviot-Runtime-Request-Id": uuid.uuid4().hex, "X-Nuviot-Version": __version__}
        if self.config.access_key:
            headers["Authorization"] = f"Bearer {self.config.access_key}"
        body = b"[" + b",".join(payloads) + b"]"
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                answer = await resp.content.read(MAX_ANSWER_BYTES)
                status, retry_after = resp.status, _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Outcome(error=f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            try:
                accepted = orjson.loads(answer).get("accepted")
            except (orjson.JSONDecodeError, AttributeError):
                accepted = None
            if accepted == len(payloads) and type(accepted) is int:
                return _Outcome(ok=True)
            return _Outcome(error=f"HTTP {status}: unexpected answer {answer[:80]!r}")
        error = f"HTTP {status}: {answer[:200].decode(errors='replace')}"
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            return _Outcome(quarantine=True, error=error)
        return _Outcome(retry_after=retry_after, error=error)

    async def _quarantine(self, kind: str, group: list[tuple[int, str, bytes]], error: str | None) -> None:
        self.stats.quarantined += len(group)
        self.last_error = error
        log.error("cloud_batch_quarantined", kind=kind, rows=len(group), error=error,
                  file=str(self._quarantine_path) if self._quarantine_path else None)
        if self._quarantine_path is None:
            return
        at = iso(time.time())
        lines = b"".join(
            orjson.dumps({"quarantinedAt": at, "kind": kind, "error": error, "record": orjson.Fragment(p)}) + b"\n"
            for _, _, p in group)
        await asyncio.to_thread(_append, self._quarantine_path, lines, self.config.quarantine_max_bytes)


def message_json(rec: MessageRecord) -> dict[str, Any]:
    """A message record as the admin API shows it, plus what a dead letter keeps."""
    out: dict[str, Any] = {
        "id": rec.id, "receivedAt": iso(rec.received_at), "listener": rec.listener, "deviceId": rec.device_id,
        "messageId": rec.message_id, "status": rec.status.value, "stage": rec.stage, "error": rec.error,
        "processingMs": rec.processing_ms, "kind": rec.kind.value,
    }
    if rec.status is PemStatus.FAILED:
        out.update(topic=rec.topic, path=rec.path, headers=redact_headers(rec.headers or {}),  # stored in the outbox, sent on
                   payload=base64.b64encode(rec.payload).decode() if rec.payload is not None else None)
    if rec.detail:
        out["detail"] = rec.detail
    return out


class LocalRecords(Protocol):
    """What ``CloudRecords`` needs of the local store (``SqliteStore``)."""

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None: ...

    async def writable(self) -> None: ...


class CloudRecords:
    """The dispatcher's record sink when a cloud URL is set: the local store, and the cloud outbox when mirroring.

    In cloud mode the local SQLite copy is kept (bounded by the store's retention) so that the admin API's
    ``/messages`` and ``/deadletters`` keep working; the message's acknowledgement (e.g. the MQTT PUBACK)
    then waits for the outbox commit, so an acknowledged message is never lost for the cloud. It is a
    record sink and nothing else (``services.dispatcher.RecordSink``): the store's other parts are the
    store's, passed where they are needed."""

    def __init__(self, store: LocalRecords, sink: CloudSink) -> None:
        self._store = store
        self._sink = sink

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        if self._sink.mirroring():
            self._store.record_message(rec)
            self._sink.record_message(rec, on_commit)
        else:
            self._store.record_message(rec, on_commit)

    async def writable(self) -> None:
        """Back-pressure from the local writer (the outbox is written through awaited operations on it)."""
        await self._store.writable()


class CloudCheckedLoader:
    """A solution whose ``instance.workingStorage`` is cloud needs a cloud URL: FailedToInitialize otherwise."""

    def __init__(self, inner: Any, settings: Any) -> None:
        self._inner = inner
        self._settings = settings

    async def load(self) -> Any:
        loaded = await self._inner.load()
        if self._settings.effective_working_storage(loaded.doc) is WorkingStorage.CLOUD and not self._settings.cloud_url:
            raise SolutionError([Problem("instance.workingStorage", "cloud_url_required",
                                         "working storage 'cloud' needs NUVIOT_CLOUD_URL (--cloud-url)")])
        return loaded

    async def accepted(self, loaded: Any) -> None:
        await self._inner.accepted(loaded)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _runs(items: list[Any], key: Callable[[Any], str] = lambda p: p.kind) -> list[tuple[str, list[Any]]]:
    """Group by kind, keeping the first-seen order of kinds and the order within each kind."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.items())


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _append(path: Path, data: bytes, max_bytes: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size + len(data) > max_bytes:
            path.replace(path.with_suffix(path.suffix + ".1"))  # keep one older file, drop the one before
    with path.open("ab") as fh:
        fh.write(data)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0
