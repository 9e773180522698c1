"""Composition root: builds the adapters, wires the ports, owns the outer tasks and the signals.

Acquire in order, release in reverse (STYLE §3): store -> devices -> runtime -> admin API -> command
channel. SIGTERM/SIGINT set ``stop``; the supervisor then drains to Stopped and ``main`` returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from runtime.adapters.streams import StreamsCollector
from runtime.adapters.streams import for_settings as streams_for_settings
from runtime.core.errors import ListenerBindError, StorageError
from runtime.core.lifecycle import InstanceState as S
from runtime.core.ports import StateChange
from runtime.core.solution.enums import WorkingStorage
from runtime.core.timefmt import iso
from runtime.instance import CurrentSolution, InstanceIdentity
from runtime.planes import AppPlanes, connection_limits
from runtime.services.commands import Operations
from runtime.services.devices import DeviceRegistry
from runtime.services.health import active_error_count
from runtime.services.metrics import RuntimeMetrics
from runtime.services.supervisor import Runtime
from runtime.settings import Settings
from runtime.solution_loading import AppSolutionLoader

log = structlog.get_logger(__name__)


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
        if settings.role != "all":  # a Cluster edition replica (runtime/cluster_app.py, docs/cluster.md)
            from runtime.cluster_app import serve_cluster

            return await serve_cluster(settings, token, stop)
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
    """Build the parts in order (each from parts built before it), serve until ``stop``, release in reverse."""
    metrics = RuntimeMetrics()
    identity = InstanceIdentity(settings)
    current = CurrentSolution()
    async with contextlib.AsyncExitStack() as stack:
        store = await _open_store(stack, settings)
        stack.callback(logsetup.add_sink(functools.partial(_log_to, store)))
        cloud = await _cloud(stack, settings, store, metrics, identity, current)
        # device errors raised and cleared are /events rows too (and mirrored with the events to the cloud)
        metrics.counters.health_sinks.append(store.record_device_error)
        if cloud is not None:
            metrics.counters.health_sinks.append(cloud.record_device_error)
        datastreams = await stack.enter_async_context(
            streams_for_settings(settings))
        metrics.registry.register(StreamsCollector(datastreams))
        devices = DeviceRegistry(store)
        await devices.load()
        _store_gauges(metrics, store, devices)

        loader = StorageCheckedLoader(CloudCheckedLoader(AppSolutionLoader(settings), settings), store)
        planes = AppPlanes(settings, store, devices, metrics, identity=identity, current=current,
                           records=CloudRecords(store, cloud) if cloud is not None else None,
                           datastreams=datastreams)
        runtime = Runtime(loader, planes, stop_timeout=settings.stop_timeout)
        # in this order: the records pin the instance id before the planes build anything with it
        runtime.add_state_listener(StateRecords(identity, current, store, metrics, cloud).on_state_change)
        runtime.add_state_listener(planes.on_state_change)
        store.on_fault(lambda fault, reason: runtime.report_fatal(reason))  # damaged while running

        ops = Operations(runtime, store, devices, metrics, instance_id=lambda: identity.value, replay=planes.replay,
                         storage_fault=lambda: store.fault)
        ops.add_status("instance", lambda: settings.instance_status(current.doc, identity.entry))  # with sources
        ops.add_status("storage", functools.partial(_storage_status, settings, current, store, cloud))
        ops.add_status("dataStreams", datastreams.status)
        api = AdminApi(ops, token, host=settings.admin_host, port=settings.admin_port,
                       limits=connection_limits(settings), extra_routes=[datastream_routes(datastreams)])
        try:
            await api.start()
        except ListenerBindError as exc:
            raise StartupError(f"admin API cannot bind {settings.admin_host}:{settings.admin_port}: {exc.reason}") from exc
        stack.push_async_callback(api.stop)
        started_at = iso(time.time())
        ops.add_status("adminPort", lambda: api.port)
        ops.add_status("startedAt", lambda: started_at)

        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(runtime.run(stop), name="runtime")
            channel_task = None
            if settings.control_mqtt is not None:
                await identity.settled.wait()  # set on the first transition out of Initializing (or Stopping)
                from runtime.adapters.command.mqtt import MqttCommandChannel

                channel = MqttCommandChannel(settings.control_mqtt.get_secret_value(), identity.value, runtime, token,
                                             client_id=command_client_id(settings, identity.value),
                                             input_commands=planes.input_commands)
                ops.add_status("commandChannel", lambda: {"connected": channel.connected,
                                                          "lastError": channel.last_error})
                channel_task = tg.create_task(channel.run(), name="command:mqtt")
            await run
            if channel_task is not None:
                await _stop_channel(channel_task)
        log.info("runtime_exited", state=runtime.state.value)
    return 0


Store = SqliteStore | UnavailableStore


def _log_to(sink: Store | CloudSink, level: str, event: str, fields: dict[str, Any]) -> None:
    sink.record_log(time.time(), level, event, fields)


def _store_gauges(metrics: RuntimeMetrics, store: Store, devices: DeviceRegistry) -> None:
    metrics.add_gauge("nuviot_devices", lambda: len(devices))
    metrics.add_gauge("nuviot_device_errors_active", lambda: active_error_count(devices.all()))
    metrics.add_gauge("nuviot_store_queue_depth", lambda: store.queue_depth)
    metrics.add_gauge("nuviot_store_dropped", lambda: store.dropped_total)
    metrics.add_gauge("nuviot_store_failed", lambda: sum(store.failed.values()))
    metrics.add_gauge("nuviot_store_lost", lambda: sum(store.lost.values()))
    metrics.add_gauge("nuviot_store_unacked", lambda: store.unacked)
    metrics.add_gauge("nuviot_store_waiting_acks", lambda: store.waiting_acks)
    metrics.add_gauge("nuviot_store_degraded", lambda: int(store.fault is not None))


async def _cloud(stack: contextlib.AsyncExitStack, settings: Settings, store: Store, metrics: RuntimeMetrics,
                 identity: InstanceIdentity, current: CurrentSolution) -> CloudSink | None:
    """The cloud sink when NUVIOT_CLOUD_URL is set and the store is usable: cloud working storage and/or status
    reporting (CONTRACT §8, reference §1.5)."""
    if not settings.cloud_url or not isinstance(store, SqliteStore):
        return None
    cloud = await stack.enter_async_context(CloudSink(
        store,
        CloudConfig(url=settings.cloud_url,
                    access_key=settings.access_key.get_secret_value() if settings.access_key else None,
                    batch_size=settings.cloud_batch_size,
                    max_batches_per_second=settings.cloud_max_batches_per_second,
                    timeout=settings.cloud_timeout, retry_max=settings.cloud_retry_max),
        instance_id=lambda: identity.value,
        mirror=lambda: settings.effective_working_storage(current.doc) is WorkingStorage.CLOUD,
        data_dir=settings.data_dir,
    ))
    stack.callback(logsetup.add_sink(functools.partial(_log_to, cloud)))
    metrics.add_gauge("nuviot_cloud_outbox_depth", lambda: cloud.depth)
    metrics.add_gauge("nuviot_cloud_delivered", lambda: sum(cloud.stats.delivered.values()))
    metrics.add_gauge("nuviot_cloud_quarantined", lambda: cloud.stats.quarantined)
    metrics.add_gauge("nuviot_cloud_refused", lambda: cloud.stats.dropped + store.outbox_refused_total)
    metrics.add_gauge("nuviot_cloud_delivery_failures", lambda: cloud.stats.failures)
    return cloud


class StateRecords:
    """The state listener that records every transition (events table, metrics, cloud) and pins the instance
    id when the first load is decided."""

    def __init__(self, identity: InstanceIdentity, current: CurrentSolution, store: Store,
                 metrics: RuntimeMetrics, cloud: CloudSink | None) -> None:
        self._identity = identity
        self._current = current
        self._store = store
        self._metrics = metrics
        self._cloud = cloud

    def on_state_change(self, change: StateChange) -> None:
        doc = self._current.doc
        if change.previous is S.INITIALIZING or change.state is S.STOPPING:
            self._identity.pin(doc)  # the first load decides the instance id for good
        self._store.record_event(change.at, change.previous.value if change.previous else "", change.state.value,
                                 change.reason)
        self._metrics.on_transition(change.previous, change.state)
        if self._cloud is not None:
            self._cloud.record_event(change)
            self._cloud.report_status(change, doc.solution.version if doc is not None else None)


def _storage_status(settings: Settings, current: CurrentSolution, store: Store,
                    cloud: CloudSink | None) -> dict[str, Any]:
    body: dict[str, Any] = {"workingStorage": settings.effective_working_storage(current.doc).value, **store.status()}
    if cloud is not None:
        body["outbox"] = {**cloud.status(), "refusedByStore": store.outbox_refused_total}
    return body


async def _stop_channel(task: asyncio.Task[None]) -> None:
    """Cancelling the channel publishes the latest status (Stopped) if not yet published, then disconnects
    cleanly, so the broker keeps Stopped retained rather than the last will."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

