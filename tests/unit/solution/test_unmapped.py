"""Issue 12, done-when 2: nothing of an export is dropped silently; state machines with NuvIoT's names run.

The state machine below uses LagoVista/DeviceAdmin's property names (``src/LagoVista.IoT.DeviceAdmin.Models``:
``StateMachine.InitialState``/``Events``/``States``/``ExceptionOnUnhandledEvent``, ``State.TransitionInAction``/
``IsAlarmState``/``ErrorCode``/``Transitions``, ``StateTransition.Event``/``NewState``/``TransitionAction``,
``Connection.StateMachineEvent``/``Script``, ``DeviceWorkflow.Timers``, ``Timer``), added to the "Example -
Motion" workflow of ``tests/fixtures/nuviot-deployment-instance.json`` (LagoVista/StarterKit ``OrgInitializer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime.adapters.scripting.engine import build_workflow_scripts
from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.pipeline.workflow import WorkflowEngine
from runtime.core.solution import codes
from runtime.core.solution.loader import load_solution_report

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "nuviot-deployment-instance.json"
WF = "solution.deviceConfigurations[0].routes[0].steps[2].module"


def eh(ident: str, text: str) -> dict[str, str]:
    return {"Id": ident, "Text": text}


def with_state_machine(**machine_extra: Any) -> dict[str, Any]:
    doc = json.loads(FIXTURE.read_bytes())
    route = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]
    wf = route["PipelineModules"][2]["Module"]["Value"]
    wf["Attributes"].append({"Key": "lastevent", "Name": "Last Event", "AttributeType": eh("string", "String"),
                             "IncomingConnections": [], "OutgoingConnections": []})
    wf["Inputs"][0]["OutgoingConnections"].append({
        "NodeKey": "motionsm", "NodeName": "Motion", "NodeType": "statemachine",
        "StateMachineEvent": eh("detected", "Detected"),
        "Script": "function map(value) { return value; }",
    })
    wf["StateMachines"] = [{
        "Key": "motionsm", "Name": "Motion", "NodeType": "statemachine",
        "InitialState": eh("idle", "Idle"),
        "ExceptionOnUnhandledEvent": False,
        "Events": [{"Key": "detected", "Name": "Detected"}, {"Key": "cleared", "Name": "Cleared"}],
        "States": [
            {"Key": "active", "Name": "Active", "IsAlarmState": True, "ErrorCode": eh("motionalarm", "Motion"),
             "TransitionInAction": "function onEnter() { Attributes.lastevent = 'entered'; }",
             "Transitions": [{"Event": eh("cleared", "Cleared"), "NewState": eh("idle", "Idle")}]},
            {"Key": "idle", "Name": "Idle",
             "Transitions": [{"Event": eh("detected", "Detected"), "NewState": eh("active", "Active"),
                              "TransitionAction": "function onTransition(value) { "
                                                  "Attributes.lastevent = 'detected: ' + value; }"}]},
        ],
        "IncomingConnections": [], **machine_extra,
    }]
    wf["Timers"] = [{"Key": "everyhour", "Name": "Every Hour", "NodeType": "timer", "Hours": 1}]
    return doc


def load(doc: dict[str, Any]) -> Any:
    return load_solution_report(json.dumps(doc).encode(), source="t", env={})


def test_nuviots_state_machine_names_are_read_and_what_is_not_run_is_warned() -> None:
    loaded = load(with_state_machine())
    machine = loaded.document.workflow_by_key["examplemotion"].state_machine_by_key["motionsm"]
    assert machine.initial_state == "idle"  # InitialState, not the first state
    idle = next(s for s in machine.states if s.key == "idle")
    assert (idle.transitions[0].event, idle.transitions[0].new_state) == ("detected", "active")
    assert "detected: " in (idle.transitions[0].on_transition_script or "")
    edge = loaded.document.workflow_by_key["examplemotion"].inputs[0].outgoing_connections[-1]
    assert edge.event == "detected"
    warnings = {(w.path, w.code) for w in loaded.warnings}
    # TransitionInAction, alarm states and the connection's mapping script run now: no warning
    assert not any(p.endswith((".transitionInAction", ".isAlarmState", ".script")) for p, _ in warnings)
    assert not any(p.endswith("Timers") for p, _ in warnings)  # read and run (core/timers.py)
    timer = loaded.document.workflow_by_key["examplemotion"].timers[0]
    assert (timer.key, timer.hours) == ("everyhour", 1)


def engine_for(doc: dict[str, Any]) -> WorkflowEngine:
    document = load(doc).document
    wf = document.workflow_by_key["examplemotion"]
    return WorkflowEngine.for_solution(document, wf, build_workflow_scripts(document, wf))


def test_the_connection_event_fires_the_transition_and_its_action_runs() -> None:
    engine = engine_for(with_state_machine())
    device = Device("dev001", "examplemotion", name="Motion Sensor 1")
    result = engine.run(device, {"motionstatus": "on"}, message_id="motion", now=1000.0)
    result.apply_to(device)
    assert device.state_machines["motionsm"] == "active"
    # TransitionAction ran ('detected: on'), then the entered state's TransitionInAction overwrote it
    assert device.attributes["lastevent"] == "entered"


def test_a_connections_mapping_script_maps_the_value_on_its_way() -> None:
    """``Connection.Script`` on the starter app's input -> attribute connection (``map(value)``: this runtime's name
    for the function; NuvIoT publishes no template for it)."""
    doc = with_state_machine()
    wf = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]["PipelineModules"][2]
    wf["Module"]["Value"]["Inputs"][0]["OutgoingConnections"][0]["Script"] = (
        "function map(value) { return value === 'on' ? 'ON' : value; }")
    device = Device("dev001", "examplemotion", name="Motion Sensor 1")
    engine_for(doc).run(device, {"motionstatus": "on"}).apply_to(device)
    assert device.attributes["motionstatus"] == "ON"  # mapped on the way to the attribute
    assert device.state_machines["motionsm"] == "active"  # the other connection got the value as it was


def test_an_alarm_state_raises_its_error_code_on_entry_and_clears_it_on_exit() -> None:
    """State ``active`` is NuvIoT's alarm state (``IsAlarmState``, ``ErrorCode`` motionalarm); the connection
    carries no ``StateMachineEvent`` here, so the input's value is the event."""
    doc = with_state_machine()
    wf = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]["PipelineModules"][2]
    wf["Module"]["Value"]["Inputs"][0]["OutgoingConnections"][-1].pop("StateMachineEvent")
    engine = engine_for(doc)
    device = Device("dev001", "examplemotion")
    result = engine.run(device, {"motionstatus": "detected"}, now=1000.0)  # idle -> active
    result.apply_to(device)
    assert device.state_machines["motionsm"] == "active"
    assert [(e.code, e.action, e.source) for e in result.health_events] == [("motionalarm", "raised", "alarmstate")]
    assert device.property_bag["_system.errors"]["motionalarm"]["raisedAt"] == 1000.0
    result = engine.run(device, {"motionstatus": "cleared"}, now=1010.0)  # active -> idle
    result.apply_to(device)
    assert device.state_machines["motionsm"] == "idle"
    assert [(e.code, e.action) for e in result.health_events] == [("motionalarm", "cleared")]
    assert device.property_bag["_system.errors"] == {}


