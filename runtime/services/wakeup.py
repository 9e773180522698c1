"""The wait of a scheduling loop (device watchdogs, workflow timers): until its soonest due time, a poke, or
``max_wait`` at the most, whichever comes first."""

from __future__ import annotations

import asyncio


async def sleep_until_due(wake: asyncio.Event, soonest: float | None, now: float, *,
                          min_wait: float, max_wait: float) -> None:
    """Wait until ``soonest`` (``now`` on the loop's clock), ``wake`` is set, or ``max_wait`` passed."""
    wait = max_wait if soonest is None else min(max_wait, max(min_wait, soonest - now))
    try:
        await asyncio.wait_for(wake.wait(), timeout=wait)
    except TimeoutError:
        pass
