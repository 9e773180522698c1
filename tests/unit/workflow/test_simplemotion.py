"""NuvIoT's own 2018 export: the ``simplemotion`` workflow runs with its JavaScript unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.adapters.scripting.engine import QuickJsWorkflowScripts, build_workflow_scripts
from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.pipeline.output import build_outgoing
from runtime.core.pipeline.wiring import route_inputs
from runtime.core.pipeline.workflow import WorkflowEngine
from runtime.core.solution.model import SolutionDocument
from runtime.core.solution.nuviot import export_document

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "nuviot-motionhandler-2018.json"


@pytest.fixture(scope="module")
def doc() -> SolutionDocument:
    return export_document(json.loads(FIXTURE.read_text()))


@pytest.fixture(scope="module")
def scripts(doc: SolutionDocument) -> QuickJsWorkflowScripts:
    s = build_workflow_scripts(doc, doc.workflow_by_key["simplemotion"])
    assert s is not None
    return s


@pytest.fixture
def engine(doc: SolutionDocument, scripts: QuickJsWorkflowScripts) -> WorkflowEngine:
    return WorkflowEngine.for_solution(doc, doc.workflow_by_key["simplemotion"], scripts)


def test_three_messages_count_to_three_and_the_third_acknowledges_3(doc, scripts, engine) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["routeone"]
    device = Device("dev-7", "genericmd")
    for _ in range(3):
        result = engine.run(device, route_inputs(route, {"motion": "on"}), message_id="motion001")
        result.apply_to(device)
    assert device.attributes["counter"] == 3
    assert result.output_commands == [("acknowledge", {"counter": 3})]
    out = build_outgoing(doc, route, device.device_id, result.output_commands, scripts)
    assert out.warnings == []
    ((message, transmitters),) = out.messages
    assert json.loads(message.payload) == {"status": "ok", "process": 3}
    assert (message.message_key, message.message_id, message.method) == ("acknowledge", "ack", "GET")
    assert message.content_type == "application/json"
    assert [t.module for t in transmitters] == ["originallistener"]


def test_the_integer_default_makes_the_first_count_1_not_01(engine) -> None:
    result = engine.run(Device("d", "genericmd"), {})
    assert result.attributes["counter"] == 1
    assert result.output_commands == [("acknowledge", {"counter": 1})]


@pytest.mark.parametrize(
    ("command", "status", "message", "path"),
    [
        ("pumpon", "Pump On Sent", "pumpon", "/v1/devices/pool-1/poolon"),
        ("pumpoff", "Pump is off", "pumpoff", "/v1/devices/pool-1/pooloff"),
    ],
)
def test_input_commands_set_pumpstatus_and_emit_their_message(
    doc, scripts, engine, command, status, message, path
) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["setpumpstatus"]
    device = Device("pool-1", "genericmd", attributes={"counter": 9})
    result = engine.run_input_command(command, device, {})
    assert result.attributes == {"counter": 9, "pumpstatus": status}
    assert result.output_commands == [(message, {})]
    assert any("Enqueue Pump" in line for line in result.logs)
    out = build_outgoing(doc, route, device.device_id, result.output_commands, scripts)
    ((msg, transmitters),) = out.messages
    assert (msg.message_key, msg.method, msg.path_and_query, msg.payload) == (message, "POST", path, b"")
    assert [t.module for t in transmitters] == ["particlecloud"]
    assert device.attributes == {"counter": 9}  # nothing applied by the stage itself


def test_the_pumpstatus_input_onset_sends_the_command(doc, engine) -> None:
    route = doc.device_configuration_by_key["genericmd"].route_by_key["setpumpstatus"]
    result = engine.run(Device("p", "genericmd"), route_inputs(route, {"pumpstatus": "on"}))
    assert [k for k, _ in result.output_commands] == ["pumpon", "acknowledge"]
    assert result.logs[:2] == ["On Set for Input", "string"]


def test_a_state_parameter_converts_by_state_set_and_names_the_bad_one(engine) -> None:
    command = engine.workflow.input_command_by_key["setstatus"]
    assert engine.convert_parameters(command, {"status": "6"}) == {"status": "isoff"}
    with pytest.raises(StageError) as info:
        engine.convert_parameters(command, {"status": "maybe"})
    assert info.value.code == "invalid_parameter"
    assert "status" in info.value.detail
