"""A device in the repository, with the state its workflows keep (attributes, state machines, property bag)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Device:
    device_id: str
    device_configuration: str  # key of a DeviceConfiguration
    name: str = ""
    device_type: str | None = None
    primary_access_key: str | None = None  # secret: never logged, never shown by the admin API
    secondary_access_key: str | None = None  # secret
    properties: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)  # machine key -> current state key
    property_bag: dict[str, Any] = field(default_factory=dict)
    latitude: float | None = None
    longitude: float | None = None
    status: str = "New"
    last_seen: float | None = None  # epoch seconds
    created_at: float | None = None
    updated_at: float | None = None

    def public_view(self) -> dict[str, Any]:
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
            "location": None
            if self.latitude is None or self.longitude is None
            else {"latitude": self.latitude, "longitude": self.longitude},
            "lastSeen": self.last_seen,
            "hasAccessKey": bool(self.primary_access_key or self.secondary_access_key),
        }
