"""The script-free workflow's straight run (issue 17) gives exactly what the general run gives, or hands over."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.pipeline.workflow import WorkflowEngine, WorkflowResult
from runtime.core.solution.model import Workflow

MODE = {
    "key": "mode",
    "events": ["auto", "manual"],
    "states": [
        {"key": "automatic", "isInitialState": True, "transitions": [{"event": "manual", "newState": "manualmode"}]},
        {"key": "manualmode", "transitions": [{"event": "auto", "newState": "automatic"}]},
    ],
}
STRICT = {**MODE, "key": "strict", "exceptionOnUnhandledEvent": True}


def sensor(**extra: Any) -> Workflow:
    base: dict[str, Any] = {
        "key": "wf",
        "inputs": [
            {"key": "temperature", "inputType": "decimal",
             "outgoingConnections": [{"nodeKey": "temperature", "nodeType": "attribute"},
                                     {"nodeKey": "label", "nodeType": "attribute"}]},
            {"key": "humidity", "inputType": "integer",
             "outgoingConnections": [{"nodeKey": "humidity", "nodeType": "attribute"}]},
            {"key": "mode", "inputType": "string",
             "outgoingConnections": [{"nodeKey": "mode", "nodeType": "statemachine"}]},
            {"key": "go", "inputType": "string",
             "outgoingConnections": [{"nodeKey": "strict", "nodeType": "statemachine", "event": "manual"}]},
            {"key": "strictmode", "inputType": "string",
             "outgoingConnections": [{"nodeKey": "strict", "nodeType": "statemachine"}]},
        ],
        "attributes": [
            {"key": "temperature", "attributeType": "decimal"},
            {"key": "humidity", "attributeType": "integer"},
            {"key": "label", "attributeType": "string"},
        ],
        "stateMachines": [MODE, STRICT],
    }
    base.update(extra)
    return Workflow.model_validate(base)


def both(workflow: Workflow, device: Device, inputs: dict[str, Any]) -> tuple[Any, Any]:
    """(straight run's outcome, general run's outcome): a WorkflowResult or the StageError's (code, detail)."""
    straight, general = WorkflowEngine(workflow), WorkflowEngine(workflow)
    general._straight = None  # the general run, as a workflow with scripts would take
    outcomes = []
    for engine in (straight, general):
        try:
            outcomes.append(engine.run(device, inputs))
        except StageError as exc:
            outcomes.append((exc.code, exc.detail))
    return outcomes[0], outcomes[1]


DEVICES = [
    Device("d1", "sensor"),
    Device("d2", "sensor", attributes={"temperature": 1.5, "old": "kept", "gone": None},
           state_machines={"mode": "manualmode", "strict": "automatic"}, properties={"p": 1, "q": None},
           property_bag={"b": [1]}, latitude=1.0, longitude=2.0),
    Device("d3", "sensor", state_machines={"mode": "nosuchstate"}),  # the general run warns and resets it
    Device("d4", "sensor", state_machines={"strict": "manualmode"}),
]
INPUTS = [
    {"temperature": 21.5, "humidity": 40, "mode": "manual"},
    {"temperature": 21, "humidity": 40.0, "mode": "auto"},  # values that need converting
    {"temperature": "22.5", "humidity": "41", "mode": "other"},  # text values, an event no state handles
    {"temperature": None, "humidity": None, "mode": None},
    {"temperature": "warm"},  # does not convert: input_conversion_failed
    {"humidity": 2**40},  # out of range for an integer
    {"temperature": float("nan")},
    {"mode": True},  # the event is named "true"
    {"go": "x"},  # the mapping's own event: automatic -> manualmode; from manualmode the strict machine refuses
    {"strictmode": "nope"},  # unhandled by a machine that refuses unhandled events
    {"unmapped": 1, "temperature": 3.25},
    {},
]


@pytest.mark.parametrize("inputs", INPUTS, ids=[str(i) for i in range(len(INPUTS))])
@pytest.mark.parametrize("device", DEVICES, ids=[d.device_id for d in DEVICES])
def test_straight_run_equals_general_run(device: Device, inputs: dict[str, Any]) -> None:
    before = (dict(device.attributes), dict(device.state_machines), dict(device.properties))
    straight, general = both(sensor(), device, inputs)
    assert straight == general
    assert (device.attributes, device.state_machines, device.properties) == before  # the device is untouched


def test_the_usual_message_takes_the_straight_run_and_moves_the_machine() -> None:
    engine = WorkflowEngine(sensor())
    assert engine._straight is not None
    result = engine.run(Device("d1", "sensor"), {"temperature": 21.5, "humidity": 40, "mode": "manual"})
    assert isinstance(result, WorkflowResult)
    assert result.attributes == {"temperature": 21.5, "label": "21.5", "humidity": 40}
    assert result.state_machines == {"mode": "manualmode", "strict": "automatic"}
    assert result.warnings == [] and result.output_commands == [] and result.script_calls == 0


def test_a_defaulted_attribute_the_device_lacks_is_set_as_the_general_run_sets_it() -> None:
    workflow = sensor(attributes=[{"key": "temperature", "attributeType": "decimal"},
                                  {"key": "humidity", "attributeType": "integer", "defaultValue": "7"},
                                  {"key": "label", "attributeType": "string"}])
    straight, general = both(workflow, Device("d1", "sensor"), {"temperature": 1.0})
    assert straight == general
    assert isinstance(straight, WorkflowResult) and straight.attributes["humidity"] == 7


@pytest.mark.parametrize("extra", [
    {"attributes": [{"key": "temperature", "attributeType": "decimal",
                     "outgoingConnections": [{"nodeKey": "humidity", "nodeType": "attribute"}]},
                    {"key": "humidity", "attributeType": "integer"}, {"key": "label", "attributeType": "string"}]},
    {"inputs": [{"key": "temperature", "inputType": "decimal",
                 "outgoingConnections": [{"nodeKey": "send", "nodeType": "outputcommand"}]}],
     "outputCommands": [{"key": "send", "parameters": [{"key": "v", "parameterType": "decimal"}]}]},
    {"inputs": [{"key": "temperature", "inputType": "decimal",
                 "outgoingConnections": [{"nodeKey": "nosuch", "nodeType": "attribute"}]}]},
    {"stateMachines": [{**MODE, "states": [MODE["states"][0], {**MODE["states"][1], "isAlarmState": True,
                                                                "errorCode": "E_MANUAL"}]}, STRICT]},
], ids=["attribute mapped on", "output command", "unknown attribute", "alarm state"])
def test_workflows_the_straight_run_does_not_cover_take_the_general_run(extra: dict[str, Any]) -> None:
    workflow = sensor(**extra)
    assert WorkflowEngine(workflow)._straight is None
    straight, general = both(workflow, Device("d1", "sensor"), {"temperature": 2.5, "mode": "manual"})
    assert straight == general
