"""Settings: CLI flag > environment > the solution's instance section > default (CONTRACT §2).

``Settings`` holds what the flags and the environment said (``sources`` says which one, per field). Values
that fall back to the document's instance section (instance id, working storage, input-command port, queue
type, deployment type and configuration) stay ``None`` here and are resolved against the loaded document by
the ``effective_*`` helpers; ``instance_status`` shows every instance setting with its source in
``GET /status`` (the document-only ones: edition, log storage, time zone, DNS name, input-command SSL,
anonymous access and credentials, device repository, settings values).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from runtime.core.solution.enums import DeploymentConfiguration, DeploymentType, QueueType, WorkingStorage
from runtime.core.solution.model import SolutionDocument
from runtime.timezones import iana_name, zone_named

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "console"]
Source = Literal["flag", "environment", "document", "default"]

DEFAULT_INPUT_COMMAND_PORT = 8182  # NuvIoT's default is 80, which a non-root container cannot bind

# env name -> field name
ENV: dict[str, str] = {
    "NUVIOT_SOLUTION": "solution",
    "NUVIOT_SOLUTION_VERSION": "solution_version",
    "NUVIOT_INSTANCE_ID": "instance_id",
    "NUVIOT_DATA_DIR": "data_dir",
    "NUVIOT_WORKING_STORAGE": "working_storage",
    "NUVIOT_CLOUD_URL": "cloud_url",
    "NUVIOT_ACCESS_KEY": "access_key",
    "NUVIOT_ADMIN_HOST": "admin_host",
    "NUVIOT_ADMIN_PORT": "admin_port",
    "NUVIOT_ADMIN_TOKEN": "admin_token",
    "NUVIOT_CONTROL_MQTT": "control_mqtt",
    "NUVIOT_INPUT_COMMAND_PORT": "input_command_port",
    "NUVIOT_LOG_LEVEL": "log_level",
    "NUVIOT_LOG_FORMAT": "log_format",
    "NUVIOT_LISTENER_PORTS": "listener_ports",
    # NuvIoT's container variables QueueType, DeploymentType, DeploymentConfig (entrypoint.sh maps them)
    "NUVIOT_QUEUE_TYPE": "queue_type",
    "NUVIOT_DEPLOYMENT_TYPE": "deployment_type",
    "NUVIOT_DEPLOYMENT_CONFIG": "deployment_configuration",
    # extensions (cloud working storage tuning; README "Container")
    "NUVIOT_CLOUD_BATCH_SIZE": "cloud_batch_size",
    "NUVIOT_CLOUD_MAX_BATCHES_PER_SECOND": "cloud_max_batches_per_second",
    "NUVIOT_CLOUD_TIMEOUT": "cloud_timeout",
    "NUVIOT_CLOUD_RETRY_MAX": "cloud_retry_max",
    "NUVIOT_OUTBOX_MAX_ROWS": "outbox_max_rows",
    # extensions (MQTT client listeners; docs/listeners.md)
    "NUVIOT_MQTT_KEEPALIVE": "mqtt_keepalive",
    "NUVIOT_MQTT_FASTPATH": "mqtt_fastpath",
    # extension (the dispatcher's compiled routes; docs/performance.md)
    "NUVIOT_COMPILED_ROUTES": "compiled_routes",
    # extensions (connection limits, stop budget; README "Settings")
    "NUVIOT_HTTP_HEADER_TIMEOUT": "http_header_timeout",
    "NUVIOT_HTTP_BODY_TIMEOUT": "http_body_timeout",
    "NUVIOT_MAX_CONNECTIONS_PER_PORT": "max_connections_per_port",
    "NUVIOT_TCP_IDLE_TIMEOUT": "tcp_idle_timeout",
    "NUVIOT_STOP_TIMEOUT": "stop_timeout",
    # extensions (local storage bounds; docs/reliability.md)
    "NUVIOT_DEADLETTER_PAYLOAD_MAX_BYTES": "deadletter_payload_max_bytes",
    "NUVIOT_DEADLETTER_MAX_BYTES": "deadletter_max_bytes",
    "NUVIOT_DATASTREAM_QUEUE_MAX_ROWS": "datastream_queue_max_rows",
    "NUVIOT_DATASTREAM_PROCESS": "datastream_process",
    # the Cluster edition (CONTRACT §10, docs/cluster.md)
    "NUVIOT_ROLE": "role",
    "NUVIOT_QUEUE_URL": "queue_url",
    "NUVIOT_QUEUE_PARTITIONS": "queue_partitions",
    "NUVIOT_DATABASE_URL": "database_url",
}


class SettingsError(Exception):
    """Bad settings: the CLI prints the message and exits 1."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    solution: str | None = None  # None: the packaged demo solution
    solution_version: str | None = None
    instance_id: str | None = None
    data_dir: Path = Path("./data")
    working_storage: WorkingStorage | None = None
    cloud_url: str | None = None
    access_key: SecretStr | None = None
    admin_host: str = "0.0.0.0"
    admin_port: int = Field(default=8181, ge=0, le=65535)
    admin_token: SecretStr | None = None
    control_mqtt: SecretStr | None = None  # the URL may hold a password
    input_command_port: int | None = Field(default=None, ge=0, le=65535)
    log_level: LogLevel = "info"
    log_format: LogFormat | None = None  # None: console on a tty, else json
    drain_timeout: float = 5.0
    # extension: override a listener's port (``KEY=PORT``; 0 = any free port), e.g. for tests or a host
    # where the solution's port is taken. The bound ports are shown in GET /status.
    listener_ports: dict[str, int] = Field(default_factory=dict)
    # extension: cloud working storage (rows per POST, POSTs per second, seconds per POST, backoff cap)
    cloud_batch_size: int = Field(default=200, ge=1, le=10_000)
    cloud_max_batches_per_second: float = Field(default=5.0, gt=0, le=1000)
    cloud_timeout: float = Field(default=10.0, gt=0, le=600)
    cloud_retry_max: float = Field(default=30.0, gt=0, le=3600)
    outbox_max_rows: int = Field(default=100_000, ge=1)
    # extension: MQTT client listeners' keep-alive (s; a hung broker is noticed within one period) and
    # their fast path (adapters/listeners/mqtt_fastpath.py; false forces plain aiomqtt, e.g. to compare)
    mqtt_keepalive: int = Field(default=30, ge=2, le=3600)
    mqtt_fastpath: bool = True
    # extension: routes compiled once per solution load (core/pipeline/compiled.py); false: every message takes the
    # general path (to compare, or to rule the compiled path out)
    compiled_routes: bool = True
    # extension: every server port (admin API, input commands, rest/websocket/rawtcp listeners; README)
    http_header_timeout: float = Field(default=10.0, gt=0, le=3600)
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_connections_per_port: int = Field(default=256, ge=1, le=1_000_000)
    tcp_idle_timeout: float = Field(default=300.0, gt=0, le=86_400)
    stop_timeout: float = Field(default=7.0, gt=0, le=600)  # listeners + drain + transmitters, in all
    queue_type: QueueType | None = None
    deployment_type: DeploymentType | None = None
    deployment_configuration: DeploymentConfiguration | None = None
    # field name -> "flag" or "environment", for the fields that were given (load_settings fills it)
    sources: dict[str, Source] = Field(default_factory=dict, repr=False)
    # extension: a dead letter keeps this much of its payload (plus its size and sha256); all dead letters
    # together are pruned to this many bytes (and 10,000 rows)
    deadletter_payload_max_bytes: int = Field(default=64 * 1024, ge=0)
    deadletter_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    datastream_queue_max_rows: int = Field(default=1_000_000, ge=1)  # per stream (docs/datastreams.md)
    # the data-stream queue and drainers in a process of their own (docs/datastreams.md "Performance")
    datastream_process: bool = True
    # the Cluster edition: one program, three roles (docs/cluster.md)
    role: Literal["all", "ingest", "worker"] = "all"
    queue_url: SecretStr | None = None  # amqp://user:pass@host:port/vhost
    queue_partitions: int = Field(default=16, ge=1, le=1024)  # every replica of an instance: the same number
    database_url: SecretStr | None = None  # postgresql://...

    @field_validator("listener_ports", mode="before")
    @classmethod
    def _ports(cls, v: object) -> object:
        if isinstance(v, str):
            v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, list):
            out: dict[str, int] = {}
            for item in v:
                key, sep, port = str(item).partition("=")
                if not sep or not key.strip() or not port.strip().isdigit() or int(port) > 65535:
                    raise ValueError(f"'{item}' is not KEY=PORT")
                out[key.strip()] = int(port)
            return out
        return v

    @field_validator("queue_url")
    @classmethod
    def _amqp_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("must look like amqp://user:pass@host:port/vhost")
        return v

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must look like postgresql://user:pass@host:port/database")
        return v

    @field_validator("cloud_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("control_mqtt")
    @classmethod
    def _mqtt_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("mqtt://", "mqtts://")):
            raise ValueError("must look like mqtt://[user:pass@]host:port")
        return v

    # ---- resolution against the loaded solution (flag/env already won when set)
    def resolve(self, name: str, doc: SolutionDocument | None, default: Any) -> tuple[Any, Source]:
        """flag > environment > the document's instance section (when it set the field) > default."""
        given = getattr(self, name, None)
        if given is not None:
            return given, self.sources.get(name, "flag")
        if doc is not None and name in doc.instance.model_fields_set:
            value = getattr(doc.instance, name)
            if value is not None:
                return value, "document"
        return default, "default"

    def effective_instance_id(self, doc: SolutionDocument | None) -> str:
        if self.instance_id:
            return self.instance_id
        if doc is not None and doc.instance.key:
            return doc.instance.key
        return "local"

    def effective_working_storage(self, doc: SolutionDocument | None) -> WorkingStorage:
        """``cloud`` from the document needs a cloud URL; without one the runtime works locally (see /status)."""
        if self.working_storage is not None:
            return self.working_storage
        if doc is not None and doc.instance.working_storage is not None:
            if doc.instance.working_storage is WorkingStorage.CLOUD and not self.cloud_url:
                return WorkingStorage.LOCAL
            return doc.instance.working_storage
        return WorkingStorage.LOCAL

    def effective_time_zone(self, doc: SolutionDocument | None) -> tzinfo:
        """The instance's ``TimeZone`` (workflow timers' times of day); UTC when it names no zone known here
        (``/status`` says so)."""
        name, _ = self.resolve("time_zone", doc, "UTC")
        return zone_named(str(name)) or UTC

    def effective_input_command_port(self, doc: SolutionDocument | None) -> int:
        if self.input_command_port is not None:
            return self.input_command_port
        if doc is not None and doc.instance.input_command_port is not None:
            return doc.instance.input_command_port
        return DEFAULT_INPUT_COMMAND_PORT

    def instance_status(self, doc: SolutionDocument | None,
                        instance_id: tuple[str, Source] | None = None) -> dict[str, Any]:
        """Every instance setting as ``{value, source}`` for ``GET /status`` (secrets only as set/unset);
        ``instance_id``: the id the process runs with (it is fixed at the first load), with its source."""

        def entry(value: Any, source: Source) -> dict[str, Any]:
            return {"value": getattr(value, "value", value), "source": source}

        out: dict[str, Any] = {"instanceId": entry(*self.resolve("key", doc, "local"))}
        if self.instance_id:
            out["instanceId"] = entry(self.instance_id, self.sources.get("instance_id", "flag"))
        if instance_id is not None:
            out["instanceId"] = entry(*instance_id)
        for name, wire, default in (
            ("queue_type", "queueType", QueueType.IN_MEMORY),
            ("deployment_type", "deploymentType", None),
            ("deployment_configuration", "deploymentConfiguration", None),
            ("nuviot_edition", "edition", "container"),
            ("log_storage", "logStorage", "local"),
            ("time_zone", "timeZone", "UTC"),
            ("dns_host_name", "dnsHostName", "localhost"),
            ("input_command_ssl", "inputCommandSsl", False),
            ("input_command_anonymous", "inputCommandAnonymous", True),
            ("input_command_basic_auth_user_name", "inputCommandUser", None),
        ):
            out[wire] = entry(*self.resolve(name, doc, default))
        zone = iana_name(str(out["timeZone"]["value"]))
        out["timeZone"]["zone"] = zone or "UTC"  # the IANA zone workflow timers use
        if zone is None:
            out["timeZone"]["note"] = "not a time zone known here (a Windows id or an IANA name); UTC is used"
        storage, storage_source = self.resolve("working_storage", doc, WorkingStorage.LOCAL)
        out["workingStorage"] = entry(self.effective_working_storage(doc), storage_source)
        if storage is WorkingStorage.CLOUD and not self.cloud_url:
            out["workingStorage"]["note"] = "cloud needs NUVIOT_CLOUD_URL; working locally"
        port, port_source = self.resolve("input_command_port", doc, DEFAULT_INPUT_COMMAND_PORT)
        out["inputCommandPort"] = entry(port, port_source)
        inst = doc.instance if doc is not None else None
        out["credentials"] = entry(len(inst.credentials) if inst else 0,
                                   "document" if inst and inst.credentials else "default")
        repo = inst.device_repository if inst else None
        out["deviceRepository"] = {
            "value": {"key": repo.key, "name": repo.name, "repositoryType": repo.repository_type.value,
                      "storage": "sqlite"} if repo else None,
            "source": "document" if inst and "device_repository" in inst.model_fields_set else "default",
        }
        settings: dict[str, Any] = {}
        if doc is not None:
            for field in doc.solution.settings:
                if field.key in doc.instance.settings_values:
                    settings[field.key] = entry(doc.instance.settings_values[field.key], "document")
                else:
                    settings[field.key] = entry(field.default_value, "default")
            for key, value in doc.instance.settings_values.items():
                settings.setdefault(key, entry(value, "document"))
        out["settings"] = settings
        return out
    def effective_queue_type(self, doc: SolutionDocument | None) -> QueueType:
        if self.queue_type is not None:
            return self.queue_type
        if doc is not None:
            return doc.instance.queue_type
        return QueueType.IN_MEMORY

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runtime.db"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The `run` flags. Every default is None so that 'not given' falls through to the environment."""
    a = parser.add_argument
    a("--solution", help="path or http(s) URL of the solution (default: the packaged demo)")
    a("--solution-version", help="solution version to ask the URL for (default: latest)")
    a("--instance-id", help="instance id (default: the solution's instance key, else 'local')")
    a("--data-dir", help="SQLite files, admin token, last good solution (default ./data)")
    a("--working-storage", choices=["local", "cloud"], help="where logs, events and records go")
    a("--cloud-url", help="base URL of the cloud log/telemetry sink (required for cloud)")
    a("--admin-host", help="admin API bind address (default 0.0.0.0)")
    a("--admin-port", type=int, help="admin API port (default 8181; 0 = any free port)")
    a("--control-mqtt", help="mqtt://[user:pass@]host:port of the MQTT command channel")
    a("--input-command-port", type=int, help="input-command HTTP port (default: the solution's)")
    a("--log-level", choices=["debug", "info", "warning", "error"])
    a("--log-format", choices=["json", "console"])
    a("--listener-port", dest="listener_ports", action="append", metavar="KEY=PORT",
      help="override a listener's port (repeatable; 0 = any free port)")
    a("--mqtt-keepalive", type=int, help="MQTT client listeners' keep-alive in seconds (default 30)")
    a("--queue-type", choices=[q.value for q in QueueType], help="NuvIoT QueueType (default: the document's)")
    a("--deployment-type", choices=[d.value for d in DeploymentType], help="NuvIoT DeploymentType")
    a("--deployment-configuration", choices=[d.value for d in DeploymentConfiguration],
      help="NuvIoT DeploymentConfiguration")
    a("--role", choices=["all", "ingest", "worker"],
      help="all (one process, the default), or a Cluster edition replica: ingest or worker (docs/cluster.md)")


