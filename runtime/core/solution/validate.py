"""Cross-checks on a model-valid document: the checks NuvIoT makes (reference §4.3, §5.1, §8 "Validation").

``validate_document(doc)`` returns a ``ValidationReport`` with ``errors`` and ``warnings`` kept apart: errors
stop a load (``SolutionError``), warnings are reported and the solution still runs. Paths are wire paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runtime.core.errors import Problem
from runtime.core.solution import codes
from runtime.core.solution.enums import (
    EndpointType,
    ListenerType,
    NodeType,
    ParameterLocation,
    PipelineModuleType,
    SearchLocation,
    TransmitterType,
)
from runtime.core.solution.model import (
    Connection,
    FieldParser,
    Listener,
    OutputCommandMapping,
    Parameter,
    Route,
    RouteConnection,
    SolutionDocument,
    Transmitter,
    Workflow,
)


@dataclass(frozen=True, slots=True)
class ValidationReport:
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


# listener type -> fields required (wire names); "creds" = userName and password unless anonymous
_LISTENER_REQUIRED: dict[ListenerType, tuple[str, ...]] = {
    ListenerType.AMQP: ("hostName", "creds", "amqpSubscriptions"),
    ListenerType.AZURE_SERVICE_BUS: ("hostName", "queue", "accessKeyName", "accessKey"),
    ListenerType.AZURE_EVENT_HUB: ("hostName", "hubName", "accessKey", "consumerGroup"),
    ListenerType.AZURE_IOT_HUB: ("hostName", "resourceName", "accessKeyName", "accessKey"),
    ListenerType.MQTT_LISTENER: ("listenOnPort", "creds"),
    ListenerType.MQTT_CLIENT: ("hostName", "connectToPort", "mqttSubscriptions", "creds"),
    ListenerType.RAW_TCP: ("listenOnPort",),
    ListenerType.RABBITMQ_CLIENT: (),
    ListenerType.REST: ("listenOnPort", "restServerType", "creds"),
    ListenerType.REDIS: ("hostName", "mqttSubscriptions"),
    ListenerType.KAFKA: ("hostName", "consumerGroup", "mqttSubscriptions"),
    ListenerType.RAW_UDP: ("listenOnPort",),
    ListenerType.SERIAL_PORT: ("portName", "baudRate"),
    ListenerType.WEBSOCKET: ("hostName", "path", "origin", "supportedProtocol"),
    ListenerType.FTP: ("listenOnPort",),
    ListenerType.SHARED_MQTT_LISTENER: ("mqttSubscriptions",),
    ListenerType.TAK_CURSOR_ON_TARGET: ("credentialsFile",),
}
_TRANSMITTER_REQUIRED: dict[TransmitterType, tuple[str, ...]] = {
    TransmitterType.MQTT_CLIENT: ("hostName", "connectToPort", "creds"),
    TransmitterType.REST: ("hostName",),
    TransmitterType.AZURE_SERVICE_BUS: ("hostName", "queue", "accessKeyName", "accessKey"),
    TransmitterType.AZURE_EVENT_HUB: ("hostName", "hubName", "accessKey"),
    TransmitterType.AZURE_IOT_HUB: ("hostName", "accessKeyName", "accessKey"),
    TransmitterType.SERIAL_PORT: ("portName", "baudRate"),
}
_LOCATOR_FOR: dict[SearchLocation, str] = {
    SearchLocation.PATH: "pathLocator",
    SearchLocation.TOPIC: "topicLocator",
    SearchLocation.HEADERS: "headerName",
    SearchLocation.QUERY_STRING: "queryStringField",
}
_STEP_NOT_FOUND = {
    PipelineModuleType.SENTINEL: (codes.SLN_SENTINEL_NOT_FOUND, "sentinel"),
    PipelineModuleType.INPUT_TRANSLATOR: (codes.SLN_INPUT_TRANSLATOR_NOT_FOUND, "input translator"),
    PipelineModuleType.WORKFLOW: (codes.WORKFLOW_NOT_FOUND, "workflow"),
    PipelineModuleType.OUTPUT_TRANSLATOR: (codes.SLN_OUTPUT_TRANSLATOR_NOT_FOUND, "output translator"),
    PipelineModuleType.TRANSMITTER: (codes.SLN_TRANSMITTER_NOT_FOUND, "transmitter"),
    PipelineModuleType.DATA_STREAM: (codes.SLN_DATA_STREAM_NOT_FOUND, "data stream"),
}
_RUN_HERE = frozenset(
    {
        PipelineModuleType.SENTINEL,
        PipelineModuleType.INPUT_TRANSLATOR,
        PipelineModuleType.WORKFLOW,
        PipelineModuleType.OUTPUT_TRANSLATOR,
        PipelineModuleType.TRANSMITTER,
    }
)


def _snake(wire: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in wire)


def _missing(obj: object, wire: str) -> bool:
    value = getattr(obj, _snake(wire))
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return value is None or value == "" or value == ()


class _Checker:
    def __init__(self, doc: SolutionDocument) -> None:
        self.doc = doc
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def err(self, path: str, code: str, message: str) -> None:
        self.errors.append(Problem(path, code, message))

    def warn(self, path: str, code: str, message: str) -> None:
        self.warnings.append(Problem(path, code, message))

    def unique(
        self, items: Iterable[str], path: str, what: str, attr: str = "key", code: str = codes.DUPLICATE_KEY
    ) -> None:
        seen: set[str] = set()
        for i, key in enumerate(items):
            if key in seen:
                self.err(f"{path}[{i}].{attr}", code, f"{what} {key!r} is defined more than once")
            seen.add(key)

    def state_unit(self, obj: object, path: str) -> None:
        state_set = getattr(obj, "state_set", None)
        unit_set = getattr(obj, "unit_set", None)
        if state_set and state_set not in self.doc.state_set_by_key:
            self.err(f"{path}.stateSet", codes.SLN_STATE_SET_NOT_FOUND, f"unknown state set {state_set!r}")
        if unit_set and unit_set not in self.doc.unit_set_by_key:
            self.err(f"{path}.unitSet", codes.SLN_UNIT_SET_NOT_FOUND, f"unknown unit set {unit_set!r}")

    def required(
        self, obj: Listener | Transmitter, kind: str, fields: tuple[str, ...], path: str, code: str
    ) -> None:
        for wire in fields:
            if wire == "creds":
                if not obj.anonymous:
                    for cred in ("userName", "password"):
                        if _missing(obj, cred):
                            self.err(
                                f"{path}.{cred}",
                                code,
                                f"{cred} is required for a {kind} that is not anonymous",
                            )
            elif _missing(obj, wire):
                self.err(f"{path}.{wire}", code, f"{wire} is required for a {kind}")

    # ---------------------------------------------------------------- sections
    def run(self) -> ValidationReport:
        self.libraries()
        self.instance_and_listeners()
        self.planner()
        self.messages()
        self.workflows()
        self.transmitters()
        self.device_configurations()
        self.devices()
        return ValidationReport(tuple(self.errors), tuple(self.warnings))

    def libraries(self) -> None:
        d = self.doc
        for wire, items in (
            ("messages", d.messages),
            ("workflows", d.workflows),
            ("sentinels", d.sentinels),
            ("inputTranslators", d.input_translators),
            ("outputTranslators", d.output_translators),
            ("transmitters", d.transmitters),
            ("stateSets", d.state_sets),
            ("unitSets", d.unit_sets),
            ("dataStreams", d.data_streams),
            ("solution.listeners", d.solution.listeners),
            ("solution.deviceConfigurations", d.solution.device_configurations),
        ):
            self.unique((x.key for x in items), wire, wire.rsplit(".", 1)[-1] + " key")

    def instance_and_listeners(self) -> None:
        sol = self.doc.solution
        inst = self.doc.instance
        if not sol.listeners:
            self.warn("solution.listeners", codes.SLN_NO_LISTENERS, "the solution has no listeners")
        if not sol.device_configurations:
            self.warn(
                "solution.deviceConfigurations",
                codes.SLN_NO_DEVICE_CONFIGS,
                "the solution has no device configurations",
            )
        if sol.default_listener and sol.default_listener not in self.doc.listener_by_key:
            self.err(
                "solution.defaultListener",
                codes.SLN_LISTENER_NOT_FOUND,
                f"unknown listener {sol.default_listener!r}",
            )
        ports: dict[int, str] = {}
        if inst.input_command_port:
            ports[inst.input_command_port] = "instance.inputCommandPort"
        for i, lst in enumerate(sol.listeners):
            path = f"solution.listeners[{i}]"
            required = _LISTENER_REQUIRED.get(lst.listener_type, ())
            if lst.listener_type is ListenerType.WEBSOCKET and not lst.host_name and lst.listen_on_port is not None:
                required = ("listenOnPort",)  # server mode (our extension): devices connect to the runtime
            self.required(
                lst,
                f"{lst.listener_type.value} listener",
                required,
                path,
                codes.LISTENER_FIELD_REQUIRED,
            )
            for j, sub in enumerate(lst.mqtt_subscriptions):
                if not sub.topic.strip():
                    self.err(
                        f"{path}.mqttSubscriptions[{j}].topic",
                        codes.LISTENER_FIELD_REQUIRED,
                        "a subscription needs a topic",
                    )
            port = lst.listen_on_port
            if port:
                if port in ports:
                    self.err(
                        f"{path}.listenOnPort",
                        codes.DUPLICATE_PORT,
                        f"port {port} is already used by {ports[port]}",
                    )
                else:
                    ports[port] = f"solution.listeners[{i}] ({lst.key})"
        if not inst.input_command_anonymous:
            for wire in ("inputCommandBasicAuthUserName", "inputCommandBasicAuthPassword"):
                if _missing(inst, wire):
                    self.err(
                        f"instance.{wire}",
                        codes.INSTANCE_FIELD_REQUIRED,
                        f"{wire} is required when inputCommandAnonymous is false",
                    )

    def parser(self, p: FieldParser, path: str, *, is_id_parser: bool) -> None:
        loc = p.search_location
        if loc is None:
            if is_id_parser:
                self.err(f"{path}.searchLocation", codes.PARSER_LOCATOR, "a parser needs a searchLocation")
            return
        locator = _LOCATOR_FOR.get(loc)
        if locator and _missing(p, locator):
            self.err(
                f"{path}.{locator}",
                codes.PARSER_LOCATOR,
                f"{locator} is required when searchLocation is {loc.value}",
            )
        if is_id_parser and loc is SearchLocation.BODY and p.content_type is None:
            self.err(
                f"{path}.contentType",
                codes.DMA_CONTENT_TYPE_REQUIRED,
                "Content Type is required for Message Id and Field Id Parsers",
            )

    def planner(self) -> None:
        pl = self.doc.solution.planner
        for wire, parsers in (
            ("deviceIdParsers", pl.device_id_parsers),
            ("messageTypeIdParsers", pl.message_type_id_parsers),
        ):
            path = f"solution.planner.{wire}"
            if not parsers:
                self.err(path, codes.PLANNER_PARSERS, f"the planner needs at least one entry in {wire}")
            for i, p in enumerate(parsers):
                self.parser(p, f"{path}[{i}]", is_id_parser=True)

    def messages(self) -> None:
        for i, msg in enumerate(self.doc.messages):
            path = f"messages[{i}]"
            self.unique((f.key for f in msg.fields), f"{path}.fields", "field key")
            for j, f in enumerate(msg.fields):
                self.state_unit(f, f"{path}.fields[{j}]")
                self.parser(f, f"{path}.fields[{j}]", is_id_parser=False)

    def connection(self, wf: Workflow, c: Connection, path: str) -> None:
        table: dict[NodeType, dict[str, object]] = {
            NodeType.INPUT: wf.input_by_key,  # type: ignore[dict-item]
            NodeType.ATTRIBUTE: wf.attribute_by_key,  # type: ignore[dict-item]
            NodeType.STATE_MACHINE: wf.state_machine_by_key,  # type: ignore[dict-item]
            NodeType.INPUT_COMMAND: wf.input_command_by_key,  # type: ignore[dict-item]
            NodeType.OUTPUT_COMMAND: wf.output_command_by_key,  # type: ignore[dict-item]
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
            for j, machine in enumerate(wf.state_machines):
                mpath = f"{path}.stateMachines[{j}]"
                self.unique((s.key for s in machine.states), f"{mpath}.states", "state key")
                states = {s.key for s in machine.states}
                for k, st in enumerate(machine.states):
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

    def transmitters(self) -> None:
        for i, t in enumerate(self.doc.transmitters):
            self.required(
                t,
                f"{t.transmitter_type.value} transmitter",
                _TRANSMITTER_REQUIRED.get(t.transmitter_type, ()),
                f"transmitters[{i}]",
                codes.TRANSMITTER_FIELD_REQUIRED,
            )

    def device_configurations(self) -> None:
        for i, dc in enumerate(self.doc.solution.device_configurations):
            path = f"solution.deviceConfigurations[{i}]"
            if dc.custom_status_type and dc.custom_status_type not in self.doc.state_set_by_key:
                self.err(
                    f"{path}.customStatusType",
                    codes.SLN_STATE_SET_NOT_FOUND,
                    f"unknown state set {dc.custom_status_type!r}",
                )
            self.unique((p.key for p in dc.properties), f"{path}.properties", "property key")
            for j, prop in enumerate(dc.properties):
                self.state_unit(prop, f"{path}.properties[{j}]")
            self.unique((r.key for r in dc.routes), f"{path}.routes", "route key")
            for j, route in enumerate(dc.routes):
                self.route(route, f"{path}.routes[{j}]")

    def route(self, route: Route, path: str) -> None:
        if route.message_definition not in self.doc.message_by_key:
            self.err(
                f"{path}.messageDefinition",
                codes.SLN_MESSAGE_NOT_FOUND,
                f"unknown message {route.message_definition!r}",
            )
        if not route.steps:
            self.err(f"{path}.steps", codes.RTE_EMPTY_ROUTE, "the route has no steps")
        self.unique(
            (s.id for s in route.steps), f"{path}.steps", "step id", attr="id", code=codes.DUPLICATE_STEP_ID
        )
        for k, step in enumerate(route.steps):
            spath = f"{path}.steps[{k}]"
            if not step.module:
                self.err(f"{spath}.module", codes.RTE_MODULE_EMPTY_MODULE, "the route step has no module")
            elif step.type in _STEP_NOT_FOUND and self.doc.module_for(step) is None:
                code, what = _STEP_NOT_FOUND[step.type]
                self.err(f"{spath}.module", code, f"unknown {what} {step.module!r}")
            if step.type not in _RUN_HERE:
                self.warn(
                    f"{spath}.type",
                    codes.STEP_NOT_RUN,
                    f"{step.type.value} steps are not run by this runtime; skipped",
                )
            edges = [("next", step.next)] if step.next else []
            edges += [(f"secondary[{n}]", c) for n, c in enumerate(step.secondary)]
            for name, conn in edges:
                cpath = f"{spath}.{name}"
                target = route.step_by_id.get(conn.to)
                if target is None:
                    self.err(
                        f"{cpath}.to",
                        codes.RTE_LINKED_MODULE_NOT_FOUND,
                        f"no step with id {conn.to!r} in this route",
                    )
                    continue
                self.mappings(route, step.type, step.module, target.type, target.module, conn, cpath)

    def mappings(
        self,
        route: Route,
        src: PipelineModuleType,
        src_key: str,
        dst: PipelineModuleType,
        dst_key: str,
        conn: RouteConnection,
        path: str,
    ) -> None:
        doc = self.doc
        msg = doc.message_by_key.get(route.message_definition)
        for key, value in conn.mappings.items():
            mpath = f"{path}.mappings.{key}"
            if src is PipelineModuleType.INPUT_TRANSLATOR and dst in (
                PipelineModuleType.WORKFLOW,
                PipelineModuleType.DATA_STREAM,
            ):
                field = msg.field_by_key.get(key) if msg else None
                if msg and field is None:
                    self.err(mpath, codes.UNKNOWN_MESSAGE_FIELD, f"message {msg.key!r} has no field {key!r}")
                if not isinstance(value, str):
                    self.err(
                        mpath,
                        codes.UNKNOWN_MAPPING_TARGET,
                        "an input mapping's value is a key, not an object",
                    )
                    continue
                if dst is PipelineModuleType.DATA_STREAM:
                    stream = doc.data_stream_by_key.get(dst_key)
                    if stream and value not in {f.key for f in stream.fields}:
                        self.err(
                            mpath,
                            codes.UNKNOWN_MAPPING_TARGET,
                            f"data stream {dst_key!r} has no field {value!r}",
                        )
                    continue
                wf = doc.workflow_by_key.get(dst_key)
                target = wf.input_by_key.get(value) if wf else None
                if wf and target is None:
                    self.err(
                        mpath, codes.UNKNOWN_MAPPING_TARGET, f"workflow {wf.key!r} has no input {value!r}"
                    )
                if field is not None and target is not None:
                    if field.storage_type is not target.input_type:
                        self.err(
                            mpath,
                            codes.INPUT_MAPPING_TYPE,
                            f"field {key!r} is {field.storage_type.value} but input "
                            f"{value!r} is {target.input_type.value}",
                        )
                    elif (field.unit_set, field.state_set) != (target.unit_set, target.state_set) and (
                        target.unit_set or target.state_set
                    ):
                        self.err(
                            mpath,
                            codes.INPUT_MAPPING_TYPE,
                            f"field {key!r} and input {value!r} use different unit or state sets",
                        )
            elif src is PipelineModuleType.WORKFLOW and dst is PipelineModuleType.OUTPUT_TRANSLATOR:
                self.output_command_mapping(doc.workflow_by_key.get(src_key), key, value, mpath)
            elif src is PipelineModuleType.OUTPUT_TRANSLATOR and dst is PipelineModuleType.TRANSMITTER:
                if key not in doc.message_by_key:
                    self.err(mpath, codes.SLN_MESSAGE_NOT_FOUND, f"unknown outgoing message {key!r}")

    def output_command_mapping(self, wf: Workflow | None, key: str, value: object, path: str) -> None:
        if not isinstance(value, OutputCommandMapping):
            self.err(
                path,
                codes.SLN_INVALID_OUTPUT_COMMAND_MAPPING,
                "an output command maps to {outgoingMessage, fieldMappings}",
            )
            return
        msg = self.doc.message_by_key.get(value.outgoing_message)
        if msg is None:
            self.err(
                f"{path}.outgoingMessage",
                codes.SLN_MESSAGE_NOT_FOUND,
                f"unknown outgoing message {value.outgoing_message!r}",
            )
        command = wf.output_command_by_key.get(key) if wf else None
        if wf and command is None:
            # NuvIoT published such mappings (the 2018 sample has one); the command can never fire, so only warn
            self.warn(
                path,
                codes.UNMAPPED_OUTPUT_COMMAND,
                f"workflow {wf.key!r} has no output command {key!r}; mapping ignored",
            )
        if command is None or msg is None:
            return
        params = {p.key: p for p in command.parameters}
        for param_key, field_key in value.field_mappings.items():
            fpath = f"{path}.fieldMappings.{param_key}"
            param, field = params.get(param_key), msg.field_by_key.get(field_key)
            if param is None:
                self.err(
                    fpath,
                    codes.SLN_INVALID_OUTPUT_COMMAND_MAPPING,
                    f"output command {key!r} has no parameter {param_key!r}",
                )
            if field is None:
                self.err(
                    fpath,
                    codes.SLN_INVALID_OUTPUT_COMMAND_MAPPING,
                    f"message {msg.key!r} has no field {field_key!r}",
                )
            if param is not None and field is not None and param.parameter_type is not field.storage_type:
                self.err(
                    fpath,
                    codes.SLN_INVALID_OUTPUT_COMMAND_MAPPING,
                    f"parameter {param_key!r} is "
                    f"{param.parameter_type.value} but field {field_key!r} is {field.storage_type.value}",
                )

    def devices(self) -> None:
        self.unique(
            (d.device_id for d in self.doc.devices),
            "devices",
            "device id",
            attr="deviceId",
            code=codes.DUPLICATE_DEVICE,
        )
        for i, dev in enumerate(self.doc.devices):
            if dev.device_configuration not in self.doc.device_configuration_by_key:
                self.err(
                    f"devices[{i}].deviceConfiguration",
                    codes.DEVICE_CONFIG_NOT_FOUND,
                    f"unknown device configuration {dev.device_configuration!r}",
                )


def validate_document(doc: SolutionDocument) -> ValidationReport:
    """Every cross-check; never raises for a model-valid document."""
    return _Checker(doc).run()
