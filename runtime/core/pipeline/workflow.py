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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.pipeline.typed import convert, is_numeric
from runtime.core.pipeline.wiring import Edge, edges
from runtime.core.scripting import (
    POST_HANDLER,
    PRE_HANDLER,
    HookEffects,
    ScriptError,
    ScriptSession,
    ScriptState,
    SessionContext,
    WorkflowScripts,
    hook_attribute_on_set,
    hook_business_rule,
    hook_input_on_set,
    hook_on_arrive,
    hook_on_execute,
    hook_on_transition,
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

STAGE = "workflow"
MAX_EVENTS_PER_RUN = 100
_ERROR_CODES = {
    "error": "script_error",
    "timeout": "script_timeout",
    "memory": "script_out_of_memory",
    "compile": "script_error",
}


class ParameterError(StageError):
    """An input-command parameter is missing or bad; ``parameter`` names it (HTTP 400)."""

    def __init__(self, parameter: str, code: str, reason: str) -> None:
        super().__init__(STAGE, code, f"parameter {parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


@dataclass(slots=True)
class WorkflowResult:
    """The device state after the run, and what it produced. Nothing is applied until the caller does."""

    attributes: dict[str, object]
    state_machines: dict[str, str]
    properties: dict[str, object]
    property_bag: dict[str, object]
    location: tuple[float, float] | None
    output_commands: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # logConsole lines, for the structured log
    warnings: list[str] = field(default_factory=list)
    rule_failures: list[tuple[str | None, str]] = field(default_factory=list)  # (error code, reason)
    # the scripts' addToDataStream / updateDataStream calls: (op, stream key, values, filter)
    stream_writes: list[tuple[str, str, dict[str, object], dict[str, object] | None]] = field(default_factory=list)
    script_calls: int = 0  # hooks called (0 for a run that needed no script)

    def apply_to(self, device: Device) -> None:
        device.attributes = dict(self.attributes)
        device.state_machines = dict(self.state_machines)
        device.properties = dict(self.properties)
        device.property_bag = dict(self.property_bag)
        if self.location is not None:
            device.latitude, device.longitude = self.location


# Enum members as module constants: ``NodeType.X`` is a class attribute lookup (~0.1 us) on every edge fired.
_INPUT = NodeType.INPUT
_ATTRIBUTE = NodeType.ATTRIBUTE
_STATE_MACHINE = NodeType.STATE_MACHINE
_OUTPUT_COMMAND = NodeType.OUTPUT_COMMAND


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
        # attributes with mappings out of them (setting another one fires nothing)
        self._attribute_edges = frozenset(k for (t, k) in self._edges if t is NodeType.ATTRIBUTE)

    @classmethod
    def for_solution(
        cls, doc: SolutionDocument, workflow: Workflow, scripts: WorkflowScripts | None
    ) -> WorkflowEngine:
        return cls(workflow, scripts, state_sets=doc.state_set_by_key)

    # ---- entry points

    def run(
        self, device: Device, inputs: Mapping[str, object], *, message_id: str | None = None
    ) -> WorkflowResult:
        """Run the workflow for one message; ``inputs`` are ``{input key: value}`` (see ``route_inputs``)."""
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
        run = _Run(self, device, ctx)
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
        self, command_key: str, device: Device, params: Mapping[str, object], *, message_id: str | None = None
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
        )
        run.hook(hook_on_arrive(command.key), ())
        for edge in self._edges.get((NodeType.INPUT_COMMAND, command.key), ()):
            run.command_edge(command, edge, values)
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


class _Run:
    """The mutable working copy of one run. Never escapes the engine."""

    def __init__(self, engine: WorkflowEngine, device: Device, ctx: SessionContext | None) -> None:
        self.engine = engine
        self.wf = engine.workflow
        self.ctx = ctx
        self.scripted = engine.scripts is not None
        attributes = dict(device.attributes)
        for attr in engine._defaulted_attributes:
            if attr.key not in attributes:
                try:
                    attributes[attr.key] = convert(
                        attr.default_value, attr.attribute_type, engine._state_set(attr.state_set)
                    )
                except ValueError:
                    attributes[attr.key] = attr.default_value
        machines = dict(device.state_machines)
        for key, initial in engine._initial_states:
            if key not in machines:
                machines[key] = initial
        location = (
            (device.latitude, device.longitude)
            if device.latitude is not None and device.longitude is not None
            else None
        )
        self.state = ScriptState(
            attributes, dict(device.properties), dict(device.property_bag), machines, location
        )
        self.session: ScriptSession | None = None
        self.commands: list[tuple[str, dict[str, object]]] = []
        self.logs: list[str] = []
        self.warnings: list[str] = []
        self.rule_failures: list[tuple[str | None, str]] = []
        self.stream_writes: list[tuple[str, str, dict[str, object], dict[str, object] | None]] = []
        self.calls = 0
        self.events = 0

    # ---- scripts

    def call(self, hook: str, args: Sequence[object]) -> HookEffects | None:
        scripts = self.engine.scripts
        if scripts is None or not scripts.has(hook):
            return None
        self.calls += 1
        try:
            if self.session is None:
                assert self.ctx is not None  # built by the engine whenever it has scripts
                self.session = scripts.session(self.ctx, self.state)
            effects = self.session.call(hook, args, self.state)
        except ScriptError as exc:
            raise StageError(STAGE, _ERROR_CODES[exc.kind], exc.detail) from exc
        self.logs.extend(effects.logs)
        self.warnings.extend(effects.warnings)
        if effects.stream_writes:
            self.stream_writes.extend(effects.stream_writes)
        if "attributes" in effects.state_changed:
            self._coerce_attributes()
        return effects

    def apply(self, effects: HookEffects | None) -> None:
        if effects is None:
            return
        for key, fields in effects.commands:
            self.emit(key, fields)
        for machine, event, value in effects.events:
            self.raise_event(machine, event, value)

    def hook(self, hook: str, args: Sequence[object]) -> HookEffects | None:
        effects = self.call(hook, args)
        self.apply(effects)
        return effects

    def _coerce_attributes(self) -> None:
        changed = False
        attrs = self.state.attributes
        for attr in self.wf.attributes:
            if attr.key not in attrs or attrs[attr.key] is None:
                continue
            raw = attrs[attr.key]
            try:
                value = convert(raw, attr.attribute_type, self.engine._state_set(attr.state_set))
            except ValueError as exc:
                raise StageError(
                    STAGE,
                    "attribute_conversion_failed",
                    f"attribute {attr.key} ({attr.attribute_type.value}): {exc}",
                ) from None
            if value != raw or type(value) is not type(raw):
                attrs[attr.key] = value
                changed = True
        if changed:
            self.state.version += 1

    # ---- nodes

    def fire(self, node_type: NodeType, key: str, value: object) -> None:
        """The mappings out of an input or an attribute, with ``value``."""
        for edge in self.engine._edges.get((node_type, key), ()):
            to_type = edge.to_type
            if to_type is _ATTRIBUTE:
                self.set_attribute(edge.to_key, value)
            elif to_type is _STATE_MACHINE:
                self.raise_event(edge.to_key, edge.event or _event_name(value), value)
            elif to_type is _OUTPUT_COMMAND:
                self.send(edge.to_key, (value,))

    def set_attribute(self, key: str, value: object) -> None:
        engine = self.engine
        spec = engine._attribute_types.get(key)
        if spec is None:
            self.warnings.append(f"mapping to unknown attribute {key} ignored")
            return
        try:
            typed = convert(value, spec[0], spec[1])
        except ValueError as exc:
            raise StageError(
                STAGE, "attribute_conversion_failed", f"attribute {key} ({spec[0].value}): {exc}"
            ) from None
        effects = self.call(hook_attribute_on_set(key), (typed,)) if self.scripted else None
        if effects is None:  # no script: the value is set directly
            self.state.attributes[key] = typed
            self.state.version += 1
        else:
            self.apply(effects)
        if key in engine._attribute_edges:  # no mapping out of it: firing it would do nothing
            self.fire(_ATTRIBUTE, key, self.state.attributes.get(key))

    def send(self, key: str, args: Sequence[object], by_key: Mapping[str, object] | None = None) -> None:
        """``OutputCommands.<key>.send(*args)`` from a mapping: onExecute(*args), or a command of the args."""
        command = self.wf.output_command_by_key.get(key)
        if command is None:
            self.warnings.append(f"mapping to unknown output command {key} ignored")
            return
        effects = self.call(hook_on_execute(key), args)
        if effects is not None:
            self.apply(effects)
            return
        if by_key is not None and any(p.key in by_key for p in command.parameters):
            fields = {p.key: by_key[p.key] for p in command.parameters if p.key in by_key}
        else:
            fields = {p.key: a for p, a in zip(command.parameters, args, strict=False)}
        self.emit(key, fields)

    def emit(self, key: str, fields: Mapping[str, object]) -> None:
        command = self.wf.output_command_by_key.get(key)
        if command is None:
            self.warnings.append(f"unknown output command {key} dropped")
            return
        out = dict(fields)
        for p in command.parameters:
            if p.key in out and out[p.key] is not None:
                try:
                    out[p.key] = convert(out[p.key], p.parameter_type, self.engine._state_set(p.state_set))
                except ValueError as exc:
                    self.warnings.append(f"output command {key}: field {p.key}: {exc}; sent as it is")
        if command.parameters:
            declared = {p.key for p in command.parameters}
            extra = [k for k in out if k not in declared]
            if extra:
                self.warnings.append(
                    f"output command {key}: fields {', '.join(extra)} are not parameters of the command"
                )
        self.commands.append((key, out))

    def raise_event(self, machine_key: str, event: str, value: object) -> None:
        machine = self.wf.state_machine_by_key.get(machine_key)
        if machine is None:
            self.warnings.append(f"event {event} for unknown state machine {machine_key} ignored")
            return
        self.events += 1
        if self.events > MAX_EVENTS_PER_RUN:
            raise StageError(
                STAGE, "event_limit", f"more than {MAX_EVENTS_PER_RUN} state-machine events in one run"
            )
        current = self.state.state_machines.get(machine.key)
        states = self.engine._states[id(machine)]
        state = states.get(current)
        if state is None:
            start = machine.initial_state
            self.warnings.append(
                f"state machine {machine.key}: unknown state {current!r}, reset to {start!r}"
            )
            state = states.get(start)
            if state is None:
                return
            self.state.state_machines[machine.key] = state.key
            self.state.version += 1
        transition = self.engine._transitions[id(state)].get(event)
        if transition is None:  # the current state does not handle it: ignored (spec §2.5.4) ...
            if machine.exception_on_unhandled_event:  # ... unless the machine says so (NuvIoT's flag)
                raise StageError(STAGE, "unhandled_event",
                                 f"state machine {machine.key}: state {state.key} does not handle event {event}")
            return
        effects = (
            self.call(hook_on_transition(machine.key, state.key, event), (value,)) if self.scripted else None
        )
        if transition.new_state:
            self.state.state_machines[machine.key] = transition.new_state
            self.state.version += 1
        self.apply(effects)

    def business_rule(self, key: str, error_code: str | None) -> None:
        effects = self.call(hook_business_rule(key), ())
        if effects is None:
            return
        ok, reason = _rule_outcome(effects.value)
        if not ok:
            self.rule_failures.append((error_code, reason or f"business rule {key} failed"))
            self.warnings.append(f"business rule {key} failed: {reason or 'no reason given'}")
        self.apply(effects)

    def command_edge(self, command: InputCommand, edge: Edge, values: Mapping[str, object]) -> None:
        if edge.to_type is NodeType.ATTRIBUTE:
            param = edge.parameter
            if param is None:
                if edge.to_key in values:
                    param = edge.to_key
                elif len(command.parameters) == 1:
                    param = command.parameters[0].key
            if param is not None and param in values:
                self.set_attribute(edge.to_key, values[param])
        elif edge.to_type is NodeType.STATE_MACHINE:
            value = values.get(edge.parameter) if edge.parameter else None
            event = edge.event or (_event_name(value) if value is not None else command.key)
            self.raise_event(edge.to_key, event, value)
        elif edge.to_type is NodeType.OUTPUT_COMMAND:
            if edge.parameter:
                args: list[object] = [values.get(edge.parameter)]
            else:
                args = [values[p.key] for p in command.parameters if p.key in values]
            self.send(edge.to_key, args, by_key=values)

    # ---- the end

    def result(self) -> WorkflowResult:
        st = self.state
        return WorkflowResult(
            attributes={k: v for k, v in st.attributes.items() if v is not None},
            state_machines=dict(st.state_machines),
            properties={k: v for k, v in st.properties.items() if v is not None},
            property_bag=dict(st.property_bag),
            location=st.location,
            output_commands=self.commands,
            logs=self.logs,
            warnings=self.warnings,
            rule_failures=self.rule_failures,
            stream_writes=self.stream_writes,
            script_calls=self.calls,
        )


def _event_name(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rule_outcome(value: object) -> tuple[bool, str | None]:
    """A business rule returns true/false, or ``{result: bool, reason: str}``."""
    if isinstance(value, dict):
        ok = value.get("result", value.get("valid", value.get("success", False)))
        reason = value.get("reason", value.get("message"))
        return bool(ok), (str(reason) if reason is not None else None)
    if value is None:
        return True, None
    return bool(value), None
