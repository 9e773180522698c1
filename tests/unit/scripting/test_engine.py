"""The QuickJS adapter: limits, error reports, isolation, and the scripting model's globals."""

from __future__ import annotations

import time
from typing import Any

import pytest

from runtime.adapters.scripting.engine import QuickJsWorkflowScripts, build_workflow_scripts
from runtime.core.errors import SolutionError
from runtime.core.scripting import (
    POST_HANDLER,
    PRE_HANDLER,
    ScriptError,
    ScriptState,
    SessionContext,
    hook_input_on_set,
    hook_on_execute,
    hook_output_message,
)
from runtime.core.solution.model import Workflow

LIMIT_MS = 50


def scripts(hooks: dict[str, str], **kw: Any) -> QuickJsWorkflowScripts:
    """Hooks given as {hook name: source}; the function name is the hook's last part."""
    return QuickJsWorkflowScripts(
        "wf",
        {name: (src, name.rsplit("/", 1)[-1].strip()) for name, src in hooks.items()},
        commands=kw.pop("commands", {"ack": ["counter"]}),
        machines=kw.pop("machines", ["pump"]),
        time_limit_ms=kw.pop("time_limit_ms", LIMIT_MS),
        **kw,
    )


def state(**attributes: Any) -> ScriptState:
    return ScriptState(dict(attributes), {}, {}, {"pump": "off"})


CTX = SessionContext("dev1", "Device One", "cfg", inputs={"temp": 21.5})


def test_runaway_loop_is_stopped_within_the_limit_and_the_engine_goes_on() -> None:
    s = scripts(
        {
            PRE_HANDLER: "function preHandler() { while (true) {} }",
            POST_HANDLER: "function postHandler() { Attributes.n = 1; }",
        }
    )
    st = state()
    # QuickJS counts the limit in CPU time (clock()), so measure CPU time: a loaded machine stretches wall time
    t = time.process_time()
    with pytest.raises(ScriptError) as info:
        s.session(CTX, st).call(PRE_HANDLER, (), st)
    elapsed = (time.process_time() - t) * 1000
    assert info.value.kind == "timeout"
    assert info.value.script == "workflow wf / preHandler"
    assert LIMIT_MS * 0.8 <= elapsed < LIMIT_MS * 6
    st2 = state()
    s.session(CTX, st2).call(POST_HANDLER, (), st2)
    assert st2.attributes == {"n": 1}


def test_nested_runaway_names_the_innermost_script() -> None:
    s = scripts(
        {
            POST_HANDLER: "function postHandler() { OutputCommands.ack.send(1); }",
            hook_on_execute("ack"): "function onExecute(x) {\n  for (;;) {}\n}",
        }
    )
    st = state()
    with pytest.raises(ScriptError) as info:
        s.session(CTX, st).call(POST_HANDLER, (), st)
    assert info.value.kind == "timeout"
    assert info.value.script == "workflow wf / outputcommand ack / onExecute"


def test_allocation_bomb_fails_the_call_only() -> None:
    s = scripts(
        {
            PRE_HANDLER: "function preHandler() { var a = []; while (true) { a.push(new Array(100000).fill(1.5)); } }",
            POST_HANDLER: "function postHandler() { return 42; }",
        },
        time_limit_ms=5000,
        memory_limit_bytes=16 * 1024 * 1024,
    )
    st = state()
    with pytest.raises(ScriptError) as info:
        s.session(CTX, st).call(PRE_HANDLER, (), st)
    assert info.value.kind == "memory"
    assert s.session(CTX, st).call(POST_HANDLER, (), st).value == 42


