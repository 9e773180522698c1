"""Checks of the listeners, the instance's input-command settings, the planner and the message parsers."""

from __future__ import annotations

from pydantic.alias_generators import to_camel

from runtime.core.parsing.locate import locator_problem
from runtime.core.solution import codes
from runtime.core.solution.enums import (
    ListenerType,
    MessageDirection,
    QueueType,
    RepositoryType,
    SearchLocation,
)
from runtime.core.solution.model import FieldParser, MessageDefinition
from runtime.core.solution.validate_base import CheckerBase, _missing

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
_LOCATOR_FIX = {
    "json_path": "set jsonPath to the value's dotted path in the body (e.g. motion or data.temperature)",
    "x_path": "set xPath to the value's XPath in the body",
    "delimited_index": "NuvIoT counts delimited fields from 1: set delimitedIndex to 1 for the first field",
    "start_index": "NuvIoT counts characters from 1: set startIndex to 1 for the first character",
    "length": "set length to the number of characters, or leave it out for the rest of the body",
    "binary_offset": "set binaryOffset to the value's byte offset from 0",
    "parsed_binary_field_type": "set parsedBinaryFieldType (int16, uint32, ...) for a binary field",
    "a": "set the message's (or the parser's) contentType",
}
# listener types this runtime starts (runtime/planes.py); a REST listener of type inputcommandlistener is
# served by the input-command server instead
RUNNABLE_LISTENERS = frozenset({
    ListenerType.REST, ListenerType.MQTT_CLIENT, ListenerType.MQTT_LISTENER, ListenerType.RAW_TCP,
    ListenerType.RAW_UDP, ListenerType.WEBSOCKET, ListenerType.AMQP, ListenerType.RABBITMQ_CLIENT,
})
_LOCATOR_FOR: dict[SearchLocation, str] = {
    SearchLocation.PATH: "pathLocator",
    SearchLocation.TOPIC: "topicLocator",
    SearchLocation.HEADERS: "headerName",
    SearchLocation.QUERY_STRING: "queryStringField",
}


class IntakeChecks(CheckerBase):
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
            if lst.listener_type not in RUNNABLE_LISTENERS:
                self.err(f"{path}.listenerType", codes.LISTENER_NOT_RUN,
                         f"this runtime cannot start a {lst.listener_type.value} listener (the instance would be "
                         "FailedToStart): use one of " + ", ".join(sorted(t.value for t in RUNNABLE_LISTENERS))
                         + ", or remove the listener")
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
        self.instance_not_applied()

    def instance_not_applied(self) -> None:
        """Instance settings the document carries that this runtime does not act on: said, with the fix."""
        inst = self.doc.instance
        if inst.input_command_ssl:
            self.warn("instance.inputCommandSSL", codes.INSTANCE_NOT_APPLIED,
                      "input commands are served over plain HTTP here; terminate TLS in front of the "
                      "input-command port (a reverse proxy) or set inputCommandSSL false")
        if inst.queue_type is QueueType.RABBITMQ:
            pass  # the Cluster edition's queue: --role ingest/worker use it; --role all queues in memory
        elif inst.queue_type is not QueueType.IN_MEMORY:
            self.warn("instance.queueType", codes.INSTANCE_NOT_APPLIED,
                      f"queue type {inst.queue_type.value}: this runtime queues messages in memory, or in "
                      "RabbitMQ for the Cluster edition's roles (NuvIoT's default for every edition but Cluster)")
        if inst.device_repository.repository_type is not RepositoryType.LOCAL:
            self.warn("instance.deviceRepository.repositoryType", codes.INSTANCE_NOT_APPLIED,
                      f"repository type {inst.device_repository.repository_type.value}: devices are kept in "
                      "this runtime's own SQLite repository (provision them with PUT /devices/{id})")

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
        path = "solution.planner.deviceIdParsers"
        if not pl.device_id_parsers:
            self.err(path, codes.PLANNER_PARSERS, "the planner needs at least one entry in deviceIdParsers")
        for wire, parsers in (("deviceIdParsers", pl.device_id_parsers),
                              ("messageTypeIdParsers", pl.message_type_id_parsers)):
            for i, p in enumerate(parsers):
                self.located(p, None, f"solution.planner.{wire}[{i}]", is_id_parser=True)
        if not pl.message_type_id_parsers:  # optional, as in NuvIoT: the route is the default or the only one
            self.single_message_routes()

    def single_message_routes(self) -> None:
        """Without message-id parsers a device configuration needs a default route or only one message."""
        for i, dc in enumerate(self.doc.solution.device_configurations):
            messages = {r.message_definition for r in dc.routes}
            if len(messages) > 1 and not any(r.is_default for r in dc.routes):
                self.err(f"solution.deviceConfigurations[{i}].routes", codes.MESSAGE_ID_NEEDED,
                         f"{len(messages)} messages and no default route, but the planner has no message id "
                         "parsers: every message would fail (CouldNotDetermineMessageId); add a message id "
                         "parser to solution.planner.messageTypeIdParsers or mark one route isDefault")

    def located(self, p: FieldParser, message: MessageDefinition | None, path: str, *, is_id_parser: bool) -> None:
        """The searchLocation checks, then whether the locator can work at all (else every message fails)."""
        before = len(self.errors)
        self.parser(p, path, is_id_parser=is_id_parser)
        if len(self.errors) > before:
            return
        problem = locator_problem(p, message)
        if problem is None:
            return
        word = problem.detail.split()[0]
        attr = to_camel(word) if word in FieldParser.model_fields else None
        fix = _LOCATOR_FIX.get(word, "fix the locator settings (docs/parsing.md)")
        detail = problem.detail.replace(word, attr, 1) if attr else problem.detail
        self.err(f"{path}.{attr}" if attr else path, codes.FIELD_LOCATOR,
                 f"{detail}: every message would fail ({problem.code}); {fix}")

    def messages(self) -> None:
        for i, msg in enumerate(self.doc.messages):
            path = f"messages[{i}]"
            self.unique((f.key for f in msg.fields), f"{path}.fields", "field key")
            incoming = msg.message_direction is not MessageDirection.OUTGOING
            for j, f in enumerate(msg.fields):
                self.state_unit(f, f"{path}.fields[{j}]")
                if incoming:
                    self.located(f, msg, f"{path}.fields[{j}]", is_id_parser=False)
                else:
                    self.parser(f, f"{path}.fields[{j}]", is_id_parser=False)
