"""The input-command server's own rules (CONTRACT §6), with a stand-in executor."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from runtime.adapters.command.input_commands import InputCommandServer
from runtime.adapters.httpsite import BasicCredentials
from runtime.core.lifecycle import InstanceState
from runtime.core.messages import MessageRecord, PemStatus
from runtime.services.input_commands import InputCommandRefusedError


class Executor:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run_input_command(self, **kw: Any) -> MessageRecord:
        self.calls.append(kw)
        if kw["command"] == "refuse":
            raise InputCommandRefusedError(400, "invalid_parameter", "parameter level: not a number")
        status = PemStatus.FAILED if kw["command"] == "crash" else PemStatus.COMPLETED
        return MessageRecord(id="m1", received_at=0, listener="inputcommand", status=status, stage="workflow",
                             error="script_error: onArrive, line 2: boom" if status is PemStatus.FAILED else None)


async def call(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def server() -> Any:
    state = {"now": InstanceState.RUNNING}
    executor = Executor()
    srv = InputCommandServer(executor, lambda: state["now"], port=0, host="127.0.0.1",
                             basic_auth=("operator", "pw"))
    await srv.start()
    try:
        yield f"http://127.0.0.1:{srv.port}", state, executor
    finally:
        await srv.stop()


AUTH = {"Authorization": BasicCredentials("operator", "pw").header()}


async def test_accepted_in_running_and_paused_refused_otherwise(server: Any) -> None:
    url, state, executor = server
    code, body = await call("GET", url + "/cfg/route/wf/cmd/dev1?level=3", headers=AUTH)
    assert (code, body) == (202, {"status": "accepted", "messageId": "m1"})
    assert executor.calls[0] == {"device_configuration": "cfg", "route": "route", "workflow": "wf",
                                 "command": "cmd", "device_id": "dev1", "method": "GET",
                                 "query": {"level": "3"}, "body": None}
    state["now"] = InstanceState.PAUSED
    assert (await call("GET", url + "/cfg/route/wf/cmd/dev1", headers=AUTH))[0] == 202
    for refused in (InstanceState.STARTING, InstanceState.PAUSING, InstanceState.STOPPING):
        state["now"] = refused
        code, body = await call("GET", url + "/cfg/route/wf/cmd/dev1", headers=AUTH)
        assert code == 503 and body["error"]["code"] == "not_serving"


async def test_auth_paths_bodies_and_refusals(server: Any) -> None:
    url, _, executor = server
    code, body = await call("GET", url + "/cfg/route/wf/cmd/dev1")
    assert code == 401 and body["error"]["code"] == "unauthorized"
    code, body = await call("GET", url + "/cfg/route/wf/cmd", headers=AUTH)
    assert code == 404 and body["error"]["code"] == "unknown_command"
    code, body = await call("DELETE", url + "/cfg/route/wf/cmd/dev1", data=b'{"a":1}', headers=AUTH)
    assert code == 400 and body["error"]["code"] == "body_not_allowed"
    code, body = await call("POST", url + "/cfg/route/wf/cmd/dev1", data=b"{nope", headers=AUTH)
    assert code == 400 and body["error"]["code"] == "bad_json"
    code, body = await call("POST", url + "/cfg/route/wf/refuse/dev1", json={"level": "x"}, headers=AUTH)
    assert code == 400 and "level" in body["error"]["message"]
    code, body = await call("POST", url + "/cfg/route/wf/crash/dev1", json={}, headers=AUTH)
    assert code == 422 and body["error"] == {"code": "script_error", "message": "onArrive, line 2: boom",
                                             "stage": "workflow"}
    assert [c["command"] for c in executor.calls] == ["refuse", "crash"]
