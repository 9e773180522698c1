"""Checks of the workflows: nodes, connections, input-command parameters and mappings, state machines."""

from __future__ import annotations

from collections.abc import Mapping

from runtime.core.script_functions import defines, hook_function
from runtime.core.solution import codes
from runtime.core.solution.enums import (
    EndpointType,
    InputTranslatorType,
    NodeType,
    OutputTranslatorType,
    ParameterLocation,
    PipelineModuleType,
    TransmitterType,
)
from runtime.core.solution.model import (
    Connection,
    InputTranslator,
    MachineState,
    OutputTranslator,
    Parameter,
    Transmitter,
    Workflow,
)
from runtime.core.solution.validate_base import CheckerBase
from runtime.core.timers import schedule_problem

_RUNS = ("this runtime runs transmitters mqttclient, rest and originallistener, message-based input and output "
         "translators: use one of those")

# what this runtime runs (runtime/adapters/outbound/factory.py SUPPORTED; core/pipeline translators)
RUNNABLE_TRANSMITTERS = frozenset({TransmitterType.MQTT_CLIENT, TransmitterType.REST, TransmitterType.ORIGINAL_LISTENER})
RUNNABLE_INPUT_TRANSLATORS = frozenset({InputTranslatorType.MESSAGE})
RUNNABLE_OUTPUT_TRANSLATORS = frozenset({OutputTranslatorType.MESSAGE})
_SNAKE = {"incomingConnections": "incoming_connections", "outgoingConnections": "outgoing_connections"}
_NEVER_RUN = frozenset({PipelineModuleType.CUSTOM, PipelineModuleType.APPLICATION_CACHE})


