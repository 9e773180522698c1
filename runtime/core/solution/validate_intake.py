"""Checks of the listeners, the instance's input-command settings, the planner and the message parsers."""

from __future__ import annotations

from runtime.core.solution import codes
from runtime.core.solution.enums import ListenerType, QueueType, RepositoryType, SearchLocation
from runtime.core.solution.model import FieldParser
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
        if inst.queue_type is not QueueType.IN_MEMORY:
            self.warn("instance.queueType", codes.INSTANCE_NOT_APPLIED,
                      f"queue type {inst.queue_type.value}: this runtime queues messages in memory "
                      "(NuvIoT's default for every edition but Cluster)")
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