def test_exception_on_unhandled_event_fails_the_message() -> None:
    engine = engine_for(with_state_machine(ExceptionOnUnhandledEvent=True))
    device = Device("dev001", "examplemotion")
    engine.run(device, {"motionstatus": "on"}).apply_to(device)  # idle -> active
    with pytest.raises(StageError) as info:
        engine.run(device, {"motionstatus": "on"})  # active does not handle "detected"
    assert info.value.code == "unhandled_event" and "active" in info.value.detail


def test_every_property_with_content_is_read_or_warned() -> None:
    doc = json.loads(FIXTURE.read_bytes())
    listener = doc["Result"]["Solution"]["Value"]["Listeners"][0]["Value"]
    listener["SomethingNew"] = "x"  # a property a later NuvIoT version might add
    loaded = load(doc)
    assert ("solution.listeners[0].SomethingNew", codes.NOT_SUPPORTED) in {(w.path, w.code) for w in loaded.warnings}


# Every property of NuvIoT's models (names from the C# classes, public get/set properties; base-class fields
# such as the MessageAttributeParser locators are covered by DeviceMessageDefinitionField's base):
# LagoVista/PipelineManagement src/LagoVista.IoT.Pipeline.Models/{ListenerConfiguration,PlannerConfiguration,
# SentinelConfiguration,InputTranslatorConfiguration}.cs; LagoVista/DeviceMessagingAdmin
# src/LagoVista.IoT.DeviceMessaging.Models/{DeviceMessageDefinition,DeviceMessageDefinitionField}.cs;
# LagoVista/DeviceAdmin src/LagoVista.IoT.DeviceAdmin.Models/{DeviceWorkflow,Attribute,WorkflowInput,
# StateMachine,State,StateTransition,Connection}.cs; LagoVista/Deployments
# src/LagoVista.IoT.Deployment.Models/{DeviceConfiguration,Route,RouteModuleConfig}.cs.
NODE_BASE = ["DiagramLocations", "IncomingConnections", "OutgoingConnections", "Notes"]  # NodeBase, IoTModelBase
AUDIT = ["CreatedBy", "CreationDate", "LastUpdatedBy", "LastUpdatedDate"]
PROPERTIES: dict[str, list[str]] = {
    "ListenerConfiguration": [
        "RESTListenerType", "ListenerType", "DelimitedWithSOHEOT", "ContentType", "MessageLengthInMessage",
        "MessageLengthLocation", "MessageLengthSize", "MessageLengthByteCountEndiness", "RestServerType", "Anonymous",
        "SecureConnection", "ClientId", "Certificate", "CertificateSecureId", "CertificatePassword",
        "CertificatePasswordSecureId", "UserName", "Password", "SecurePasswordId", "HostName", "AccessKeyName",
        "AccessKey", "SecureAccessKeyId", "Topic", "Queue", "Endpoint", "ResourceName", "ConsumerGroup", "HubName",
        "ExchangeName", "ListenOnPort", "ConnectToPort", "SupportedProtocol", "Path", "Origin", "DefaultResponse",
        "FailedResponse", "KeepAliveToSendReply", "KeepAliveToSendReplyTimeoutMS", "StartMessageSequence",
        "EndMessageSequence", "MessageReceiveTimeoutMS", "MaxMessageSize", "MqttSubscriptions", "BaudRate", "PortName",
        "AmqpSubscriptions", "CredentialsFileSecretId", "CredentialsFile", "EventHubCheckPointContainerStorageAccountId",
        "EventHubCheckPointContainerStorageAccessKey", "ListenerTypeId", "DebugMode", "Icon"],
    "PlannerConfiguration": ["PipelineModules", "DeviceIdParsers", "MessageTypeIdParsers"],
    "SentinelConfiguration": ["SecurityFields"],
    "InputTranslatorConfiguration": ["InputTranslatorType", "DelimiterSequence", "Script", "Model", "ModelRevision",
                                     "InputTranslatorTypeId"],
    "DeviceMessageDefinition": [
        "OriginalId", "OriginalOwnerOrganization", "OriginalOwnerUser", "OriginallyCreatedBy", "OriginalCreationDate",
        "Fields", "MessageId", "QuotedText", "ProtoBufDefintion", "Delimiter", "MediaContentType", "FileExtension",
        "MessageDirection", "ContentType", "BinaryParsingStrategy", "StringParsingStrategy", "StringLengthByteCount",
        "Endian", "RegEx", "Script", "OutputMessageScript", "RestMethod", "PathAndQueryString", "ImportFieldsAction",
        "ShowVerifiersAction", "Topic", "StaleSeconds", "BackgroundColor", "SegementColor", "B64Image",
        "IsSevenSegementImage", "Direction", "Category", "FramingBytes", "SampleMessages", "Icon"],
    "DeviceMessageDefinitionField": [
        "DefaultValue", "StorageType", "DecimalScaler", "DateTimeZone", "ContentType", "IsRequired", "MinValue",
        "MaxValue", "UnitSet", "StateSet", "LatRegExGroupName", "LonRegExGroupName", "AltitudeRegExGroupName",
        "LatXPath", "LonXPath", "AltitudeXPath", "LatQueryStringField", "LonQueryStringField",
        "AltitudeQueryStringField", "LatBinaryOffset", "LonBinaryOffset", "AltitudeBinaryOffset", "LatJsonPath",
        "LonJsonPath", "AltitudeJsonPath", "LatDelimitedIndex", "LonDelimitedIndex", "AltitudeDelimitedIndex",
        "LatStartIndex", "LonStartIndex", "AltitudeStartIndex", "Segments", "SearchLocation", "JsonPath", "XPath",
        "PathLocator", "TopicLocator", "HeaderName", "QueryStringField", "RegExValueSelector", "RegExGroupName",
        "RegExValidation", "Delimiter", "DelimitedIndex", "StartIndex", "Length", "BinaryOffset",
        "ParsedBinaryFieldType", "ParsedStringFieldType", "BinaryParsingStrategy", "StringParsingStrategy",
        "StringLengthByteCount", "Endian", "FieldIndex", "QuotedText", "Id", "Key", "Name", "Notes"],
    "DeviceWorkflow": ["ConfigurationVersion", "PreHandlerScript", "PostHandlerScript", "Settings", "Attributes",
                       "InputCommands", "OutputCommands", "Inputs", "Timers", "BusinessRules", "StateMachines",
                       "Environment", "Pages", "Notes"],
    "Attribute": ["AttributeType", "OnSetScript", "ReadOnly", "UnitSet", "StateSet", "DefaultValue", *NODE_BASE],
    "WorkflowInput": ["InputType", "OnSetScript", "UnitSet", "StateSet", *NODE_BASE],
    "StateMachine": ["InitialState", "InitialActions", "States", "Variables", "Events", "ExceptionOnUnhandledEvent",
                     "Pages", *NODE_BASE],
    "State": ["TransitionInAction", "Name", "Key", "EnumValue", "IsInitialState", "IsAlarmState", "ErrorCode",
              "Transitions", "Description", "DiagramLocations"],
    "StateTransition": ["Event", "NewState", "TransitionAction", "Description"],
    "Connection": ["NodeKey", "NodeName", "NodeType", "Script", "StateMachineEvent", "Mappings", "InputCommandKey"],
    "DeviceConfiguration": [
        "ConfigurationVersion", "CustomStatusType", "DeviceLabel", "DeviceIdLabel", "DeviceNameLabel", "DeviceTypeLabel",
        "WatchdogEnabledDefault", "WatchdogSeconds", "ErrorCodes", "MessageWatchDogs", "SensorDefinitions", "Commands",
        "CustomPage", "CustomMobilePage", "CustomPageQuickLink", "Routes", "Properties"],
    "Route": ["Name", "Key", "IsDefault", "MessageDefinition", "PipelineModules", "Id", "Notes", *AUDIT],
    "RouteModuleConfig": ["Name", "Key", "IncomingMappings", "PrimaryOutput", "SecondaryOutputs", "ModuleType",
                          "Module", "OutgoingDeviceMessage", "FieldMappings", "Id", "DiagramLocation"],
    # the models the list above did not reach (issue 12 item 2's probe, 2026-11): DeviceAdmin Timer, BusinessRule,
    # InputCommand, OutputCommand, Parameter, CustomField, UnitSet, Unit, StateSet; Deployments DeviceErrorCode
    # (DeviceErrorCodes.cs), MessageWatchDog, Solution; PipelineManagement OutputTranslatorConfiguration,
    # TransmitterConfiguration
    "Timer": ["Days", "Hours", "Minutes", "Seconds", "HourOfDay", "MinuteOfDay", "Sunday", "Monday", "Tuesday",
              "Wednesday", "Thursday", "Friday", "Saturday", "DailyStartTime", "DailyEndTime", *NODE_BASE],
    "BusinessRule": ["Description", "ErrorCode", "Id", "IsBeta", "IsEnabled", "Key", "Name", "Script",
                     "ServiceTicketTemplate"],
    "InputCommand": ["EndpointType", "OnArriveScript", "Parameters", *NODE_BASE],
    "OutputCommand": ["OnExecuteScript", "Parameters", *NODE_BASE],
    "Parameter": ["DefaultValue", "Description", "Id", "IsRequired", "Key", "MaxValue", "MinValue", "Name",
                  "ParameterLocation", "ParameterType", "StateSet", "UnitSet"],
    "CustomField": ["DefaultValue", "Description", "FieldType", "HelpText", "Id", "IsReadOnly", "IsRemoteProperty",
                    "IsRequired", "IsUserConfigurable", "Key", "Label", "MaxValue", "MinValue", "Name", "Order",
                    "RegEx", "RemotePropertyId", "StateSet", "UnitSet"],
    "UnitSet": ["Units", "IsLocked", "LockedBy", "LockedDateStamp", "Notes"],
    "Unit": ["Abbreviation", "ConversionFactor", "ConversionFromScript", "ConversionToScript", "ConversionType",
             "Description", "DisplayFormat", "IsDefault", "Key", "Name", "NumberDecimalPoints"],
    "StateSet": ["RequireEnum", "States", "IsLocked", "LockedBy", "LockedDateStamp", "Notes"],
    "DeviceErrorCode": ["AutoexpireTimespan", "AutoexpireTimespanQuantity", "DeviceNotification", "DistroList",
                        "EmailSubject", "EscalateAfterAttemptCount", "IncidentProtocol", "NotificationIntervalQuantity",
                        "NotificationIntervalTimeSpan", "NotifyOnClear", "NotifyOnRaise", "SendEmail", "SendSMS",
                        "ServiceTicketTemplate", "TriggerOnEachOccurrence", "Key", "Name", "Description"],
    "MessageWatchDog": ["Description", "DeviceErrorCode", "DeviceMessageDefinition", "ExcludeHolidays", "Id", "Key",
                        "Name", "SaturdayExclusions", "StartupBufferMinutes", "SundayExclusions", "Timeout",
                        "TimeoutInterval", "WeekdayExclusions"],
    "Solution": ["DefaultListener", "DeviceConfigurations", "Environment", "Listeners", "MonitoringEndpoint",
                 "Planner", "Settings", "Version", "Notes"],
    "OutputTranslatorConfiguration": ["OutputTranslatorType", "Script", "DebugMode", "Icon"],
    "TransmitterConfiguration": [
        "AccessKey", "AccessKeyName", "Anonymous", "BaudRate", "ConnectToPort", "CredentialsFile",
        "CredentialsFileSecretId", "ExchangeName", "Headers", "HostName", "HubName", "Password", "PortName", "Queue",
        "SecureAccessKeyId", "SecureConnection", "SecurePasswordId", "TransmitterType", "UserName", "DebugMode"],
}


