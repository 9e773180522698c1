"""NuvIoT's own 2018 export loads unchanged and completely."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.core.errors import SolutionError
from runtime.core.solution import codes
from runtime.core.solution.enums import (
    EndpointType,
    ListenerType,
    NodeType,
    ParameterLocation,
    ParameterType,
    PipelineModuleType,
    SearchLocation,
    TransmitterType,
)
from runtime.core.solution.loader import load_solution, load_solution_report
from runtime.core.solution.model import OutputCommandMapping, SolutionDocument
from runtime.core.solution.nuviot import is_export


def _load(data: bytes) -> SolutionDocument:
    return load_solution(data, source="fixture", env={})


@pytest.fixture(scope="module")
def doc(export_bytes: bytes) -> SolutionDocument:
    return _load(export_bytes)


def test_detected_as_export(export: dict[str, Any]) -> None:
    assert is_export(export)
    assert is_export({"Listeners": []})
    assert not is_export({"solution": {}})


def test_listener_rest6010(doc: SolutionDocument) -> None:
    (lst,) = doc.solution.listeners
    assert lst.key == "rest6010"
    assert lst.listener_type is ListenerType.REST
    assert lst.listen_on_port == 6010
    assert lst.keep_alive_to_send_reply is True
    assert lst.keep_alive_to_send_reply_timeout_ms == 5000
    assert lst.anonymous is True


def test_planner_path_locators(doc: SolutionDocument) -> None:
    planner = doc.solution.planner
    assert planner.key == "msgdevidinpath"
    dev = planner.device_id_parsers[0]
    assert (dev.key, dev.search_location, dev.path_locator) == (
        "deviceid",
        SearchLocation.PATH,
        "/sensor/{deviceid}/*",
    )
    assert planner.device_id_parsers[1].json_path == "msgid"
    msg = planner.message_type_id_parsers[0]
    assert (msg.search_location, msg.path_locator) == (SearchLocation.PATH, "/sensor/*/{message}")


def test_instance_defaults_to_solution_key(doc: SolutionDocument) -> None:
    assert doc.instance.key == "motionhandler"
    assert doc.instance_id == "motionhandler"


def test_device_configurations_and_routes(doc: SolutionDocument) -> None:
    assert [d.key for d in doc.solution.device_configurations] == ["genericmd", "hottub"]
    genericmd = doc.device_configuration_by_key["genericmd"]
    assert [r.key for r in genericmd.routes] == ["routeone", "setpumpstatus", "pixupload"]
    assert genericmd.configuration_version == "0.1"
    assert genericmd.properties[0].key == "sensitivity"
    hottub = doc.device_configuration_by_key["hottub"]
    assert [r.key for r in hottub.routes] == ["statusupdate", "pumpstatus"]
    assert hottub.custom_status_type == "okwarning"
    assert "okwarning" in doc.state_set_by_key


def test_route_steps_are_linked(doc: SolutionDocument) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["routeone"]
    assert route.message_definition == "motionmessage"
    types = [s.type for s in route.steps]
    assert types == [
        PipelineModuleType.SENTINEL,
        PipelineModuleType.INPUT_TRANSLATOR,
        PipelineModuleType.WORKFLOW,
        PipelineModuleType.OUTPUT_TRANSLATOR,
        PipelineModuleType.TRANSMITTER,
    ]
    assert route.steps[0].id == "78D320CFB2B442759FFA4782AA7854AD"
    assert route.steps[0].next is not None and route.steps[0].next.to == route.steps[1].id
    assert [s.module for s in route.steps] == [
        "anonymous",
        "defaultmessage",
        "simplemotion",
        "message",
        "originallistener",
    ]
    for step in route.steps:
        assert doc.module_for(step) is not None


def test_workflow_to_output_translator_mapping(doc: SolutionDocument) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["routeone"]
    wf_step = route.steps[2]
    assert wf_step.next is not None
    ack = wf_step.next.mappings["acknowledge"]
    assert isinstance(ack, OutputCommandMapping)
    assert ack.outgoing_message == "acknowledge"
    assert ack.field_mappings == {"counter": "counter"}
    assert doc.message_by_key["acknowledge"].message_id == "ack"


def test_original_listener_mapping_names_message_key(doc: SolutionDocument) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["routeone"]
    out_step = route.steps[3]
    (conn,) = out_step.secondary
    assert conn.to == route.steps[4].id
    assert conn.mappings == {"acknowledge": ""}  # was the message's hex Id 888BE5F6...
    transmitter = doc.module_for(route.steps[4])
    assert transmitter.transmitter_type is TransmitterType.ORIGINAL_LISTENER


def test_input_translator_mapping(doc: SolutionDocument) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["setpumpstatus"]
    assert route.steps[1].next is not None
    assert route.steps[1].next.mappings == {"pumpstatus": "pumpstatus"}


def test_workflow_simplemotion(doc: SolutionDocument) -> None:
    wf = doc.workflow_by_key["simplemotion"]
    assert "Attributes.counter = Attributes.counter + 1" in (wf.pre_handler_script or "")
    assert "OutputCommands.acknowledge.send" in (wf.post_handler_script or "")
    assert [c.key for c in wf.input_commands] == ["pumpon", "pumpoff", "setstatus"]
    assert all(c.endpoint_type is EndpointType.GET for c in wf.input_commands)
    assert "OutputCommands.pumpon.send()" in (wf.input_command_by_key["pumpon"].on_arrive_script or "")
    param = wf.input_command_by_key["setstatus"].parameters[0]
    assert (param.key, param.parameter_type, param.parameter_location, param.state_set) == (
        "status",
        ParameterType.STATE,
        ParameterLocation.QUERY_STRING,
        "onoff",
    )
    assert [c.key for c in wf.output_commands] == ["acknowledge", "pumpon", "pumpoff"]
    assert "function onExecute" in (wf.output_command_by_key["acknowledge"].on_execute_script or "")
    assert "function onSet" in (wf.input_by_key["pumpstatus"].on_set_script or "")
    conn = wf.attribute_by_key["motion"].incoming_connections[0]
    assert (conn.node_key, conn.node_type) == ("motion", NodeType.INPUT)
    assert wf.input_by_key["motion"].outgoing_connections[0].node_type is NodeType.ATTRIBUTE


def test_libraries_deduplicated(doc: SolutionDocument) -> None:
    assert sorted(doc.message_by_key) == [
        "acknowledge", "hottubmsg", "motionmessage", "picturetest", "pumpoff", "pumpon", "setpumpstatus",
    ]  # fmt: skip
    assert sorted(doc.workflow_by_key) == ["htf", "simplemotion"]
    assert [s.key for s in doc.sentinels] == ["anonymous"]
    assert sorted(doc.transmitter_by_key) == ["empty", "originallistener", "particlecloud"]
    assert doc.state_set_by_key["onoff"].states[0].key == "ison"
    assert doc.data_stream_by_key["simpletable"].fields[0].key == "temperature"
    assert doc.message_by_key["motionmessage"].field_by_key["itemstatus"].state_set == "onoff"
    assert doc.message_by_key["pumpon"].path_and_query_string == "/v1/devices/~deviceid~/poolon"


def test_fixture_warnings_only(export_bytes: bytes) -> None:
    loaded = load_solution_report(export_bytes, source="fixture", env={})
    assert loaded.form == "nuviot-export"
    # PYRT2090 (properties nothing reads, here the data stream's Azure settings): tests/unit/solution/test_unmapped.py
    assert {(w.path, w.code) for w in loaded.warnings if w.code != codes.NOT_SUPPORTED} == {
        (
            "solution.deviceConfigurations[1].routes[0].steps[2].next.mappings.setheaterstate",
            codes.UNMAPPED_OUTPUT_COMMAND,
        ),
        ("dataStreams[0].streamType", codes.STREAM_UNREACHABLE),  # Azure Table: written to built-in storage
    }


def _problems(export: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(SolutionError) as info:
        _load(json.dumps(export).encode())
    return {(p.path, p.code) for p in info.value.problems}


def test_enum_by_ordinal_only_is_refused(export: dict[str, Any]) -> None:
    del export["Listeners"][0]["Value"]["ListenerType"]["Id"]
    assert ("solution.listeners[0].listenerType", codes.EXPORT_ORDINAL_ONLY) in _problems(export)


def test_unknown_enum_id(export: dict[str, Any]) -> None:
    export["Listeners"][0]["Value"]["ListenerType"]["Id"] = "carrierpigeon"
    assert ("solution.listeners[0].listenerType", codes.UNKNOWN_ENUM) in _problems(export)


def test_same_key_different_content(export: dict[str, Any]) -> None:
    routes = export["DeviceConfigurations"][1]["Value"]["Routes"]
    routes[1]["MessageDefinition"]["Value"]["MessageId"] = "changed"  # setpumpstatus, first seen in genericmd
    problems = _problems(export)
    assert ("solution.deviceConfigurations[1].routes[1].messageDefinition", codes.EXPORT_CONFLICT) in problems


def test_transmitter_mapping_unknown_message_id(export: dict[str, Any]) -> None:
    modules = export["DeviceConfigurations"][0]["Value"]["Routes"][0]["PipelineModules"]
    modules[3]["SecondaryOutputs"][0]["Mappings"][0]["Key"] = "0123456789ABCDEF0123456789ABCDEF"
    problems = _problems(export)
    assert (
        "solution.deviceConfigurations[0].routes[0].steps[3].secondary[0].mappings[0]",
        codes.EXPORT_UNKNOWN_MESSAGE_ID,
    ) in problems


def test_dangling_step_link(export: dict[str, Any]) -> None:
    modules = export["DeviceConfigurations"][0]["Value"]["Routes"][0]["PipelineModules"]
    modules[0]["PrimaryOutput"]["Id"] = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    assert (
        "solution.deviceConfigurations[0].routes[0].steps[0].next.to",
        codes.RTE_LINKED_MODULE_NOT_FOUND,
    ) in _problems(export)


def test_missing_planner(export: dict[str, Any]) -> None:
    del export["Planner"]
    assert ("solution.planner", codes.INS_NO_PLANNER) in _problems(export)
