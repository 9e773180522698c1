"""Composition root: builds the adapters, wires the ports, owns the outer tasks and the signals.

Acquire in order, release in reverse (STYLE §3): store -> devices -> runtime -> admin API -> command
channel. SIGTERM/SIGINT set ``stop``; the supervisor then drains to Stopped and ``main`` returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from typing import Any

import structlog
from pydantic import SecretStr

from runtime import logsetup
from runtime.adapters.cloud import CloudCheckedLoader, CloudConfig, CloudRecords, CloudSink
from runtime.adapters.command.datastreams import routes as datastream_routes
from runtime.adapters.command.http import AdminApi
from runtime.adapters.storage.items import Limits
from runtime.adapters.storage.sqlite import Retention, SqliteStore
from runtime.adapters.storage.unavailable import UnavailableStore
from runtime.adapters.streams import DataStreams, StreamsCollector
from runtime.core.errors import ListenerBindError, StorageError
from runtime.core.lifecycle import InstanceState as S
from runtime.core.ports import StateChange
from runtime.core.solution.enums import WorkingStorage
from runtime.core.timefmt import iso
from runtime.planes import AppPlanes, connection_limits
from runtime.services.commands import Operations
from runtime.services.devices import DeviceRegistry
from runtime.services.metrics import RuntimeMetrics
from runtime.services.supervisor import Runtime
from runtime.settings import Settings
from runtime.solution_loading import AppSolutionLoader

log = structlog.get_logger(__name__)


class InstanceIdentity:
    """The instance id, fixed for the life of the process so that MQTT topics, cloud paths and /status
    never move under an operator: the flag or env when given, else the solution's instance key at the
    first load (``local`` when that load failed)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._value: str | None = settings.instance_id
        self.settled = asyncio.Event()
        if self._value:
            self.settled.set()

    def pin(self, doc: Any) -> None:
        if self._value is None:
            self._value = self._settings.effective_instance_id(doc)
        self.settled.set()

    @property
    def value(self) -> str:
        return self._value or self._settings.effective_instance_id(None)


class StartupError(Exception):
    """The process cannot serve at all (admin port taken): exit 1."""


class StorageCheckedLoader:
    """Boot fails (FailedToInitialize, with the store's reason and what to do) while the store is unusable."""

    def __init__(self, inner: Any, store: SqliteStore | UnavailableStore) -> None:
        self._inner = inner
        self._store = store

    async def load(self) -> Any:
        damaged = self._store.damaged
        if damaged is not None:
            raise StorageError(damaged)
        return await self._inner.load()

    async def accepted(self, loaded: Any) -> None:
        await self._inner.accepted(loaded)


async def _open_store(stack: contextlib.AsyncExitStack, settings: Settings) -> SqliteStore | UnavailableStore:
    try:
        return await stack.enter_async_context(SqliteStore.open(
            settings.db_path, outbox_max_rows=settings.outbox_max_rows,
            retention=Retention(deadletter_bytes=settings.deadletter_max_bytes),
            limits=Limits(deadletter_payload=settings.deadletter_payload_max_bytes)))
    except StorageError as exc:  # damaged, unreadable, read-only, full: FailedToInitialize, admin API up
        log.error("storage_unusable", path=str(settings.db_path), reason=str(exc))
        return UnavailableStore(settings.db_path, str(exc))


def _private_data_dir(settings: Settings) -> None:
    """DATA_DIR 0700 (what it holds: the database, the admin token, the last good solution)."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a mount point owned by someone else: its owner decides
        os.chmod(settings.data_dir, 0o700)


def admin_token(settings: Settings) -> SecretStr:
    """NUVIOT_ADMIN_TOKEN, else DATA_DIR/admin-token (created once, mode 0600)."""
    if settings.admin_token is not None:
        return settings.admin_token
    path = settings.data_dir / "admin-token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return SecretStr(token)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    log.info("admin_token_generated", path=str(path))
    return SecretStr(token)


def command_client_id(settings: Settings, instance_id: str) -> str:
    """The MQTT command channel's client id, kept in DATA_DIR/command-client-id so that a restart resumes
    the broker's persistent session (commands sent meanwhile are delivered). Each data dir has its own, so
    two processes with the same instance id (replicas) do not take each other's session over."""
    path = settings.data_dir / "command-client-id"
    try:
        suffix = path.read_text().strip()
    except FileNotFoundError:
        suffix = ""
    if not suffix:
        suffix = secrets.token_hex(4)
        path.write_text(suffix + "\n")
    return f"nuviot-runtime-{instance_id}-{suffix}"