def _with_every_model(doc: dict[str, Any]) -> dict[str, Any]:
    """The state-machine document plus one of each model the "Example - Motion" app lacks."""
    sol = doc["Result"]["Solution"]["Value"]
    cfg = sol["DeviceConfigurations"][0]["Value"]
    steps = cfg["Routes"][0]["PipelineModules"]
    wf = steps[2]["Module"]["Value"]
    wf["BusinessRules"] = [{"Key": "rule1", "Name": "Rule", "Script": "function evaluate() { return true; }",
                            "ErrorCode": eh("motionalarm", "Motion")}]
    string = eh("string", "String")
    wf["InputCommands"] = [{"Key": "ic1", "Name": "IC", "NodeType": "inputcommand", "OutgoingConnections": [],
                            "Parameters": [{"Key": "p1", "Name": "P", "ParameterType": string}]}]
    wf["OutputCommands"] = [{"Key": "oc1", "Name": "OC", "NodeType": "outputcommand",
                             "Parameters": [{"Key": "p1", "Name": "P", "ParameterType": string}]}]
    wf["Attributes"].append({
        "Key": "pressure", "Name": "Pressure", "AttributeType": eh("valuewithunit", "Value with Unit"),
        "IncomingConnections": [], "OutgoingConnections": [],
        "UnitSet": {"Id": "U" * 32, "Key": "pressure", "Text": "Pressure", "Value": {
            "Id": "U" * 32, "Key": "pressure", "Name": "Pressure",
            "Units": [{"Key": "kpa", "Name": "kPa", "Abbreviation": "kPa", "IsDefault": True, "ConversionFactor": 1,
                       "ConversionType": eh("factor", "Factor")}]}}})
    wf["Attributes"].append({
        "Key": "mode", "Name": "Mode", "AttributeType": eh("state", "State"),
        "IncomingConnections": [], "OutgoingConnections": [],
        "StateSet": {"Id": "S" * 32, "Key": "modes", "Text": "Modes", "Value": {
            "Id": "S" * 32, "Key": "modes", "Name": "Modes",
            "States": [{"Key": "on", "Name": "On", "IsInitialState": True}, {"Key": "off", "Name": "Off"}]}}})
    sol["Settings"] = [{"Key": "s1", "Name": "Setting", "FieldType": string}]
    cfg["ErrorCodes"] = [{"Id": "E" * 32, "Key": "motionalarm", "Name": "Motion"}]
    cfg["MessageWatchDogs"] = [{"Key": "wd1", "Name": "Watchdog", "Timeout": 5,
                                "DeviceMessageDefinition": eh(cfg["Routes"][0]["MessageDefinition"]["Id"], "Motion"),
                                "TimeoutInterval": eh("minutes", "Minutes"), "DeviceErrorCode": eh("motionalarm", "M")}]
    steps.append({"Id": "T" * 32, "Name": "Transmitter", "ModuleType": {"Id": "transmitter", "Text": "Transmitter"},
                  "Module": {"Id": "T" * 32, "Key": "tx", "Text": "Tx", "Value": {
                      "Id": "T" * 32, "Key": "tx", "Name": "Tx", "TransmitterType": eh("originallistener", "Orig")}}})
    return doc