def load_settings(args: argparse.Namespace | None, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    for name, field_name in ENV.items():
        raw = env.get(name)
        if raw is not None and raw != "":
            values[field_name] = raw.lower() if field_name in _LOWERED else raw
            sources[field_name] = "environment"
    if args is not None:
        for field_name in Settings.model_fields:
            flag = getattr(args, field_name, None)
            if flag is not None and field_name != "sources":
                values[field_name] = flag
                sources[field_name] = "flag"
    values["sources"] = sources
    try:
        settings = Settings.model_validate(_coerce(values))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field_name = str(err["loc"][0]) if err["loc"] else "?"
            env_name = next((k for k, v in ENV.items() if v == field_name), None)
            flag = {"listener_ports": "listener-port"}.get(field_name, field_name.replace("_", "-"))
            where = f"--{flag}" + (f" / {env_name}" if env_name else "")
            lines.append(f"{where}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    if settings.working_storage is WorkingStorage.CLOUD and not settings.cloud_url:
        raise SettingsError("invalid settings:\n  --cloud-url / NUVIOT_CLOUD_URL: required when working storage is cloud")
    if settings.role != "all":
        missing = [f"{flag}: required for --role {settings.role}" for flag, value in
                   (("NUVIOT_QUEUE_URL", settings.queue_url), ("NUVIOT_DATABASE_URL", settings.database_url))
                   if value is None]
        if settings.queue_type not in (None, QueueType.RABBITMQ):
            missing.append(f"NUVIOT_QUEUE_TYPE: --role {settings.role} needs rabbitmq, not {settings.queue_type.value}")
        if missing:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(missing))
    return settings


_LOWERED = frozenset({"log_level", "log_format", "working_storage", "queue_type", "deployment_type",
                      "deployment_configuration", "role"})


def _coerce(values: dict[str, object]) -> dict[str, object]:
    out = dict(values)
    for key in ("admin_port", "input_command_port"):
        v = out.get(key)
        if isinstance(v, str):
            try:
                out[key] = int(v)
            except ValueError:
                pass  # let pydantic report it with the field name
    return out