class WorkflowChecks(CheckerBase):
    def route_modules(self) -> None:
        """A module this runtime cannot run: an error where a route uses it, a warning in the library."""
        used: set[tuple[PipelineModuleType, str]] = set()
        for i, dc in enumerate(self.doc.solution.device_configurations):
            for j, route in enumerate(dc.routes):
                for k, step in enumerate(route.steps):
                    used.add((step.type, step.module))
                    spath = f"solution.deviceConfigurations[{i}].routes[{j}].steps[{k}]"
                    if step.type in _NEVER_RUN:
                        self.err(f"{spath}.type", codes.MODULE_NOT_RUN,
                                 f"{step.type.value} modules are not run by this runtime: the route would run "
                                 "without this step; remove it, or do its work in the workflow's scripts")
                        continue
                    why = self.not_runnable(step.type, self.doc.module_for(step))
                    if why:
                        self.err(f"solution.deviceConfigurations[{i}].routes[{j}].steps[{k}].module",
                                 codes.MODULE_NOT_RUN, f"{why}: every message on this route would fail; {_RUNS}")
        for wire, step_type, items in (("transmitters", PipelineModuleType.TRANSMITTER, self.doc.transmitters),
                                       ("inputTranslators", PipelineModuleType.INPUT_TRANSLATOR,
                                        self.doc.input_translators),
                                       ("outputTranslators", PipelineModuleType.OUTPUT_TRANSLATOR,
                                        self.doc.output_translators)):
            for n, module in enumerate(items):
                why = self.not_runnable(step_type, module)
                if why and (step_type, module.key) not in used:
                    self.warn(f"{wire}[{n}]", codes.MODULE_NOT_RUN, f"{why} (no route uses it)")

    @staticmethod
    def not_runnable(step_type: PipelineModuleType, module: object) -> str | None:
        if isinstance(module, Transmitter) and module.transmitter_type not in RUNNABLE_TRANSMITTERS:
            return f"transmitter type {module.transmitter_type.value} is not run by this runtime"
        if isinstance(module, InputTranslator) and module.input_translator_type not in RUNNABLE_INPUT_TRANSLATORS:
            return f"input translator type {module.input_translator_type.value} is not run by this runtime"
        if isinstance(module, OutputTranslator) and (
                module.output_translator_type not in RUNNABLE_OUTPUT_TRANSLATORS):
            return f"output translator type {module.output_translator_type.value} is not run by this runtime"
        return None

    def connection(self, wf: Workflow, c: Connection, path: str) -> None:
        table: dict[NodeType, Mapping[str, object]] = {
            NodeType.INPUT: wf.input_by_key,
            NodeType.ATTRIBUTE: wf.attribute_by_key,
            NodeType.STATE_MACHINE: wf.state_machine_by_key,
            NodeType.INPUT_COMMAND: wf.input_command_by_key,
            NodeType.OUTPUT_COMMAND: wf.output_command_by_key,
        }
        if c.node_key not in table[c.node_type]:
            self.err(
                f"{path}.nodeKey",
                codes.DANGLING_CONNECTION,
                f"no {c.node_type.value} {c.node_key!r} in workflow {wf.key!r}",
            )
            return
        if c.node_type is NodeType.STATE_MACHINE and c.event:
            machine = wf.state_machine_by_key[c.node_key]
            if c.event not in machine.events:
                self.err(
                    f"{path}.event",
                    codes.DANGLING_CONNECTION,
                    f"state machine {c.node_key!r} has no event {c.event!r}",
                )

    def workflows(self) -> None:
        for i, wf in enumerate(self.doc.workflows):
            path = f"workflows[{i}]"
            for wire, nodes in (
                ("inputs", wf.inputs),
                ("attributes", wf.attributes),
                ("inputCommands", wf.input_commands),
                ("outputCommands", wf.output_commands),
                ("stateMachines", wf.state_machines),
            ):
                self.unique((n.key for n in nodes), f"{path}.{wire}", f"{wire[:-1]} key")
            for j, node in enumerate(wf.inputs):
                self.state_unit(node, f"{path}.inputs[{j}]")
                for k, c in enumerate(node.outgoing_connections):
                    self.connection(wf, c, f"{path}.inputs[{j}].outgoingConnections[{k}]")
                    if c.node_type is NodeType.ATTRIBUTE and c.node_key in wf.attribute_by_key:
                        attr = wf.attribute_by_key[c.node_key]
                        if attr.attribute_type is not node.input_type:
                            self.err(
                                f"{path}.inputs[{j}].outgoingConnections[{k}]",
                                codes.CONNECTION_TYPE,
                                f"input {node.key!r} is {node.input_type.value} but attribute {attr.key!r} is "
                                f"{attr.attribute_type.value}",
                            )
            for j, attr in enumerate(wf.attributes):
                self.state_unit(attr, f"{path}.attributes[{j}]")
                for k, c in enumerate(attr.incoming_connections):
                    self.connection(wf, c, f"{path}.attributes[{j}].incomingConnections[{k}]")
            for j, cmd in enumerate(wf.input_commands):
                cpath = f"{path}.inputCommands[{j}]"
                self.parameters(cmd.parameters, f"{cpath}.parameters")
                for k, p in enumerate(cmd.parameters):
                    if p.parameter_location is ParameterLocation.JSON and cmd.endpoint_type in (
                        EndpointType.GET,
                        EndpointType.DELETE,
                    ):
                        self.err(
                            f"{cpath}.parameters[{k}].parameterLocation",
                            codes.JSON_PARAMETER_ON_GET,
                            f"a json parameter is not allowed on a {cmd.endpoint_type.value.upper()} input command",
                        )
                for k, c in enumerate(cmd.outgoing_connections):
                    self.input_command_edge(wf, cmd.key, c, f"{cpath}.outgoingConnections[{k}]")
            for j, out in enumerate(wf.output_commands):
                self.parameters(out.parameters, f"{path}.outputCommands[{j}].parameters")
            for j, timer in enumerate(wf.timers):
                tpath = f"{path}.timers[{j}]"
                problem = schedule_problem(timer)
                if problem is not None:
                    self.warn(tpath, codes.NOT_RUN, f"not run: timer {timer.key!r} can never fire: {problem}")
                for k, c in enumerate(timer.outgoing_connections):
                    self.connection(wf, c, f"{tpath}.outgoingConnections[{k}]")
            self.connection_scripts(wf, path)
            self.script_functions(wf, path)
            for j, machine in enumerate(wf.state_machines):
                mpath = f"{path}.stateMachines[{j}]"
                self.unique((s.key for s in machine.states), f"{mpath}.states", "state key")
                states = {s.key for s in machine.states}
                if machine.initial_state_key and machine.initial_state_key not in states:
                    self.err(f"{mpath}.initialStateKey", codes.DANGLING_CONNECTION,
                             f"unknown initial state {machine.initial_state_key!r}")
                for k, st in enumerate(machine.states):
                    self.not_run(st, f"{mpath}.states[{k}]")
                    for t, tr in enumerate(st.transitions):
                        tpath = f"{mpath}.states[{k}].transitions[{t}]"
                        if machine.events and tr.event not in machine.events:
                            self.err(
                                f"{tpath}.event", codes.DANGLING_CONNECTION, f"unknown event {tr.event!r}"
                            )
                        if tr.new_state and tr.new_state not in states:
                            self.err(
                                f"{tpath}.newState",
                                codes.DANGLING_CONNECTION,
                                f"unknown state {tr.new_state!r}",
                            )
                for k, c in enumerate(machine.incoming_connections):
                    self.connection(wf, c, f"{mpath}.incomingConnections[{k}]")

    def not_run(self, st: MachineState, path: str) -> None:
        """An alarm state without an error code has nothing to raise (NuvIoT State.IsAlarmState/ErrorCode)."""
        if st.is_alarm_state and not st.error_code:
            self.warn(f"{path}.errorCode", codes.NOT_RUN,
                      "not run: an alarm state without an error code raises nothing; choose one of the device "
                      "configuration's ErrorCodes")

    def connection_scripts(self, wf: Workflow, path: str) -> None:
        """Mapping scripts run on the mappings out of inputs, attributes and timers; not yet out of input commands."""
        for j, node in enumerate(wf.input_commands):
            for k, c in enumerate(node.outgoing_connections):
                if c.script:
                    self.warn(f"{path}.inputCommands[{j}].outgoingConnections[{k}].script", codes.NOT_RUN,
                              "not run: a mapping Script on an input command's connection is kept but the "
                              "parameter's value is passed as it is; do the mapping in the command's onArrive")

    def script_functions(self, wf: Workflow, path: str) -> None:
        """Scripts whose function would not run: the hooks this runtime names (onEnter, onTransition, map,
        evaluate) that declare other functions, and any script that defines no function of its hook's name."""
        scripts: list[tuple[str, str, str | None, str]] = [
            (f"{path}.preHandlerScript", "pre-handler script", wf.pre_handler_script, "preHandler"),
            (f"{path}.postHandlerScript", "post-handler script", wf.post_handler_script, "postHandler")]
        scripts += [(f"{path}.inputs[{j}].onSetScript", "onSet script", i.on_set_script, "onSet")
                    for j, i in enumerate(wf.inputs)]
        scripts += [(f"{path}.attributes[{j}].onSetScript", "onSet script", a.on_set_script, "onSet")
                    for j, a in enumerate(wf.attributes)]
        scripts += [(f"{path}.inputCommands[{j}].onArriveScript", "onArrive script", c.on_arrive_script, "onArrive")
                    for j, c in enumerate(wf.input_commands)]
        scripts += [(f"{path}.outputCommands[{j}].onExecuteScript", "onExecute script", c.on_execute_script,
                     "onExecute") for j, c in enumerate(wf.output_commands)]
        for j, m in enumerate(wf.state_machines):
            for k, st in enumerate(m.states):
                spath = f"{path}.stateMachines[{j}].states[{k}]"
                scripts.append((f"{spath}.transitionInAction", "TransitionInAction", st.transition_in_action, "onEnter"))
                scripts += [(f"{spath}.transitions[{t}].onTransitionScript", "TransitionAction", tr.on_transition_script,
                             "onTransition") for t, tr in enumerate(st.transitions)]
        scripts += [(f"{path}.businessRules[{j}].script", "business rule", r.script, "evaluate")
                    for j, r in enumerate(wf.business_rules) if r.is_enabled]
        for wire, nodes in (("inputs", wf.inputs), ("attributes", wf.attributes), ("outputCommands", wf.output_commands),
                            ("stateMachines", wf.state_machines), ("timers", wf.timers)):
            for j, node in enumerate(nodes):
                for side in ("incomingConnections", "outgoingConnections"):
                    conns: tuple[Connection, ...] = getattr(node, _SNAKE[side], ())
                    scripts += [(f"{path}.{wire}[{j}].{side}[{k}].script", "mapping Script", c.script, "map")
                                for k, c in enumerate(conns)
                                if not (side == "incomingConnections" and c.node_type is NodeType.INPUT_COMMAND)]
        for spath, label, source, expected in scripts:
            if not source or not source.strip():
                continue
            found = hook_function(source, expected)
            if found.renamed:
                self.warn(spath, codes.SCRIPT_FUNCTION,
                          f"{label} declares function {found.name}, called as {expected}")
            elif found.ambiguous:
                self.err(spath, codes.SCRIPT_FUNCTION,
                         f"{label} declares functions {', '.join(found.declared)} and none is named {expected}: "
                         f"nothing would run; name the function to run {expected}, or keep only one function")
            elif not found.defined or not defines(source, expected):
                self.warn(spath, codes.SCRIPT_FUNCTION,
                          f"not run: the {label} defines no function {expected}, so it never runs; "
                          f"declare function {expected}(...)")

    def parameters(self, params: tuple[Parameter, ...], path: str) -> None:
        self.unique((p.key for p in params), path, "parameter key", code=codes.DUPLICATE_PARAMETER)
        for k, p in enumerate(params):
            self.state_unit(p, f"{path}[{k}]")

    def input_command_edge(self, wf: Workflow, cmd_key: str, c: Connection, path: str) -> None:
        if c.node_type not in (NodeType.ATTRIBUTE, NodeType.STATE_MACHINE):
            self.err(
                f"{path}.nodeType",
                codes.SLN_INVALID_INPUT_COMMAND_MAPPING,
                "an input command maps only to attributes and state machines",
            )
            return
        self.connection(wf, c, path)
        param_key = c.input_command_key or c.parameter
        if c.node_type is NodeType.ATTRIBUTE and param_key and c.node_key in wf.attribute_by_key:
            cmd = wf.input_command_by_key[cmd_key]
            param = next((p for p in cmd.parameters if p.key == param_key), None)
            attr = wf.attribute_by_key[c.node_key]
            if param is None:
                self.err(
                    f"{path}.inputCommandKey",
                    codes.SLN_INVALID_INPUT_COMMAND_MAPPING,
                    f"input command {cmd_key!r} has no parameter {param_key!r}",
                )
            elif param.parameter_type is not attr.attribute_type:
                self.err(
                    path,
                    codes.SLN_INVALID_INPUT_COMMAND_MAPPING,
                    f"parameter {param_key!r} is {param.parameter_type.value} but attribute {attr.key!r} is "
                    f"{attr.attribute_type.value}",
                )
