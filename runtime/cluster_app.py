"""Composition of a Cluster edition replica: ``--role ingest`` or ``--role worker`` (docs/cluster.md).

Like ``app._serve`` (the ``all`` role), with these parts instead: the shared PostgreSQL store; RabbitMQ
between the roles (the ingest's publisher, the worker's partition consumer); the supervisor whose verbs
apply to every replica (``ClusterRuntime`` + ``PgCluster``); the members in ``/status``.

- **ingest**: the solution's listeners -> intake -> ``IngestDispatcher`` (plan the device id, publish the
  envelope to its partition, ack the device once RabbitMQ confirmed). Input commands and the admin API too.
- **worker**: ``PartitionConsumer`` -> intake -> the ordinary ``Dispatcher`` (records and device state to
  PostgreSQL; the RabbitMQ ack once committed). No device-facing listener. Data streams as in ``all``: the
  durable per-stream queue in the worker's DATA_DIR (``StreamsFirst``: a message's record, and with it the
  partition cursor, commits only once its stream rows are in that queue; the ack after both).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import SecretStr

from runtime import logsetup
from runtime.adapters.command.datastreams import routes as datastream_routes
from runtime.adapters.command.http import AdminApi
from runtime.adapters.queue.commands import CommandRouteError, CommandRouter
from runtime.adapters.queue.partitions import PartitionConsumer
from runtime.adapters.queue.rabbitmq import RabbitPublisher
from runtime.adapters.storage.pg_cluster import PgCluster
from runtime.adapters.storage.postgres import PostgresStore
from runtime.adapters.streams import DataStreams, StreamsCollector
from runtime.adapters.streams import for_settings as streams_for_settings
from runtime.adapters.streams.process import ProcessQueue
from runtime.adapters.streams.queue import StreamQueue
from runtime.core.errors import ListenerBindError
from runtime.core.lifecycle import InstanceState, Verb
from runtime.core.messages import MessageRecord
from runtime.core.ports import StateChange
from runtime.core.solution.enums import QueueType, RestListenerType
from runtime.core.streams import StreamKind
from runtime.core.timefmt import iso
from runtime.instance import CurrentSolution, InstanceIdentity
from runtime.planes import AppPlanes, CommandPlane, connection_limits
from runtime.services.cluster import (
    ClusterRuntime,
    EnvelopeError,
    IngestDispatcher,
    PartitionSequencer,
    decode_command,
    decode_outcome,
    encode_command,
    encode_outcome,
    partition_of,
    partition_to_release,
)
from runtime.services.commands import Operations
from runtime.services.dataplane import DataPlane, Intake
from runtime.services.devices import DeviceRegistry
from runtime.services.dispatcher import Dispatcher, RecordSink
from runtime.services.input_commands import (
    InputCommandCall,
    InputCommandExecutor,
    InputCommandOutcome,
    outcome_of,
)
from runtime.services.metrics import RuntimeMetrics
from runtime.services.supervisor import LoadedSolution
from runtime.settings import Settings
from runtime.solution_loading import AppSolutionLoader

log = structlog.get_logger(__name__)

DEVICE_REFRESH_SECONDS = 2.0
REBALANCE_SECONDS = 5.0  # a worker over its share hands one partition on at most this often


class _QueueLink:
    """The ingest's publisher as a data listener in ``/status`` and ``/ready`` (it is up when connected)."""

    type = "queue"
    key = "rabbitmq"

    def __init__(self, publisher: RabbitPublisher) -> None:
        self._publisher = publisher

    async def start(self, intake: Intake) -> None:
        return None

    async def stop(self) -> None:
        await self._publisher.drain(5.0)  # what the listeners took in is confirmed (and acked) before Paused

    def status(self) -> dict[str, Any]:
        return self._publisher.status()


COMMAND_TIMEOUT = 10.0  # seconds a routed input command waits for the owning worker's answer


