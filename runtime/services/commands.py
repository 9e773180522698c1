"""What the admin API and other command transports can do, independent of the transport.

The HTTP adapter maps routes to these methods and errors to status codes; it holds no logic of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from runtime.core.errors import RuntimeBaseError, StorageError, TransientError
from runtime.core.lifecycle import InstanceState, Verb
from runtime.core.listener_state import ListenerState
from runtime.core.timefmt import iso
from runtime.services.devices import DeviceRegistry, DeviceRegistryError
from runtime.services.metrics import RuntimeMetrics
from runtime.services.supervisor import Runtime


class NotFoundError(RuntimeBaseError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BadRequestError(RuntimeBaseError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StorageUnavailableError(RuntimeBaseError):
    """The local store cannot answer (damaged, unreadable, disk full at start): HTTP 503."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = "storage_unavailable"
        self.message = message


EVENT_KINDS = ("state", "deviceError")  # what `GET /events?kind=` takes (a row's `kind`)


class AdminStore(Protocol):
    async def flush(self) -> None: ...

    async def list_events(self, limit: int = 100, kind: str | None = None,
                          device_id: str | None = None) -> list[dict[str, Any]]: ...

    async def list_messages(self, limit: int = 100, device_id: str | None = None) -> list[dict[str, Any]]: ...

    async def list_deadletters(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]: ...

    async def get_deadletter(self, record_id: str) -> dict[str, Any] | None: ...


