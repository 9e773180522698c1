"""The dispatcher: runs each message through its route. The only catch site for stage errors.

Per message, synchronously (no await): planner -> device lookup -> route -> sentinel -> input translator
-> workflow -> output translator; then, without blocking, the outgoing messages go to the transmitters'
queues, the changed device and the message record to the store's batching writer. A ``StageError`` is
a Failed record (a dead letter) with its stage, code and detail; any other exception is a bug: logged
with its stack, recorded as ``internal_error``, and the next message goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from runtime.core.devices import VALUE_MAX_BYTES, Device, oversized_value
from runtime.core.errors import StageError
from runtime.core.health import HealthEvent
from runtime.core.messages import (
    InboundMessage,
    MessageKind,
    MessageRecord,
    OutgoingMessage,
    PemStatus,
    new_id,
)
from runtime.core.parsing.view import MessageView
from runtime.core.pipeline.compiled import CompiledRoutes
from runtime.core.pipeline.output import build_outgoing
from runtime.core.pipeline.planner import plan, planned_device, select_route
from runtime.core.pipeline.sentinel import check as sentinel_check
from runtime.core.pipeline.translator import translate
from runtime.core.pipeline.wiring import input_mappings, mapped_inputs
from runtime.core.pipeline.workflow import ParameterError, WorkflowEngine, WorkflowResult
from runtime.core.scripting import WorkflowScripts
from runtime.core.solution.enums import PipelineModuleType
from runtime.core.solution.model import Route, SolutionDocument
from runtime.core.streams import StreamRowError, StreamStep, build_row, mapped_row, step_values, stream_steps
from runtime.core.system_messages import SYSTEM_PREFIXES
from runtime.core.timers import TIMERS_DUE
from runtime.services.devices import DeviceRegistry
from runtime.services.health import HealthMonitor, report_health
from runtime.services.input_commands import InputCommandRefusedError
from runtime.services.metrics import Counters
from runtime.services.streams import StreamService
from runtime.services.system_messages import SystemMessageHandler

log = structlog.get_logger(__name__)

PT = PipelineModuleType


class RecordSink(Protocol):
    def record_message(self, rec: MessageRecord, on_commit: Callable[[], None] | None = None) -> None: ...

    async def writable(self) -> None: ...  # returns once the writer's queue is below its high-water mark


class TransmitterPort(Protocol):
    key: str

    def submit(self, out: OutgoingMessage, inbound: InboundMessage | None = None) -> bool: ...


def build_engines(doc: SolutionDocument, scripts: Mapping[str, WorkflowScripts | None]) -> dict[str, WorkflowEngine]:
    return {wf.key: WorkflowEngine.for_solution(doc, wf, scripts.get(wf.key)) for wf in doc.workflows}


class RoutePlan:
    """What a route needs per message, worked out once per (dispatcher, route): its sentinels, and per
    workflow step (in step order) the module key and the translator's field -> input mappings."""

    __slots__ = ("sentinels", "streams", "workflows")

    def __init__(self, doc: SolutionDocument, route: Route) -> None:
        sentinels = []
        workflows = []
        for step in route.steps:
            if step.type is PT.SENTINEL:
                sentinel = doc.sentinel_by_key.get(step.module)
                if sentinel is not None:
                    sentinels.append(sentinel)
            elif step.type is PT.WORKFLOW:
                workflows.append((step.module, input_mappings(route, step.module)))
        self.sentinels = tuple(sentinels)
        self.workflows = tuple(workflows)
        self.streams: tuple[StreamStep, ...] = stream_steps(route)


