"""NuvIoT enums, keyed by their EnumLabel string id (never by ordinal: ordinals changed between versions).

Members are UPPER_SNAKE; values are the ids exactly as NuvIoT serialises them (reference/nuviot-runtime.md §4).
"""

from __future__ import annotations

from enum import StrEnum


class ListenerType(StrEnum):
    AMQP = "amqp"
    AZURE_SERVICE_BUS = "azureserivcebus"  # sic, NuvIoT's id
    AZURE_EVENT_HUB = "azureeventhub"
    AZURE_IOT_HUB = "azureiothub"
    MQTT_LISTENER = "mqttlistener"
    MQTT_CLIENT = "mqttclient"
    RAW_TCP = "rawtcp"
    RABBITMQ_CLIENT = "rabbitmqclient"
    REST = "rest"
    REDIS = "redis"
    KAFKA = "kafka"
    RAW_UDP = "raw_udp"
    SERIAL_PORT = "serialport"
    WEBSOCKET = "websocket"
    FTP = "ftp"
    SHARED_MQTT_LISTENER = "sharedmqttlistener"
    TAK_CURSOR_ON_TARGET = "cottak"


class RestListenerType(StrEnum):
    """NuvIoT's plain int enum RESTListenerTypes (0, 1, 2); our own string ids."""

    PIPELINE_MODULE = "pipelinemodule"
    INPUT_COMMAND_LISTENER = "inputcommandlistener"
    ACME_LISTENER = "acmelistener"


class ContentType(StrEnum):
    NO_CONTENT = "nocontent"
    BINARY = "binary"
    DELIMITED = "delimited"
    JSON = "json"
    STRING_REGEX = "stringregex"
    PROTOBUF = "protobuf"
    STRING_POSITION = "stringposition"
    XML = "xml"
    MEDIA = "media"
    SEVEN_SEGMENT_IMAGE = "sevensegementimage"  # sic
    POINT_ARRAY = "pointarray"
    GEO_POINT_ARRAY = "geopointarray"


class SearchLocation(StrEnum):
    HEADERS = "headers"
    QUERY_STRING = "querystring"
    PATH = "path"
    TOPIC = "topic"
    BODY = "body"


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    TRUE_FALSE = "true-false"
    GEOLOCATION = "geolocation"
    DATETIME = "datetime"
    STATE = "state"
    VALUE_WITH_UNIT = "valuewithunit"
    IMAGE = "image"
    DECIMAL_ARRAY = "decimalarray"
    INT_ARRAY = "intarray"
    STRING_ARRAY = "stringarray"
    ML_INFERENCE = "mlinference"
    OBJECT = "object"


class ParseStringValueType(StrEnum):
    STRING = "string"
    WHOLE_NUMBER = "wholenumber"
    REAL_NUMBER = "realnumber"
    BOOLEAN = "boolean"
    FILE = "file"
    WHOLE_NUMBER_ARRAY = "wholenumberarray"
    REAL_ARRAY = "realarray"
    STRING_ARRAY = "stringarray"


class ParseBinaryValueType(StrEnum):
    STRING = "string"
    BOOLEAN = "boolean"
    CHAR = "char"
    BYTE = "byte"
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    UINT64 = "uint64"
    INT64 = "int64"
    SINGLE = "singleprecisionfloatingpoint"
    DOUBLE = "doubleprecisionfloatingpoint"


class BinaryParsingStrategy(StrEnum):
    ABSOLUTE = "absolute"
    RELATIVE = "relative"
    SCRIPT = "script"


class StringParsingStrategy(StrEnum):
    NULL_TERMINATED = "nullterminated"
    STRING_LENGTH = "stringlength"


class Endian(StrEnum):
    BIG = "bigendian"
    LITTLE = "littleendian"


class DateTimeZone(StrEnum):
    NO_TIME_ZONE = "notimezone"
    SERVER_TIME_ZONE = "servertimezone"
    UNIVERSAL_TIME_ZONE = "universaltimezone"
    ISO8601 = "iso8601"
    EPOCH_SECONDS = "epochseconds"
    EPOCH_MS = "epochms"


