"""Workflow scripts on QuickJS (PyPI ``quickjs-ng``); implements ``runtime.core.scripting`` (docs/scripting.md).

One QuickJS context (its own runtime, so its own memory limit) per workflow, built once per solution load:
``glue.js`` (the NuvIoT scripting model), then the lockdown (every built-in frozen), then every hook of the workflow and the ``getOutputMessage``
scripts of the outgoing messages its routes map to, each compiled in its own ``eval`` so error lines are
the script's own; each hook is kept as a factory that a session calls at the hook's first use, so
script-level variables live for one message. Per message a session is begun with one JS call; each hook is one JS call; JSON strings
cross the boundary both ways.

Not thread-safe: use one ``QuickJsWorkflowScripts`` from one thread (the data-plane worker and the
input-command handlers both run on the event loop thread, one call at a time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
import quickjs

from runtime.adapters.scripting import datastreams
from runtime.core.errors import Problem, SolutionError
from runtime.core.pipeline.wiring import connection_scripts
from runtime.core.script_functions import hook_function
from runtime.core.scripting import (
    POST_HANDLER,
    PRE_HANDLER,
    HookEffects,
    OutputMessageResult,
    ScriptError,
    ScriptErrorKind,
    ScriptState,
    SessionContext,
    hook_attribute_on_set,
    hook_business_rule,
    hook_input_on_set,
    hook_on_arrive,
    hook_on_execute,
    hook_on_transition,
    hook_output_message,
    hook_transition_in,
)
from runtime.core.solution.enums import PipelineModuleType
from runtime.core.solution.model import OutputCommandMapping, SolutionDocument, Workflow

DEFAULT_TIME_LIMIT_MS = 50.0
DEFAULT_MEMORY_LIMIT = 32 * 1024 * 1024
_COMPILE_TIME_LIMIT_S = 2.0

_GLUE = resources.files(__package__).joinpath("glue.js").read_text(encoding="utf-8")
_FRAME = re.compile(r"^\s*at (\S+) \(<input>:(\d+)(?::\d+)?\)", re.MULTILINE)
_JSErrors = (quickjs.JSException,)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _user_line(stack: str) -> int | None:
    """The line of the innermost frame that is not glue code (glue functions are all named ``__g...``)."""
    for m in _FRAME.finditer(stack):
        if not m.group(1).startswith("__g"):
            return int(m.group(2))
    return None


def _kind_of(message: str) -> ScriptErrorKind:
    if "interrupted" in message:
        return "timeout"
    if "out of memory" in message:
        return "memory"
    return "error"


class QuickJsWorkflowScripts:
    """Every script of one workflow in one QuickJS context (``runtime.core.scripting.WorkflowScripts``)."""

    def __init__(
        self,
        workflow_key: str,
        hooks: Mapping[str, tuple[str, str]],
        *,
        commands: Mapping[str, Sequence[str]] | None = None,
        machines: Iterable[str] = (),
        time_limit_ms: float = DEFAULT_TIME_LIMIT_MS,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        """``hooks`` maps a hook name (``runtime.core.scripting.hook_*``) to (script source, function name).

        Raises ``SolutionError`` listing every script that does not compile. A script that compiles but does
        not define its function (NuvIoT's comment-only templates) is no hook at all.
        """
        self._key = workflow_key
        self._time_limit_s = time_limit_ms / 1000.0
        self.calls = 0  # JS calls made (sessions begun + hooks + output messages); for tests and metrics
        self._active: QuickJsSession | None = None
        ctx = quickjs.Context()
        ctx.set_memory_limit(memory_limit_bytes)
        ctx.set_time_limit(_COMPILE_TIME_LIMIT_S)
        ctx.eval(_GLUE)
        self._stream_calls = datastreams.install(ctx, (src for src, _ in hooks.values()))  # addToDataStream...
        ctx.get("__gSetup")(
            _dumps(
                {"commands": {k: list(v) for k, v in (commands or {}).items()}, "machines": list(machines)}
            )
        )
        ctx.get("__gLockdown")()
        problems: list[Problem] = []
        hooks_found: set[str] = set()
        probe = ctx.get("__gProbe")
        for name, (source, function) in hooks.items():
            # a factory: called per session (and once here), it runs the script's top level and returns the
            # function, so script-level variables never outlive a message
            wrapper = (f"__gDefine({_dumps(name)}, function () {{ {source}\n;"
                       f"return typeof {function} === 'function' ? {function} : undefined; }});")
            try:
                ctx.eval(wrapper)
                if probe(name):
                    hooks_found.add(name)
            except _JSErrors as exc:
                text = str(exc)
                line = _user_line(text)
                problems.append(
                    Problem(
                        self.display(name),
                        "script_error",
                        text.splitlines()[0] + (f" (line {line})" if line else ""),
                    )
                )
        if problems:
            raise SolutionError(problems)
        self._hooks = frozenset(hooks_found)
        ctx.get("__gSeal")()
        ctx.gc()
        ctx.set_time_limit(self._time_limit_s)
        self._ctx = ctx
        self._begin = ctx.get("__gBegin")
        self._call = ctx.get("__gCall")
        self._output = ctx.get("__gOutput")
        self._running = ctx.get("__gRunning")

    # ---- the port

    @property
    def workflow_key(self) -> str:
        return self._key

    @property
    def hooks(self) -> frozenset[str]:
        return self._hooks

    def has(self, hook: str) -> bool:
        return hook in self._hooks

    def display(self, hook: str) -> str:
        return hook if hook.startswith("message ") else f"workflow {self._key} / {hook}"

    def session(self, ctx: SessionContext, state: ScriptState) -> QuickJsSession:
        return QuickJsSession(self, ctx, state)

    def output_message(
        self, message_key: str, fields: Mapping[str, Any], device_id: str
    ) -> OutputMessageResult:
        hook = hook_output_message(message_key)
        self._active = None
        raw = self._js(hook, self._output, hook, _dumps(fields), device_id)
        out = orjson.loads(raw)
        if "x" in out:
            self._fail(hook, out["x"])
        return OutputMessageResult(out["v"], bool(out["t"]), tuple(out["o"]))

    # ---- internals

    def _js(self, hook: str, fn: Any, *args: str) -> str:
        self.calls += 1
        try:
            result: str = fn(*args)
        except _JSErrors as exc:
            self._active = None
            text = str(exc)
            try:
                running = orjson.loads(self._running())
            except _JSErrors:
                running = []
            self._ctx.gc()
            innermost = running[-1] if running else hook
            kind = _kind_of(text)
            message = {
                "timeout": f"script ran longer than {self._time_limit_s * 1000:g} ms and was stopped",
                "memory": "script ran out of memory and was stopped",
            }.get(kind, text.splitlines()[0] if text else "script failed")
            raise ScriptError(self.display(innermost), message, _user_line(text), kind) from None
        return result

    def _fail(self, hook: str, err: Mapping[str, Any]) -> None:
        self._ctx.gc()
        message = str(err.get("message") or "script failed")
        kind = _kind_of(message) if message.startswith("InternalError") else "error"
        raise ScriptError(
            self.display(str(err.get("hook") or hook)), message, _user_line(str(err.get("stack") or "")), kind
        )


def _state_payload(state: ScriptState) -> dict[str, Any]:
    return {
        "attributes": state.attributes,
        "properties": state.properties,
        "property_bag": state.property_bag,
        "state_machines": state.state_machines,
        "location": list(state.location) if state.location is not None else None,
    }


class QuickJsSession:
    """One message's run (``runtime.core.scripting.ScriptSession``). Session values live in the context."""

    def __init__(self, scripts: QuickJsWorkflowScripts, ctx: SessionContext, state: ScriptState) -> None:
        self._scripts = scripts
        self._ctx_json = ""
        self._context = ctx
        self._begin(state)

    def _begin(self, state: ScriptState) -> None:
        c = self._context
        payload = {
            "device": {
                "id": c.device_id,
                "name": c.device_name,
                "config": c.device_configuration,
                "type": c.device_type,
                "message": c.message_id,
            },
            "inputs": dict(c.inputs),
            "command": dict(c.command) if c.command is not None else None,
            "s": _state_payload(state),
        }
        s = self._scripts
        s._js("session", s._begin, _dumps(payload))
        if s._stream_calls.used:
            s._stream_calls.take()  # calls left by a hook that failed belong to no message
        s._active = self
        self._synced = state.version

    def call(self, hook: str, args: Sequence[Any], state: ScriptState) -> HookEffects:
        s = self._scripts
        if s._active is not self:  # another session ran in between (or the last call failed): start again
            self._begin(state)
        state_json = "" if state.version == self._synced else _dumps(_state_payload(state))
        raw = s._js(hook, s._call, hook, _dumps(list(args)), state_json)
        out = orjson.loads(raw)
        stream_writes = s._stream_calls.take() if s._stream_calls.used else []
        if "x" in out:
            s._active = None
            s._fail(hook, out["x"])
        changed: frozenset[str] = frozenset()
        if "s" in out:
            st = out["s"]
            changed = frozenset(st["dirty"])
            state.attributes = st["attributes"]
            state.properties = st["properties"]
            state.property_bag = st["property_bag"]
            loc = st["location"]
            state.location = (float(loc[0]), float(loc[1])) if loc is not None else None
            state.version += 1
        self._synced = state.version
        return HookEffects(
            value=out["v"],
            commands=[(k, f) for k, f in out["c"]],
            events=[(m, e, v) for m, e, v in out["e"]],
            logs=out["o"],
            warnings=out["w"],
            state_changed=changed,
            stream_writes=stream_writes,
        )


# --------------------------------------------------------------------------- building from a solution


def _has_code(source: str | None) -> bool:
    return bool(source and source.strip())


def workflow_hooks(doc: SolutionDocument | None, workflow: Workflow) -> dict[str, tuple[str, str]]:
    """Every script a workflow may run: hook name -> (source, function name). Empty scripts are left out.

    The function name is NuvIoT's documented one, or for the hooks named by this runtime the one function a
    script declares when it does not define ours (``runtime.core.script_functions``)."""
    hooks: dict[str, tuple[str, str]] = {}

    def add(name: str, source: str | None, function: str) -> None:
        if source is not None and _has_code(source):
            # onEnter, onTransition, map, evaluate: the script's one function when it lacks ours (validate: PYRT2095)
            hooks[name] = (source, hook_function(source, function).name)

    add(PRE_HANDLER, workflow.pre_handler_script, "preHandler")
    add(POST_HANDLER, workflow.post_handler_script, "postHandler")
    for i in workflow.inputs:
        add(hook_input_on_set(i.key), i.on_set_script, "onSet")
    for a in workflow.attributes:
        add(hook_attribute_on_set(a.key), a.on_set_script, "onSet")
    for ic in workflow.input_commands:
        add(hook_on_arrive(ic.key), ic.on_arrive_script, "onArrive")
    for oc in workflow.output_commands:
        add(hook_on_execute(oc.key), oc.on_execute_script, "onExecute")
    for m in workflow.state_machines:
        for st in m.states:
            for t in st.transitions:
                add(hook_on_transition(m.key, st.key, t.event), t.on_transition_script, "onTransition")
            add(hook_transition_in(m.key, st.key), st.transition_in_action, "onEnter")
    for r in workflow.business_rules:
        if r.is_enabled:  # a disabled rule has no hook, so the run passes it by
            add(hook_business_rule(r.key), r.script, "evaluate")
    for hook, source in connection_scripts(workflow).items():
        add(hook, source, "map")
    if doc is not None:
        for key in outgoing_messages_of(doc, workflow.key):
            msg = doc.message_by_key.get(key)
            if msg is not None:
                add(hook_output_message(key), msg.output_message_script, "getOutputMessage")
    return hooks


def outgoing_messages_of(doc: SolutionDocument, workflow_key: str) -> list[str]:
    """Keys of the outgoing messages that routes map this workflow's output commands to."""
    keys: list[str] = []
    for dc in doc.solution.device_configurations:
        for route in dc.routes:
            for step in route.steps:
                if step.type is not PipelineModuleType.WORKFLOW or step.module != workflow_key:
                    continue
                for conn in (step.next, *step.secondary):
                    if conn is None:
                        continue
                    for mapping in conn.mappings.values():
                        if isinstance(mapping, OutputCommandMapping) and mapping.outgoing_message not in keys:
                            keys.append(mapping.outgoing_message)
    return keys


def build_workflow_scripts(
    doc: SolutionDocument | None,
    workflow: Workflow,
    *,
    time_limit_ms: float = DEFAULT_TIME_LIMIT_MS,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
) -> QuickJsWorkflowScripts | None:
    """The compiled scripts of ``workflow``, or None when it has no script at all (then no JS ever runs)."""
    hooks = workflow_hooks(doc, workflow)
    if not hooks:
        return None
    scripts = QuickJsWorkflowScripts(
        workflow.key,
        hooks,
        commands={oc.key: [p.key for p in oc.parameters] for oc in workflow.output_commands},
        machines=[m.key for m in workflow.state_machines],
        time_limit_ms=time_limit_ms,
        memory_limit_bytes=memory_limit_bytes,
    )
    return scripts if scripts.hooks else None


def build_solution_scripts(
    doc: SolutionDocument,
    *,
    time_limit_ms: float = DEFAULT_TIME_LIMIT_MS,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
) -> dict[str, QuickJsWorkflowScripts]:
    """Scripts of every workflow that has any, by workflow key. Raises ``SolutionError`` with all bad scripts."""
    out: dict[str, QuickJsWorkflowScripts] = {}
    problems: list[Problem] = []
    for wf in doc.workflows:
        try:
            scripts = build_workflow_scripts(
                doc, wf, time_limit_ms=time_limit_ms, memory_limit_bytes=memory_limit_bytes
            )
        except SolutionError as exc:
            problems.extend(exc.problems)
            continue
        if scripts is not None:
            out[wf.key] = scripts
    if problems:
        raise SolutionError(problems)
    return out
