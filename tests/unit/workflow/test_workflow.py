"""The workflow stage on small hand-built workflows: order, mappings, state machines, types, parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from runtime.adapters.scripting.engine import build_workflow_scripts
from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.pipeline.workflow import ParameterError, WorkflowEngine
from runtime.core.scripting import HookEffects, OutputMessageResult, ScriptState, SessionContext
from runtime.core.solution.model import StateSet, Workflow

PUMP = {
    "key": "pump",
    "events": ["start", "stop"],
    "states": [
        {"key": "off", "isInitialState": True, "transitions": [{"event": "start", "newState": "on"}]},
        {"key": "on", "transitions": [{"event": "stop", "newState": "off"}]},
    ],
}


def wf(**extra: Any) -> Workflow:
    base: dict[str, Any] = {
        "key": "wf",
        "inputs": [
            {
                "key": "level",
                "inputType": "integer",
                "outgoing": [{"nodeKey": "level", "nodeType": "attribute"}],
            },
            {
                "key": "temp",
                "inputType": "decimal",
                "outgoing": [{"nodeKey": "temp", "nodeType": "attribute"}],
            },
            {
                "key": "onoff",
                "inputType": "true-false",
                "outgoing": [{"nodeKey": "fan", "nodeType": "attribute"}],
            },
            {
                "key": "cmd",
                "inputType": "string",
                "outgoing": [{"nodeKey": "pump", "nodeType": "statemachine"}],
            },
            {"key": "text", "inputType": "string"},
        ],
        "attributes": [
            {"key": "level", "attributeType": "integer", "defaultValue": "0"},
            {"key": "temp", "attributeType": "decimal"},
            {
                "key": "fan",
                "attributeType": "true-false",
                "outgoing": [{"nodeKey": "fancmd", "nodeType": "outputcommand"}],
            },
            {
                "key": "label",
                "attributeType": "string",
                "incoming": [{"nodeKey": "text", "nodeType": "workflowinput"}],
            },
        ],
        "outputCommands": [
            {"key": "fancmd", "parameters": [{"key": "state", "parameterType": "true-false"}]}
        ],
        "stateMachines": [PUMP],
    }
    base.update(extra)
    return Workflow.model_validate(base)


class CountingScripts:
    """A WorkflowScripts that has no hook: any session or call is counted (and must not happen)."""

    workflow_key = "wf"

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.sessions = 0

    def has(self, hook: str) -> bool:
        self.asked.append(hook)
        return False

    def session(self, ctx: SessionContext, state: ScriptState) -> Any:
        self.sessions += 1
        raise AssertionError("no session expected")

    def output_message(
        self, message_key: str, fields: Mapping[str, Any], device_id: str
    ) -> OutputMessageResult:
        raise AssertionError("no call expected")


def test_a_workflow_without_scripts_makes_no_script_call() -> None:
    fake = CountingScripts()
    engine = WorkflowEngine(wf(), fake)  # type: ignore[arg-type]
    result = engine.run(
        Device("d", "c"), {"level": "5", "temp": 3, "onoff": "true", "cmd": "start", "text": 7}
    )
    assert fake.sessions == 0 and result.script_calls == 0
    assert "preHandler" in fake.asked and "postHandler" in fake.asked
    assert build_workflow_scripts(None, wf()) is None


def test_inputs_map_to_attributes_with_their_types_and_fire_attribute_mappings() -> None:
    engine = WorkflowEngine(wf())
    result = engine.run(Device("d", "c"), {"level": "5", "temp": 3, "onoff": "true", "text": 7})
    assert result.attributes == {"level": 5, "temp": 3.0, "fan": True, "label": "7"}
    assert type(result.attributes["temp"]) is float
    assert result.output_commands == [("fancmd", {"state": True})]
    assert result.state_machines == {"pump": "off"}


def test_an_input_that_does_not_convert_fails_the_message() -> None:
    with pytest.raises(StageError) as info:
        WorkflowEngine(wf()).run(Device("d", "c"), {"level": "lots"})
    assert (info.value.stage, info.value.code) == ("workflow", "input_conversion_failed")
    assert "level" in info.value.detail


def test_a_value_the_attribute_type_cannot_take_fails_the_message() -> None:
    w = wf(
        inputs=[
            {"key": "raw", "inputType": "string", "outgoing": [{"nodeKey": "level", "nodeType": "attribute"}]}
        ]
    )
    with pytest.raises(StageError) as info:
        WorkflowEngine(w).run(Device("d", "c"), {"raw": "abc"})
    assert info.value.code == "attribute_conversion_failed"


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (["start"], "on"),
        (["stop"], "off"),
        (["start", "start"], "on"),
        (["start", "stop"], "off"),
        (["bogus"], "off"),
    ],
)
def test_state_machine_events_move_or_are_ignored(events: list[str], expected: str) -> None:
    engine = WorkflowEngine(wf())
    device = Device("d", "c")
    for ev in events:
        engine.run(device, {"cmd": ev}).apply_to(device)
    assert device.state_machines == {"pump": expected}


def test_transition_scripts_run_with_the_value_and_script_events_run_after() -> None:
    machine = {
        **PUMP,
        "states": [
            {
                "key": "off",
                "isInitialState": True,
                "transitions": [
                    {
                        "event": "start",
                        "newState": "on",
                        "onTransitionScript": "function onTransition(v) { Attributes.level = v; StateMachines.pump.handle('stop'); }",
                    }
                ],
            },
            {
                "key": "on",
                "transitions": [
                    {
                        "event": "stop",
                        "newState": "off",
                        "onTransitionScript": "function onTransition() { Attributes.temp = StateMachines.pump.currentState === 'on' ? 1 : 0; }",
                    }
                ],
            },
        ],
    }
    w = wf(
        stateMachines=[machine],
        inputs=[
            {
                "key": "cmd",
                "inputType": "integer",
                "outgoing": [{"nodeKey": "pump", "nodeType": "statemachine", "event": "start"}],
            }
        ],
    )
    engine = WorkflowEngine(w, build_workflow_scripts(None, w))
    result = engine.run(Device("d", "c"), {"cmd": 4})
    assert result.attributes["level"] == 4
    assert result.attributes["temp"] == 1.0  # 'stop' ran after the move to 'on'
    assert result.state_machines == {"pump": "off"}


def test_an_attribute_onset_script_decides_the_assignment() -> None:
    w = wf(
        attributes=[
            {
                "key": "level",
                "attributeType": "integer",
                "onSetScript": "function onSet(value) { if (value < 100) { Attributes.level = value * 2; } }",
            },
        ],
        inputs=[
            {
                "key": "level",
                "inputType": "integer",
                "outgoing": [{"nodeKey": "level", "nodeType": "attribute"}],
            }
        ],
    )
    engine = WorkflowEngine(w, build_workflow_scripts(None, w))
    assert engine.run(Device("d", "c"), {"level": 5}).attributes == {"level": 10}
    assert engine.run(Device("d", "c", attributes={"level": 1}), {"level": 500}).attributes == {"level": 1}


def test_a_script_writing_a_wrong_type_fails_and_nothing_is_applied() -> None:
    w = wf(preHandlerScript="function preHandler() { Attributes.level = 'many'; }")
    engine = WorkflowEngine(w, build_workflow_scripts(None, w))
    device = Device("d", "c", attributes={"level": 3})
    with pytest.raises(StageError) as info:
        engine.run(device, {})
    assert info.value.code == "attribute_conversion_failed"
    assert device.attributes == {"level": 3}


def test_a_script_error_becomes_a_stage_error_with_name_and_line() -> None:
    w = wf(postHandlerScript="function postHandler() {\n  undefinedThing();\n}")
    with pytest.raises(StageError) as info:
        WorkflowEngine(w, build_workflow_scripts(None, w)).run(Device("d", "c"), {})
    assert (info.value.stage, info.value.code) == ("workflow", "script_error")
    assert info.value.detail.startswith("workflow wf / postHandler, line 2: ReferenceError")


def test_a_runaway_script_is_a_script_timeout() -> None:
    w = wf(preHandlerScript="function preHandler() { while (true) {} }")
    with pytest.raises(StageError) as info:
        WorkflowEngine(w, build_workflow_scripts(None, w, time_limit_ms=20)).run(Device("d", "c"), {})
    assert info.value.code == "script_timeout"


def test_send_without_onexecute_maps_args_onto_parameters_and_business_rules_report() -> None:
    w = wf(
        outputCommands=[
            {"key": "set", "parameters": [{"key": "a", "parameterType": "integer"}, {"key": "b"}]}
        ],
        postHandlerScript="function postHandler() { OutputCommands.set.send('7', 'x'); }",
        businessRules=[
            {
                "key": "hot",
                "errorCode": "E1",
                "script": "function evaluate() { return {result: false, reason: 'too hot'}; }",
            }
        ],
    )
    result = WorkflowEngine(w, build_workflow_scripts(None, w)).run(Device("d", "c"), {})
    assert result.output_commands == [("set", {"a": 7, "b": "x"})]
    assert result.rule_failures == [("E1", "too hot")]


# --------------------------------------------------------------------------- input commands

ONOFF = StateSet.model_validate(
    {"key": "onoff", "states": [{"key": "ison", "enumValue": 5}, {"key": "isoff", "enumValue": 6}]}
)


def cmd_wf() -> Workflow:
    return wf(
        inputCommands=[
            {
                "key": "set",
                "endpointType": "get",
                "parameters": [
                    {
                        "key": "level",
                        "parameterType": "integer",
                        "isRequired": True,
                        "minValue": 0,
                        "maxValue": 10,
                    },
                    {"key": "ratio", "parameterType": "decimal"},
                    {"key": "fan", "parameterType": "true-false"},
                    {"key": "mode", "parameterType": "state", "stateSet": "onoff"},
                    {"key": "note", "parameterType": "string", "defaultValue": "none"},
                ],
                "outgoing": [
                    {"nodeKey": "level", "nodeType": "attribute", "parameter": "level"},
                    {"nodeKey": "pump", "nodeType": "statemachine", "event": "start"},
                    {"nodeKey": "fancmd", "nodeType": "outputcommand", "parameter": "fan"},
                ],
                "onArriveScript": "function onArrive() { Attributes.label = InputCommand.note + ':' + InputCommand.mode; }",
            }
        ],
    )


def test_an_input_command_converts_parameters_and_runs_its_mappings() -> None:
    w = cmd_wf()
    engine = WorkflowEngine(w, build_workflow_scripts(None, w), state_sets={"onoff": ONOFF})
    result = engine.run_input_command(
        "set", Device("d", "c"), {"level": "4", "ratio": "0.5", "fan": "false", "mode": "5"}
    )
    assert result.attributes == {"level": 4, "label": "none:ison"}
    assert result.state_machines == {"pump": "on"}
    assert result.output_commands == [("fancmd", {"state": False})]


@pytest.mark.parametrize(
    ("params", "parameter", "code"),
    [
        ({}, "level", "missing_parameter"),
        ({"level": "four"}, "level", "invalid_parameter"),
        ({"level": "11"}, "level", "invalid_parameter"),
        ({"level": "-1"}, "level", "invalid_parameter"),
        ({"level": "1", "ratio": "half"}, "ratio", "invalid_parameter"),
        ({"level": "1", "fan": "perhaps"}, "fan", "invalid_parameter"),
        ({"level": "1", "mode": "sideways"}, "mode", "invalid_parameter"),
    ],
)
def test_parameter_errors_name_the_parameter(params: dict[str, str], parameter: str, code: str) -> None:
    engine = WorkflowEngine(cmd_wf(), state_sets={"onoff": ONOFF})
    with pytest.raises(ParameterError) as info:
        engine.run_input_command("set", Device("d", "c"), params)
    assert (info.value.parameter, info.value.code) == (parameter, code)
    assert info.value.detail.startswith(f"parameter {parameter}:")


def test_an_unknown_input_command_is_a_stage_error() -> None:
    with pytest.raises(StageError) as info:
        WorkflowEngine(cmd_wf()).run_input_command("nope", Device("d", "c"), {})
    assert info.value.code == "unknown_input_command"


class RecordingSession:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def call(self, hook: str, args: Sequence[Any], state: ScriptState) -> HookEffects:
        self.calls.append((hook, tuple(args)))
        return HookEffects()


class RecordingScripts(CountingScripts):
    def __init__(self, hooks: set[str]) -> None:
        super().__init__()
        self.hooks = hooks
        self.rec = RecordingSession()

    def has(self, hook: str) -> bool:
        return hook in self.hooks

    def session(self, ctx: SessionContext, state: ScriptState) -> Any:
        self.sessions += 1
        return self.rec


def test_order_of_execution_for_a_message() -> None:
    hooks = {
        "preHandler",
        "postHandler",
        "input level / onSet",
        "input temp / onSet",
        "attribute temp / onSet",
    }
    fake = RecordingScripts(hooks)
    WorkflowEngine(wf(), fake).run(Device("d", "c"), {"temp": 1.5, "level": 2})  # type: ignore[arg-type]
    assert fake.sessions == 1
    assert fake.rec.calls == [
        ("preHandler", ()),
        ("input level / onSet", (2,)),
        ("input temp / onSet", (1.5,)),
        ("attribute temp / onSet", (1.5,)),
        ("postHandler", ()),
    ]
