"""Workflow models (NuvIoT DeviceWorkflow and its nodes); re-exported by ``model``."""

from __future__ import annotations

from functools import cached_property

from pydantic import AliasChoices, Field

from runtime.core.solution.base import Bool, Entity, Float, Int, Model, Str
from runtime.core.solution.enums import EndpointType, NodeType, ParameterLocation, ParameterType


class Connection(Model):
    """An edge on the workflow canvas (NuvIoT Connection)."""

    node_key: Str
    node_type: NodeType
    node_name: Str | None = None
    input_command_key: Str | None = None  # attribute <- input command: which parameter
    # edge into a state machine: which event to raise (NuvIoT: StateMachineEvent, an EntityHeader<Event>)
    event: Str | None = Field(default=None, validation_alias=AliasChoices("event", "stateMachineEvent"))
    parameter: Str | None = None  # edge from an input command: which parameter carries the value
    script: Str | None = None  # NuvIoT Connection.Script (a mapping script): kept, not run (validate warns)


_INCOMING = Field(default=(), validation_alias=AliasChoices("incomingConnections", "incoming", "incoming_connections"))
_OUTGOING = Field(default=(), validation_alias=AliasChoices("outgoingConnections", "outgoing", "outgoing_connections"))


class WorkflowInput(Entity):
    input_type: ParameterType = ParameterType.STRING
    on_set_script: Str | None = None
    unit_set: Str | None = None
    state_set: Str | None = None
    incoming_connections: tuple[Connection, ...] = _INCOMING
    outgoing_connections: tuple[Connection, ...] = _OUTGOING


class Attribute(Entity):
    attribute_type: ParameterType = ParameterType.STRING
    on_set_script: Str | None = None
    read_only: Bool = False
    unit_set: Str | None = None
    state_set: Str | None = None
    default_value: Str | None = None
    incoming_connections: tuple[Connection, ...] = _INCOMING
    outgoing_connections: tuple[Connection, ...] = _OUTGOING


class Parameter(Entity):
    """Input-command and output-command parameter (NuvIoT Parameter)."""

    is_required: Bool = False
    min_value: Float | None = None
    max_value: Float | None = None
    default_value: Str | None = None
    parameter_location: ParameterLocation | None = None
    parameter_type: ParameterType = ParameterType.STRING
    unit_set: Str | None = None
    state_set: Str | None = None


class InputCommand(Entity):
    endpoint_type: EndpointType = EndpointType.GET
    parameters: tuple[Parameter, ...] = ()
    on_arrive_script: Str | None = None
    incoming_connections: tuple[Connection, ...] = _INCOMING
    outgoing_connections: tuple[Connection, ...] = _OUTGOING


class OutputCommand(Entity):
    parameters: tuple[Parameter, ...] = ()
    on_execute_script: Str | None = None
    incoming_connections: tuple[Connection, ...] = _INCOMING


class Transition(Model):
    """In a state: on ``event``, run ``on_transition_script`` (if any) and move to ``new_state`` (if any)."""

    event: Str
    new_state: Str | None = None
    # NuvIoT StateTransition.TransitionAction
    on_transition_script: Str | None = Field(
        default=None, validation_alias=AliasChoices("onTransitionScript", "transitionAction", "on_transition_script")
    )


class MachineState(Model):
    """NuvIoT State. ``transition_in_action`` runs (``onEnter``) when the machine enters the state; an alarm state
    raises ``error_code`` on the device when entered and clears it when left (``core/health.py``)."""

    key: Str
    name: Str = ""
    is_initial_state: Bool = False
    transitions: tuple[Transition, ...] = ()
    transition_in_action: Str | None = None
    is_alarm_state: Bool = False
    error_code: Str | None = None


class StateMachine(Entity):
    events: tuple[Str, ...] = ()
    states: tuple[MachineState, ...] = ()
    incoming_connections: tuple[Connection, ...] = _INCOMING
    # NuvIoT StateMachine.InitialState (an EntityHeader of a state), else the state marked isInitialState
    initial_state_key: Str | None = Field(
        default=None, validation_alias=AliasChoices("initialStateKey", "initialState", "initial_state_key")
    )
    # NuvIoT StateMachine.ExceptionOnUnhandledEvent: an event the current state does not handle fails the run
    exception_on_unhandled_event: Bool = False

    @cached_property
    def initial_state(self) -> str | None:
        if self.initial_state_key and any(s.key == self.initial_state_key for s in self.states):
            return self.initial_state_key
        for s in self.states:
            if s.is_initial_state:
                return s.key
        return self.states[0].key if self.states else None


class BusinessRule(Entity):
    script: Str | None = None
    error_code: Str | None = None
    # NuvIoT BusinessRule.IsEnabled (true unless unchecked, LagoVista/DeviceAdmin BusinessRule.cs): a disabled
    # rule is kept in the document and does not run
    is_enabled: Bool = True


class Timer(Entity):
    """NuvIoT Timer (LagoVista/DeviceAdmin ``Timer.cs``): every ``days``/``hours``/``minutes``/``seconds``, or daily at
    ``hourOfDay``:``minuteOfDay``, on the checked weekdays (none checked: every day), an interval only between
    ``dailyStartTime`` and ``dailyEndTime`` (``HH:MM``) when given. When it fires, its outgoing connections run
    (``core/timers.py``)."""

    days: Int = 0
    hours: Int = 0
    minutes: Int = 0
    seconds: Int = 0
    hour_of_day: Int = 0
    minute_of_day: Int = 0
    sunday: Bool = False
    monday: Bool = False
    tuesday: Bool = False
    wednesday: Bool = False
    thursday: Bool = False
    friday: Bool = False
    saturday: Bool = False
    daily_start_time: Str | None = None
    daily_end_time: Str | None = None
    outgoing_connections: tuple[Connection, ...] = _OUTGOING


class Workflow(Entity):
    """NuvIoT DeviceWorkflow."""

    configuration_version: Str | None = None
    pre_handler_script: Str | None = None
    post_handler_script: Str | None = None
    inputs: tuple[WorkflowInput, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    input_commands: tuple[InputCommand, ...] = ()
    output_commands: tuple[OutputCommand, ...] = ()
    state_machines: tuple[StateMachine, ...] = ()
    business_rules: tuple[BusinessRule, ...] = ()
    timers: tuple[Timer, ...] = ()

    @cached_property
    def input_by_key(self) -> dict[str, WorkflowInput]:
        return {i.key: i for i in self.inputs}

    @cached_property
    def attribute_by_key(self) -> dict[str, Attribute]:
        return {a.key: a for a in self.attributes}

    @cached_property
    def input_command_by_key(self) -> dict[str, InputCommand]:
        return {c.key: c for c in self.input_commands}

    @cached_property
    def output_command_by_key(self) -> dict[str, OutputCommand]:
        return {c.key: c for c in self.output_commands}

    @cached_property
    def state_machine_by_key(self) -> dict[str, StateMachine]:
        return {m.key: m for m in self.state_machines}
