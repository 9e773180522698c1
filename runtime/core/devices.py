"""A device in the repository, with the state its workflows keep (attributes, state machines, property bag)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ERRORS = "_system.errors"  # the device's current error codes (core/health.py), kept in the property bag
VALUE_MAX_BYTES = 64 * 1024  # one attribute or property-bag value, as stored (a script could store 8 MB)


@dataclass(slots=True)
class Device:
    device_id: str
    device_configuration: str  # key of a DeviceConfiguration
    name: str = ""
    device_type: str | None = None
    primary_access_key: str | None = None  # secret: never logged, never shown by the admin API
    secondary_access_key: str | None = None  # secret
    properties: dict[str, object] = field(default_factory=dict)
    attributes: dict[str, object] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)  # machine key -> current state key
    property_bag: dict[str, object] = field(default_factory=dict)
    latitude: float | None = None
    longitude: float | None = None
    status: str = "New"
    last_seen: float | None = None  # epoch seconds
    created_at: float | None = None
    updated_at: float | None = None

    def copy(self) -> Device:
        """A shallow copy (the dicts are shared until replaced). Positional: it runs once per message."""
        return Device(self.device_id, self.device_configuration, self.name, self.device_type,
                      self.primary_access_key, self.secondary_access_key, self.properties, self.attributes,
                      self.state_machines, self.property_bag, self.latitude, self.longitude, self.status,
                      self.last_seen, self.created_at, self.updated_at)

    def public_view(self) -> dict[str, object]:
        """What the admin API shows: everything but the access keys."""
        return {
            "deviceId": self.device_id,
            "name": self.name,
            "deviceConfiguration": self.device_configuration,
            "deviceType": self.device_type,
            "status": self.status,
            "properties": self.properties,
            "attributes": self.attributes,
            "stateMachines": self.state_machines,
            "propertyBag": self.property_bag,
            "errors": errors if isinstance(errors := self.property_bag.get(ERRORS), dict) else {},
            "location": None
            if self.latitude is None or self.longitude is None
            else {"latitude": self.latitude, "longitude": self.longitude},
            "lastSeen": self.last_seen,
            "hasAccessKey": bool(self.primary_access_key or self.secondary_access_key),
        }


if tuple(Device.__dataclass_fields__) != (  # Device.copy passes them by position
    "device_id", "device_configuration", "name", "device_type", "primary_access_key", "secondary_access_key",
    "properties", "attributes", "state_machines", "property_bag", "latitude", "longitude", "status", "last_seen",
    "created_at", "updated_at",
):  # pragma: no cover - a guard for whoever adds a field to Device
    raise ImportError("runtime.core.devices.Device changed: update Device.copy")


def _weight(value: object) -> int:
    """About the bytes ``value`` takes when stored; 0 for scalars (bounded by their type)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, (dict, list, tuple)):
        return len(json.dumps(value, default=str))
    return 0


def oversized_value(device: Device, limit: int = VALUE_MAX_BYTES) -> tuple[str, str, int] | None:
    """The first attribute or property-bag value over ``limit`` bytes: (what, key, bytes), or None."""
    for what, values in (("attribute", device.attributes), ("property bag value", device.property_bag)):
        for key, value in values.items():
            size = _weight(value)
            if size > limit:
                return what, str(key), size
    return None
