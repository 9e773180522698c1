"""The worker's order keeper (adapters/queue/ordering.py): each ingest's numbers put a partition's messages
back in the order they were published, drop what was committed already, and give up on a predecessor that
does not come within the timeout (a gap, counted) without losing it if it comes later."""

from __future__ import annotations

from runtime.adapters.queue.ordering import PartitionOrder


def order(committed: dict[str, int] | None = None, capacity: int = 100) -> PartitionOrder[str]:
    return PartitionOrder(committed or {}, gap_timeout=2.0, capacity=capacity)


def test_out_of_order_messages_wait_for_their_predecessors() -> None:
    o = order({"a": 10})
    assert o.offer("a", 13, "a13", 0.0) == ([], [])
    assert o.offer("a", 12, "a12", 0.1) == ([], [])
    assert o.offer("b", 1, "b1", 0.1) == (["b1"], [])  # another ingest's numbers are its own
    assert o.offer("a", 11, "a11", 0.2) == (["a11", "a12", "a13"], [])
    assert o.held == 0 and o.deadline() is None
    assert (o.stats.waited, o.stats.gaps, o.stats.duplicates) == (2, 0, 0)


def test_committed_or_handed_on_numbers_are_duplicates() -> None:
    o = order({"a": 5})
    assert o.offer("a", 5, "a5", 0.0) == ([], ["a5"])  # committed by the previous holder
    assert o.offer("a", 6, "a6", 0.0) == (["a6"], [])
    assert o.offer("a", 6, "a6 again", 0.0) == ([], ["a6 again"])
    assert o.offer("a", 8, "a8", 0.0) == ([], [])
    assert o.offer("a", 8, "a8 again", 0.0) == ([], ["a8 again"])  # the same one waiting twice
    assert o.stats.duplicates == 3


def test_a_predecessor_that_does_not_come_is_a_counted_gap_and_is_still_taken_late() -> None:
    o = order({"a": 1})
    assert o.offer("a", 4, "a4", 10.0) == ([], [])
    assert o.offer("a", 5, "a5", 10.5) == ([], [])
    assert o.deadline() == 12.0
    assert o.expire(11.9) == []
    assert o.exact("a")
    assert o.expire(12.0) == ["a4", "a5"]
    assert o.stats.gaps == 2  # 2 and 3
    assert not o.exact("a")  # from now on a's records do not move its cursor past 1
    assert o.offer("a", 3, "a3", 13.0) == (["a3"], [])  # late: out of order, but not lost
    assert o.offer("a", 3, "a3 again", 13.0) == ([], ["a3 again"])
    assert o.offer("a", 6, "a6", 13.0) == (["a6"], [])
    assert (o.stats.late, o.stats.duplicates) == (1, 1)


def test_a_new_ingest_process_starts_at_one_and_an_unknown_one_waits() -> None:
    o = order({"old": 900})
    assert o.offer("new", 1, "n1", 0.0) == (["n1"], [])
    assert o.offer("other", 3, "o3", 0.0) == ([], [])  # 1 and 2 may still come back
    assert o.expire(2.0) == ["o3"] and o.stats.gaps == 2


def test_a_full_hold_gives_up_at_once() -> None:
    """RabbitMQ sends no more than the prefetch unacked: waiting longer could not bring the predecessor."""
    o = order({}, capacity=3)
    assert o.offer("a", 2, "a2", 0.0) == ([], [])
    assert o.offer("a", 3, "a3", 0.0) == ([], [])
    assert o.offer("a", 4, "a4", 0.0) == (["a2", "a3", "a4"], [])
    assert o.stats.gaps == 1 and o.held == 0
