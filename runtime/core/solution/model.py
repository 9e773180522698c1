"""The solution, as one frozen, strictly-typed model (CONTRACT §7, reference/nuviot-runtime.md §4 and §8).

Both readers (native YAML/JSON and NuvIoT's export JSON) produce a ``SolutionDocument``.

Conventions
- Python attribute names are snake_case; the wire (native form) names are their camelCase aliases,
  mirroring NuvIoT's C# property names (``listenOnPort`` <-> ``ListenOnPort``). ``populate_by_name``
  lets readers build models from snake_case dicts too.
- References between entities are by ``key`` (a str). Libraries live at the top of the document and
  are indexed by the ``SolutionDocument`` lookup helpers.
- Enums are NuvIoT's string ids (``enums.py``). Scalars are strict: ``"temp": false`` is not a number.
- Secrets are ``SecretStr``; readers resolve ``passwordRef: env:NAME`` / ``file:PATH`` into them.
- Unknown keys are ignored (NuvIoT's loader does the same: MissingMemberHandling.Ignore).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from pydantic import Field, SecretStr

from runtime.core.solution.base import Bool, Entity, Float, Int, Model, Port, Str
from runtime.core.solution.enums import (
    BinaryParsingStrategy,
    ContentType,
    DateTimeZone,
    Endian,
    InputTranslatorType,
    ListenerType,
    MessageDirection,
    OutputTranslatorType,
    ParameterType,
    ParseBinaryValueType,
    ParseStringValueType,
    PipelineModuleType,
    QoS,
    RestListenerType,
    RestMethod,
    RestServerType,
    SearchLocation,
    SecurityFieldType,
    StringParsingStrategy,
    TransmitterType,
)
from runtime.core.solution.health_model import DeviceErrorCode, MessageWatchDog, TimeSpanInterval
from runtime.core.solution.instance_model import (
    DeviceRepositoryConfig,
    DeviceSeed,
    Instance,
    InstanceCredential,
)
from runtime.core.solution.workflow_model import (
    Attribute,
    BusinessRule,
    Connection,
    InputCommand,
    MachineState,
    OutputCommand,
    Parameter,
    StateMachine,
    Timer,
    Transition,
    Workflow,
    WorkflowInput,
)

__all__ = [
    "Attribute", "Bool", "BusinessRule", "Connection", "CustomField", "DataStream", "DataStreamField",
    "DeviceConfiguration", "DeviceErrorCode", "DeviceRepositoryConfig", "DeviceSeed", "Entity", "FieldParser", "Float", "Header",
    "InputCommand", "InputTranslator", "Instance", "InstanceCredential", "Int", "Listener", "MachineState", "MessageDefinition",
    "MessageField", "MessageWatchDog", "Model", "MqttSubscription", "OutputCommand", "OutputCommandMapping", "OutputTranslator",
    "Parameter", "Planner", "Port", "Route", "RouteConnection", "RouteStep", "SecurityField", "Sentinel",
    "Solution", "SolutionDocument", "StateDef", "StateMachine", "StateSet", "Str", "TimeSpanInterval", "Timer", "Transition", "Transmitter",
    "Unit", "UnitSet", "Workflow", "WorkflowInput",
]  # fmt: skip


# --------------------------------------------------------------------------- type system


class StateDef(Model):
    key: Str
    name: Str = ""
    enum_value: Int | None = None
    is_initial_state: Bool = False


class StateSet(Entity):
    require_enum: Bool = False
    states: tuple[StateDef, ...] = ()


class Unit(Model):
    """NuvIoT Unit (LagoVista/DeviceAdmin ``Unit.cs``); conversions in ``core/units.py``."""

    key: Str
    name: Str = ""
    abbreviation: Str | None = None
    is_default: Bool = False
    conversion_type: Str | None = None  # NuvIoT ConversionTypes: "factor" or "script"
    conversion_factor: Float | None = None  # value_in_default = value * factor
    conversion_to_script: Str | None = None  # convertToDefaultUnit(value): kept, not run (validate warns)
    conversion_from_script: Str | None = None  # convertFromDefaultUnit(value)
    number_decimal_points: Int | None = None


class UnitSet(Entity):
    units: tuple[Unit, ...] = ()


class CustomField(Entity):
    """A solution setting or a device-configuration property (NuvIoT CustomField)."""

    field_type: ParameterType = ParameterType.STRING
    default_value: Str | None = None
    is_required: Bool = False
    state_set: Str | None = None
    unit_set: Str | None = None
    min_value: Float | None = None
    max_value: Float | None = None


# --------------------------------------------------------------------------- parsers and messages


class FieldParser(Entity):
    """NuvIoT MessageAttributeParser: where a value is and how to read it.

    Used for planner id parsers, sentinel security-field locators, and (through MessageField) message fields.
    """

    search_location: SearchLocation | None = None
    content_type: ContentType | None = None
    storage_type: ParameterType = ParameterType.STRING
    json_path: Str | None = None
    x_path: Str | None = None
    path_locator: Str | None = None
    topic_locator: Str | None = None
    header_name: Str | None = None
    query_string_field: Str | None = None
    reg_ex_value_selector: Str | None = None
    reg_ex_group_name: Str | None = None
    reg_ex_validation: Str | None = None
    delimiter: Str | None = None
    delimited_index: Int | None = None  # 1-based
    start_index: Int | None = None  # 1-based
    length: Int | None = None
    binary_offset: Int | None = None  # 0-based
    parsed_binary_field_type: ParseBinaryValueType | None = None
    parsed_string_field_type: ParseStringValueType | None = None
    binary_parsing_strategy: BinaryParsingStrategy | None = None
    string_parsing_strategy: StringParsingStrategy | None = None
    string_length_byte_count: Int | None = None
    endian: Endian | None = None
    field_index: Int | None = None
    quoted_text: Bool = False


class MessageField(FieldParser):
    """NuvIoT DeviceMessageDefinitionField."""

    default_value: Str | None = None
    decimal_scaler: Float = 1.0
    date_time_zone: DateTimeZone | None = None
    is_required: Bool = False
    min_value: Float | None = None
    max_value: Float | None = None
    unit_set: Str | None = None  # key into SolutionDocument.unit_sets
    state_set: Str | None = None  # key into SolutionDocument.state_sets
    # geolocation sub-locators (NuvIoT DeviceMessageDefinitionField): latitude and longitude read apart
    lat_json_path: Str | None = None
    lon_json_path: Str | None = None
    lat_x_path: Str | None = None
    lon_x_path: Str | None = None
    lat_delimited_index: Int | None = None  # 1-based
    lon_delimited_index: Int | None = None
    lat_start_index: Int | None = None  # 1-based
    lon_start_index: Int | None = None
    lat_binary_offset: Int | None = None
    lon_binary_offset: Int | None = None
    lat_reg_ex_group_name: Str | None = None
    lon_reg_ex_group_name: Str | None = None
    lat_query_string_field: Str | None = None
    lon_query_string_field: Str | None = None
    # the altitude, read with the latitude and longitude when given: stored as "lat,lon,altitude"
    altitude_json_path: Str | None = None
    altitude_x_path: Str | None = None
    altitude_delimited_index: Int | None = None
    altitude_start_index: Int | None = None
    altitude_binary_offset: Int | None = None
    altitude_reg_ex_group_name: Str | None = None
    altitude_query_string_field: Str | None = None


class Header(Model):
    name: Str
    value: Str = ""


class MessageDefinition(Entity):
    """NuvIoT DeviceMessageDefinition (incoming and outgoing)."""

    message_id: Str
    message_direction: MessageDirection = MessageDirection.INCOMING
    content_type: ContentType = ContentType.JSON
    delimiter: Str | None = None
    quoted_text: Bool = False
    reg_ex: Str | None = None
    endian: Endian | None = None
    binary_parsing_strategy: BinaryParsingStrategy | None = None
    string_parsing_strategy: StringParsingStrategy | None = None
    fields: tuple[MessageField, ...] = ()
    # outgoing only
    output_message_script: Str | None = None
    rest_method: RestMethod | None = None
    path_and_query_string: Str | None = None
    topic: Str | None = None
    headers: tuple[Header, ...] = ()

    @cached_property
    def field_by_key(self) -> dict[str, MessageField]:
        return {f.key: f for f in self.fields}


# --------------------------------------------------------------------------- listeners and planner


class MqttSubscription(Model):
    topic: Str
    qos: QoS = QoS.QOS0
    id: Str | None = None
    description: Str | None = None


class Listener(Entity):
    """NuvIoT ListenerConfiguration. Every type validates; not every type runs here."""

    listener_type: ListenerType
    rest_listener_type: RestListenerType = RestListenerType.PIPELINE_MODULE
    content_type: ContentType | None = None
    # framing (rawtcp)
    delimited_with_soheot: Bool | None = None
    message_length_in_message: Bool | None = None
    message_length_location: Int | None = None
    message_length_size: Int | None = None  # 1, 2 or 4 bytes
    message_length_byte_count_endiness: Endian | None = None
    start_message_sequence: Str | None = None
    end_message_sequence: Str | None = None
    message_receive_timeout_ms: Int | None = None
    max_message_size: Int | None = None
    # rest
    rest_server_type: RestServerType | None = None
    keep_alive_to_send_reply: Bool = False
    keep_alive_to_send_reply_timeout_ms: Int | None = None
    default_response: Str | None = None
    failed_response: Str | None = None
    path: Str | None = None
    origin: Str | None = None
    supported_protocol: Str | None = None
    # security
    anonymous: Bool = True
    secure_connection: Bool = False
    client_id: Str | None = None
    certificate: Str | None = None
    certificate_password: SecretStr | None = None
    user_name: Str | None = None
    password: SecretStr | None = None
    access_key_name: Str | None = None
    access_key: SecretStr | None = None
    credentials_file: Str | None = None
    # endpoints
    host_name: Str | None = None
    listen_on_port: Port | None = None
    connect_to_port: Port | None = None
    endpoint: Str | None = None
    resource_name: Str | None = None
    consumer_group: Str | None = None
    hub_name: Str | None = None
    exchange_name: Str | None = None
    queue: Str | None = None
    topic: Str | None = None
    port_name: Str | None = None
    baud_rate: Int | None = None
    # subscriptions
    mqtt_subscriptions: tuple[MqttSubscription, ...] = ()
    amqp_subscriptions: tuple[Str, ...] = ()


class Planner(Entity):
    device_id_parsers: tuple[FieldParser, ...] = ()
    message_type_id_parsers: tuple[FieldParser, ...] = ()


# --------------------------------------------------------------------------- route modules


class SecurityField(Entity):
    field_type: SecurityFieldType
    locator: FieldParser | None = None
    script: Str | None = None


class Sentinel(Entity):
    """An empty ``security_fields`` means anonymous."""

    security_fields: tuple[SecurityField, ...] = ()


class InputTranslator(Entity):
    input_translator_type: InputTranslatorType = InputTranslatorType.MESSAGE
    delimiter_sequence: Str | None = None
    script: Str | None = None


class OutputTranslator(Entity):
    output_translator_type: OutputTranslatorType = OutputTranslatorType.MESSAGE
    script: Str | None = None


class Transmitter(Entity):
    transmitter_type: TransmitterType
    secure_connection: Bool = False
    anonymous: Bool = True
    user_name: Str | None = None
    password: SecretStr | None = None
    host_name: Str | None = None
    connect_to_port: Port | None = None
    access_key_name: Str | None = None
    access_key: SecretStr | None = None
    headers: tuple[Header, ...] = ()
    hub_name: Str | None = None
    queue: Str | None = None
    exchange_name: Str | None = None
    port_name: Str | None = None
    baud_rate: Int | None = None


class DataStreamField(Entity):
    field_name: Str | None = None  # the column; the key when empty
    field_type: ParameterType = ParameterType.STRING
    is_required: Bool = False
    min_value: Float | None = None
    max_value: Float | None = None
    number_decimal_point: Int | None = None  # decimals kept (rounded)


class DataStream(Entity):
    """NuvIoT DataStream (docs/datastreams.md): where a route's Data Stream Writer step and the scripts'
    ``addToDataStream`` write rows. Built-in, PostgreSQL and Redis run; other types write to built-in."""

    stream_type: Str | None = None  # NuvIoT DataStreamTypes id: "postgresql", "redis", "azuretablestorage"...
    timestamp_field_name: Str = "timeStamp"
    device_id_field_name: Str = "deviceId"
    date_storage_format: Str | None = None  # "iso8601" (default) or "epoch" (NuvIoT spells it "expoch")
    fields: tuple[DataStreamField, ...] = ()
    db_url: Str | None = None  # PostgreSQL: host[:port], or a postgresql:// URL
    db_name: Str | None = None
    db_schema: Str | None = None
    db_user_name: Str | None = None
    db_password: SecretStr | None = None
    db_table_name: Str | None = None
    db_validate_schema: Bool = False
    auto_create_sql_table: Bool = False
    create_table_ddl: Str | None = None
    redis_server_uris: Str | None = None  # host[:port][,host[:port]...]
    redis_password: SecretStr | None = None


# --------------------------------------------------------------------------- routes and device configurations


class OutputCommandMapping(Model):
    """Workflow -> output translator edge: which outgoing message an output command becomes."""

    outgoing_message: Str  # key into SolutionDocument.messages
    field_mappings: dict[Str, Str] = Field(default_factory=dict)  # output parameter key -> message field key


class RouteConnection(Model):
    """A step's primary (``next``) or secondary output (NuvIoT RouteConnection).

    ``mappings`` by edge:
    - inputtranslator -> workflow: message field key -> workflow input key (str)
    - workflow -> outputtranslator: output command key -> OutputCommandMapping
    - outputtranslator -> transmitter: outgoing message key -> "" (which messages this transmitter sends)
    """

    to: Str
    name: Str | None = None
    mappings: dict[Str, Str | OutputCommandMapping] = Field(default_factory=dict)


class RouteStep(Model):
    id: Str  # the route-module id; unique within the route
    type: PipelineModuleType
    module: Str  # key into the library for this step's type
    name: Str | None = None
    next: RouteConnection | None = None
    secondary: tuple[RouteConnection, ...] = ()


class Route(Entity):
    is_default: Bool = False
    message_definition: Str  # key into SolutionDocument.messages
    steps: tuple[RouteStep, ...] = ()

    @cached_property
    def step_by_id(self) -> dict[str, RouteStep]:
        return {s.id: s for s in self.steps}

    def first_step(self, step_type: PipelineModuleType) -> RouteStep | None:
        for s in self.steps:
            if s.type is step_type:
                return s
        return None


class DeviceConfiguration(Entity):
    configuration_version: Str | None = None
    custom_status_type: Str | None = None  # key into SolutionDocument.state_sets
    watchdog_enabled_default: Bool = False
    watchdog_seconds: Int | None = None
    error_codes: tuple[DeviceErrorCode, ...] = ()
    message_watch_dogs: tuple[MessageWatchDog, ...] = ()
    properties: tuple[CustomField, ...] = ()
    routes: tuple[Route, ...] = ()

    @cached_property
    def route_by_key(self) -> dict[str, Route]:
        return {r.key: r for r in self.routes}


class Solution(Entity):
    version: Str = "1.0"
    default_listener: Str | None = None
    settings: tuple[CustomField, ...] = ()
    listeners: tuple[Listener, ...] = ()
    planner: Planner
    device_configurations: tuple[DeviceConfiguration, ...] = ()


# what a route step's module key points at (SolutionDocument.module_for)
LibraryModule = Sentinel | InputTranslator | Workflow | OutputTranslator | Transmitter | DataStream


class SolutionDocument(Model):
    """One self-contained document: instance, solution, libraries, optional device seed."""

    schema_version: Int = 1
    instance: Instance = Field(default_factory=Instance)
    solution: Solution
    messages: tuple[MessageDefinition, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    sentinels: tuple[Sentinel, ...] = ()
    input_translators: tuple[InputTranslator, ...] = ()
    output_translators: tuple[OutputTranslator, ...] = ()
    transmitters: tuple[Transmitter, ...] = ()
    state_sets: tuple[StateSet, ...] = ()
    unit_sets: tuple[UnitSet, ...] = ()
    data_streams: tuple[DataStream, ...] = ()
    devices: tuple[DeviceSeed, ...] = ()

    # ---- lookups (built once; the document is frozen)
    @cached_property
    def message_by_key(self) -> dict[str, MessageDefinition]:
        return {m.key: m for m in self.messages}

    @cached_property
    def workflow_by_key(self) -> dict[str, Workflow]:
        return {w.key: w for w in self.workflows}

    @cached_property
    def sentinel_by_key(self) -> dict[str, Sentinel]:
        return {s.key: s for s in self.sentinels}

    @cached_property
    def input_translator_by_key(self) -> dict[str, InputTranslator]:
        return {t.key: t for t in self.input_translators}

    @cached_property
    def output_translator_by_key(self) -> dict[str, OutputTranslator]:
        return {t.key: t for t in self.output_translators}

    @cached_property
    def transmitter_by_key(self) -> dict[str, Transmitter]:
        return {t.key: t for t in self.transmitters}

    @cached_property
    def state_set_by_key(self) -> dict[str, StateSet]:
        return {s.key: s for s in self.state_sets}

    @cached_property
    def unit_set_by_key(self) -> dict[str, UnitSet]:
        return {u.key: u for u in self.unit_sets}

    @cached_property
    def data_stream_by_key(self) -> dict[str, DataStream]:
        return {d.key: d for d in self.data_streams}

    @cached_property
    def device_configuration_by_key(self) -> dict[str, DeviceConfiguration]:
        return {d.key: d for d in self.solution.device_configurations}

    @cached_property
    def listener_by_key(self) -> dict[str, Listener]:
        return {lst.key: lst for lst in self.solution.listeners}

    def module_for(self, step: RouteStep) -> LibraryModule | None:
        """The library entity a route step points at (None when the key does not resolve)."""
        table: dict[PipelineModuleType, Mapping[str, LibraryModule]] = {
            PipelineModuleType.SENTINEL: self.sentinel_by_key,
            PipelineModuleType.INPUT_TRANSLATOR: self.input_translator_by_key,
            PipelineModuleType.WORKFLOW: self.workflow_by_key,
            PipelineModuleType.OUTPUT_TRANSLATOR: self.output_translator_by_key,
            PipelineModuleType.TRANSMITTER: self.transmitter_by_key,
            PipelineModuleType.DATA_STREAM: self.data_stream_by_key,
        }
        return table.get(step.type, {}).get(step.module)

    @property
    def instance_id(self) -> str:
        return self.instance.key or self.solution.key
