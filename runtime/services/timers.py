"""Workflow timers on the data plane: a scheduler over the clock that fires each device's timers when due.

When a timer fires (``core/timers.py``) for a device, the dispatcher runs the timer's mappings in the workflow as
a message's would and records it (listener ``timer``). The next due time of each timer is kept per device in its
property bag and stored with the device state, so a restart keeps the schedule. The loop sleeps until the earliest
due time of any device (at most ``MAX_WAIT``: a device provisioned meanwhile is scheduled then), or until ``poke``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo

import structlog

from runtime.core.devices import Device
from runtime.core.solution.enums import PipelineModuleType
from runtime.core.solution.model import Route, SolutionDocument, Timer
from runtime.core.timers import TIMERS_DUE, due_times, next_fire, timer_id
from runtime.services.devices import DeviceRegistry
from runtime.services.dispatcher import Dispatcher
from runtime.services.wakeup import sleep_until_due

log = structlog.get_logger(__name__)

MAX_WAIT = 5.0  # the loop looks again at least this often (a newly provisioned device gets its schedule)
MIN_WAIT = 0.01
MAX_FIRINGS_PER_LOOK = 1000  # a look fires at most this many; the rest follow at once (the API keeps answering)


@dataclass(frozen=True, slots=True)
class TimerPlan:
    route: Route
    workflow: str
    timer: Timer

    @property
    def id(self) -> str:
        return timer_id(self.workflow, self.timer.key)


def timer_plans(doc: SolutionDocument) -> dict[str, tuple[TimerPlan, ...]]:
    """Device configuration key -> the timers of the workflows its routes run (each workflow once)."""
    out: dict[str, tuple[TimerPlan, ...]] = {}
    for config in doc.solution.device_configurations:
        plans: dict[str, TimerPlan] = {}
        for route in config.routes:
            for step in route.steps:
                wf = doc.workflow_by_key.get(step.module) if step.type is PipelineModuleType.WORKFLOW else None
                if wf is None:
                    continue
                for t in wf.timers:
                    plans.setdefault(timer_id(wf.key, t.key), TimerPlan(route, wf.key, t))
        if plans:
            out[config.key] = tuple(plans.values())
    return out


class TimerScheduler:
    def __init__(self, doc: SolutionDocument, devices: DeviceRegistry, dispatcher: Dispatcher, *,
                 clock: Callable[[], float] = time.time, zone: tzinfo = UTC) -> None:
        self._devices = devices
        self._dispatcher = dispatcher
        self._clock = clock
        self._zone = zone  # the instance's TimeZone: times of day and weekdays are read in it
        self._plans = timer_plans(doc)
        self._wake = asyncio.Event()

    @property
    def scheduling(self) -> bool:
        return bool(self._plans)

    def poke(self) -> None:
        self._wake.set()

    def _due(self, device: Device, plans: tuple[TimerPlan, ...], now: float) -> dict[str, float]:
        """The device's due times for its timers; a timer it has none for yet is scheduled from ``now``."""
        stored = due_times(device.property_bag)
        due: dict[str, float] = {}
        for p in plans:
            at = stored.get(p.id)
            if isinstance(at, (int, float)):
                due[p.id] = float(at)
            else:
                first = next_fire(p.timer, now, self._zone)
                if first is not None:
                    due[p.id] = first
        return due

    def check(self, now: float | None = None) -> tuple[int, float | None]:
        """Fire what is due by ``now``; how many fired, and when the next one is due."""
        now = self._clock() if now is None else now
        fired = 0
        soonest: float | None = None
        for device in self._devices.all():
            plans = self._plans.get(device.device_configuration)
            if plans is None:
                continue
            due = self._due(device, plans, now)
            changed = due != due_times(device.property_bag)
            for p in plans:
                at = due.get(p.id)
                if at is None or at > now or fired >= MAX_FIRINGS_PER_LOOK:
                    continue
                after = next_fire(p.timer, now, self._zone)  # a firing missed while down happens once, then on schedule
                if after is None:
                    due.pop(p.id, None)
                else:
                    due[p.id] = after
                fired += 1
                changed = False  # the dispatcher stores the device with ``due``
                try:
                    self._dispatcher.run_timer(p.route, p.workflow, p.timer.key, device.device_id, now, dict(due))
                except Exception:
                    log.exception("timer_crashed", timer=p.id, device_id=device.device_id)
                current = self._devices.get(device.device_id)
                if current is not None:
                    device = current
            if changed:  # first scheduled: store the due times so a restart keeps them
                stored = device.copy()
                stored.property_bag = {**device.property_bag, TIMERS_DUE: due}
                self._devices.state_changed(stored)
            for at in due.values():
                if soonest is None or at < soonest:
                    soonest = at
        if fired:
            log.info("timers_fired", count=fired)
        return fired, soonest

    async def run(self) -> None:
        """The scheduler loop, until cancelled (the data plane owns the task)."""
        if not self._plans:
            return
        log.info("timers_started", configurations=sorted(self._plans))
        while True:
            self._wake.clear()
            fired, soonest = self.check()
            if fired >= MAX_FIRINGS_PER_LOOK:
                await asyncio.sleep(0)
                continue
            await sleep_until_due(self._wake, soonest, self._clock(), min_wait=MIN_WAIT, max_wait=MAX_WAIT)
