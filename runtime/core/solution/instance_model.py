"""The deployment instance and the device seed (NuvIoT DeploymentInstance); re-exported by ``model``."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from runtime.core.solution.base import Bool, Int, Model, Port, Str
from runtime.core.solution.enums import (
    DeploymentConfiguration,
    DeploymentType,
    LogStorage,
    NuvIoTEdition,
    QueueType,
    RepositoryType,
    WorkingStorage,
)


class DeviceRepositoryConfig(Model):
    """NuvIoT DeviceRepository, the fields a runtime uses; this runtime keeps devices in its own SQLite."""

    key: Str = "local"
    name: Str = ""
    id: Str | None = None
    repository_type: RepositoryType = RepositoryType.LOCAL
    sqlite_path: Str | None = None
    device_timeout_seconds: Int | None = None


class InstanceCredential(Model):
    """NuvIoT DeploymentInstanceCredentials: a user id and password that may call the instance (input commands)."""

    user_id: Str
    password: SecretStr | None = None
    id: Str | None = None
    expires: Str | None = None  # ISO date; an expired credential is refused


class Instance(Model):
    """The DeploymentInstance settings a runtime needs (status and audit fields dropped).

    Which fields the document set is ``model_fields_set``: settings resolution (``runtime.settings``) reports
    each value's source as flag, environment, document or default.
    """

    key: Str | None = None
    name: Str = ""
    id: Str | None = None
    nuviot_edition: NuvIoTEdition = Field(
        default=NuvIoTEdition.CONTAINER, validation_alias=AliasChoices("nuvIoTEdition", "nuviotEdition", "nuviot_edition")
    )
    deployment_type: DeploymentType | None = None
    deployment_configuration: DeploymentConfiguration | None = None
    working_storage: WorkingStorage | None = None
    queue_type: QueueType = QueueType.IN_MEMORY
    log_storage: LogStorage | None = None
    dns_host_name: Str = "localhost"
    time_zone: Str = "UTC"
    debug_mode: Bool = False
    test_mode: Bool = False
    input_command_port: Port | None = None
    input_command_ssl: Bool = False
    input_command_anonymous: Bool = True
    input_command_basic_auth_user_name: Str | None = None
    input_command_basic_auth_password: SecretStr | None = None
    device_repository: DeviceRepositoryConfig = Field(default_factory=DeviceRepositoryConfig)
    settings_values: dict[Str, Str] = Field(default_factory=dict)
    credentials: tuple[InstanceCredential, ...] = ()


class DeviceSeed(Model):
    """An optional device to provision into a local repository when the solution loads."""

    device_id: Str
    name: Str = ""
    device_configuration: Str  # key
    device_type: Str | None = None
    primary_access_key: SecretStr | None = None
    secondary_access_key: SecretStr | None = None
    properties: dict[Str, object] = Field(default_factory=dict)  # as given (pydantic: the same any-schema)
