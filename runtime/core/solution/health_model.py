"""Device-health models of a device configuration (LagoVista/Deployments ``src/LagoVista.IoT.Deployment.Models``:
``DeviceErrorCode.cs``, ``MessageWatchDog.cs``); re-exported by ``model``. What is not read here (notification,
distribution lists, service tickets, exclusions) is a PYRT2090 warning at its path like any other property."""

from __future__ import annotations

from enum import StrEnum

from runtime.core.solution.base import Entity, Int, Str


class TimeSpanInterval(StrEnum):
    """NuvIoT ``TimeSpanIntervals`` (ids of ``DeviceErrorCode``'s constants)."""

    NOT_APPLICABLE = "na"
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"

    def seconds(self, quantity: float) -> float | None:
        """NuvIoT ``TimeSpanIntervals.ToTimeSpan``: None for NotApplicable."""
        factor = {"minutes": 60.0, "hours": 3600.0, "days": 86400.0}.get(self.value)
        return None if factor is None else factor * quantity


class DeviceErrorCode(Entity):
    """An error a device can have (``Key`` is the code); raised and cleared by ``core/health.py``."""


class MessageWatchDog(Entity):
    """A message that must arrive every ``timeout`` ``timeoutInterval``s, else ``deviceErrorCode`` is raised."""

    timeout: Int = 0
    timeout_interval: TimeSpanInterval = TimeSpanInterval.NOT_APPLICABLE
    startup_buffer_minutes: Int = 0
    device_message_definition: Str | None = None  # a message definition (key or id)
    device_error_code: Str | None = None

    @property
    def timeout_seconds(self) -> float | None:
        return self.timeout_interval.seconds(self.timeout) if self.timeout > 0 else None
