"""Helpers for listener tests: read what reached an Intake, or wait for a status to change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from runtime.core.messages import InboundMessage
from runtime.services.dataplane import Intake, Listener

L = TypeVar("L", bound=Listener)


async def take(intake: Intake, n: int, within: float = 15.0) -> list[InboundMessage]:
    """The next ``n`` messages the listener offered, waiting at most ``within`` seconds."""
    got: list[InboundMessage] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.extend(await intake.take(n - len(got)))
    return got


async def only_the_marker_arrives(intake: Intake, send: Callable[[bytes], Awaitable[object]],
                                  within: float = 15.0) -> None:
    """"Nothing (else) arrived", said positively: send a marker after whatever must not arrive, wait for the
    marker, and fail on anything that reaches the intake before it (the broker keeps the order)."""
    marker = b"marker-" + uuid.uuid4().hex.encode()
    await send(marker)
    (got,) = await take(intake, 1, within)
    if got.ack is not None:
        got.ack()
    assert got.payload == marker, f"{got.payload!r} (topic {got.topic}) arrived before the marker"


async def until(pred: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for a condition on status counters (plain attributes: nothing to await on)."""
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110 - polling a status dict is what an operator does too
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(listener: L, intake: Intake) -> AsyncIterator[L]:
    """A data-plane listener started on ``intake`` for the block, stopped after it."""
    await listener.start(intake)
    try:
        yield listener
    finally:
        await listener.stop()
