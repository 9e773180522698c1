"""One message's scripts cannot change what another message's scripts see (issue 18 item 3).

Two devices share one workflow context: whatever the first device's script does to built-ins, globals or its
own script-level variables, the second device's message runs as on a fresh engine and still succeeds.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.adapters.scripting.engine import QuickJsWorkflowScripts
from runtime.core.scripting import POST_HANDLER, PRE_HANDLER, ScriptError, ScriptState, SessionContext

# what the second device's script reports about its world
PROBE = """function postHandler() {
  var o = {};
  return {
    polluted: o.x === undefined ? null : o.x,
    arrayPolluted: typeof [].evil,
    json: JSON.stringify({a: [1, 2]}),
    parse: JSON.parse('{"b": 2}').b,
    max: Math.max(1, 5),
    push: (function () { var a = []; a.push(7); return a.length; })(),
    keys: Object.keys({k: 1}).join(","),
    leftover: typeof leftover,
    counter: typeof counter === "undefined" ? null : counter,
    str: String(12),
  };
}"""
CLEAN = {"polluted": None, "arrayPolluted": "undefined", "json": '{"a":[1,2]}', "parse": 2, "max": 5, "push": 1,
         "keys": "k", "leftover": "undefined", "counter": 1, "str": "12"}


def scripts(pre: str) -> QuickJsWorkflowScripts:
    return QuickJsWorkflowScripts(
        "wf",
        {PRE_HANDLER: (pre, "preHandler"),
         POST_HANDLER: ("var counter = 0;\n" + PROBE.replace("var o = {};", "counter++; var o = {};"),
                        "postHandler")},
        commands={}, machines=[],
    )


def run(s: QuickJsWorkflowScripts, device: str, hook: str) -> Any:
    st = ScriptState({}, {}, {}, {})
    return s.session(SessionContext(device, device, "cfg"), st).call(hook, (), st).value


ATTACKS = {
    "prototype pollution": "Object.prototype.x = 'evil'; Array.prototype.evil = 1;",
    "JSON.stringify replaced": "JSON.stringify = function () { throw new Error('gotcha'); };",
    "JSON.parse replaced": "JSON.parse = function () { return {}; };",
    "JSON global replaced": "JSON = {stringify: function () { return 'x'; }};",
    "Math replaced": "Math.max = function () { return -1; }; Math = null;",
    "Array.prototype.push replaced": "Array.prototype.push = function () { return 0; };",
    "Object.keys replaced": "Object.keys = function () { return []; };",
    "leaked global": "leftover = {secret: 'device A'};",
    "defineProperty on a prototype": "Object.defineProperty(Object.prototype, 'x', {get: function () { return 1; }});",
    "setPrototypeOf on a prototype": "Object.setPrototypeOf(Array.prototype, {evil: 'number'});",
    "Function.prototype.apply replaced": "Function.prototype.apply = function () { return 'hijacked'; };",
    "String replaced": "String = function () { return 'evil'; };",
    "glue entry point replaced": "__gCall = function () { return '{}'; }; __gDefine('postHandler', function () {});",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_what_one_device_does_to_built_ins_and_globals_another_never_sees(attack: str) -> None:
    s = scripts("function preHandler() {\n  try { " + ATTACKS[attack] + " } catch (e) { return 'refused'; }\n"
                "  return 'done';\n}")
    assert run(s, "devA", PRE_HANDLER) in ("done", "refused")  # a frozen built-in: ignored, or a TypeError
    for device in ("devB", "devA", "devC"):
        assert run(s, device, POST_HANDLER) == CLEAN  # every later message of every device, not only the next


def test_script_level_variables_do_not_outlive_a_message() -> None:
    s = scripts("var secret = null;\nfunction preHandler() { var was = secret; secret = IoTDevice.DeviceId; "
                "return was; }")
    assert run(s, "devA", PRE_HANDLER) is None
    assert run(s, "devB", PRE_HANDLER) is None  # device B never reads device A's id
    # within one message the variable lives on: a second hook call in the same session sees it
    st = ScriptState({}, {}, {}, {})
    sess = s.session(SessionContext("devC", "c", "cfg"), st)
    assert sess.call(PRE_HANDLER, (), st).value is None
    assert sess.call(PRE_HANDLER, (), st).value == "devC"


def test_overriding_inherited_names_on_own_objects_still_works() -> None:
    s = scripts("""function preHandler() {
  function MyError(m) { this.name = 'MyError'; this.message = m; }
  var e = new MyError('bad');
  var o = {};
  o.toString = function () { return 'custom'; };
  o.valueOf = function () { return 41; };
  o.constructor = 'mine';
  class Sub extends Error { constructor(m) { super(m); this.name = 'Sub'; } }
  var s = new Sub('x');
  return [e.name, e.message, String(o), o + 1, o.constructor, s.name, String(s), Object.prototype.toString.call([])];
}""")
    assert run(s, "devA", PRE_HANDLER) == ["MyError", "bad", "custom", 42, "mine", "Sub", "Sub: x",
                                          "[object Array]"]
    assert run(s, "devB", POST_HANDLER) == CLEAN


def test_strict_mode_scripts_get_a_type_error_naming_the_built_in() -> None:
    s = scripts("function preHandler() {\n  'use strict';\n  JSON.stringify = null;\n}")
    with pytest.raises(ScriptError) as info:
        run(s, "devA", PRE_HANDLER)
    assert info.value.message.startswith("TypeError")
    assert info.value.line == 3
    assert run(s, "devB", POST_HANDLER) == CLEAN


def test_the_limits_still_hold_and_a_runaway_leaves_no_trace() -> None:
    s = scripts("function preHandler() { Object.prototype.x = 1; leftover = 1; var a = []; "
                "while (true) { a.push(new Array(100000).fill(1)); } }")
    with pytest.raises(ScriptError) as info:
        run(s, "devA", PRE_HANDLER)
    assert info.value.kind in ("memory", "timeout")
    assert run(s, "devB", POST_HANDLER) == CLEAN
