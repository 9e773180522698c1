"""The workflow stage: one device message (or input command) through a NuvIoT DeviceWorkflow.

Pure: no I/O, no logging. Scripts run through the ``runtime.core.scripting`` port; a workflow without
scripts (``scripts=None``), or a message that touches no scripted hook, makes no script call at all.
The stage works on a copy of the device's state and returns a ``WorkflowResult``; the caller applies it
(``result.apply_to(device)``) only when the whole message succeeded, so a failing message changes nothing.

Order for a message (reference/nuviot-spec.md §2.5), see docs/scripting.md for the details we chose:
  preHandler -> each mapped input, in the workflow's input order: onSet(value), then its mappings
  (input -> attribute [typed; the attribute's onSet decides when present] -> attribute's own mappings;
  input -> state machine; input -> output command) -> business rules -> postHandler.
Order for an input command: parameters converted and checked -> onArrive() -> the command's mappings
(-> attribute, -> state machine, -> output command). No pre/postHandler: NuvIoT's own templates describe
them as run "when an input value is set from a message".
State-machine events (from mappings or ``StateMachines.k.handle``) run to completion in the order raised:
the current state's transition for the event runs ``onTransition(value)``, then the machine moves to the
transition's new state; then the events that script raised run. An event the state has no transition for
is ignored. Output commands are collected in the order they are enqueued.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.pipeline.straight import StraightRun, plan_straight
from runtime.core.pipeline.typed import convert, is_numeric
from runtime.core.pipeline.wiring import edges
from runtime.core.pipeline.workflow_run import MAX_EVENTS_PER_RUN, STAGE, WorkflowResult, _Run
from runtime.core.scripting import (
    POST_HANDLER,
    PRE_HANDLER,
    SessionContext,
    WorkflowScripts,
    hook_input_on_set,
    hook_on_arrive,
)
from runtime.core.solution.enums import NodeType
from runtime.core.solution.model import (
    InputCommand,
    MachineState,
    Parameter,
    SolutionDocument,
    StateSet,
    Transition,
    Workflow,
)
from runtime.core.timefmt import iso

__all__ = ["MAX_EVENTS_PER_RUN", "STAGE", "ParameterError", "WorkflowEngine", "WorkflowResult"]

_INPUT = NodeType.INPUT


class ParameterError(StageError):
    """An input-command parameter is missing or bad; ``parameter`` names it (HTTP 400)."""

    def __init__(self, parameter: str, code: str, reason: str) -> None:
        super().__init__(STAGE, code, f"parameter {parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


class WorkflowEngine:
    """One workflow, prepared once per solution load. ``run`` and ``run_input_command`` are pure."""

    def __init__(
        self,
        workflow: Workflow,
        scripts: WorkflowScripts | None = None,
        *,
        state_sets: Mapping[str, StateSet] | None = None,
    ) -> None:
        self.workflow = workflow
        self.scripts = scripts
        self._state_sets = dict(state_sets or {})
        self._edges = edges(workflow)
        # Prepared once per solution load (the engine is rebuilt with the document): per message, dict
        # lookups instead of scans of the workflow's lists.
        self._defaulted_attributes = tuple(a for a in workflow.attributes if a.default_value is not None)
        self._initial_states = tuple(
            (m.key, m.initial_state) for m in workflow.state_machines if m.initial_state is not None
        )
        # id(machine) -> state key -> its first state; id(state) -> event -> its first transition
        self._states: dict[int, dict[str | None, MachineState]] = {}
        self._transitions: dict[int, dict[str, Transition]] = {}
        for m in workflow.state_machines:
            states = self._states.setdefault(id(m), {})
            for st in m.states:
                states.setdefault(st.key, st)
                events = self._transitions.setdefault(id(st), {})
                for t in st.transitions:
                    events.setdefault(t.event, t)
        self._input_plan = tuple(
            (node.key, node, self._state_set(node.state_set)) for node in workflow.inputs
        )
        # key -> (type, state set): what converting an input / setting an attribute needs, looked up once
        self._input_types = {
            key: (node.input_type, self._state_set(node.state_set)) for key, node in workflow.input_by_key.items()
        }
        self._attribute_types = {
            key: (attr.attribute_type, self._state_set(attr.state_set))
            for key, attr in workflow.attribute_by_key.items()
        }
        # id(state) -> the error code an alarm state raises (NuvIoT State.IsAlarmState/ErrorCode)
        self._alarms: dict[int, str] = {
            id(st): st.error_code
            for m in workflow.state_machines
            for st in m.states
            if st.is_alarm_state and st.error_code
        }
        # attributes with mappings out of them (setting another one fires nothing)
        self._attribute_edges = frozenset(k for (t, k) in self._edges if t is NodeType.ATTRIBUTE)
        # a script-free workflow without alarm states runs straight (straight.py): the same result, faster
        self._straight = None if scripts is not None or self._alarms else plan_straight(
            workflow, (key for key, _, _ in self._input_plan), self._edges, self._attribute_types,
            self._input_types, self._states, self._transitions, MAX_EVENTS_PER_RUN)

    @property
    def straight(self) -> StraightRun | None:
        """The straight run (``straight.py``) when this workflow has one: what a compiled route builds on."""
        return self._straight

    @classmethod
    def for_solution(
        cls, doc: SolutionDocument, workflow: Workflow, scripts: WorkflowScripts | None
    ) -> WorkflowEngine:
        return cls(workflow, scripts, state_sets=doc.state_set_by_key)

    # ---- entry points

    def run(
        self,
        device: Device,
        inputs: Mapping[str, object],
        *,
        message_id: str | None = None,
        now: float | None = None,
    ) -> WorkflowResult:
        """Run the workflow for one message; ``inputs`` are ``{input key: value}`` (see ``route_inputs``).
        ``now`` (epoch s) stamps the error codes the run raises (default: the device's ``updated_at``)."""
        done = self._straight.run(device, inputs) if self._straight is not None else None  # straight.py
        if done is not None:
            return WorkflowResult(*done)
        wf = self.workflow
        typed: dict[str, object] = {}
        input_types = self._input_types
        for key, value in inputs.items():
            spec = input_types.get(key)
            if spec is None:
                continue
            try:
                typed[key] = convert(value, spec[0], spec[1])
            except ValueError as exc:
                raise StageError(
                    STAGE, "input_conversion_failed", f"input {key} ({spec[0].value}): {exc}"
                ) from None
        ctx = None
        if self.scripts is not None:  # only a script session reads the context
            ctx = SessionContext(
                device.device_id,
                device.name,
                device.device_configuration,
                device.device_type,
                message_id,
                typed,
            )
        run = _Run(self, device, ctx, now)
        scripted = run.scripted
        if scripted:
            run.hook(PRE_HANDLER, ())
        for key, _node, _states in self._input_plan:
            if key not in typed:
                continue
            value = typed[key]
            if scripted:
                run.hook(hook_input_on_set(key), (value,))
            run.fire(_INPUT, key, value)
        if scripted:  # without scripts, rules and the post handler have nothing to run
            for rule in wf.business_rules:
                run.business_rule(rule.key, rule.error_code)
            run.hook(POST_HANDLER, ())
        return run.result()

    def run_input_command(
        self,
        command_key: str,
        device: Device,
        params: Mapping[str, object],
        *,
        message_id: str | None = None,
        now: float | None = None,
    ) -> WorkflowResult:
        """Run an input command; ``params`` are raw (query-string text or JSON values). ``ParameterError`` on bad ones."""
        command = self.workflow.input_command_by_key.get(command_key)
        if command is None:
            raise StageError(
                STAGE,
                "unknown_input_command",
                f"workflow {self.workflow.key} has no input command {command_key}",
            )
        values = self.convert_parameters(command, params)
        run = _Run(
            self,
            device,
            SessionContext(
                device.device_id,
                device.name,
                device.device_configuration,
                device.device_type,
                message_id,
                {},
                values,
            ),
            now,
        )
        run.hook(hook_on_arrive(command.key), ())
        for edge in self._edges.get((NodeType.INPUT_COMMAND, command.key), ()):
            run.command_edge(command, edge, values)
        return run.result()

    def run_timer(self, timer_key: str, device: Device, *, now: float) -> WorkflowResult:
        """A timer fired (``core/timers.py``): its outgoing connections run with the firing time (ISO 8601, UTC)
        as the value, as an input's do: attribute, state machine (the connection's event), output command."""
        if not any(t.key == timer_key for t in self.workflow.timers):
            raise StageError(STAGE, "unknown_timer", f"workflow {self.workflow.key} has no timer {timer_key}")
        ctx = None
        if self.scripts is not None:
            ctx = SessionContext(device.device_id, device.name, device.device_configuration, device.device_type,
                                 timer_key, {})
        run = _Run(self, device, ctx, now)
        run.fire(NodeType.TIMER, timer_key, iso(now))
        return run.result()

    def convert_parameters(self, command: InputCommand, params: Mapping[str, object]) -> dict[str, object]:
        """Typed parameter values; a missing optional one is left out. Raises ``ParameterError``."""
        out: dict[str, object] = {}
        for p in command.parameters:
            raw = params.get(p.key)
            if raw is None or raw == "":
                if p.default_value is not None and p.default_value != "":
                    raw = p.default_value
                elif p.is_required:
                    raise ParameterError(p.key, "missing_parameter", "is required")
                else:
                    continue
            out[p.key] = self._parameter(p, raw)
        return out

    # ---- helpers shared with _Run

    def _parameter(self, p: Parameter, raw: object) -> object:
        try:
            value = convert(raw, p.parameter_type, self._state_set(p.state_set), lenient=True)
        except ValueError as exc:
            raise ParameterError(
                p.key, "invalid_parameter", f"{exc} (type {p.parameter_type.value})"
            ) from None
        if is_numeric(p.parameter_type) and isinstance(value, (int, float)):  # convert gave a number
            if p.min_value is not None and value < p.min_value:
                raise ParameterError(
                    p.key, "invalid_parameter", f"{value} is below the minimum {p.min_value:g}"
                )
            if p.max_value is not None and value > p.max_value:
                raise ParameterError(
                    p.key, "invalid_parameter", f"{value} is above the maximum {p.max_value:g}"
                )
        return value

    def _state_set(self, key: str | None) -> StateSet | None:
        return self._state_sets.get(key) if key else None
