"""Cost per message of the ways to keep one message's scripts from affecting another (docs/scripting.md §2).

Runs the real adapter (``runtime.adapters.scripting.engine``) on a small workflow: a session per message
(begin, ``preHandler``, an input ``onSet``, ``postHandler`` -> ``onExecute``), the devices taking turns.

    .venv/bin/python bench/js_isolation.py [messages]

Options measured (µs per message, median of 5 runs):

- ``shared``: the adapter as it is (one context per workflow, reused by every message);
- ``fresh_context_per_message``: a new context (glue + compile every hook) for every message;
- ``context_per_device``: one context per device, built at a device's first message and kept (the time of
  a device's first message, plus the memory each kept context costs);
- ``restore_walk``: the shared context plus, per message, a walk over every built-in object reading its
  own properties (a lower bound of "snapshot the built-ins and restore them per message").
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import sys
import time

from runtime.adapters.scripting.engine import QuickJsWorkflowScripts
from runtime.core.scripting import (
    POST_HANDLER,
    PRE_HANDLER,
    ScriptState,
    SessionContext,
    hook_input_on_set,
    hook_on_execute,
)

HOOKS = {
    PRE_HANDLER: ("var seen = 0; function preHandler() { seen++; Attributes.counter = (Attributes.counter || 0) + 1; }",
                  "preHandler"),
    hook_input_on_set("motion"): ("function onSet(v) { logConsole('motion ' + v); Attributes.motion = v; }", "onSet"),
    POST_HANDLER: ("function postHandler() { OutputCommands.ack.send(Attributes.counter); }", "postHandler"),
    hook_on_execute("ack"): ("function onExecute(n) { var c = OutputCommands.ack.create(); c.counter = n; "
                             "c.items = [1, 2, 3].map(function (x) { return x * n; }); c.enqueue(); }", "onExecute"),
}
WALK = r"""
(function __gWalkAll() {
  var seen = new Set(); var todo = [globalThis]; var n = 0;
  while (todo.length) { var o = todo.pop(); if (seen.has(o)) continue; seen.add(o);
    var keys = Reflect.ownKeys(o);
    for (var i = 0; i < keys.length; i++) { var d = Object.getOwnPropertyDescriptor(o, keys[i]); n++;
      if (d && 'value' in d && d.value !== null && (typeof d.value === 'object' || typeof d.value === 'function')
          && !(typeof keys[i] === 'string' && keys[i].startsWith('__g'))) todo.push(d.value); }
    var p = Object.getPrototypeOf(o); if (p) todo.push(p); }
  return n; })()
"""


def build() -> QuickJsWorkflowScripts:
    return QuickJsWorkflowScripts("wf", HOOKS, commands={"ack": ["counter", "items"]}, machines=[])


def one(s: QuickJsWorkflowScripts, device: int) -> None:
    st = ScriptState({"counter": device}, {}, {}, {})
    ctx = SessionContext(f"dev{device}", "d", "cfg", inputs={"motion": "on"})
    session = s.session(ctx, st)
    session.call(PRE_HANDLER, (), st)
    session.call(hook_input_on_set("motion"), ("on",), st)
    session.call(POST_HANDLER, (), st)


def timed(fn, n: int) -> float:  # µs per message
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    shared = build()
    walker = build()
    out: dict[str, object] = {}
    runs: dict[str, list[float]] = {"shared": [], "fresh_context_per_message": [], "restore_walk": []}
    for _ in range(5):
        runs["shared"].append(timed(lambda i: one(shared, i % 100), n))
        runs["fresh_context_per_message"].append(timed(lambda i: one(build(), i % 100), max(200, n // 20)))

        def walk(i: int) -> None:
            walker._ctx.eval(WALK)
            one(walker, i % 100)

        runs["restore_walk"].append(timed(walk, max(500, n // 5)))
    out = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    out["built_ins_walked"] = walker._ctx.eval(WALK)
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    per_device = [build() for _ in range(500)]
    for i, s in enumerate(per_device):
        one(s, i)
    out["context_per_device_first_message_us"] = round((time.perf_counter() - t) / 500 * 1e6, 1)
    out["context_per_device_kib"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 500, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