async def main(settings: Settings) -> int:
    os.umask(0o077)  # what the runtime writes (database, token, solution copies, quarantine) is private
    # An unusable data dir is reported by the store (FailedToInitialize with the path and the reason); the
    # admin API still serves /health, /ready and /metrics, with a token nobody knows unless it is set.
    with contextlib.suppress(OSError):
        _private_data_dir(settings)
    try:
        token = admin_token(settings)
    except OSError as exc:
        token = SecretStr(secrets.token_urlsafe(32))
        log.error("admin_token_unavailable", data_dir=str(settings.data_dir), error=str(exc),
                  hint="set NUVIOT_ADMIN_TOKEN to use the authenticated admin API")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    try:
        return await _serve(settings, token, stop)
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("signal_received", signal=sig.name)
    stop.set()


async def _serve(settings: Settings, token: SecretStr, stop: asyncio.Event) -> int:
    metrics = RuntimeMetrics()
    async with contextlib.AsyncExitStack() as stack:
        store = await _open_store(stack, settings)
        remove_sink = logsetup.add_sink(lambda level, event, fields: store.record_log(
            time.time(), level, event, fields))
        stack.callback(remove_sink)
        runtimes: list[Runtime] = []  # the runtime is built below; the cloud sink asks it for the solution

        def current_doc() -> Any:
            return runtimes[0].loaded.doc if runtimes and runtimes[0].loaded is not None else None

        identity = InstanceIdentity(settings)

        cloud: CloudSink | None = None
        if settings.cloud_url and isinstance(store, SqliteStore):  # cloud working storage and/or status reporting (CONTRACT §8, reference §1.5)
            cloud = await stack.enter_async_context(CloudSink(
                store,
                CloudConfig(url=settings.cloud_url,
                            access_key=settings.access_key.get_secret_value() if settings.access_key else None,
                            batch_size=settings.cloud_batch_size,
                            max_batches_per_second=settings.cloud_max_batches_per_second,
                            timeout=settings.cloud_timeout, retry_max=settings.cloud_retry_max),
                instance_id=lambda: identity.value,
                mirror=lambda: settings.effective_working_storage(current_doc()) is WorkingStorage.CLOUD,
                data_dir=settings.data_dir,
            ))
            stack.callback(logsetup.add_sink(lambda level, event, fields: cloud.record_log(
                time.time(), level, event, fields)))
            metrics.add_gauge("nuviot_cloud_outbox_depth", lambda: cloud.depth)
            metrics.add_gauge("nuviot_cloud_delivered", lambda: sum(cloud.stats.delivered.values()))
            metrics.add_gauge("nuviot_cloud_quarantined", lambda: cloud.stats.quarantined)
            metrics.add_gauge("nuviot_cloud_refused", lambda: cloud.stats.dropped + store.outbox_refused_total)
            metrics.add_gauge("nuviot_cloud_delivery_failures", lambda: cloud.stats.failures)
        datastreams = await stack.enter_async_context(
            DataStreams(settings.data_dir, max_rows=settings.datastream_queue_max_rows))
        metrics.registry.register(StreamsCollector(datastreams))
        devices = DeviceRegistry(store)
        await devices.load()
        metrics.add_gauge("nuviot_devices", lambda: len(devices))
        metrics.add_gauge("nuviot_store_queue_depth", lambda: store.queue_depth)
        metrics.add_gauge("nuviot_store_dropped", lambda: store.dropped_total)
        metrics.add_gauge("nuviot_store_failed", lambda: sum(store.failed.values()))
        metrics.add_gauge("nuviot_store_lost", lambda: sum(store.lost.values()))
        metrics.add_gauge("nuviot_store_unacked", lambda: store.unacked)
        metrics.add_gauge("nuviot_store_waiting_acks", lambda: store.waiting_acks)
        metrics.add_gauge("nuviot_store_degraded", lambda: int(store.fault is not None))

        def on_transition(change: StateChange) -> None:
            if change.previous is S.INITIALIZING or change.state is S.STOPPING:
                identity.pin(current_doc())  # the first load decides the instance id for good
            store.record_event(change.at, change.previous.value if change.previous else "", change.state.value,
                               change.reason)
            metrics.on_transition(change.previous, change.state)
            if cloud is not None:
                cloud.record_event(change)
                doc = current_doc()
                cloud.report_status(change, doc.solution.version if doc is not None else None)

        loader = StorageCheckedLoader(CloudCheckedLoader(AppSolutionLoader(settings), settings), store)
        planes = AppPlanes(settings, store, devices, metrics,
                           records=CloudRecords(store, cloud) if cloud is not None else None,
                           datastreams=datastreams)
        runtime = Runtime(loader, planes, on_transition=on_transition, stop_timeout=settings.stop_timeout)
        runtimes.append(runtime)
        planes.bind(runtime)
        store.on_fault(lambda fault, reason: runtime.report_fatal(reason))  # damaged while running

        channel: Any = None  # created once the instance id is settled (after the first load)

        def extras() -> dict[str, Any]:
            doc = runtime.loaded.doc if runtime.loaded else None
            body: dict[str, Any] = {
                "instance": settings.instance_status(doc),  # each setting with its source (flag/env/document)
                "storage": {
                    "workingStorage": settings.effective_working_storage(doc).value,
                    **store.status(),
                },
                "dataStreams": datastreams.status(),
                "adminPort": api.port,
                "startedAt": iso(started_at),
            }
            if cloud is not None:
                body["storage"]["outbox"] = {**cloud.status(), "refusedByStore": store.outbox_refused_total}
            if channel is not None:
                body["commandChannel"] = {"connected": channel.connected, "lastError": channel.last_error}
            return body

        started_at = time.time()
        ops = Operations(
            runtime,
            store,
            devices,
            metrics,
            instance_id=lambda: identity.value,
            extras=extras,
            replay=planes.replay,
            storage_fault=lambda: store.fault,
        )
        api = AdminApi(ops, token, host=settings.admin_host, port=settings.admin_port,
                       limits=connection_limits(settings),
                       extra_routes=[datastream_routes(datastreams)])
        try:
            await api.start()
        except ListenerBindError as exc:
            raise StartupError(f"admin API cannot bind {settings.admin_host}:{settings.admin_port}: {exc.reason}") from exc
        stack.push_async_callback(api.stop)

        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(runtime.run(stop), name="runtime")
            channel_task = None
            if settings.control_mqtt is not None:
                await identity.settled.wait()  # set on the first transition out of Initializing (or Stopping)
                from runtime.adapters.command.mqtt import MqttCommandChannel

                channel = MqttCommandChannel(settings.control_mqtt.get_secret_value(), identity.value, runtime, token,
                                             client_id=command_client_id(settings, identity.value),
                                             input_commands=planes.input_commands)
                channel_task = tg.create_task(channel.run(), name="command:mqtt")
            await run
            if channel_task is not None:
                await _stop_channel(channel_task)
        log.info("runtime_exited", state=runtime.state.value)
    return 0


async def _stop_channel(task: asyncio.Task[None]) -> None:
    """Cancelling the channel publishes the latest status (Stopped) if not yet published, then disconnects
    cleanly, so the broker keeps Stopped retained rather than the last will."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

