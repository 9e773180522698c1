"""The device repository as the data plane sees it: every device in memory, persisted through the store.

Reads on the message path are a dict lookup. Workflow state changes are written behind (batched by the
store); provisioning through the admin API is written through (durable before the API answers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from runtime.core.devices import Device
from runtime.core.solution.model import SolutionDocument


class DeviceStore(Protocol):
    async def load_devices(self) -> list[Device]: ...

    async def upsert_device(self, device: Device) -> None: ...

    async def delete_device(self, device_id: str) -> bool: ...

    def save_device_state(self, device: Device) -> None: ...


class DeviceRegistryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DeviceRegistry:
    def __init__(self, store: DeviceStore) -> None:
        self._store = store
        self._devices: dict[str, Device] = {}

    async def load(self) -> None:
        self._devices = {d.device_id: d for d in await self._store.load_devices()}

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def all(self) -> list[Device]:
        return sorted(self._devices.values(), key=lambda d: d.device_id)

    def __len__(self) -> int:
        return len(self._devices)

    def adopt(self, found: list[Device], keep: Callable[[str], bool]) -> None:
        """Take the store's devices (the Cluster edition: another replica changed them), except those for
        which ``keep(device_id)`` is true (this replica owns their state); devices gone from the store go."""
        fresh = {d.device_id: d for d in found}
        merged = {k: v for k, v in self._devices.items() if keep(k) and (k in fresh)}
        for device_id, device in fresh.items():
            if device_id not in merged:
                merged[device_id] = device
        self._devices = merged

    def provisioned(self, device_id: str, found: Device | None) -> None:
        """Another replica provisioned (or deleted, ``found`` None) a device: take its provisioning fields and
        keep the workflow state this replica holds."""
        if found is None:
            self._devices.pop(device_id, None)
            return
        held = self._devices.get(device_id)
        if held is not None:
            found.attributes, found.state_machines, found.property_bag = (held.attributes, held.state_machines,
                                                                          held.property_bag)
            found.last_seen = held.last_seen
        self._devices[device_id] = found

    def state_changed(self, device: Device) -> None:
        """The pipeline changed a device's workflow state: write it behind, batched."""
        self._devices[device.device_id] = device
        self._store.save_device_state(device)

    async def provision(
        self,
        device_id: str,
        body: dict[str, Any],
        doc: SolutionDocument | None,
    ) -> tuple[Device, bool]:
        """PUT /devices/{id}: create or update. Returns (device, created). Workflow state is kept."""
        config = body.get("deviceConfiguration")
        if not isinstance(config, str) or not config:
            raise DeviceRegistryError("missing_device_configuration", "deviceConfiguration (a key) is required")
        if doc is not None and config not in doc.device_configuration_by_key:
            known = ", ".join(sorted(doc.device_configuration_by_key)) or "none"
            raise DeviceRegistryError(
                "unknown_device_configuration", f"no device configuration '{config}' in the solution (known: {known})"
            )
        for key, kind in (("name", str), ("properties", dict), ("accessKey", str), ("secondaryAccessKey", str),
                          ("deviceType", str)):
            if key in body and body[key] is not None and not isinstance(body[key], kind):
                raise DeviceRegistryError("invalid_field", f"{key} must be a {'string' if kind is str else 'object'}")
        now = time.time()
        existing = self._devices.get(device_id)
        created = existing is None
        if existing is None:
            device = Device(device_id=device_id, device_configuration=config, created_at=now)
        else:
            device = existing.copy()  # the old one may be in use by the message worker
            device.device_configuration = config
        if "name" in body and body["name"] is not None:
            device.name = body["name"]
        if body.get("properties") is not None:
            device.properties = dict(body["properties"])
        if body.get("accessKey") is not None:
            device.primary_access_key = body["accessKey"]
        if body.get("secondaryAccessKey") is not None:
            device.secondary_access_key = body["secondaryAccessKey"]
        if body.get("deviceType") is not None:
            device.device_type = body["deviceType"]
        device.updated_at = now
        await self._store.upsert_device(device)
        self._devices[device_id] = device
        return device, created

    async def delete(self, device_id: str) -> bool:
        existed = await self._store.delete_device(device_id)
        return self._devices.pop(device_id, None) is not None or existed

    async def seed(self, doc: SolutionDocument) -> int:
        """Provision the solution's ``devices`` that are not in the repository yet (never overwrite)."""
        added = 0
        for seed in doc.devices:
            if seed.device_id in self._devices:
                continue
            now = time.time()
            device = Device(
                device_id=seed.device_id,
                device_configuration=seed.device_configuration,
                name=seed.name,
                device_type=seed.device_type,
                primary_access_key=seed.primary_access_key.get_secret_value() if seed.primary_access_key else None,
                secondary_access_key=seed.secondary_access_key.get_secret_value()
                if seed.secondary_access_key
                else None,
                properties=dict(seed.properties),
                created_at=now,
                updated_at=now,
            )
            await self._store.upsert_device(device)
            self._devices[device.device_id] = device
            added += 1
        return added
