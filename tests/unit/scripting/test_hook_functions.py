"""Issue 12: a hook whose function name is this runtime's (``onEnter`` for ``State.TransitionInAction``,
``onTransition`` for ``StateTransition.TransitionAction``, ``map`` for ``Connection.Script``, ``evaluate`` for a
business rule) calls the one function a NuvIoT script declares when it lacks ours; ``validate`` says so
(PYRT2095), and several functions with none of ours is a ``validate`` error. NuvIoT names the TransitionInAction
template ``stateTransitionInAction`` (LagoVista/DeviceAdmin ``State.cs``, ``ScriptTemplateName``) but publishes
not its text, so the function a real export declares is unknown: the state machine below declares
``function stateTransitionInAction(value)``. Documented names (``onSet``, ``onArrive``...) stay strict.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.core.devices import Device
from runtime.core.errors import SolutionError
from runtime.core.script_functions import hook_function, top_level_functions
from runtime.core.solution import codes
from tests.unit.solution.test_unmapped import engine_for, load, with_state_machine

ACTIVE = "workflows[0].stateMachines[0].states[0]"


def states(doc: dict[str, Any]) -> list[dict[str, Any]]:
    route = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]
    machines: list[dict[str, Any]] = route["PipelineModules"][2]["Module"]["Value"]["StateMachines"]
    return machines[0]["States"]  # type: ignore[no-any-return]


def with_transition_in(script: str) -> dict[str, Any]:
    doc = with_state_machine()
    states(doc)[0]["TransitionInAction"] = script
    return doc


def test_the_one_function_of_another_name_is_called() -> None:
    found = hook_function("function stateTransitionInAction(value) { Attributes.x = value; }", "onEnter")
    assert (found.name, found.renamed, found.ambiguous) == ("stateTransitionInAction", True, False)


def test_the_expected_name_wins_when_present() -> None:
    src = "function helper(v) { return v; }\nfunction onEnter(value) { Attributes.x = helper(value); }"
    found = hook_function(src, "onEnter")
    assert (found.name, found.renamed, found.ambiguous) == ("onEnter", False, False)
    assert hook_function("var map = function (v) { return v; };\nfunction helper() {}", "map").name == "map"


def test_several_functions_and_none_expected_is_ambiguous() -> None:
    found = hook_function("function a() {}\nfunction b() {}", "onEnter")
    assert found.ambiguous and found.declared == ("a", "b")


def test_documented_names_stay_strict() -> None:
    assert hook_function("function whenSet(value) {}", "onSet").name == "onSet"
    assert hook_function("function build() { return {}; }", "getOutputMessage").name == "getOutputMessage"


def test_only_top_level_declarations_count() -> None:
    src = """// function commented(x) {}
