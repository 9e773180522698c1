"""What starts and stops with the lifecycle, built per solution (part of the composition root).

- The *command plane* (Starting..Stopped, so also while Paused): the transmitters, the dispatcher that
  runs routes and input commands, and the input-command server.
- The *data plane* (Running only): the listeners, the intake and its worker, feeding that dispatcher.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any

import structlog

from runtime.adapters.command.input_commands import InputCommandServer
from runtime.adapters.httpguard import ConnectionLimits
from runtime.adapters.listeners.amqp import AmqpListener
from runtime.adapters.listeners.mqtt import MqttClientListener
from runtime.adapters.listeners.mqtt_broker import MqttBrokerListener
from runtime.adapters.listeners.rest import RestListener
from runtime.adapters.listeners.tcp import TcpListener
from runtime.adapters.listeners.udp import UdpListener
from runtime.adapters.listeners.websocket import WebSocketListener
from runtime.adapters.outbound.factory import build_transmitter
from runtime.adapters.storage.sqlite import SqliteStore
from runtime.adapters.storage.unavailable import UnavailableStore
from runtime.adapters.streams import DataStreams
from runtime.core.errors import CommandRefusedError, ListenerBindError
from runtime.core.lifecycle import InstanceState
from runtime.core.messages import InboundMessage, MessageKind
from runtime.core.ports import StateChange
from runtime.core.solution.enums import ListenerType, RestListenerType
from runtime.core.solution.model import Listener
from runtime.instance import CurrentSolution, InstanceIdentity
from runtime.services.dataplane import DataPlane, Deadline, stop_together
from runtime.services.devices import DeviceRegistry
from runtime.services.dispatcher import Dispatcher, RecordSink, build_engines
from runtime.services.health import HealthMonitor
from runtime.services.input_commands import InputCommandExecutor, InputCommands
from runtime.services.metrics import RuntimeMetrics
from runtime.services.supervisor import LoadedSolution
from runtime.services.timers import TimerScheduler
from runtime.settings import Settings

log = structlog.get_logger(__name__)


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The guard of every server port (README "Settings": NUVIOT_HTTP_*, NUVIOT_MAX_CONNECTIONS_PER_PORT)."""
    return ConnectionLimits(header_timeout=settings.http_header_timeout, body_timeout=settings.http_body_timeout,
                            max_connections=settings.max_connections_per_port)


