"""Helpers for listener tests: read what reached an Intake, or wait for a status to change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

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


async def nothing_arrives(intake: Intake, within: float = 0.7) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(within):
            await intake.take(1)


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