/* function alsoCommented() {} */
var text = "function inString() {}";
function outer(value) {
    function inner() { return '{'; }
    return inner() + `function t() {}`;
}
"""
    assert top_level_functions(src) == ["outer"]


def test_a_transition_in_action_named_as_nuviots_template_runs_and_validate_says_so() -> None:
    doc = with_transition_in("function stateTransitionInAction(value) { Attributes.lastevent = 'entered ' + value; }")
    loaded = load(doc)
    warned = [w for w in loaded.warnings if w.code == codes.SCRIPT_FUNCTION]
    assert [(w.path, w.message) for w in warned] == [
        (f"{ACTIVE}.transitionInAction", "TransitionInAction declares function stateTransitionInAction, called as onEnter")
    ]
    device = Device("dev001", "examplemotion", name="Motion Sensor 1")
    engine_for(doc).run(device, {"motionstatus": "on"}, message_id="motion", now=1000.0).apply_to(device)
    assert device.state_machines["motionsm"] == "active"
    assert device.attributes["lastevent"] == "entered on"


def test_the_expected_name_is_called_and_not_warned() -> None:
    doc = with_transition_in("function onEnter(value) { Attributes.lastevent = 'onEnter'; }\n"
                             "function other(value) { Attributes.lastevent = 'other'; }")
    assert not [w for w in load(doc).warnings if w.code == codes.SCRIPT_FUNCTION]
    device = Device("dev001", "examplemotion")
    engine_for(doc).run(device, {"motionstatus": "on"}).apply_to(device)
    assert device.attributes["lastevent"] == "onEnter"


def test_several_functions_none_expected_is_a_validate_error_with_the_path() -> None:
    doc = with_transition_in("function first(value) {}\nfunction second(value) {}")
    with pytest.raises(SolutionError) as info:
        load(doc)
    errors = [p for p in info.value.problems if p.code == codes.SCRIPT_FUNCTION]
    assert [p.path for p in errors] == [f"{ACTIVE}.transitionInAction"]
    assert "first, second" in errors[0].message and "onEnter" in errors[0].message


def test_a_transition_action_and_a_mapping_script_with_their_own_names_run() -> None:
    doc = with_state_machine()
    states(doc)[1]["Transitions"][0]["TransitionAction"] = (
        "function transitionAction(value) { Attributes.lastevent = 'moved on ' + value; }")
    states(doc)[0]["TransitionInAction"] = None
    route = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]
    inputs = route["PipelineModules"][2]["Module"]["Value"]["Inputs"]
    inputs[0]["OutgoingConnections"][-1]["Script"] = "function toEvent(value) { return value + '!'; }"
    warned = {(w.path.rsplit(".", 2)[-2:][0], w.message) for w in load(doc).warnings if w.code == codes.SCRIPT_FUNCTION}
    assert ("transitions[0]", "TransitionAction declares function transitionAction, called as onTransition") in warned
    assert any("mapping Script declares function toEvent, called as map" == m for _, m in warned)
    device = Device("dev001", "examplemotion")
    engine_for(doc).run(device, {"motionstatus": "on"}).apply_to(device)
    assert device.attributes["lastevent"] == "moved on on!"


def test_a_business_rule_with_its_own_function_name_runs() -> None:
    doc = with_state_machine()
    route = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]
    route["PipelineModules"][2]["Module"]["Value"]["BusinessRules"] = [{
        "Key": "notjammed", "Name": "Not jammed", "ErrorCode": {"Id": "C" * 32, "Key": "jammed", "Text": "Jammed"},
        "Script": "function notJammed() { return Attributes.motionstatus !== 'jammed'; }",
    }]
    warned = [(w.path, w.message) for w in load(doc).warnings if w.code == codes.SCRIPT_FUNCTION]
    assert warned == [("workflows[0].businessRules[0].script",
                       "business rule declares function notJammed, called as evaluate")]
    device = Device("dev001", "examplemotion")
    result = engine_for(doc).run(device, {"motionstatus": "jammed"}, now=1000.0)
    rules = [(e.code, e.action) for e in result.health_events if e.source == "businessrule"]
    assert rules == [("jammed", "raised")]  # the rule's one function ran and returned false


def test_a_script_that_defines_no_function_of_its_hooks_name_is_warned_as_never_run() -> None:
    """Before: such a script loaded without a word and never ran (the engine finds no function to call)."""
    doc = with_transition_in("Attributes.lastevent = 'entered';")  # statements only: nothing to call
    route = doc["Result"]["Solution"]["Value"]["DeviceConfigurations"][0]["Value"]["Routes"][0]
    workflow = route["PipelineModules"][2]["Module"]["Value"]
    workflow["Attributes"][0]["OnSetScript"] = "function onset(value) { Attributes.x = value; }"  # NuvIoT: onSet
    warned = {w.path: w.message for w in load(doc).warnings if w.code == codes.SCRIPT_FUNCTION}
    assert warned == {
        f"{ACTIVE}.transitionInAction":
            "not run: the TransitionInAction defines no function onEnter, so it never runs; declare function onEnter(...)",
        "workflows[0].attributes[0].onSetScript":
            "not run: the onSet script defines no function onSet, so it never runs; declare function onSet(...)",
    }