def test_a_throwing_script_reports_name_message_and_line() -> None:
    s = scripts(
        {
            hook_input_on_set(
                "temp"
            ): "function onSet(value) {\n  let x = value * 2;\n  throw new Error('too hot: ' + x);\n}"
        }
    )
    st = state()
    with pytest.raises(ScriptError) as info:
        s.session(CTX, st).call(hook_input_on_set("temp"), (30,), st)
    err = info.value
    assert (err.script, err.message, err.line, err.kind) == (
        "workflow wf / input temp / onSet",
        "Error: too hot: 60",
        3,
        "error",
    )
    assert "line 3" in err.detail


def test_an_error_inside_a_nested_hook_names_that_hook_and_its_line() -> None:
    s = scripts(
        {
            POST_HANDLER: "function postHandler() {\n  OutputCommands.ack.send(1);\n}",
            hook_on_execute("ack"): "function onExecute(x) {\n  // nothing\n  return missing.field;\n}",
        }
    )
    st = state()
    with pytest.raises(ScriptError) as info:
        s.session(CTX, st).call(POST_HANDLER, (), st)
    assert info.value.script == "workflow wf / outputcommand ack / onExecute"
    assert info.value.line == 3
    assert "ReferenceError" in info.value.message


def test_errors_thrown_from_glue_calls_point_at_the_script_line() -> None:
    s = scripts({PRE_HANDLER: "function preHandler() {\n\n  setDeviceGeoLocation('north', 5);\n}"})
    st = state()
    with pytest.raises(ScriptError) as info:
        s.session(CTX, st).call(PRE_HANDLER, (), st)
    assert info.value.line == 3
    assert "RangeError" in info.value.message


def test_a_script_that_does_not_compile_is_a_solution_error() -> None:
    with pytest.raises(SolutionError) as info:
        scripts({PRE_HANDLER: "function preHandler() {\n  let = = 3;\n}"})
    (problem,) = info.value.problems
    assert problem.path == "workflow wf / preHandler"
    assert "SyntaxError" in problem.message


def test_comment_only_templates_are_no_hooks_and_a_workflow_of_them_gets_no_engine() -> None:
    template = "/*\n * function preHandler() {\n * }\n */"
    wf = Workflow.model_validate({"key": "t", "preHandlerScript": template, "postHandlerScript": "  "})
    assert build_workflow_scripts(None, wf) is None


def test_globals_a_script_leaks_are_gone_in_the_next_session_and_session_values_are_per_session() -> None:
    s = scripts(
        {
            PRE_HANDLER: "function preHandler() { leaked = (typeof leaked === 'undefined') ? 1 : leaked + 1; "
            "setSessionValue('k', hasSessionValue('k') ? 'again' : 'first'); return [leaked, getSessionValue('k')]; }",
        }
    )
    for _ in range(3):
        st = state()
        sess = s.session(CTX, st)
        assert sess.call(PRE_HANDLER, (), st).value == [1, "first"]
        assert sess.call(PRE_HANDLER, (), st).value == [2, "again"]


def test_the_scripting_model() -> None:
    s = scripts(
        {
            PRE_HANDLER: """function preHandler() {
            Attributes.total = Attributes.total + WorkflowInputs.temp;
            Attributes.gone = null;
            setDeviceProperty('mode', 'eco');
            addToPropertyBag('seen', IoTDevice.DeviceId + '/' + IoTDevice.Name);
            clearPropertyBagValue('old');
            setDeviceGeoLocation(28.5, -81.25);
            StateMachines.pump.handle('start', 7);
            logConsole({a: 1});
            sendEmail('x', 'y', 'z');
            let c = OutputCommands.ack.create(); c.counter = 5; c.enqueue();
            OutputCommands.ack.send(6);
            return [DeviceProperties.model, getFromPropertyBag('nope', 'dflt'), hasPropertyBagValue('seen'),
                    StateMachines.pump.currentState, InputCommand === undefined];
        }""",
        }
    )
    st = ScriptState({"total": 1.5, "gone": "x"}, {"model": "m1"}, {"old": 1}, {"pump": "off"})
    eff = s.session(CTX, st).call(PRE_HANDLER, (), st)
    assert eff.value == ["m1", "dflt", True, "off", True]
    assert st.attributes == {"total": 23, "gone": None}
    assert st.properties == {"model": "m1", "mode": "eco"}
    assert st.property_bag == {"seen": "dev1/Device One"}
    assert st.location == (28.5, -81.25)
    assert eff.events == [("pump", "start", 7)]
    assert eff.commands == [("ack", {"counter": 5}), ("ack", {"counter": 6})]
    assert eff.logs == ['{"a":1}']
    assert eff.warnings == ["sendEmail() is not supported by this runtime; the call was ignored"]
    assert eff.state_changed == {"attributes", "properties", "property_bag", "location"}