class Dispatcher:
    def __init__(
        self,
        doc: SolutionDocument,
        devices: DeviceRegistry,
        records: RecordSink,
        counters: Counters,
        engines: Mapping[str, WorkflowEngine],
        transmitters: Mapping[str, TransmitterPort],
        *,
        clock: Callable[[], float] = time.time,
        system_messages: SystemMessageHandler | None = None,
        trace: Callable[[str, Any], None] | None = None,
        streams: StreamService | None = None,
        health: HealthMonitor | None = None,
        compiled_routes: bool = True,
    ) -> None:
        self.doc = doc
        self._planner = doc.solution.planner
        self._devices = devices
        self._records = records
        self._counters = counters
        self._engines = engines
        self._transmitters = transmitters
        self._clock = clock
        # Device health (services/health.py): None when no device configuration has a watchdog
        self._health = health if health is not None and health.watching else None
        self._system = system_messages or SystemMessageHandler(doc, devices, clock, health=self._health,
                                                               counters=counters)
        self._plans: dict[int, tuple[Route, SolutionDocument, RoutePlan]] = {}  # id(route) -> plan
        # The dry run's observer (services/dryrun.py): told each stage's result as the message passes it.
        # None on the data plane (one attribute test per stage).
        self._trace = trace
        self._streams = streams
        # Routes compiled once per solution load (core/pipeline/compiled.py; NUVIOT_COMPILED_ROUTES=0 turns them
        # off): the usual message of a script-free JSON route without the general path's machinery
        self._compiled: CompiledRoutes | None = None
        if compiled_routes and trace is None:
            compiled = CompiledRoutes(doc, engines, self._health.watched_configurations if self._health else (),
                                      streams.specs if streams is not None else None)
            log.info("routes_compiled", compiled=compiled.compiled, refused=compiled.refused)
            self._compiled = compiled if compiled.active else None

    def route_plan(self, route: Route) -> RoutePlan:
        """The route's plan, made on first use; a plan is only reused for the same route of the same document."""
        entry = self._plans.get(id(route))
        if entry is not None and entry[0] is route and entry[1] is self.doc:
            return entry[2]
        plan_ = RoutePlan(self.doc, route)
        if len(self._plans) >= 4096:
            self._plans.clear()
        self._plans[id(route)] = (route, self.doc, plan_)
        return plan_

    # ------------------------------------------------------------------ data plane
    def process(self, batch: list[InboundMessage]) -> None:
        for msg in batch:
            self.handle(msg)

    async def flush(self) -> None:
        return None  # transmitters flush when the command plane stops them

    async def ready(self) -> None:
        """Back-pressure between batches: wait while the record sink's queue is above its high-water mark."""
        await self._records.writable()

    def handle(self, msg: InboundMessage) -> MessageRecord:
        started = time.perf_counter()
        if (msg.topic or msg.path or "").startswith(SYSTEM_PREFIXES):  # reference §5.4: never the pipeline
            r = self._system.handle(msg)
            return self._finish(msg, r.status, r.stage, r.error, r.device_id, r.message_id, started, r.detail)
        compiled = self._compiled
        if compiled is not None and compiled.doc is self.doc:
            try:
                done = compiled.run(msg, self._devices.get, self._clock)
            except Exception:  # a bug in the compiled route: the general path still gives the message its outcome
                log.exception("compiled_route_crashed", message=msg.id, listener=msg.listener)
                done = None
            if done is not None:
                return self._finish_compiled(msg, done, started)
            self._counters.compiled_fallback += 1
        device_id: str | None = None
        message_id: str | None = None
        stage: str | None = "planner"
        status = PemStatus.COMPLETED
        error: str | None = None
        detail: dict[str, Any] | None = None
        queued = False
        try:
            view = MessageView(msg.payload, topic=msg.topic, path=msg.path, method=msg.method, headers=msg.headers,
                               query=msg.query, received_at=msg.received_at)
            device_id, message_id = plan(self._planner, view)
            device, config = planned_device(self.doc, device_id, self._devices.get(device_id))
            route = select_route(self.doc, config, message_id)
            message_def = self.doc.message_by_key[route.message_definition]
            if message_id is None:
                message_id = message_def.message_id
            trace = self._trace
            if trace is not None:
                trace("planner", (device_id, message_id, route, device, config))
            stage = "sentinel"
            route_plan = self.route_plan(route)
            for sentinel in route_plan.sentinels:
                sentinel_check(sentinel, view, device)
            if trace is not None:
                trace("sentinel", route_plan.sentinels)
            stage = "inputtranslator"
            values = translate(self.doc, message_def, view)
            if trace is not None:
                trace("inputtranslator", (message_def, values))
            stage = "workflow"
            warnings, logs, sent, rows, errors = self._run_workflows(msg, route, device, values, message_id,
                                                                     route_plan)
            if rows or route_plan.streams:
                stage = "datastream"
                queued = self._write_streams(route_plan.streams, rows, device_id, msg.received_at, values,
                                             warnings)
            if warnings:
                status = PemStatus.COMPLETED_WITH_WARNINGS
            if warnings or logs or sent or errors:
                detail = {k: v for k, v in (("warnings", warnings), ("logs", logs), ("sent", sent)) if v}
                if errors:
                    detail["errors"] = [e.as_dict() for e in errors]
            stage = None
        except StageError as exc:
            status, stage, error = PemStatus.FAILED, exc.stage, f"{exc.code}: {exc.detail}"
        except Exception as exc:
            log.exception("stage_crashed", stage=stage, message=msg.id, listener=msg.listener)
            status, error = PemStatus.FAILED, f"internal_error: {type(exc).__name__}: {exc}"
        return self._finish(msg, status, stage, error, device_id, message_id, started, detail, queued)

    def _write_streams(self, steps: tuple[StreamStep, ...], scripted: list[tuple[str, str, dict[str, Any],
                       dict[str, Any] | None]], device_id: str, at: float, values: dict[str, Any],
                       warnings: list[str]) -> bool:
        """The route's data-stream steps and the scripts' addToDataStream/updateDataStream: every row is
        checked first (a bad one fails the message, naming stream and field), then all are queued."""
        streams = self._streams
        items: list[tuple[str, dict[str, Any]]] = []
        if steps:
            specs = streams.specs if streams is not None else {}
            workflow_values: dict[str, Any] | None = None
            for step in steps:
                spec = specs.get(step.stream)
                if spec is None:
                    warnings.append(f"data stream {step.stream} is not running; row not written")
                    continue
                if step.by_name or step.from_workflow:
                    if workflow_values is None:  # the attributes after the workflow
                        device = self._devices.get(device_id)
                        workflow_values = device.attributes if device is not None else {}
                    fields = step_values(step, values, workflow_values, spec.names)
                    row = build_row(spec, device_id, at, fields, stamp=False)
                else:  # message field -> stream field key, checked when the solution was loaded
                    row = mapped_row(spec, step.from_message, device_id, values)
                items.append((step.stream, {"op": "add", "at": at, "row": row}))
        for op, stream, fields, where in scripted:
            if streams is None or stream not in streams:
                raise StreamRowError(stream, None, "no such data stream in the solution")
            if op == "update":
                items.append((stream, streams.update_row(stream, device_id, at, fields, where)))
            else:
                items.append((stream, streams.row(stream, device_id, at, fields)))
        return self._queue_rows(items, warnings)

    def _queue_rows(self, items: Sequence[tuple[str, dict[str, Any]]], warnings: list[str]) -> bool:
        """Queue checked stream rows; a refused one (queue full) is a warning. True when any was queued (the
        message is then acked once they are durable)."""
        streams = self._streams
        queued = False
        for stream, item in items:
            if streams is not None and streams.put(stream, item):
                queued = True
            else:
                warnings.append(f"data stream {stream}: queue full, row refused (counted)")
        return queued

    def _run_workflows(
        self,
        msg: InboundMessage | None,
        route: Route,
        device: Device,
        values: dict[str, Any],
        message_id: str,
        route_plan: RoutePlan | None = None,
    ) -> tuple[list[str], list[str], list[str], list[tuple[str, str, dict[str, Any], dict[str, Any] | None]],
               list[HealthEvent]]:
        warnings: list[str] = []
        logs: list[str] = []
        sent: list[str] = []
        rows: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
        errors: list[HealthEvent] = []
        now = self._clock()
        working = device
        for module, mappings in (route_plan or self.route_plan(route)).workflows:
            engine = self._engines.get(module)
            if engine is None:
                continue
            result = engine.run(working, mapped_inputs(mappings, values), message_id=message_id, now=now)
            if self._trace is not None:
                self._trace("workflow", (module, working, result))
            working = self._apply(working, result, owned=True)
            if result.warnings or result.rule_failures:
                warnings += result.warnings + [f"business rule {code}: {why}" for code, why in result.rule_failures]
            if result.logs:
                logs += result.logs
            if result.stream_writes:
                rows += result.stream_writes
            if result.output_commands:
                sent += self._transmit(route, device.device_id, result, module, msg, warnings, logs)
            if result.health_events:
                errors += result.health_events
        working.last_seen = now
        if self._health is not None:  # a dict lookup for a device whose configuration watches nothing
            errors += self._health.seen(working, route.message_definition, now)
        _refuse_oversized(working)
        self._devices.state_changed(working)
        for line in logs:
            log.info("script_console", device_id=device.device_id, line=line[:1000])
        if errors:
            report_health(self._counters, errors)
        return warnings, logs, sent, rows, errors

    def _apply(self, device: Device, result: WorkflowResult, *, owned: bool = False) -> Device:
        """A copy of ``device`` with the result applied. ``owned``: the result is not used afterwards (its
        dicts, fresh from the run, become the device's without another copy)."""
        updated = device.copy()
        if owned:
            updated.attributes = result.attributes
            updated.state_machines = result.state_machines
            updated.properties = result.properties
            updated.property_bag = result.property_bag
            if result.location is not None:
                updated.latitude, updated.longitude = result.location
        else:
            result.apply_to(updated)
        updated.updated_at = self._clock()
        return updated

    def _transmit(
        self,
        route: Route,
        device_id: str,
        result: WorkflowResult,
        workflow_key: str,
        inbound: InboundMessage | None,
        warnings: list[str],
        logs: list[str],
    ) -> list[str]:
        if not result.output_commands:
            return []
        engine = self._engines[workflow_key]
        out = build_outgoing(self.doc, route, device_id, result.output_commands, engine.scripts,
                             workflow_key=workflow_key)
        if self._trace is not None:
            self._trace("outputtranslator", out)
        warnings += out.warnings
        logs += out.logs
        sent: list[str] = []
        for outgoing, steps in out.messages:
            for step in steps:
                transmitter = self._transmitters.get(step.module)
                if transmitter is None:
                    warnings.append(f"transmitter {step.module} is not running; {outgoing.message_key} not sent")
                    continue
                if transmitter.submit(outgoing, inbound):
                    sent.append(f"{outgoing.message_key}->{step.module}")
                else:
                    warnings.append(f"transmitter {step.module} did not take {outgoing.message_key}; see its status")
        return sent

    def _finish(
        self,
        msg: InboundMessage,
        status: PemStatus,
        stage: str | None,
        error: str | None,
        device_id: str | None,
        message_id: str | None,
        started: float,
        detail: dict[str, Any] | None,
        queued: bool = False,
    ) -> MessageRecord:
        failed = status is PemStatus.FAILED
        if not failed and detail is None:  # the usual record: by position (keywords cost ~0.4 us), rest defaults
            rec = MessageRecord(msg.id, msg.received_at, msg.listener, status, device_id, message_id, None, error,
                                (time.perf_counter() - started) * 1000.0, msg.kind)
        else:
            rec = MessageRecord(
                id=msg.id,
                received_at=msg.received_at,
                listener=msg.listener,
                status=status,
                device_id=device_id,
                message_id=message_id,
                stage=stage if failed else None,
                error=error,
                processing_ms=(time.perf_counter() - started) * 1000.0,
                kind=msg.kind,
                payload=msg.payload if failed else None,
                topic=msg.topic if failed else None,
                path=msg.path if failed else None,
                headers=dict(msg.headers) if failed and msg.headers else None,
                detail=detail,
            )
        c = self._counters
        if failed:
            c.failed += 1
            c.dead_lettered += 1
            c.failed_by_stage[stage or "unknown"] += 1
            log.warning("message_failed", message=msg.id, listener=msg.listener, device_id=device_id,
                        stage=stage, error=(error or "")[:500])
        else:
            c.processed += 1
        ack = msg.ack
        if queued and ack is not None and self._streams is not None:  # acked once its stream rows are durable too
            ack = self._ack_after_streams(ack)
        self._records.record_message(rec, ack)
        if msg.done is not None:
            msg.done(rec)
        return rec

    def _finish_compiled(self, msg: InboundMessage, done: tuple[str, str, Device, Sequence[tuple[str, dict[str, Any]]]],
                         started: float) -> MessageRecord:
        """``_finish`` for a message a compiled route completed: the device stored, its stream rows queued (as
        ``_write_streams`` queues them), the Completed record (acked once the rows are durable too). The record
        is made here rather than through ``_finish``: that call costs ~0.4 us a message (bench.route_floor)."""
        device_id, message_id, updated, rows = done
        self._devices.state_changed(updated)
        ack = msg.ack
        c = self._counters
        c.compiled += 1
        if rows:
            warnings: list[str] = []
            queued = self._queue_rows(rows, warnings)
            if warnings:
                return self._finish(msg, PemStatus.COMPLETED_WITH_WARNINGS, None, None, device_id, message_id,
                                    started, {"warnings": warnings}, queued)
            if queued and ack is not None:
                ack = self._ack_after_streams(ack)
        rec = MessageRecord(msg.id, msg.received_at, msg.listener, PemStatus.COMPLETED, device_id, message_id, None,
                            None, (time.perf_counter() - started) * 1000.0, msg.kind)
        c.processed += 1
        self._records.record_message(rec, ack)
        if msg.done is not None:
            msg.done(rec)
        return rec

    def _ack_after_streams(self, ack: Callable[[], None]) -> Callable[[], None]:
        streams = self._streams
        assert streams is not None

        def committed() -> None:
            streams.after_commit(ack)

        return committed

    # ------------------------------------------------------------------ input commands
    def run_input_command(
        self,
        *,
        device_configuration: str,
        route: str,
        workflow: str,
        command: str,
        device_id: str,
        method: str | None,
        query: dict[str, str],
        body: Any | None,
    ) -> MessageRecord:
        """Run one input command (CONTRACT §6). Raises ``InputCommandRefusedError`` (400/404/405) when it
        cannot run; a command that runs and fails is a Failed record (a dead letter) like a message.
        ``method`` None (MQTT) means the command's own. The parameters are the query's, then the body's
        (a transport refuses a body on GET and DELETE before this)."""
        config = self.doc.device_configuration_by_key.get(device_configuration)
        route_obj = config.route_by_key.get(route) if config is not None else None
        wf_step = None
        if route_obj is not None:
            wf_step = next((s for s in route_obj.steps if s.type is PT.WORKFLOW and s.module == workflow), None)
        engine = self._engines.get(workflow) if wf_step is not None else None
        cmd = engine.workflow.input_command_by_key.get(command) if engine is not None else None
        if config is None or route_obj is None or engine is None or cmd is None:
            raise InputCommandRefusedError(
                404, "unknown_command",
                f"no input command {device_configuration}/{route}/{workflow}/{command} in the solution")
        expected = cmd.endpoint_type.value.upper()
        if method is None:
            method = expected
        elif method.upper() != expected:
            raise InputCommandRefusedError(405, "method_not_allowed", f"{command} takes {expected}, not {method}",
                                           {"Allow": expected})
        device = self._devices.get(device_id)
        if device is None or device.device_configuration != device_configuration:
            raise InputCommandRefusedError(404, "unknown_device",
                                           f"no device {device_id} with device configuration {device_configuration}")
        if body is not None and not isinstance(body, dict):
            raise InputCommandRefusedError(400, "bad_body", "the parameters must be a JSON object")
        params: dict[str, Any] = {**query, **(body or {})}
        msg = InboundMessage(listener="inputcommand", payload=b"", path=f"/{device_configuration}/{route}/"
                             f"{workflow}/{command}/{device_id}", method=method, query=query,
                             kind=MessageKind.INPUT_COMMAND)
        msg.id = new_id()
        started = time.perf_counter()
        status, stage, error, detail = PemStatus.COMPLETED, None, None, None
        try:
            result = engine.run_input_command(command, device, params, message_id=command, now=self._clock())
        except ParameterError as exc:
            raise InputCommandRefusedError(400, exc.code, exc.detail) from None
        except StageError as exc:
            status, stage, error = PemStatus.FAILED, exc.stage, f"{exc.code}: {exc.detail}"
            result = None
        except Exception as exc:
            log.exception("stage_crashed", stage="workflow", input_command=command)
            status, stage, error = PemStatus.FAILED, "workflow", f"internal_error: {type(exc).__name__}: {exc}"
            result = None
        if result is not None:
            try:
                updated = self._apply(device, result)
                updated.last_seen = device.last_seen
                warnings: list[str] = list(result.warnings)
                logs: list[str] = list(result.logs)
                sent = self._transmit(route_obj, device_id, result, workflow, None, warnings, logs)
                _refuse_oversized(updated)
                if result.stream_writes:
                    self._write_streams((), result.stream_writes, device_id, self._clock(), {}, warnings)
                self._devices.state_changed(updated)
                if warnings:
                    status = PemStatus.COMPLETED_WITH_WARNINGS
                shown: dict[str, Any] = {k: v for k, v in (("warnings", warnings), ("logs", logs), ("sent", sent)) if v}
                if result.health_events:
                    report_health(self._counters, result.health_events)
                    shown["errors"] = [e.as_dict() for e in result.health_events]
                detail = shown or None
                for line in logs:
                    log.info("script_console", device_id=device_id, line=line[:1000])
            except StageError as exc:
                status, stage, error = PemStatus.FAILED, exc.stage, f"{exc.code}: {exc.detail}"
        return self._finish(msg, status, stage, error, device_id, command, started, detail)


    # ------------------------------------------------------------------ timers
    def run_timer(self, route: Route, workflow: str, timer: str, device_id: str, now: float,
                  due: dict[str, float]) -> MessageRecord | None:
        """A workflow timer fired for one device (services/timers.py): its mappings run as a message's would; the
        device is stored with ``due`` (its timers' next due times, ``core/timers.py``). A record with listener
        ``timer``; None when the device is gone."""
        device = self._devices.get(device_id)
        engine = self._engines.get(workflow)
        if device is None or engine is None:
            return None
        msg = InboundMessage(listener="timer", payload=b"", path=f"/timer/{workflow}/{timer}/{device_id}")
        msg.id = new_id()
        started = time.perf_counter()
        status, stage, error, detail = PemStatus.COMPLETED, None, None, None
        try:
            result = engine.run_timer(timer, device, now=now)
            updated = self._apply(device, result)
            updated.last_seen = device.last_seen  # a timer is not the device calling in
            updated.property_bag = {**updated.property_bag, TIMERS_DUE: due}
            warnings, logs = list(result.warnings), list(result.logs)
            sent = self._transmit(route, device_id, result, workflow, None, warnings, logs)
            _refuse_oversized(updated)
            self._devices.state_changed(updated)
            if result.health_events:
                report_health(self._counters, result.health_events)
            status = PemStatus.COMPLETED_WITH_WARNINGS if warnings else status
            detail = {k: v for k, v in (("warnings", warnings), ("logs", logs), ("sent", sent)) if v} or None
        except StageError as exc:
            status, stage, error = PemStatus.FAILED, exc.stage, f"{exc.code}: {exc.detail}"
            stored = device.copy()  # the schedule goes on even when a firing fails
            stored.property_bag = {**device.property_bag, TIMERS_DUE: due}
            self._devices.state_changed(stored)
        return self._finish(msg, status, stage, error, device_id, timer, started, detail)


def _refuse_oversized(device: Device) -> None:
    """A workflow state value over the limit is not stored: the message fails (a dead letter) instead."""
    found = oversized_value(device)
    if found is not None:
        what, key, size = found
        raise StageError("workflow", "value_too_large",
                         f"{what} {key} is {size} bytes, over the {VALUE_MAX_BYTES}-byte limit: not stored")
