"""Device health on the data plane: the watchdogs' clock, and what the health events are counted and logged as.

The decisions are ``core/health.py``'s (pure); this service holds the per-configuration watch plans, is told of each
message of a watched device (``seen``: one dict lookup for a device whose configuration watches nothing), and
runs the watchdog loop: it sleeps until the earliest deadline of any watched device (or until told a device
changed), raises what fell due through the device registry (stored with the device state), and goes on. A
restart loses nothing: the deadlines come from ``last_seen`` and ``_system.messagesAt``, stored with the device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from runtime.core.devices import Device
from runtime.core.health import (
    DETAILS_MAX,
    RAISED,
    HealthEvent,
    WatchPlan,
    current_errors,
    expired,
    message_seen,
    next_due,
    watch_plan,
)
from runtime.core.solution.model import SolutionDocument
from runtime.services.devices import DeviceRegistry
from runtime.services.metrics import Counters
from runtime.services.wakeup import sleep_until_due

log = structlog.get_logger(__name__)

MAX_WAIT = 60.0  # the loop looks again at least this often (a device provisioned through the admin API)
MIN_WAIT = 0.05


def plans_for(doc: SolutionDocument) -> dict[str, WatchPlan]:
    """Device configuration key -> its watch plan, for the configurations that watch something."""
    out: dict[str, WatchPlan] = {}
    for config in doc.solution.device_configurations:
        plan = watch_plan(config, doc.messages)
        if plan is not None:
            out[config.key] = plan
    return out


class HealthMonitor:
    def __init__(
        self,
        doc: SolutionDocument,
        devices: DeviceRegistry,
        counters: Counters,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._devices = devices
        self._counters = counters
        self._clock = clock
        self._plans = plans_for(doc)
        self.started = clock()
        self._wake = asyncio.Event()
        self._tracked: set[str] = set()  # devices the loop's last look had a deadline for

    @property
    def watching(self) -> bool:
        return bool(self._plans)

    @property
    def watched_configurations(self) -> frozenset[str]:
        """The device configurations with a watchdog: their messages must pass ``seen`` (compiled routes do not)."""
        return frozenset(self._plans)

    def seen(self, device: Device, message_key: str | None, now: float) -> list[HealthEvent]:
        """A message of ``device`` (the working copy about to be stored) arrived; the watchdogs it satisfies clear."""
        plan = self._plans.get(device.device_configuration)
        if plan is None:
            return []
        if device.device_id not in self._tracked:  # a device the loop has no deadline for yet: look again
            self._wake.set()
        return message_seen(plan, device, message_key, now)  # a known device's deadlines only move later

    def check(self, now: float | None = None) -> tuple[list[HealthEvent], float | None]:
        """Raise every watchdog that fell due by ``now``; the events, and when the next one falls due."""
        now = self._clock() if now is None else now
        events: list[HealthEvent] = []
        soonest: float | None = None
        tracked: set[str] = set()
        for device in self._devices.all():
            plan = self._plans.get(device.device_configuration)
            if plan is None:
                continue
            found = expired(plan, device, now, self.started)
            if found is not None:
                device, raised = found
                self._devices.state_changed(device)
                events += raised
            due = next_due(plan, device, self.started)
            if due is not None:
                tracked.add(device.device_id)
                if soonest is None or due < soonest:
                    soonest = due
        self._tracked = tracked
        report_health(self._counters, events)
        return events, soonest

    def poke(self) -> None:
        """Look again now (a device was provisioned or changed outside the pipeline)."""
        self._wake.set()

    async def run(self) -> None:
        """The watchdog loop, until cancelled (the data plane owns the task)."""
        if not self._plans:
            return
        log.info("watchdogs_started", configurations=sorted(self._plans))
        while True:
            self._wake.clear()
            _events, soonest = self.check()
            await sleep_until_due(self._wake, soonest, self._clock(), min_wait=MIN_WAIT, max_wait=MAX_WAIT)


def report_health(counters: Counters, events: Iterable[HealthEvent]) -> None:
    """Count and log health events (``device_error_raised`` / ``device_error_cleared``), and hand each to the
    counters' health sinks (the ``/events`` rows, the cloud mirror: wired by the composition root)."""
    for e in events:
        if e.action == RAISED:
            counters.device_errors_raised[e.source] += 1
            log.warning("device_error_raised", device_id=e.device_id, code=e.code, source=e.source,
                        details=e.details[:DETAILS_MAX])
        else:
            counters.device_errors_cleared[e.source] += 1
            log.info("device_error_cleared", device_id=e.device_id, code=e.code, source=e.source,
                     details=e.details[:DETAILS_MAX])
        for sink in counters.health_sinks:
            sink(e)


def active_error_count(devices: Iterable[Device]) -> int:
    """Current errors over all devices (the ``nuviot_device_errors_active`` gauge)."""
    return sum(len(current_errors(d.property_bag)) for d in devices)


def errors_view(device: Device) -> dict[str, Any]:
    return current_errors(device.property_bag)
