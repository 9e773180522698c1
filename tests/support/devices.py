"""An in-memory device registry for tests that drive the ``Dispatcher`` without a store: the two methods it
calls (``get``, ``state_changed``), each saved state kept in order."""

from __future__ import annotations

from collections.abc import Iterable

from runtime.core.devices import Device


class Registry:
    def __init__(self, devices: Iterable[Device] = ()) -> None:
        self.devices = {d.device_id: d.copy() for d in devices}
        self.saved: list[Device] = []

    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def state_changed(self, device: Device) -> None:
        self.devices[device.device_id] = device
        self.saved.append(device)
