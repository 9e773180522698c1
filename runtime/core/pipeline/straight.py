"""The straight run of a script-free workflow (issue 17): the general run's result without its machinery.

``WorkflowEngine`` (``workflow.py``) plans it once per solution load when the workflow has no scripts and
its inputs map only to known attributes and state machines (no mapping out of an attribute, none to an
output command). Per message it converts the inputs, sets the attributes and moves the machines on fresh
copies of the device's dicts, and returns what ``_Run.result`` would. On anything the general run treats
specially (a value that does not convert: its StageError; a machine in a state it does not know: its
warning; an event a machine must refuse; a defaulted attribute the device lacks) it returns None, having
changed nothing, and the engine runs the message the general way. ``tests/unit/workflow/test_straight_run.py``
holds the two runs equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runtime.core.devices import Device
from runtime.core.pipeline.typed import convert
from runtime.core.pipeline.wiring import Edge
from runtime.core.solution.enums import NodeType, ParameterType
from runtime.core.solution.model import StateSet
from runtime.core.solution.workflow_model import MachineState, StateMachine, Transition, Workflow

# A step of one input: (attribute key, its type, its state set, None, None) or (machine key, None, None,
# the machine, the mapping's own event or None: the value names the event).
Step = tuple[str, ParameterType | None, StateSet | None, StateMachine | None, str | None]
# What the run leaves: attributes, state machines, properties, property bag, location (WorkflowResult's).
Outcome = tuple[dict[str, object], dict[str, str], dict[str, object], dict[str, object], tuple[float, float] | None]


def event_name(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class StraightRun:
    plan: tuple[tuple[str, tuple[Step, ...]], ...]  # per workflow input, in order: its steps, in edge order
    input_types: Mapping[str, tuple[ParameterType, StateSet | None]]
    defaulted: frozenset[str]  # attributes with a default value
    initial_states: tuple[tuple[str, str], ...]
    states: Mapping[int, Mapping[str | None, MachineState]]  # id(machine) -> state key -> state
    transitions: Mapping[int, Mapping[str, Transition]]  # id(state) -> event -> transition

    def run(self, device: Device, inputs: Mapping[str, object]) -> Outcome | None:
        input_types = self.input_types
        typed: dict[str, object] = {}
        try:
            for key, value in inputs.items():
                spec = input_types.get(key)
                if spec is not None:
                    typed[key] = convert(value, spec[0], spec[1])
            attributes = dict(device.attributes)
            if self.defaulted and not self.defaulted.issubset(attributes):
                return None
            machines = dict(device.state_machines)
            for machine_key, initial in self.initial_states:
                if machine_key not in machines:
                    machines[machine_key] = initial
            for key, steps in self.plan:
                if key not in typed:
                    continue
                value = typed[key]
                for target, atype, aset, machine, event in steps:
                    if machine is None:
                        attributes[target] = convert(value, atype, aset)  # type: ignore[arg-type]  # set when machine is None
                        continue
                    state = self.states[id(machine)].get(machines.get(target))
                    if state is None:
                        return None
                    transition = self.transitions[id(state)].get(event or event_name(value))
                    if transition is None:
                        if machine.exception_on_unhandled_event:
                            return None
                        continue
                    if transition.new_state:
                        machines[target] = transition.new_state
        except ValueError:
            return None
        location = (
            (device.latitude, device.longitude)
            if device.latitude is not None and device.longitude is not None
            else None
        )
        return (
            {k: v for k, v in attributes.items() if v is not None},
            machines,
            {k: v for k, v in device.properties.items() if v is not None},
            dict(device.property_bag),
            location,
        )


def plan_straight(
    workflow: Workflow,
    inputs: Iterable[str],
    edges: Mapping[tuple[NodeType, str], Iterable[Edge]],
    attribute_types: Mapping[str, tuple[ParameterType, StateSet | None]],
    input_types: Mapping[str, tuple[ParameterType, StateSet | None]],
    states: Mapping[int, Mapping[str | None, MachineState]],
    transitions: Mapping[int, Mapping[str, Transition]],
    max_events: int,
) -> StraightRun | None:
    """The straight run of a script-free ``workflow`` (the caller checks it has no scripts), or None when
    some mapping needs the general run. ``edges``: the engine's canvas edges (``to_type``, ``to_key``, ``event``)."""
    if any(src_type is NodeType.ATTRIBUTE for src_type, _ in edges):
        return None
    plan: list[tuple[str, tuple[Step, ...]]] = []
    events = 0
    for key in inputs:
        steps: list[Step] = []
        for edge in edges.get((NodeType.INPUT, key), ()):
            if edge.to_type is NodeType.ATTRIBUTE and edge.to_key in attribute_types:
                atype, aset = attribute_types[edge.to_key]
                steps.append((edge.to_key, atype, aset, None, None))
            elif edge.to_type is NodeType.STATE_MACHINE and edge.to_key in workflow.state_machine_by_key:
                machine = workflow.state_machine_by_key[edge.to_key]
                steps.append((machine.key, None, None, machine, edge.event))
                events += 1
            else:
                return None
        plan.append((key, tuple(steps)))
    if events > max_events:
        return None
    return StraightRun(
        tuple(plan),
        input_types,
        frozenset(a.key for a in workflow.attributes if a.default_value is not None),
        tuple((m.key, m.initial_state) for m in workflow.state_machines if m.initial_state is not None),
        states,
        transitions,
    )
