"""Measure candidate embedded JavaScript engines for workflow scripts (docs/scripting.md).

Run it once per engine, each in its own throwaway venv (quickjs and quickjs-ng both install a
top-level ``quickjs`` module, so they cannot share one)::

    python3.12 -m venv /tmp/js-racer && /tmp/js-racer/bin/pip install --only-binary=:all: mini-racer==0.14.1
    /tmp/js-racer/bin/python bench/js_engines.py racer
    # likewise: quickjs==1.19.4 -> "quickjs", quickjs-ng==0.17.0.2 -> "quickjs", dukpy==0.6.0 -> "dukpy"

Prints one JSON line: time-limit behaviour, memory-limit behaviour, per-call overhead, a
whole-message session (set globals, 3 hook calls, read effects) and memory per context.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

GLUE = r"""
var S = null;
var H = {};
function __begin(j) { S = JSON.parse(j); S.out = []; S.logs = []; return 0; }
function __call(name, argsJson) {
  var r = H[name].apply(null, JSON.parse(argsJson));
  return r === undefined ? null : JSON.stringify(r);
}
function __end() { return JSON.stringify({attributes: S.attributes, out: S.out, logs: S.logs}); }
var Attributes = new Proxy({}, {
  get: function (t, k) { return S.attributes[k]; },
  set: function (t, k, v) { S.attributes[k] = v; return true; }
});
function logConsole(m) { S.logs.push(String(m)); }
var OutputCommands = { acknowledge: {
  send: function () { return H['ack.onExecute'].apply(null, arguments); },
  create: function () { var c = {}; Object.defineProperty(c, 'enqueue', {value: function () {
      S.out.push({key: 'acknowledge', fields: Object.assign({}, c)}); }}); return c; } } };
"""
HOOKS = {
    "pre": "function preHandler(){ Attributes.counter = Attributes.counter + 1; }",
    "onset": "function onSet(value){ logConsole('set ' + value); Attributes.motion = value; }",
    "post": "function postHandler(){ OutputCommands.acknowledge.send(Attributes.counter); }",
    "ack.onExecute": "function onExecute(){ let c = OutputCommands.acknowledge.create(); c.counter = Attributes.counter; c.enqueue(); }",
}
FNAME = {"pre": "preHandler", "onset": "onSet", "post": "postHandler", "ack.onExecute": "onExecute"}


def hook_source(name: str) -> str:
    return f"H[{name!r}] = (function () {{ {HOOKS[name]}\n return {FNAME[name]}; }})();"


class Engine:
    """A tiny uniform face over each binding: eval once, call a global function with string args."""

    name = ""

    def call(self, fn: str, *args: Any) -> Any:
        raise NotImplementedError

    def eval(self, code: str) -> Any:
        raise NotImplementedError


class Racer(Engine):
    name = "mini-racer"

    def __init__(self, timeout_ms: float, memory: int) -> None:
        from py_mini_racer import MiniRacer

        self.ctx = MiniRacer()
        self.ctx.set_hard_memory_limit(memory)
        self.timeout = timeout_ms

    def eval(self, code: str) -> Any:
        return self.ctx.eval(code, timeout=self.timeout)

    def call(self, fn: str, *args: Any) -> Any:
        return self.ctx.call(fn, *args, timeout=self.timeout)


class Quick(Engine):
    name = "quickjs"

    def __init__(self, timeout_ms: float, memory: int) -> None:
        import quickjs

        self.ctx = quickjs.Context()
        self.ctx.set_time_limit(timeout_ms / 1000)
        self.ctx.set_memory_limit(memory)
        self.fns: dict[str, Any] = {}

    def eval(self, code: str) -> Any:
        return self.ctx.eval(code)

    def call(self, fn: str, *args: Any) -> Any:
        f = self.fns.get(fn)
        if f is None:
            f = self.fns[fn] = self.ctx.get(fn)
        return f(*args)


class Duk(Engine):
    name = "dukpy"  # no time or memory limit: each evaljs is a fresh interpreter run

    def __init__(self, timeout_ms: float, memory: int) -> None:
        import dukpy

        self.ctx = dukpy.JSInterpreter()

    def eval(self, code: str) -> Any:
        return self.ctx.evaljs(code + "\n;null")

    def call(self, fn: str, *args: Any) -> Any:
        return self.ctx.evaljs(
            f"(function () {{ var r = {fn}.apply(null, dukpy.a); return r === undefined ? null : r; }})()",
            a=list(args),
        )


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(which: str) -> dict[str, Any]:
    cls = {"racer": Racer, "quickjs": Quick, "dukpy": Duk}[which]
    res: dict[str, Any] = {"engine": cls.name, "python": sys.version.split()[0]}
    e = cls(50, 64 * 1024 * 1024)
    e.eval(GLUE)
    for h in HOOKS:
        e.eval(hook_source(h))
    e.eval("function small(x) { return x + 1; }")

    if which != "dukpy":  # dukpy has no limits at all: a while(true) hangs the process
        t = time.perf_counter()
        try:
            e.eval("while (true) {}")
            res["timeout"] = "not stopped"
        except Exception as exc:  # noqa: BLE001 -- each engine raises its own type; we report it
            res["timeout"] = f"{type(exc).__name__} after {(time.perf_counter() - t) * 1000:.1f} ms"
        res["usable_after_timeout"] = e.call("small", 1) == 2
        e2 = cls(5000, 64 * 1024 * 1024)
        t = time.perf_counter()
        try:
            e2.eval("var a = []; while (true) a.push(new Array(10000).fill(1.5));")
            res["memory_limit"] = "not stopped"
        except Exception as exc:  # noqa: BLE001 -- each engine raises its own type; we report it
            res["memory_limit"] = f"{type(exc).__name__} after {(time.perf_counter() - t) * 1000:.0f} ms"
        res["usable_after_oom"] = e2.eval("1 + 2") == 3
        del e2

    res["small_call_us"] = round(per_call_us(lambda: e.call("small", 1), 20000), 2)
    if which == "dukpy":  # disqualified already (no limits); its per-call figure is for comparison only
        return res
    state = json.dumps({"attributes": {"counter": 0, "motion": "off"}})

    def session() -> Any:
        e.call("__begin", state)
        e.call("__call", "pre", "[]")
        e.call("__call", "onset", '["on"]')
        e.call("__call", "post", "[]")
        return json.loads(e.call("__end"))

    out = session()
    assert out["out"] == [{"key": "acknowledge", "fields": {"counter": 1}}], out
    res["session_us"] = round(per_call_us(session, 5000), 1)

    gc.collect()
    before = rss_kb()
    keep = []
    t = time.perf_counter()
    for _ in range(50):
        c = cls(50, 64 * 1024 * 1024)
        c.eval(GLUE)
        for h in HOOKS:
            c.eval(hook_source(h))
        keep.append(c)
    res["context_create_ms"] = round((time.perf_counter() - t) / 50 * 1000, 2)
    res["rss_per_context_kb"] = round((rss_kb() - before) / 50)
    return res


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "quickjs")))