class ClusterInputCommands:
    """Input commands in the Cluster edition (docs/cluster.md, "Input commands"): Running, routed through the
    device's partition to the worker that owns the device's state; Paused (no worker consumes), run here on
    the device's committed state, committed before the answer (a worker re-reads its devices on start)."""

    def __init__(self, dispatcher: Dispatcher, planes: ClusterPlanes) -> None:
        self._dispatcher = dispatcher
        self._planes = planes

    def run_input_command(self, **call: Any) -> MessageRecord:
        return self._dispatcher.run_input_command(**call)

    async def run_routed(self, call: InputCommandCall) -> InputCommandOutcome:
        planes = self._planes
        if planes.state() is InstanceState.PAUSED and planes.pg is not None:
            found = await planes.pg.get_device(call.device_id)
            planes.devices.provisioned(call.device_id, None)  # not the copy this replica had: the committed one
            planes.devices.provisioned(call.device_id, found)
            outcome = outcome_of(self._dispatcher, call)
            await planes.pg.flush()
            return outcome
        router = planes.router
        retry = {"Retry-After": "1"}
        if router is None:
            return InputCommandOutcome(503, code="not_serving", message="input commands are not routed yet",
                                       headers=retry)
        partition = partition_of(call.device_id, planes.settings.queue_partitions)
        try:
            answer = await router.call(partition, encode_command(call, time.time() + COMMAND_TIMEOUT),
                                       COMMAND_TIMEOUT)
        except CommandRouteError as exc:
            return InputCommandOutcome(503, code="queue_unavailable", message=f"RabbitMQ: {exc}"[:300],
                                       headers=retry)
        if answer is None:
            return InputCommandOutcome(503, code="no_worker", headers=retry,
                                       message=f"no worker answered for partition {partition} within "
                                               f"{COMMAND_TIMEOUT:g} s (the command was not run)")
        return decode_outcome(answer)


class StreamsFirst:
    """The worker's record sink: a message's record (and with it the partition cursor, docs/cluster.md "Order")
    is handed to PostgreSQL only once the stream rows queued before it are committed to the durable stream
    queue. Otherwise a worker lost between the two commits would leave the cursor past a message whose rows
    never reached the queue, and the redelivery would be dropped as a duplicate: rows lost. Records keep their
    order (each queue callback releases the oldest waiting record: everything queued before it is committed)."""

    def __init__(self, inner: RecordSink, queue: StreamQueue | ProcessQueue) -> None:
        self._inner = inner
        self._queue = queue
        self._waiting: deque[tuple[MessageRecord, Callable[[], None] | None]] = deque()

    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None:
        self._waiting.append((rec, on_commit))
        self._queue.after_commit(self._release)  # at once when nothing is queued or being committed

    def _release(self) -> None:
        rec, on_commit = self._waiting.popleft()
        self._inner.record_message(rec, on_commit)

    async def writable(self) -> None:
        await self._inner.writable()