def _entities(doc: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any], str]]:
    """C# model -> (our model, its raw object in the document, the path the reader reports for it)."""
    from runtime.core.solution import model as m

    sol = doc["Result"]["Solution"]["Value"]
    cfg = sol["DeviceConfigurations"][0]["Value"]
    route = cfg["Routes"][0]
    steps = route["PipelineModules"]
    wf = steps[2]["Module"]["Value"]
    msg = route["MessageDefinition"]["Value"]
    machine = wf["StateMachines"][0]
    base = "solution.deviceConfigurations[0].routes[0]"
    wfp = f"{base}.steps[2].module"
    return {
        "ListenerConfiguration": (m.Listener, sol["Listeners"][0]["Value"], "solution.listeners[0]"),
        "PlannerConfiguration": (m.Planner, sol["Planner"]["Value"], "solution.planner"),
        "SentinelConfiguration": (m.Sentinel, steps[0]["Module"]["Value"], f"{base}.steps[0].module"),
        "InputTranslatorConfiguration": (m.InputTranslator, steps[1]["Module"]["Value"], f"{base}.steps[1].module"),
        "DeviceMessageDefinition": (m.MessageDefinition, msg, f"{base}.messageDefinition"),
        "DeviceMessageDefinitionField": (m.MessageField, msg["Fields"][0], f"{base}.messageDefinition.fields[0]"),
        "DeviceWorkflow": (m.Workflow, wf, f"{base}.steps[2].module"),
        "Attribute": (m.Attribute, wf["Attributes"][0], f"{base}.steps[2].module.attributes[0]"),
        "WorkflowInput": (m.WorkflowInput, wf["Inputs"][0], f"{base}.steps[2].module.inputs[0]"),
        "StateMachine": (m.StateMachine, machine, f"{base}.steps[2].module.stateMachines[0]"),
        "State": (m.MachineState, machine["States"][1], f"{base}.steps[2].module.stateMachines[0].states[1]"),
        "StateTransition": (m.Transition, machine["States"][1]["Transitions"][0],
                            f"{base}.steps[2].module.stateMachines[0].states[1].transitions[0]"),
        "Connection": (m.Connection, wf["Inputs"][0]["OutgoingConnections"][0],
                       f"{base}.steps[2].module.inputs[0].outgoingConnections[0]"),
        "DeviceConfiguration": (m.DeviceConfiguration, cfg, "solution.deviceConfigurations[0]"),
        "Route": (m.Route, route, base),
        "RouteModuleConfig": (None, steps[1], f"{base}.steps[1]"),
        "Timer": (m.Timer, wf["Timers"][0], f"{wfp}.timers[0]"),
        "BusinessRule": (m.BusinessRule, wf["BusinessRules"][0], f"{wfp}.businessRules[0]"),
        "InputCommand": (m.InputCommand, wf["InputCommands"][0], f"{wfp}.inputCommands[0]"),
        "OutputCommand": (m.OutputCommand, wf["OutputCommands"][0], f"{wfp}.outputCommands[0]"),
        "Parameter": (m.Parameter, wf["InputCommands"][0]["Parameters"][0], f"{wfp}.inputCommands[0].parameters[0]"),
        "CustomField": (m.CustomField, sol["Settings"][0], "solution.settings[0]"),
        "UnitSet": (m.UnitSet, wf["Attributes"][2]["UnitSet"]["Value"], f"{wfp}.attributes[2].unitSet"),
        "Unit": (m.Unit, wf["Attributes"][2]["UnitSet"]["Value"]["Units"][0], f"{wfp}.attributes[2].unitSet.units[0]"),
        "StateSet": (m.StateSet, wf["Attributes"][3]["StateSet"]["Value"], f"{wfp}.attributes[3].stateSet"),
        "DeviceErrorCode": (m.DeviceErrorCode, cfg["ErrorCodes"][0], "solution.deviceConfigurations[0].errorCodes[0]"),
        "MessageWatchDog": (m.MessageWatchDog, cfg["MessageWatchDogs"][0],
                            "solution.deviceConfigurations[0].messageWatchDogs[0]"),
        "Solution": (m.Solution, sol, "solution"),
        "OutputTranslatorConfiguration": (m.OutputTranslator, steps[3]["Module"]["Value"], f"{base}.steps[3].module"),
        "TransmitterConfiguration": (m.Transmitter, steps[4]["Module"]["Value"], f"{base}.steps[4].module"),
    }


