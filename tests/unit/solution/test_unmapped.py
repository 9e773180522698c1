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
    assert {
        ("workflows[0].stateMachines[0].states[0].transitionInAction", codes.NOT_RUN),
        ("workflows[0].stateMachines[0].states[0].isAlarmState", codes.NOT_RUN),
        ("workflows[0].inputs[0].outgoingConnections[1].script", codes.NOT_RUN),
        (f"{WF}.Timers", codes.NOT_SUPPORTED),  # read: the export path; checked: the library path
    } <= warnings


def engine_for(doc: dict[str, Any]) -> WorkflowEngine:
    document = load(doc).document
    wf = document.workflow_by_key["examplemotion"]
    return WorkflowEngine.for_solution(document, wf, build_workflow_scripts(document, wf))


def test_the_connection_event_fires_the_transition_and_its_action_runs() -> None:
    engine = engine_for(with_state_machine())
    device = Device("dev001", "examplemotion", name="Motion Sensor 1")
    result = engine.run(device, {"motionstatus": "on"}, message_id="motion")
    result.apply_to(device)
    assert device.state_machines["motionsm"] == "active"
    assert device.attributes["lastevent"] == "detected: on"


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
