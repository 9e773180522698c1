"""Cross-checks on a model-valid document: the checks NuvIoT makes (reference §4.3, §5.1, §8 "Validation").

``validate_document(doc)`` returns a ``ValidationReport`` with ``errors`` and ``warnings`` kept apart: errors
stop a load (``SolutionError``), warnings are reported and the solution still runs. Paths are wire paths.
"""

from __future__ import annotations

from runtime.core.health import message_key
from runtime.core.solution import codes
from runtime.core.solution.enums import PipelineModuleType, TransmitterType
from runtime.core.solution.model import (
    DeviceConfiguration,
    OutputCommandMapping,
    Route,
    RouteConnection,
    SolutionDocument,
    Workflow,
)
from runtime.core.solution.validate_base import ValidationReport
from runtime.core.solution.validate_intake import IntakeChecks
from runtime.core.solution.validate_workflow import WorkflowChecks
from runtime.core.streams import stream_problems

__all__ = ["ValidationReport", "validate_document"]

_TRANSMITTER_REQUIRED: dict[TransmitterType, tuple[str, ...]] = {
    TransmitterType.MQTT_CLIENT: ("hostName", "connectToPort", "creds"),
    TransmitterType.REST: ("hostName",),
    TransmitterType.AZURE_SERVICE_BUS: ("hostName", "queue", "accessKeyName", "accessKey"),
    TransmitterType.AZURE_EVENT_HUB: ("hostName", "hubName", "accessKey"),
    TransmitterType.AZURE_IOT_HUB: ("hostName", "accessKeyName", "accessKey"),
    TransmitterType.SERIAL_PORT: ("portName", "baudRate"),
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


class _Checker(IntakeChecks, WorkflowChecks):
    def run(self) -> ValidationReport:
        self.libraries()
        self.instance_and_listeners()
        self.planner()
        self.messages()
        self.workflows()
        self.transmitters()
        self.device_configurations()
        self.route_modules()
        self.devices()
        errors, warnings = stream_problems(self.doc)  # data streams: runtime/core/streams.py
        self.errors += errors
        self.warnings += warnings
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
        for i, state_set in enumerate(d.state_sets):
            if not state_set.require_enum:
                continue
            values = [s.enum_value for s in state_set.states]
            if None in values:
                missing = ", ".join(s.key for s in state_set.states if s.enum_value is None)
                self.err(f"stateSets[{i}].states", codes.STATE_SET_ENUM,
                         f"state set {state_set.key!r} requires enum values but states {missing} have none; give "
                         "each state an EnumValue")
            elif len(set(values)) != len(values):
                self.err(f"stateSets[{i}].states", codes.STATE_SET_ENUM,
                         f"state set {state_set.key!r}: enum values must be unique ({values})")
        for i, unit_set in enumerate(d.unit_sets):
            for j, unit in enumerate(unit_set.units):
                if unit.is_default or (unit.conversion_factor is not None and unit.conversion_type != "script"):
                    continue
                self.warn(f"unitSets[{i}].units[{j}].conversionType", codes.NOT_RUN,
                          f"not run: unit {unit.key!r} converts by script (convertToDefaultUnit), which this runtime "
                          "does not run; a value in this unit fails (MGV1004). Give it a ConversionFactor")

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
            self.message_watch_dogs(dc, path)

    def message_watch_dogs(self, dc: DeviceConfiguration, path: str) -> None:
        """A watchdog that can never fire (no timeout, or a message that is not in the solution) is kept and
        said (``core/health.py`` ``watch_plan`` leaves it out)."""
        for j, wd in enumerate(dc.message_watch_dogs):
            at = f"{path}.messageWatchDogs[{j}]"
            if wd.timeout_seconds is None:
                self.warn(f"{at}.timeout", codes.NOT_RUN,
                          f"not run: message watchdog {wd.key!r} has no timeout (Timeout {wd.timeout} "
                          f"{wd.timeout_interval.value}); give a Timeout above 0 in minutes, hours or days")
            elif message_key(wd.device_message_definition, self.doc.messages) is None:
                self.warn(f"{at}.deviceMessageDefinition", codes.NOT_RUN,
                          f"not run: message watchdog {wd.key!r} watches {wd.device_message_definition!r}, which is "
                          "not a message of this solution; choose one of "
                          + ", ".join(repr(m.key) for m in self.doc.messages))

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
            if step.type not in _RUN_HERE and step.type is not PipelineModuleType.DATA_STREAM:
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