def _takes(cls: Any, name: str) -> bool:
    """Whether a field of ``cls`` reads ``name`` (the reader matches names case-insensitively)."""
    from runtime.core.solution import model as m
    from runtime.core.solution.export_names import field_names

    if cls is None:
        from runtime.core.solution.export_names import STEP_KEYS
        return name in STEP_KEYS
    if cls is m.Route and name == "PipelineModules":
        return True  # the route's steps
    return any(candidate.lower() == name.lower()
               for field, info in cls.model_fields.items()
               for candidate in field_names(info.alias or field, info))


CASES = [(model, name) for model, names in PROPERTIES.items() for name in names]


@pytest.mark.parametrize(("model", "name"), CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_each_property_of_nuviots_models_is_read_or_warned(model: str, name: str) -> None:
    from runtime.core.solution.export_names import IGNORED, IGNORED_BY_MODEL

    doc = _with_every_model(with_state_machine())
    cls, raw, path = _entities(doc)[model]
    if _takes(cls, name) or name.lower() in IGNORED | IGNORED_BY_MODEL.get(cls, frozenset()):
        return  # read by a field of the model (or left out by design, docs/fidelity.md)
    raw.pop(next((k for k in raw if k.lower() == name.lower()), name), None)
    raw[name] = "something NuvIoT set"
    warned = {w.path for w in load(doc).warnings if w.code == codes.NOT_SUPPORTED}
    assert f"{path}.{name}" in warned, f"{model}.{name} dropped silently (warnings: {warned})"