class UnsupportedListenerError(ListenerBindError):
    """A listener this runtime cannot run (its type, or its configuration): FailedToStart naming it."""

    def __init__(self, key: str, port: int | None, reason: str) -> None:
        super().__init__(key, port, reason)
        self.args = (f"listener {key} cannot run: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


class CommandPlane:
    """Transmitters + dispatcher + input-command server for one loaded solution."""

    def __init__(self, owner: AppPlanes, loaded: LoadedSolution) -> None:
        self.owner = owner
        s = owner.settings
        doc = loaded.doc
        self.transmitters = {t.key: build_transmitter(t, instance_id=owner.identity.value, counters=owner.metrics.counters)
                             for t in doc.transmitters if _used(doc, t.key)}
        self.streams = (owner.datastreams.service_for(doc, drain_timeout=s.drain_timeout)
                        if owner.datastreams is not None else None)
        self.health = HealthMonitor(doc, owner.devices, owner.metrics.counters)
        self.dispatcher = Dispatcher(doc, owner.devices, owner.records, owner.metrics.counters,
                                     build_engines(doc, loaded.scripts), self.transmitters, streams=self.streams,
                                     health=self.health, compiled_routes=s.compiled_routes)
        self.timers = TimerScheduler(doc, owner.devices, self.dispatcher, zone=s.effective_time_zone(doc))
        inst = doc.instance
        auth = None
        if not inst.input_command_anonymous:  # validation requires both; never fall back to open access
            pw = inst.input_command_basic_auth_password
            auth = (inst.input_command_basic_auth_user_name or "", pw.get_secret_value() if pw else "")
        self.executor = owner.input_executor(self.dispatcher)  # what runs input commands (both transports)
        self.server = InputCommandServer(self.executor, owner.state, port=s.effective_input_command_port(doc),
                                         basic_auth=auth, limits=connection_limits(s),
                                         connection_counters=owner.metrics.counters.connection("inputcommands"))
        self._started: list[Any] = []
        self._streams_started = False

    async def start(self) -> None:
        if self.streams is not None:
            await self.streams.start()  # a stream that cannot start: FailedToStart naming it
            self._streams_started = True
        for t in self.transmitters.values():
            await t.start()
            self._started.append(t)
        await self.server.start()

    async def stop(self, deadline: float | None = None) -> None:
        """The input-command server first (no new commands), then every transmitter at once; by ``deadline``."""
        drain = self.owner.settings.drain_timeout
        budget = Deadline(deadline, within=drain + 2.0)
        await stop_together("inputcommands", {"server": self.server.stop}, budget.left())
        started, self._started = self._started, []
        await stop_together("transmitter", {t.key: functools.partial(t.stop, budget.left(drain)) for t in started},
                            budget.left(drain + 1.0))
        if self._streams_started and self.streams is not None:  # after the transmitters: the last rows are queued
            self._streams_started = False
            await self.streams.stop(budget.left(drain))

    def status(self) -> dict[str, Any]:
        return {**self.server.status(), "transmitters": [t.status() for t in self.transmitters.values()]}


def _used(doc: Any, transmitter_key: str) -> bool:
    for config in doc.solution.device_configurations:
        for route in config.routes:
            for step in route.steps:
                if step.module == transmitter_key:
                    return True
    return False


class AppPlanes:
    """The supervisor's ``PlaneFactory``. It learns the instance state as a state listener
    (``runtime.add_state_listener(planes.on_state_change)``) and records the adopted solution in ``current``."""

    def __init__(self, settings: Settings, store: SqliteStore | UnavailableStore, devices: DeviceRegistry,
                 metrics: RuntimeMetrics, *, identity: InstanceIdentity, current: CurrentSolution,
                 records: RecordSink | None = None, datastreams: DataStreams | None = None) -> None:
        self.settings = settings
        self.store = store  # replay marks, checkpoints
        self.records: RecordSink = records if records is not None else store  # what the dispatcher records into
        self.datastreams = datastreams
        self.devices = devices
        self.metrics = metrics
        self.identity = identity
        self.current = current
        self._state = InstanceState.OFFLINE
        self.commands: CommandPlane | None = None
        self.data: DataPlane | None = None
        # the MQTT command channel's input commands: the current solution's dispatcher, the HTTP server's rules
        self.input_commands = InputCommands(self.state,
                                            lambda: self.commands.executor if self.commands is not None else None)

    def on_state_change(self, change: StateChange) -> None:
        self._state = change.state

    def input_executor(self, dispatcher: Dispatcher) -> InputCommandExecutor:
        """What runs input commands: this process's dispatcher (the Cluster edition routes them instead)."""
        return dispatcher

    def state(self) -> InstanceState:
        return self._state

    async def solution_changed(self, loaded: LoadedSolution) -> None:
        self.current.doc = loaded.doc
        added = await self.devices.seed(loaded.doc)
        if added:
            log.info("devices_seeded", count=added)
            await self.store.checkpoint()  # 20,000 seeded devices left an 82 MB WAL behind otherwise

    def command_plane(self, loaded: LoadedSolution) -> CommandPlane:
        self.commands = CommandPlane(self, loaded)
        return self.commands

    def data_plane(self, loaded: LoadedSolution, on_fatal: Callable[[str], None]) -> DataPlane:
        if self.commands is None:
            self.commands = CommandPlane(self, loaded)
        instance_id = self.identity.value
        listeners = [self._listener(cfg, instance_id) for cfg in loaded.doc.solution.listeners
                     if cfg.rest_listener_type is not RestListenerType.INPUT_COMMAND_LISTENER]
        self.data = DataPlane(listeners, self.commands.dispatcher, self.metrics.counters,
                              drain_timeout=self.settings.drain_timeout, on_fatal=on_fatal,
                              background=self._background(self.commands))
        return self.data

    @staticmethod
    def _background(commands: CommandPlane) -> dict[str, Any]:
        """The data plane's loops: the device watchdogs and the workflow timers, when the solution has any."""
        loops: dict[str, Any] = {}
        if commands.health.watching:
            loops["watchdogs"] = commands.health.run
        if commands.timers.scheduling:
            loops["timers"] = commands.timers.run
        return loops

    def _listener(self, cfg: Listener, instance_id: str) -> Any:
        port = self.settings.listener_ports.get(cfg.key)
        kind = cfg.listener_type
        limits = connection_limits(self.settings)
        conns = self.metrics.counters.connection(cfg.key)
        try:
            if kind is ListenerType.REST:
                return RestListener(cfg, port=port, limits=limits, connection_counters=conns)
            if kind is ListenerType.MQTT_CLIENT:
                return MqttClientListener(cfg, instance_id=instance_id, keepalive=self.settings.mqtt_keepalive,
                                          fast_path=self.settings.mqtt_fastpath)
            if kind is ListenerType.RAW_TCP:
                return TcpListener(cfg, port=port, max_connections=limits.max_connections,
                                   idle_timeout=self.settings.tcp_idle_timeout, connection_counters=conns)
            if kind is ListenerType.RAW_UDP:
                return UdpListener(cfg, port=port)
            if kind is ListenerType.WEBSOCKET:
                return WebSocketListener(cfg, port=port, limits=limits, connection_counters=conns)
            if kind in (ListenerType.AMQP, ListenerType.RABBITMQ_CLIENT):
                return AmqpListener(cfg, instance_id=instance_id)
            if kind is ListenerType.MQTT_LISTENER:
                if port is not None:
                    cfg = cfg.model_copy(update={"listen_on_port": port})
                return MqttBrokerListener(cfg, instance_id=instance_id,
                                          workdir=self.settings.data_dir / "mqttlistener" / cfg.key,
                                          keepalive=self.settings.mqtt_keepalive,
                                          fast_path=self.settings.mqtt_fastpath)
        except ValueError as exc:  # a configuration the listener cannot run (e.g. a bad framing escape)
            raise UnsupportedListenerError(cfg.key, port if port is not None else cfg.listen_on_port,
                                           str(exc)) from exc
        raise UnsupportedListenerError(cfg.key, cfg.listen_on_port,
                                       f"listener type {kind.value} is not supported by this runtime")

    async def replay(self, dead: dict[str, Any]) -> str:
        if self.data is None or not self.data.intake.accepting:
            raise CommandRefusedError("not_running", "replay needs a Running instance")
        if dead.get("payloadTruncated"):
            raise CommandRefusedError("payload_truncated", f"dead letter {dead.get('id')} kept only "
                                      f"{len(base64.b64decode(dead.get('payload') or b''))} of its "
                                      f"{dead.get('payloadSize')} bytes: it cannot be replayed")
        payload = base64.b64decode(dead.get("payload") or b"")
        msg = InboundMessage(listener=dead.get("listener") or "replay", payload=payload, topic=dead.get("topic"),
                             path=dead.get("path"), headers=dead.get("headers") or {}, kind=MessageKind.REGULAR)
        if not self.data.intake.offer(msg):
            raise CommandRefusedError("intake_full", "the runtime is busy; retry shortly")
        await self.store.mark_replayed(dead["id"], msg.received_at)
        return msg.id