class MessageDirection(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"
    INCOMING_AND_OUTGOING = "IncomingAndOutgoing"  # sic, NuvIoT's id keeps the capitals


class RestMethod(StrEnum):
    GET = "get"
    PUT = "put"
    POST = "post"
    DELETE = "delete"


class RestServerType(StrEnum):
    HTTP = "http"
    HTTPS = "https"


class QoS(StrEnum):
    QOS0 = "qos0"
    QOS1 = "qos1"
    QOS2 = "qos2"

    @property
    def level(self) -> int:
        return int(self.value[-1])


class SecurityFieldType(StrEnum):
    ACCESS_KEY = "accesskey"
    BASIC_ACCESS = "basicaccess"
    SCRIPT = "script"
    SHARED_SIGNATURE = "sharedsignature"


class InputTranslatorType(StrEnum):
    MESSAGE = "message"
    NUVAI_MODEL = "nuvaimodel"
    CUSTOM = "custom"
    SCRIPT = "script"


class OutputTranslatorType(StrEnum):
    MESSAGE = "message"
    CUSTOM = "custom"


class TransmitterType(StrEnum):
    AMQP = "amqp"
    AZURE_SERVICE_BUS = "azureserivcebus"  # sic
    AZURE_EVENT_HUB = "azureeventhub"
    AZURE_IOT_HUB = "azureiothub"
    KAFKA = "kafka"
    MQTT_CLIENT = "mqttclient"
    ORIGINAL_LISTENER = "originallistener"
    RABBITMQ = "rabbitmq"
    REDIS = "redis"
    REST = "rest"
    RAW_TCP = "rawtcp"
    RAW_UDP = "rawudp"
    SERIAL_PORT = "serialport"
    HOSTED_MQTT = "hostedmqtt"
    TAK_CURSOR_ON_TARGET = "cottak"


class PipelineModuleType(StrEnum):
    LISTENER = "listener"
    PLANNER = "planner"
    SENTINEL = "sentinel"
    INPUT_TRANSLATOR = "inputtranslator"
    WORKFLOW = "workflow"
    OUTPUT_TRANSLATOR = "outputtranslator"
    TRANSMITTER = "transmitter"
    DATA_STREAM = "datastream"
    APPLICATION_CACHE = "applicationcachce"  # sic
    CUSTOM = "custom"


class ParameterLocation(StrEnum):
    """NuvIoT's PayloadTypes for input-command parameters."""

    QUERY_STRING = "querystring"
    JSON = "json"


class EndpointType(StrEnum):
    GET = "get"
    POST = "post"
    PUT = "put"
    DELETE = "delete"


class NodeType(StrEnum):
    """Workflow canvas node types, as NuvIoT writes them in Connection.NodeType."""

    INPUT = "workflowinput"
    ATTRIBUTE = "attribute"
    STATE_MACHINE = "statemachine"
    INPUT_COMMAND = "inputcommand"
    OUTPUT_COMMAND = "outputcommand"
    TIMER = "timer"  # a source only (NuvIoT NodeBase.NodeType_Timer): its mappings run when it fires


class WorkingStorage(StrEnum):
    LOCAL = "local"
    CLOUD = "cloud"


class LogStorage(StrEnum):
    LOCAL = "local"
    CLOUD = "cloud"


class RepositoryType(StrEnum):
    NUVIOT = "nuviot"
    AZURE_IOT_HUB = "azureiothub"
    LOCAL = "local"
    DEDICATED = "dedicated"
    CLUSTERED_MONGODB = "inclusteredmongo"


class NuvIoTEdition(StrEnum):
    APP = "app"
    CONTAINER = "container"
    CLUSTER = "cluster"
    SHARED = "shared"


class DeploymentType(StrEnum):
    CLOUD = "cloud"
    MANAGED = "managed"
    ON_PREMISE = "onpremise"
    SHARED = "shared"


class DeploymentConfiguration(StrEnum):
    DOCKER_SWARM = "dockerswarm"
    KUBERNETES = "kubernetes"
    SINGLE_INSTANCE = "singleinstance"
    UWP = "uwp"


class QueueType(StrEnum):
    IN_MEMORY = "inmemory"
    KAFKA = "kafka"
    SERVICE_BUS = "servicebus"
    RABBITMQ = "rabbitmq"