class Operations:
    def __init__(
        self,
        runtime: Runtime,
        store: AdminStore,
        devices: DeviceRegistry,
        metrics: RuntimeMetrics,
        *,
        instance_id: Callable[[], str],
        replay: Callable[[dict[str, Any]], Awaitable[str]] | None = None,
        storage_fault: Callable[[], str | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.devices = devices
        self.metrics = metrics
        self._instance_id = instance_id
        self._replay = replay
        self._storage_fault = storage_fault
        self._parts: dict[str, Callable[[], object]] = {}

    def add_status(self, key: str, part: Callable[[], object]) -> None:
        """Add ``key: part()`` to every ``GET /status`` (storage, the admin port, the command channel...),
        in the order added."""
        if key in self._parts:
            raise ValueError(f"status part {key!r} is already added")
        self._parts[key] = part

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        snap = self.runtime.snapshot()
        loaded = self.runtime.loaded
        data, commands = self.runtime.planes_status()
        solution = None
        if loaded is not None:
            sol = loaded.doc.solution
            solution = {
                "key": sol.key,
                "name": sol.name,
                "version": sol.version,
                "origin": loaded.origin,
                "fromCache": loaded.from_cache,
                "loadedAt": iso(loaded.loaded_at) if loaded.loaded_at else None,
            }
        body: dict[str, Any] = {
            "instanceId": self._instance_id(),
            "state": snap.state.value,
            "since": iso(snap.at),
            "reason": snap.reason,
            "solution": solution,
            "listeners": (data or {}).get("listeners", []),
            "inputCommandPort": (commands or {}).get("port"),
            "counters": self.metrics.counters.as_status(),
        }
        if self.runtime.last_reload is not None:
            lr = self.runtime.last_reload
            body["lastReload"] = {"at": iso(lr["at"]), "ok": lr["ok"], "error": lr["error"]}
        if data and "intake" in data:
            body["intake"] = data["intake"]
        for key, part in self._parts.items():
            body[key] = part()
        ok, why = self.ready()
        body["ready"] = {"ok": ok, "reason": why}  # what GET /ready answers, from the same listener states
        return body

    def ready(self) -> tuple[bool, str]:
        state = self.runtime.state
        if state is not InstanceState.RUNNING:
            return False, f"instance is {state.value}"
        fault = self._storage_fault() if self._storage_fault is not None else None
        if fault is not None:  # e.g. disk full: nothing commits, so nothing is acknowledged
            return False, f"storage cannot commit: {fault}"
        data, _ = self.runtime.planes_status()
        return _listeners_ready((data or {}).get("listeners", []))

    async def control(self, verb: str) -> InstanceState:
        try:
            v = Verb(verb)
        except ValueError:
            raise NotFoundError("unknown_verb", f"unknown control verb '{verb}' (pause, start, stop, reload)") from None
        return await self.runtime.control(v)

    # ---------------------------------------------------------------- records
    # Records are written behind, in batches. Reads first wait (briefly) for what is queued, so the API
    # shows every message processed before the request: read-your-writes for operators and scripts.
    async def _settled(self) -> None:
        try:
            await asyncio.wait_for(self.store.flush(), timeout=2.0)
        except (TimeoutError, TransientError):
            pass  # answer with what is committed; the writer is behind or the disk is busy

    async def _read(self, read: Awaitable[Any]) -> Any:
        await self._settled()
        try:
            return await read
        except StorageError as exc:
            raise StorageUnavailableError(str(exc)) from None

    async def events(self, limit: int, kind: str | None = None,
                     device_id: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._read(self.store.list_events(limit, kind, device_id))
        return result

    async def messages(self, limit: int, device_id: str | None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._read(self.store.list_messages(limit, device_id))
        return result

    async def deadletters(self, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._read(self.store.list_deadletters(limit, offset))
        return result

    async def deadletter(self, record_id: str) -> dict[str, Any]:
        found: dict[str, Any] | None = await self._read(self.store.get_deadletter(record_id))
        if found is None:
            raise NotFoundError("deadletter_not_found", f"no dead letter '{record_id}'")
        return found

    async def replay(self, record_id: str) -> dict[str, Any]:
        found = await self.deadletter(record_id)
        if self._replay is None or self.runtime.state is not InstanceState.RUNNING:
            raise BadRequestError("not_running", f"replay needs a Running instance (now {self.runtime.state.value})")
        message_id = await self._replay(found)
        return {"status": "accepted", "replayOf": record_id, "messageId": message_id}

    # ---------------------------------------------------------------- devices
    def list_devices(self, limit: int | None = None, offset: int = 0, search: str | None = None,
                     ) -> tuple[list[dict[str, Any]], int]:
        """One page of devices by id (all of them without ``limit``), and how many match in all.
        ``search`` keeps the devices whose id or name contains it (any case)."""
        found = self.devices.all()
        if search:
            needle = search.casefold()
            found = [d for d in found if needle in d.device_id.casefold() or needle in (d.name or "").casefold()]
        page = found[offset:] if limit is None else found[offset:offset + limit]
        return [_device_json(d.public_view()) for d in page], len(found)

    def get_device(self, device_id: str) -> dict[str, Any]:
        device = self.devices.get(device_id)
        if device is None:
            raise NotFoundError("device_not_found", f"no device '{device_id}'")
        return _device_json(device.public_view())

    async def put_device(self, device_id: str, body: Any) -> tuple[dict[str, Any], bool]:
        if not isinstance(body, dict):
            raise BadRequestError("bad_body", "the body must be a JSON object")
        if not device_id or len(device_id) > 128:
            raise BadRequestError("bad_device_id", "device id must be 1 to 128 characters")
        doc = self.runtime.loaded.doc if self.runtime.loaded is not None else None
        try:
            device, created = await self.devices.provision(device_id, body, doc)
        except DeviceRegistryError as exc:
            raise BadRequestError(exc.code, exc.message) from None
        return _device_json(device.public_view()), created

    async def delete_device(self, device_id: str) -> None:
        if not await self.devices.delete(device_id):
            raise NotFoundError("device_not_found", f"no device '{device_id}'")


def _device_json(view: dict[str, Any]) -> dict[str, Any]:
    view["lastSeen"] = iso(view.get("lastSeen"))
    return view


def _listeners_ready(listeners: list[dict[str, Any]]) -> tuple[bool, str]:
    """Running is ready only while every data listener is up (``ListenerState.up``); else the first that is not."""
    for listener in listeners:
        state = listener.get("state")
        if state not in _UP:
            return False, f"listener {listener.get('key')} is {state}"
    return True, "running"


_UP = frozenset(s.value for s in ListenerState if s.up)