class ClusterPlanes(AppPlanes):
    """``AppPlanes`` whose data plane is the role's (the command plane is the same)."""

    publisher: RabbitPublisher | None = None
    sequencer: PartitionSequencer | None = None  # the ingest process's numbering: kept across reloads
    consumer: PartitionConsumer | None = None
    pg: PostgresStore | None = None  # the worker's numbers commit with its records
    router: CommandRouter | None = None  # input commands to the owning worker

    def input_executor(self, dispatcher: Dispatcher) -> InputCommandExecutor:
        return ClusterInputCommands(dispatcher, self)

    def command_plane(self, loaded: LoadedSolution) -> CommandPlane:
        plane = super().command_plane(loaded)
        if plane.streams is not None:
            local = sorted(k for k, spec in plane.streams.specs.items() if spec.kind is StreamKind.BUILTIN)
            if local:  # docs/cluster.md "Data streams": each worker's own SQLite file, not shared
                log.warning("datastream_builtin_per_worker", streams=local, path=str(self.settings.data_dir),
                            hint="built-in streams are kept per worker in a cluster (each replica holds the rows "
                                 "of its partitions); use a PostgreSQL stream for one shared history")
        return plane

    def run_routed_command(self, body: bytes) -> bytes | None:
        """A worker: an input command routed to it (``PartitionConsumer``); None when its caller gave up."""
        try:
            call, expires_at = decode_command(body)
        except EnvelopeError as exc:
            log.error("cluster_command_rejected", error=str(exc))
            return encode_outcome(InputCommandOutcome(400, code="bad_request", message=str(exc)))
        if time.time() > expires_at:
            log.warning("cluster_command_expired", command=call.command, device_id=call.device_id)
            return None  # its caller answered 503 "not run": it must not run now
        if self.commands is None:
            return encode_outcome(InputCommandOutcome(503, code="not_serving", message="no solution is loaded"))
        return encode_outcome(outcome_of(self.commands.dispatcher, call))

    def data_plane(self, loaded: LoadedSolution, on_fatal: Callable[[str], None]) -> DataPlane:
        if self.commands is None:
            self.commands = self.command_plane(loaded)
        s = self.settings
        instance_id = self.identity.value
        if s.effective_queue_type(loaded.doc) is not QueueType.RABBITMQ and s.queue_type is None:
            log.info("cluster_queue_type", solution=loaded.doc.instance.queue_type.value, used="rabbitmq")
        if s.role == "ingest":
            assert self.publisher is not None
            listeners: list[Any] = [self._listener(cfg, instance_id) for cfg in loaded.doc.solution.listeners
                                    if cfg.rest_listener_type is not RestListenerType.INPUT_COMMAND_LISTENER]
            dispatcher = IngestDispatcher(loaded.doc.solution.planner, self.publisher, s.queue_partitions,
                                          self.metrics.counters, self.sequencer)
            self.data = DataPlane([*listeners, _QueueLink(self.publisher)], dispatcher, self.metrics.counters,
                                  drain_timeout=s.drain_timeout, on_fatal=on_fatal)
            return self.data
        assert self.consumer is not None
        self.data = DataPlane([self.consumer], self.commands.dispatcher, self.metrics.counters,
                              drain_timeout=s.drain_timeout, on_fatal=on_fatal)
        return self.data


