"""The supervisor: owns the instance state (the only writer) and runs boot, pause, start, stop, reload.

Two scopes (STYLE §3): the control plane (admin API, MQTT command channel, store) lives for the whole
process and is owned by ``app``; what starts and stops with the lifecycle is given to the supervisor as
*planes*: the data plane (listeners, intake, worker) runs only while Running; the input-command server
runs from Starting until Stopped, so a Paused instance still serves input commands (CONTRACT §3, §6).

Operations run one at a time on the supervisor's own task. ``control()`` checks the verb against the
table, queues it, and answers once the operation has made its first transition (HTTP 202).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from runtime.core.errors import (
    CommandRefusedError,
    ListenerBindError,
    SolutionError,
    StorageError,
    TransientError,
)
from runtime.core.lifecycle import CODE_BUSY, TRANSITIONS, InstanceState, Verb, check_verb, next_state
from runtime.core.ports import StateChange
from runtime.core.solution.model import SolutionDocument

log = structlog.get_logger(__name__)
S = InstanceState


@dataclass(frozen=True, slots=True)
class LoadedSolution:
    doc: SolutionDocument
    origin: str  # path or URL it came from
    from_cache: bool = False  # the URL was unreachable: this is the last good copy
    version: str | None = None
    loaded_at: float = 0.0
    scripts: Mapping[str, Any] = field(default_factory=dict)  # compiled workflow scripts, by workflow key
    warnings: tuple[str, ...] = ()


class SolutionLoader(Protocol):
    async def load(self) -> LoadedSolution: ...  # raises SolutionError or TransientError

    async def accepted(self, loaded: LoadedSolution) -> None: ...  # keep it as the last good copy


class Plane(Protocol):
    async def start(self) -> None: ...  # raises ListenerBindError when a port cannot be bound

    async def stop(self, deadline: float | None = None) -> None: ...  # stops intake, drains, closes by ``deadline``
    # (event-loop time: the data plane and then the command plane share one stop budget)

    def status(self) -> dict[str, Any]: ...


class PlaneFactory(Protocol):
    def data_plane(self, loaded: LoadedSolution, on_fatal: Callable[[str], None]) -> Plane: ...
    # ``on_fatal(reason)``: the plane cannot go on (e.g. its worker crashed); the instance goes to FatalError

    def command_plane(self, loaded: LoadedSolution) -> Plane | None: ...

    async def solution_changed(self, loaded: LoadedSolution) -> None: ...  # e.g. seed devices, swap caches


class Runtime:
    """Implements ``ControlPort`` for the command channels."""

    def __init__(
        self,
        loader: SolutionLoader,
        planes: PlaneFactory,
        *,
        clock: Callable[[], float] = time.time,
        op_timeout: float = 60.0,
        grace: float = 2.0,
        stop_timeout: float = 7.0,
    ) -> None:
        self._loader = loader
        self._planes = planes
        self._clock = clock
        self._op_timeout = op_timeout
        self._grace = grace
        self._stop_timeout = stop_timeout
        self._state = S.OFFLINE
        self._since = clock()
        self._reason: str | None = None
        self._previous: S | None = None
        self._listeners: list[Callable[[StateChange], None]] = []
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[S] | None, str | None]] = asyncio.Queue()
        self._busy = False
        self.loaded: LoadedSolution | None = None
        self.last_reload: dict[str, Any] | None = None
        self._data: Plane | None = None
        self._commands: Plane | None = None

    # ------------------------------------------------------------------ ControlPort
    @property
    def state(self) -> InstanceState:
        return self._state

    def snapshot(self) -> StateChange:
        return StateChange(at=self._since, previous=self._previous, state=self._state, reason=self._reason)

    def add_state_listener(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        self._listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    async def control(self, verb: Verb) -> InstanceState:
        check_verb(self._state, verb)
        if self._busy:
            raise CommandRefusedError(CODE_BUSY, f"cannot {verb.value}: another operation is in progress")
        self._busy = True
        fut: asyncio.Future[S] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((verb.value, fut, None))
        return await asyncio.shield(fut)

    def report_fatal(self, reason: str) -> None:
        """Called by a plane that cannot go on (e.g. its worker crashed): the instance goes to FatalError."""
        self._queue.put_nowait(("fatal", None, reason))

    def planes_status(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return (
            self._data.status() if self._data is not None else None,
            self._commands.status() if self._commands is not None else None,
        )

    # ------------------------------------------------------------------ main task
    async def run(self, stop: asyncio.Event) -> None:
        """Boot, then serve operations until ``stop`` is set; then drain and stop. Returns when Stopped."""
        self._set(S.STARTING_RUNTIME, "process started")
        op: asyncio.Task[None] | None = asyncio.create_task(self._boot("boot"), name="runtime:op:boot")
        stop_wait = asyncio.create_task(stop.wait(), name="runtime:stop-wait")
        try:
            while True:
                get = asyncio.create_task(self._queue.get(), name="runtime:next-op") if op is None else None
                waiting: set[asyncio.Task[Any]] = {stop_wait}
                waiting.update(t for t in (op, get) if t is not None)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stop_wait in done:
                    if get is not None:
                        get.cancel()
                        await asyncio.gather(get, return_exceptions=True)
                    if op is not None:
                        # let a running operation (a pause, a start) finish briefly, then cancel it: the
                        # shutdown below must still drain and exit within the 10 s budget
                        await asyncio.wait({op}, timeout=self._grace)
                        if not op.done():
                            op.cancel()
                        await asyncio.gather(op, return_exceptions=True)
                    break
                if op is not None and op in done:
                    self._finish_op(op)
                    op = None
                    continue
                if get is not None and get in done:
                    name, fut, reason = get.result()
                    op = asyncio.create_task(self._run_op(name, fut, reason), name=f"runtime:op:{name}")
        finally:
            stop_wait.cancel()
            await asyncio.gather(stop_wait, return_exceptions=True)
            await self._shutdown()

    def _finish_op(self, op: asyncio.Task[None]) -> None:
        if op.cancelled():
            return
        exc = op.exception()
        if exc is not None:
            log.error("operation_crashed", error=repr(exc), exc_info=exc)
            if self._state not in (S.FATAL_ERROR, S.STOPPED) and S.FATAL_ERROR in _allowed(self._state):
                self._set(S.FATAL_ERROR, f"internal error: {exc!r}")

    async def _run_op(self, name: str, fut: asyncio.Future[S] | None, reason: str | None) -> None:
        try:
            if name == "fatal":
                await self._fatal(reason or "fatal error")
            elif name == Verb.PAUSE:
                await self._pause(fut)
            elif name == Verb.START:
                await self._start(fut)
            elif name == Verb.STOP:
                await self._stop(fut, "stop requested")
            elif name == Verb.RELOAD:
                await self._reload(fut)
        finally:
            self._busy = False
            if fut is not None and not fut.done():
                fut.set_result(self._state)

    # ------------------------------------------------------------------ operations
    def _accept(self, fut: asyncio.Future[S] | None) -> None:
        if fut is not None and not fut.done():
            fut.set_result(self._state)

    async def _boot(self, why: str, fut: asyncio.Future[S] | None = None) -> None:
        self._set(S.INITIALIZING, why)
        self._accept(fut)
        try:
            loaded = await asyncio.wait_for(self._loader.load(), timeout=self._op_timeout)
        except SolutionError as exc:
            self._set(S.FAILED_TO_INITIALIZE, f"invalid solution: {exc}")
            return
        except StorageError as exc:  # the store cannot be used: its reason says what to do
            self._set(S.FAILED_TO_INITIALIZE, str(exc))
            return
        except (TransientError, TimeoutError, OSError) as exc:
            self._set(S.FAILED_TO_INITIALIZE, f"solution unavailable: {exc}")
            return
        if await self._adopt(loaded):
            await self._start_planes(starting_commands=True)

    async def _adopt(self, loaded: LoadedSolution) -> bool:
        """Make ``loaded`` current (e.g. seed its devices); False, FailedToInitialize, when the store refuses."""
        self.loaded = loaded
        try:
            await self._planes.solution_changed(loaded)
        except (StorageError, TransientError) as exc:  # e.g. seeding devices on a full disk
            self._set(S.FAILED_TO_INITIALIZE, f"storage unavailable: {exc}")
            return False
        with contextlib.suppress(Exception):
            await self._loader.accepted(loaded)
        return True

    async def _start_planes(self, *, starting_commands: bool, fut: asyncio.Future[S] | None = None) -> None:
        assert self.loaded is not None
        self._set(S.STARTING, f"starting solution {self.loaded.doc.solution.key}")
        self._accept(fut)
        try:
            if starting_commands or self._commands is None:
                self._commands = self._planes.command_plane(self.loaded)
                if self._commands is not None:
                    await self._commands.start()
            self._data = self._planes.data_plane(self.loaded, self.report_fatal)
            await self._data.start()
        except ListenerBindError as exc:
            await self._stop_planes(commands=True)
            self._set(S.FAILED_TO_START, str(exc))
            return
        except Exception as exc:
            log.error("start_failed", error=repr(exc), exc_info=exc)
            await self._stop_planes(commands=True)
            self._set(S.FAILED_TO_START, f"could not start: {exc!r}")
            return
        self._set(S.RUNNING, "listeners started")  # up or still connecting: /ready says which

    async def _stop_planes(self, *, commands: bool) -> None:
        # A plane is forgotten only once its stop() returned: if this is cancelled half-way (a signal
        # during a pause), the shutdown that follows stops it again (stop() is safe to repeat).
        # One deadline for both planes, so that N listeners and M transmitters stop in ``stop_timeout``.
        deadline = asyncio.get_running_loop().time() + self._stop_timeout
        if self._data is not None:
            try:
                await self._data.stop(deadline)
            except Exception as exc:
                log.error("data_plane_stop_failed", error=repr(exc), exc_info=exc)
            self._data = None
        if commands and self._commands is not None:
            try:
                await self._commands.stop(deadline)
            except Exception as exc:
                log.error("command_plane_stop_failed", error=repr(exc), exc_info=exc)
            self._commands = None

    async def _pause(self, fut: asyncio.Future[S] | None) -> None:
        self._set(S.PAUSING, "pause requested")
        self._accept(fut)
        await self._stop_planes(commands=False)
        self._set(S.PAUSED, "paused: listeners closed, input commands still served")

    async def _start(self, fut: asyncio.Future[S] | None) -> None:
        if self._state.is_error or self.loaded is None:
            await self._boot("start requested", fut)
            return
        await self._start_planes(starting_commands=self._state is S.STOPPED, fut=fut)

    async def _stop(self, fut: asyncio.Future[S] | None, why: str) -> None:
        self._set(S.STOPPING, why)
        self._accept(fut)
        await self._stop_planes(commands=True)
        self._set(S.STOPPED, "stopped: listeners and input commands closed; admin API still up")

    async def _reload(self, fut: asyncio.Future[S] | None) -> None:
        if self._state.is_error:
            await self._boot("reload requested", fut)
            return
        self._accept(fut)  # accepted; the old solution keeps running while the new one is fetched
        started = self._clock()
        try:
            loaded = await asyncio.wait_for(self._loader.load(), timeout=self._op_timeout)
        except (SolutionError, StorageError, TransientError, TimeoutError, OSError) as exc:
            self.last_reload = {"at": started, "ok": False, "error": str(exc)}
            log.warning("reload_rejected", error=str(exc), state=self._state.value)
            return
        self.last_reload = {"at": started, "ok": True, "error": None}
        self._set(S.INITIALIZING, f"reloading solution {loaded.doc.solution.key} {loaded.doc.solution.version}")
        await self._stop_planes(commands=True)
        if await self._adopt(loaded):
            await self._start_planes(starting_commands=True)

    async def _fatal(self, reason: str) -> None:
        if S.FATAL_ERROR not in _allowed(self._state):
            log.error("fatal_error_ignored", reason=reason, state=self._state.value)
            return
        self._set(S.FATAL_ERROR, reason)
        await self._stop_planes(commands=True)

    async def _shutdown(self) -> None:
        if self._state is S.STOPPED:
            return
        self._set(S.STOPPING, "shutdown requested (signal)")
        await self._stop_planes(commands=True)
        self._set(S.STOPPED, "shutdown")

    # ------------------------------------------------------------------ the only writer of the state
    def _set(self, target: InstanceState, reason: str | None) -> None:
        previous = self._state
        if target is previous:
            return
        next_state(previous, target)  # raises IllegalTransitionError: a bug, never silently ignored
        self._previous, self._state, self._since, self._reason = previous, target, self._clock(), reason
        change = StateChange(at=self._since, previous=previous, state=target, reason=reason)
        log.info("state_changed", previous=previous.value, state=target.value, reason=reason)
        for callback in tuple(self._listeners):
            try:
                callback(change)
            except Exception as exc:
                log.error("state_listener_failed", error=repr(exc), exc_info=exc)


def _allowed(state: InstanceState) -> frozenset[InstanceState]:
    return TRANSITIONS[state]


async def wait_for_state(runtime: Runtime, states: set[InstanceState], within: float) -> InstanceState:
    """Test/ops helper: wait (event-driven, no polling) until the runtime is in one of ``states``."""
    if runtime.state in states:
        return runtime.state
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[InstanceState] = loop.create_future()

    def on_change(change: StateChange) -> None:
        if change.state in states and not fut.done():
            fut.set_result(change.state)

    remove = runtime.add_state_listener(on_change)
    try:
        return await asyncio.wait_for(fut, within)
    finally:
        remove()


__all__ = ["LoadedSolution", "Plane", "PlaneFactory", "Runtime", "SolutionLoader", "wait_for_state"]
