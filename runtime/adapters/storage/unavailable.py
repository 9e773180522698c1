"""The store that stands in when ``runtime.db`` cannot be opened (damaged, unreadable, read-only, disk full).

The process stays up with the admin API (``/health``, ``/ready`` 503 with the reason, ``/status``, ``/metrics``)
while the instance is FailedToInitialize: nothing is taken in, so nothing needs storing. Records offered
anyway (state-change events, log lines) are counted in ``dropped``; reads and awaited writes raise
``StorageError`` with the reason (the admin API answers 503 ``storage_unavailable``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.core.devices import Device
from runtime.core.errors import StorageError
from runtime.core.messages import MessageRecord


class UnavailableStore:
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        self.dropped = {"event": 0, "log": 0, "message": 0, "device": 0}
        self.written = dict.fromkeys(self.dropped, 0)
        self.failed = dict.fromkeys(self.dropped, 0)
        self.lost = dict.fromkeys(self.dropped, 0)
        self.unacked = 0
        self.waiting_acks = 0
        self.queue_depth = 0
        self.outbox_refused_total = 0

    @property
    def fault(self) -> str:
        return self.reason

    @property
    def damaged(self) -> str:
        return self.reason

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def on_fault(self, callback: Callable[[Any, str], None]) -> None:
        pass  # never opened: the instance is FailedToInitialize already

    def status(self) -> dict[str, Any]:
        return {"queueDepth": 0, "dropped": self.dropped_total, "failed": 0, "lost": 0, "unacked": 0,
                "waitingAcks": 0, "fault": self.reason}

    def _unavailable(self) -> StorageError:
        return StorageError(self.reason)

    # --- writes: counted, never raised (fire and forget) ---

    def record_event(self, at: float, from_state: str, to_state: str, reason: str | None) -> None:
        self.dropped["event"] += 1

    def record_device_error(self, event: object) -> None:
        self.dropped["event"] += 1

    def record_log(self, at: float, level: str, event: str, fields: dict[str, Any]) -> None:
        self.dropped["log"] += 1

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        self.dropped["message"] += 1  # and never acknowledged

    def save_device_state(self, device: Device) -> None:
        self.dropped["device"] += 1

    async def writable(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def checkpoint(self) -> None:
        return None

    # --- awaited writes and reads: the reason ---

    async def upsert_device(self, device: Device) -> None:
        raise self._unavailable()

    async def delete_device(self, device_id: str) -> bool:
        raise self._unavailable()

    async def mark_replayed(self, record_id: str, at: float) -> None:
        raise self._unavailable()

    async def load_devices(self) -> list[Device]:
        return []  # nothing to load: the instance does not start on this store

    async def get_device(self, device_id: str) -> Device | None:
        raise self._unavailable()

    async def list_events(self, limit: int = 100, kind: str | None = None,
                          device_id: str | None = None) -> list[dict[str, Any]]:
        raise self._unavailable()

    async def list_messages(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]:
        raise self._unavailable()

    async def list_deadletters(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        raise self._unavailable()

    async def get_deadletter(self, record_id: str) -> dict[str, Any] | None:
        raise self._unavailable()

    async def list_logs(self, limit: int = 100) -> list[dict[str, Any]]:
        raise self._unavailable()
