"""A data directory with many devices and dead letters, written through the real SqliteStore before the
daemon starts (the console's pagination tests and the browser test)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from runtime.adapters.storage.sqlite import SqliteStore
from runtime.core.devices import Device
from runtime.core.messages import MessageRecord, PemStatus


async def _fill(db: Path, devices: int, deadletters: int) -> None:
    now = time.time() - 3600
    async with SqliteStore.open(db) as store:
        for i in range(devices):
            store.save_device_state(Device(f"bulk-{i:05d}", "thermostat", name=f"Bulk {i}",
                                           attributes={"temperature": 20 + i % 10}, state_machines={"heater": "idle"},
                                           last_seen=now + i / 10, created_at=now, updated_at=now))
        for i in range(deadletters):
            store.record_message(MessageRecord(
                id=f"old-{i:05d}", received_at=now + i / 10, listener="restin", status=PemStatus.FAILED,
                device_id=f"ghost-{i:05d}", message_id="telemetry", stage="planner",
                error=f"CouldNotFindDevice: device 'ghost-{i:05d}' is not in the device repository",
                payload=json.dumps({"temperature": i % 40}).encode(), path=f"/devices/ghost-{i:05d}/telemetry"))
            if i % 2000 == 1999:
                await store.flush()
        await store.flush()


def fill_data_dir(data_dir: Path, *, devices: int, deadletters: int) -> None:
    asyncio.run(_fill(data_dir / "runtime.db", devices, deadletters))