def test_workflow_inputs_are_read_only_and_python_changes_reach_the_next_hook() -> None:
    s = scripts(
        {
            PRE_HANDLER: "function preHandler() { 'use strict'; WorkflowInputs.temp = 0; }",
            POST_HANDLER: "function postHandler() { return [WorkflowInputs.temp, Attributes.a]; }",
        }
    )
    st = state(a=1)
    sess = s.session(CTX, st)
    with pytest.raises(ScriptError, match="TypeError"):
        sess.call(PRE_HANDLER, (), st)
    st.attributes["a"] = 2
    st.version += 1
    assert sess.call(POST_HANDLER, (), st).value == [21.5, 2]


def test_output_message_gets_fields_and_a_string_result_is_text() -> None:
    s = scripts(
        {
            hook_output_message(
                "ack"
            ): "function getOutputMessage() { return {status: 'ok', process: Fields.counter}; }",
            hook_output_message("txt"): "function getOutputMessage() { return 'C=' + Fields.counter; }",
        }
    )
    r = s.output_message("ack", {"counter": 3}, "dev1")
    assert (r.value, r.is_text) == ({"status": "ok", "process": 3}, False)
    assert s.output_message("txt", {"counter": 4}, "dev1").value == "C=4"


def test_one_session_per_message_is_a_few_js_calls() -> None:
    s = scripts(
        {
            PRE_HANDLER: "function preHandler() { Attributes.counter = Attributes.counter + 1; }",
            POST_HANDLER: "function postHandler() { OutputCommands.ack.send(Attributes.counter); }",
        }
    )
    st = state(counter=0)
    sess = s.session(CTX, st)
    sess.call(PRE_HANDLER, (), st)
    eff = sess.call(POST_HANDLER, (), st)
    assert eff.commands == [("ack", {"counter": 1})]
    assert s.calls == 3  # begin + two hooks


def test_the_starter_apps_onset_script_reads_the_device_by_nuviots_names() -> None:
    """LagoVista/StarterKit ``OrgInitializer.AddDeviceWorkflow``: the "Example - Motion" attribute's onSet
    compares with ``'True'`` (a JSON true in a String field, as .NET writes it) and reads ``IoTDevice.name``."""
    from runtime.core.scripting import hook_attribute_on_set

    on_set = """function onSet(value /* String */) {
    let phoneNumber = '+15555550100';
    Attributes.motionstatus = value;
    if(value === 'True'){
        sendSMS(phoneNumber, 'Motion detected on ' + IoTDevice.name);
    }
    else {
        sendSMS(phoneNumber, 'Motion cleared on ' + IoTDevice.name);
    }
    logConsole([IoTDevice.name, IoTDevice.deviceId, IoTDevice.Name, IoTDevice.DeviceId].join('|'));
};"""
    s = scripts({hook_attribute_on_set("motionstatus"): on_set})
    st = state()
    eff = s.session(CTX, st).call(hook_attribute_on_set("motionstatus"), ("True",), st)
    assert st.attributes == {"motionstatus": "True"}
    assert eff.logs == ["Device One|dev1|Device One|dev1"]
    assert eff.warnings == ["sendSMS() is not supported by this runtime; the call was ignored"]
