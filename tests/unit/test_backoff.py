from __future__ import annotations

import random

from runtime.core.backoff import Backoff


def test_delays_grow_within_the_ceiling_and_reset() -> None:
    b = Backoff(base=0.5, cap=4.0, _rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        d = b.next_delay()
        assert 0 <= d <= ceiling
    assert b.attempt == len(ceilings)
    b.reset()
    assert b.attempt == 0
    assert b.next_delay() <= 0.5


def test_jitter_spreads_clients_apart() -> None:
    delays = {round(Backoff(base=1.0, cap=60.0, attempt=5).next_delay(), 6) for _ in range(50)}
    assert len(delays) > 40
