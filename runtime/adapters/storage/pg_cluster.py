"""The replicas of one instance find and steer each other through the shared PostgreSQL (docs/cluster.md).

- **Members**: every replica upserts its row in ``cluster_members`` (role, state, partitions, admin port)
  every ``beat`` seconds; ``/status`` lists the rows seen within ``stale_after`` seconds.
- **Control**: a verb run on any replica is written to ``cluster_control`` (the instance's desired verb,
  for replicas that start later) and announced with ``NOTIFY nuviot_control``; every other replica of the
  instance runs it (``on_verb``). A replica that starts while the instance is paused or stopped follows.
- **Devices**: ``NOTIFY nuviot_devices`` (sent by ``PostgresStore`` on provisioning) reaches ``on_device``.

One dedicated connection LISTENs; when it is lost, it reconnects with backoff and re-reads the desired verb
(a NOTIFY sent meanwhile is not replayed by PostgreSQL, the row is).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import structlog

from runtime.adapters.storage.postgres import DEVICE_CHANNEL
from runtime.core.lifecycle import Verb

log = structlog.get_logger(__name__)

CONTROL_CHANNEL = "nuviot_control"
SETTLED = frozenset({"Running", "Paused", "Stopped"})  # where a replica follows the instance's desired verb
UPSERT_MEMBER = (
    "INSERT INTO cluster_members (member_id, instance_id, role, state, host, admin_port, partitions, seen_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (member_id) DO UPDATE SET state = excluded.state, "
    "admin_port = excluded.admin_port, partitions = excluded.partitions, seen_at = excluded.seen_at"
)


class PgCluster:
    def __init__(
        self,
        url: str,
        pool: asyncpg.Pool,
        *,
        instance_id: Callable[[], str],
        member_id: str,
        role: str,
        host: str,
        admin_port: Callable[[], int | None],
        state: Callable[[], str],
        partitions: Callable[[], list[int]],
        on_verb: Callable[[Verb, str], Awaitable[None]],
        on_device: Callable[[str], Awaitable[None]],
        beat: float = 2.0,
        stale_after: float = 10.0,
    ) -> None:
        self._url = url
        self._pool = pool
        self._instance = instance_id
        self.member_id = member_id
        self.role = role
        self._host = host
        self._admin_port = admin_port
        self._state = state
        self._partitions = partitions
        self._on_verb = on_verb
        self._on_device = on_device
        self._beat = beat
        self._stale_after = stale_after
        self._members: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_at = time.time()
        self._followed_at = 0.0  # the newest desired verb seen; one set before our start: pause/stop only
        self.connected = False
        self._poke = asyncio.Event()
        self._closed = False

    def poke(self) -> None:
        """Publish this replica's row now (its state changed), not at the next beat."""
        self._poke.set()

    @property
    def members(self) -> list[dict[str, Any]]:
        return list(self._members)

    async def broadcast(self, verb: Verb) -> None:
        payload = orjson.dumps({"instance": self._instance(), "verb": verb.value, "origin": self.member_id}).decode()
        now = time.time()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO cluster_control (instance_id, verb, origin, at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (instance_id) DO UPDATE SET verb = excluded.verb, origin = excluded.origin, "
                "at = excluded.at", self._instance(), verb.value, self.member_id, now)
            await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload)
        self._followed_at = now

    def close(self) -> None:
        """End ``run`` at its next step (a cancellation inside asyncpg may be turned into an error)."""
        self._closed = True
        self._poke.set()

    async def run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                conn: asyncpg.Connection = await asyncpg.connect(self._url, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                self.connected = False
                attempt += 1
                log.warning("cluster_listen_connect_failed", error=repr(exc))
                await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2 ** min(attempt, 5))))
                continue
            try:
                await conn.add_listener(CONTROL_CHANNEL, self._notified)
                await conn.add_listener(DEVICE_CHANNEL, self._notified)
                self.connected = True
                attempt = 0
                while not conn.is_closed() and not self._closed:
                    self._poke.clear()
                    await self._heartbeat()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._beat):
                            await self._poke.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, TimeoutError) as exc:
                log.warning("cluster_listen_lost", error=repr(exc))
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)
            if self._closed:
                return
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2 ** min(attempt, 5))))

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self._pool.execute("DELETE FROM cluster_members WHERE member_id = $1", self.member_id)

    async def _heartbeat(self) -> None:
        now = time.time()
        instance = self._instance()
        await self._pool.execute(UPSERT_MEMBER, self.member_id, instance, self.role, self._state(), self._host,
                                 self._admin_port(), orjson.dumps(self._partitions()).decode(), now)
        rows = await self._pool.fetch(
            "SELECT member_id, role, state, host, admin_port, partitions, seen_at FROM cluster_members "
            "WHERE instance_id = $1 AND seen_at > $2 ORDER BY role, member_id", instance, now - self._stale_after)
        self._members = [{"memberId": r[0], "role": r[1], "state": r[2], "host": r[3], "adminPort": r[4],
                          "partitions": orjson.loads(r[5]), "seenAt": r[6], "self": r[0] == self.member_id}
                         for r in rows]
        desired = await self._pool.fetchrow("SELECT verb, origin, at FROM cluster_control WHERE instance_id = $1",
                                            instance)
        if (desired is not None and desired[2] > self._followed_at and desired[1] != self.member_id
                and self._state() in SETTLED):
            self._followed_at = desired[2]
            verb = Verb(desired[0])
            if desired[2] > self._started_at or verb in (Verb.PAUSE, Verb.STOP):
                self._spawn(self._on_verb(verb, desired[1]))

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == DEVICE_CHANNEL:
            self._spawn(self._on_device(payload))
            return
        try:
            doc = orjson.loads(payload)
            verb = Verb(doc["verb"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            log.warning("cluster_bad_notification", payload=payload[:200])
            return
        if doc.get("instance") != self._instance() or doc.get("origin") == self.member_id:
            return
        self._followed_at = time.time()
        self._spawn(self._on_verb(verb, str(doc.get("origin"))))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:  # noqa: BLE001 - a failed follow-up is logged; the channel goes on
                log.error("cluster_follow_failed", error=repr(exc))

        task = asyncio.create_task(guarded(), name="cluster:follow")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
