"""The worker's per-partition order keeper (docs/cluster.md, "Order"), without I/O.

Every ingest process numbers the envelopes it publishes to each partition: ``(source, n)``, n = 1, 2, ...
per (source, partition); ``source`` is new in every ingest process (a restart starts a new sequence at 1).
The worker commits the last number per (partition queue, source) in the same PostgreSQL transaction as the
records (``PostgresStore``), and, per partition it holds, keeps the next number it expects from each source:
the committed one + 1 when it gains the partition, then one more per message it hands on. A message

- whose number is the next expected is handed on (then the held ones that follow it);
- whose number is higher waits (held, unacked) until its predecessors came, or at most ``gap_timeout``
  seconds (or until ``capacity`` messages wait: RabbitMQ sends no more beyond the prefetch): then the missing
  numbers are a **gap** (counted) and what waits is handed on; a skipped number that arrives later is
  handed on **late** (counted, out of order) rather than dropped;
- whose number is lower (and not a skipped one) is a **duplicate**: acked, not processed again.

Handing on in order is enough for "its predecessor is committed": the dispatcher and the store's writer keep
the order they were given, and the store commits a batch's cursor with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_SKIPPED_RANGES = 1_000  # per source: ranges of skipped numbers still accepted late


@dataclass
class OrderStats:
    """A worker's totals over its partitions (``/status``, ``/metrics``)."""

    duplicates: int = 0  # numbers already handed on or committed: acked, not processed again
    gaps: int = 0  # numbers given up on (their successors went on without them)
    late: int = 0  # given-up numbers that came after all (handed on out of order)
    waited: int = 0  # messages that came before a predecessor and waited for it (put back in order)


class PartitionOrder(Generic[T]):
    def __init__(self, committed: dict[str, int], *, gap_timeout: float, capacity: int,
                 stats: OrderStats | None = None) -> None:
        self._next = {source: n + 1 for source, n in committed.items()}
        self._held: dict[str, dict[int, T]] = {}
        self._since: dict[str, float] = {}  # source -> when its oldest held message started waiting
        self._skipped: dict[str, list[tuple[int, int]]] = {}  # source -> [lo, hi) ranges given up on
        self._gap_timeout = gap_timeout
        self._capacity = max(1, capacity)
        self.held = 0
        self._inexact: set[str] = set()  # sources with a gap: their cursor must not move past it
        self.stats = stats if stats is not None else OrderStats()

    def exact(self, source: str) -> bool:
        """False once a gap was given up on for ``source``: its messages must then commit without moving its
        cursor (a skipped number may still come, later or to another holder, and must not look committed)."""
        return source not in self._inexact

    def expected(self, source: str) -> int:
        return self._next.get(source, 1)

    def offer(self, source: str, n: int, item: T, now: float) -> tuple[list[T], list[T]]:
        """(what to hand on now, in order; duplicates to ack without processing)."""
        expected = self._next.get(source, 1)
        if n < expected:
            if self._take_skipped(source, n):
                self.stats.late += 1
                return [item], []
            self.stats.duplicates += 1
            return [], [item]
        if n > expected:
            waiting = self._held.setdefault(source, {})
            if n in waiting:
                self.stats.duplicates += 1
                return [], [item]
            waiting[n] = item
            self.held += 1
            self.stats.waited += 1
            self._since.setdefault(source, now)
            if self.held >= self._capacity:  # nothing more can come: give up on the oldest gaps now
                return self._give_up(now, force=True), []
            return [], []
        self._next[source] = n + 1
        out = [item]
        self._release(source, out, now)
        return out, []

    def take_held(self) -> list[T]:
        """Everything waiting, out of this keeper (the partition is handed to another worker)."""
        out = [item for waiting in self._held.values() for item in waiting.values()]
        self._held.clear()
        self._since.clear()
        self.held = 0
        return out

    def deadline(self) -> float | None:
        """When the oldest wait ends (``expire`` then has something to do); None when nothing waits."""
        return min(self._since.values()) + self._gap_timeout if self._since else None

    def expire(self, now: float) -> list[T]:
        """Hand on what waited ``gap_timeout`` for a predecessor that did not come (a gap)."""
        return self._give_up(now, force=False)

    def _give_up(self, now: float, *, force: bool) -> list[T]:
        out: list[T] = []
        for source in [s for s, since in self._since.items() if force or now - since >= self._gap_timeout]:
            waiting = self._held[source]
            lowest = min(waiting)
            expected = self._next.get(source, 1)
            self.stats.gaps += lowest - expected
            self._inexact.add(source)
            ranges = self._skipped.setdefault(source, [])
            ranges.append((expected, lowest))
            del ranges[:-MAX_SKIPPED_RANGES]
            self._next[source] = lowest
            self._release(source, out, now)
        return out

    def _release(self, source: str, out: list[T], now: float) -> None:
        waiting = self._held.get(source)
        if not waiting:
            return
        n = self._next[source]
        while n in waiting:
            out.append(waiting.pop(n))
            self.held -= 1
            n += 1
        self._next[source] = n
        if waiting:
            self._since[source] = now  # the next one waits for its own predecessor from now
        else:
            del self._held[source]
            self._since.pop(source, None)

    def _take_skipped(self, source: str, n: int) -> bool:
        ranges = self._skipped.get(source)
        if not ranges:
            return False
        for i, (lo, hi) in enumerate(ranges):
            if lo <= n < hi:
                ranges[i : i + 1] = [r for r in ((lo, n), (n + 1, hi)) if r[0] < r[1]]
                return True
        return False
