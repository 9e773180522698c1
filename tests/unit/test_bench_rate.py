"""The benchmark's rates share one start: the publisher's first send (bench/harness.py ``rate``, issue 17)."""

from __future__ import annotations

from bench.harness import rate


def test_a_consumer_whose_first_output_shows_late_is_timed_from_the_first_send_like_the_others() -> None:
    sent_at = 1_000.0
    # both finish 60,000 messages 2 s after the first send; when their first output became visible (at once,
    # or after 0.9 s of reading a backlog) does not change their rate
    assert rate(60_000, sent_at, sent_at + 2.0) == 30_000.0
    assert rate(60_000, sent_at, sent_at + 4.0) == 15_000.0


def test_no_rate_without_messages_or_time() -> None:
    assert rate(0, 1_000.0, 1_002.0) == 0.0
    assert rate(10, 1_000.0, 1_000.0) == 0.0
    assert rate(10, 1_000.0, 999.0) == 0.0