def member_id(role: str) -> str:
    """Unique per process (a pod restarted keeps its hostname and pid 1): an ingest's numbering's source."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"


async def serve_cluster(settings: Settings, token: SecretStr, stop: asyncio.Event) -> int:
    """Run one ingest or worker replica until ``stop``; returns the exit code."""
    from runtime.app import StartupError

    assert settings.database_url is not None and settings.queue_url is not None  # load_settings checks
    role = settings.role
    metrics = RuntimeMetrics()
    me = member_id(role)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(PostgresStore.open(settings.database_url.get_secret_value()))
        datastreams: DataStreams | None = None
        if role == "worker":  # where routes run, rows are produced (the ingest runs no route)
            from runtime.app import _private_data_dir

            with contextlib.suppress(OSError):  # unusable: DataStreams reports it, streams refuse to start
                _private_data_dir(settings)
            datastreams = await stack.enter_async_context(
                streams_for_settings(settings))
            metrics.registry.register(StreamsCollector(datastreams))
        stack.callback(logsetup.add_sink(lambda level, event, fields: store.record_log(
            time.time(), level, event, {**fields, "member": me})))
        identity = InstanceIdentity(settings)
        metrics.counters.health_sinks.append(store.record_device_error)  # device errors are /events rows too
        devices = DeviceRegistry(store)
        await devices.load()
        metrics.add_gauge("nuviot_devices", lambda: len(devices))
        metrics.add_gauge("nuviot_store_queue_depth", lambda: store.queue_depth)
        current = CurrentSolution()
        clusters: list[PgCluster] = []

        def on_transition(change: StateChange) -> None:
            if change.previous is InstanceState.INITIALIZING or change.state is InstanceState.STOPPING:
                identity.pin(current.doc)
            store.record_event(change.at, change.previous.value if change.previous else "", change.state.value,
                               f"[{me}] {change.reason}" if change.reason else f"[{me}]")
            metrics.on_transition(change.previous, change.state)
            if clusters:
                clusters[0].poke()

        planes = ClusterPlanes(settings, store, devices, metrics,  # type: ignore[arg-type]
                               identity=identity, current=current, datastreams=datastreams,
                               records=StreamsFirst(store, datastreams.queue) if datastreams is not None else None)
        planes.pg = store
        queue_url = settings.queue_url.get_secret_value()
        instance = settings.instance_id  # the queues are named after the instance: pinned before the data plane
        loader = AppSolutionLoader(settings)
        runtime = ClusterRuntime(loader, planes, stop_timeout=settings.stop_timeout)
        runtime.add_state_listener(on_transition)  # first: it pins the instance id
        runtime.add_state_listener(planes.on_state_change)

        def held() -> list[int]:
            return planes.consumer.held if planes.consumer is not None else []

        def keep(device_id: str) -> bool:  # this worker owns the state of its partitions' devices
            return partition_of(device_id, settings.queue_partitions) in set(held())

        async def gained(partition: int) -> None:
            found = await store.load_devices()
            fresh = [d for d in found if partition_of(d.device_id, settings.queue_partitions) == partition]
            held_now = set(held())
            devices.adopt(fresh + [d for d in devices.all()
                                   if partition_of(d.device_id, settings.queue_partitions) != partition],
                          lambda k: partition_of(k, settings.queue_partitions) in held_now)

        async def on_device(device_id: str) -> None:
            devices.provisioned(device_id, await store.get_device(device_id))

        async def refresh_devices() -> None:
            while True:
                await asyncio.sleep(DEVICE_REFRESH_SECONDS)
                with contextlib.suppress(Exception):
                    devices.adopt(await store.load_devices(), keep)

        async def rebalance() -> None:
            """A worker holding more than its share of the partitions hands one on (docs/cluster.md)."""
            while True:
                await asyncio.sleep(REBALANCE_SECONDS)
                consumer = planes.consumer
                if consumer is None or runtime.state is not InstanceState.RUNNING:
                    continue
                workers = sum(1 for m in cluster.members if m["role"] == "worker" and m["state"] == "Running")
                excess = partition_to_release(consumer.held, workers, settings.queue_partitions)
                if excess is not None:
                    log.info("cluster_rebalance", partition=excess, held=len(consumer.held), workers=workers)
                    consumer.release(excess)

        async def on_verb(verb: Verb, origin: str) -> None:
            await runtime.apply_remote(verb, origin)

        api_ref: list[AdminApi] = []
        cluster = PgCluster(settings.database_url.get_secret_value(), store.pool,
                            instance_id=lambda: identity.value, member_id=me, role=role,
                            host=socket.gethostname(), admin_port=lambda: api_ref[0].port if api_ref else None,
                            state=lambda: runtime.state.value, partitions=held, on_verb=on_verb,
                            on_device=on_device)
        runtime.bus = cluster
        clusters.append(cluster)
        started_at = iso(time.time())

        def cluster_status() -> dict[str, Any]:
            body: dict[str, Any] = {"queueType": "rabbitmq", "partitions": settings.queue_partitions,
                                    "held": held(), "members": cluster.members, "connected": cluster.connected}
            if planes.publisher is not None:
                body["publisher"] = planes.publisher.status()
            return body

        ops = Operations(runtime, store, devices, metrics, instance_id=lambda: identity.value,
                         replay=planes.replay, storage_fault=lambda: store.fault)
        ops.add_status("role", lambda: role)
        ops.add_status("memberId", lambda: me)
        ops.add_status("instance", lambda: settings.instance_status(current.doc, identity.entry))
        ops.add_status("storage", lambda: {"workingStorage": "postgresql", "queueDepth": store.queue_depth,
                                           "dropped": store.dropped_total, "lastError": store.last_error,
                                           "written": store.written, "transactions": store.batches})
        ops.add_status("cluster", cluster_status)
        ops.add_status("adminPort", lambda: api_ref[0].port if api_ref else None)
        ops.add_status("startedAt", lambda: started_at)
        if datastreams is not None:
            ops.add_status("dataStreams", datastreams.status)
        api = AdminApi(ops, token, host=settings.admin_host, port=settings.admin_port,
                       limits=connection_limits(settings),
                       extra_routes=[datastream_routes(datastreams)] if datastreams is not None else ())
        api_ref.append(api)
        try:
            await api.start()
        except ListenerBindError as exc:
            raise StartupError(f"admin API cannot bind {settings.admin_host}:{settings.admin_port}: {exc.reason}") from exc
        stack.push_async_callback(api.stop)
        stack.push_async_callback(cluster.leave)

        background = [asyncio.create_task(cluster.run(), name="cluster:pg"),
                      asyncio.create_task(refresh_devices(), name="cluster:devices")]
        if role == "worker" and os.environ.get("NUVIOT_CLUSTER_REBALANCE") == "1":  # opt-in: docs/cluster.md
            background.append(asyncio.create_task(rebalance(), name="cluster:rebalance"))
        try:
            await _serve_role(settings, runtime, planes, loader, identity, instance, queue_url, me, gained, token,
                              stop)
        finally:
            cluster.close()
            for task in background:
                task.cancel()
            _, stuck = await asyncio.wait(background, timeout=3)
            if stuck:
                log.warning("cluster_tasks_stuck_on_exit", tasks=sorted(t.get_name() for t in stuck))
        log.info("runtime_exited", state=runtime.state.value, role=role)
    return 0


async def _serve_role(settings: Settings, runtime: ClusterRuntime, planes: ClusterPlanes, loader: AppSolutionLoader,
                      identity: Any, instance: str | None, queue_url: str, me: str,
                      gained: Callable[[int], Awaitable[None]], token: SecretStr, stop: asyncio.Event) -> None:
    """Connect the role's queue side, run the supervisor until ``stop``, then close the queue side."""
    role = settings.role
    async with asyncio.TaskGroup() as tg:
        if instance is None:
            # the queue names need the instance id: load the solution once to learn it
            loaded = await loader.load()
            identity.pin(loaded.doc)
        instance_id = identity.value
        if role == "ingest":
            planes.publisher = RabbitPublisher(queue_url, instance_id, settings.queue_partitions, name=me)
            planes.sequencer = PartitionSequencer(me, settings.queue_partitions)
            await planes.publisher.start()
        else:
            planes.consumer = PartitionConsumer(queue_url, instance_id, settings.queue_partitions,
                                                on_gain=gained, cursors=planes.pg, name=me,
                                                drain_timeout=settings.drain_timeout,
                                                on_command=planes.run_routed_command)
            consumer = planes.consumer
            for name, value in (("duplicates", lambda: consumer.order.duplicates),
                                ("gaps", lambda: consumer.order.gaps), ("late", lambda: consumer.order.late),
                                ("duplicates_at_commit", lambda: planes.pg.duplicates_dropped if planes.pg else 0)):
                planes.metrics.add_gauge(f"nuviot_cluster_order_{name}", value)
        planes.router = CommandRouter(queue_url, instance_id, settings.queue_partitions, name=f"{me}-commands")
        await planes.router.start()
        channel_task = None
        if settings.control_mqtt is not None:
            from runtime.adapters.command.mqtt import MqttCommandChannel
            from runtime.app import command_client_id

            channel = MqttCommandChannel(settings.control_mqtt.get_secret_value(), instance_id, runtime, token,
                                         client_id=command_client_id(settings, instance_id),
                                         input_commands=planes.input_commands)
            channel_task = tg.create_task(channel.run(), name="command:mqtt")
        try:
            await runtime.run(stop)
        finally:
            await planes.router.stop()
        if planes.publisher is not None:
            await planes.publisher.stop(2.0)
        if channel_task is not None:
            channel_task.cancel()
