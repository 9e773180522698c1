"""The REST listener on a real aiohttp server (port 0), with an Intake and a stand-in worker.

The stand-in plays the dispatcher's part: it takes a message, optionally answers on the original-listener
channel, and finishes the record, so the listener's status codes and keep-alive replies can be checked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from runtime.adapters.httpsite import BasicCredentials
from runtime.adapters.listeners.rest import RestListener
from runtime.core.errors import ListenerBindError
from runtime.core.messages import InboundMessage, MessageRecord, OutgoingMessage, PemStatus
from runtime.core.solution.enums import ListenerType, RestServerType
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters


def config(**kw: Any) -> Listener:
    base: dict[str, Any] = {"key": "restin", "listener_type": ListenerType.REST, "listen_on_port": 0,
                            "rest_server_type": RestServerType.HTTP, "keep_alive_to_send_reply": True}
    base.update(kw)
    return Listener.model_validate(base)


Outcome = Callable[[InboundMessage], MessageRecord]


def completed(msg: InboundMessage) -> MessageRecord:
    return MessageRecord(id=msg.id, received_at=msg.received_at, listener=msg.listener, status=PemStatus.COMPLETED)


@asynccontextmanager
async def serving(listener: RestListener, outcome: Outcome = completed,
                  reply: bytes | None = None, commits: bool = True) -> AsyncIterator[tuple[str, Intake, list[InboundMessage]]]:
    intake = Intake(100, Counters())
    seen: list[InboundMessage] = []

    async def worker() -> None:
        while batch := await intake.take(10):
            for msg in batch:
                seen.append(msg)
                if reply is not None and msg.reply is not None:
                    msg.reply.send(OutgoingMessage(message_key="ack", message_id="ack", device_id="d",
                                                   payload=reply, content_type="application/json"))
                assert msg.done is not None
                record = outcome(msg)
                msg.done(record)
                if msg.ack is not None and record.status is not PemStatus.FAILED and commits:
                    msg.ack()  # the store's commit

    await listener.start(intake)
    task = asyncio.create_task(worker())
    try:
        yield f"http://127.0.0.1:{listener.status()['port']}", intake, seen
    finally:
        await listener.stop()
        intake.close()
        await asyncio.wait_for(task, 5)


async def post(url: str, data: bytes = b"{}", **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, data=data, **kw) as resp:
        body = await resp.read()
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, body


async def test_message_fields_and_the_keep_alive_reply() -> None:
    async with serving(RestListener(config(), host="127.0.0.1"), reply=b'{"ok":1}') as (url, _, seen):
        code, body = await post(url + "/sensor/d1/motion?x=1", b'{"a": 2}', headers={"X-Device": "d1"})
    assert (code, body) == (200, {"ok": 1})
    msg = seen[0]
    assert (msg.path, msg.method, msg.payload, msg.query["x"], msg.headers["x-device"]) == (
        "/sensor/d1/motion", "POST", b'{"a": 2}', "1", "d1")


async def test_without_keep_alive_the_outcome_is_still_answered() -> None:
    listener = RestListener(config(keep_alive_to_send_reply=False), host="127.0.0.1")
    async with serving(listener, reply=b"ignored") as (url, _, seen):
        code, body = await post(url + "/x")
    assert code == 200 and body["status"] == "Completed" and body["messageId"] == seen[0].id
    assert seen[0].reply is None  # no original-listener channel without keep-alive


@pytest.mark.parametrize(("stage", "error", "status"), [
    ("planner", "CouldNotFindDevice: no such device", 404),
    ("planner", "CouldNotDetermineDeviceId: no id", 400),
    ("sentinel", "unauthorized_device: wrong key", 401),
    ("inputtranslator", "invalid_json: body is not JSON", 400),
    ("workflow", "script_timeout: onSet ran past 50 ms", 422),
    ("workflow", "internal_error: KeyError", 500),
])
async def test_failed_records_become_4xx_naming_stage_and_code(stage: str, error: str, status: int) -> None:
    def failed(msg: InboundMessage) -> MessageRecord:
        return MessageRecord(id=msg.id, received_at=0, listener="restin", status=PemStatus.FAILED, stage=stage,
                             error=error)

    async with serving(RestListener(config(), host="127.0.0.1"), failed) as (url, _, _seen):
        code, body = await post(url + "/x")
    assert code == status
    assert body["error"]["stage"] == stage and body["error"]["code"] == error.split(":")[0]


async def test_basic_auth_when_not_anonymous() -> None:
    listener = RestListener(config(anonymous=False, user_name="dev", password=SecretStr("s3cret")),
                            host="127.0.0.1")
    async with serving(listener) as (url, _, seen):
        assert (await post(url + "/x"))[0] == 401
        assert (await post(url + "/x", headers={"Authorization": BasicCredentials("dev", "nope").header()}))[0] == 401
        assert (await post(url + "/x", headers={"Authorization": "Basic !!notbase64"}))[0] == 401
        good = {"Authorization": BasicCredentials("dev", "s3cret").header()}
        assert (await post(url + "/x", headers=good))[0] == 200
    assert len(seen) == 1 and listener.status()["unauthorized"] == 3


async def test_body_over_the_cap_is_refused_and_the_listener_goes_on() -> None:
    listener = RestListener(config(max_message_size=1024), host="127.0.0.1")
    async with serving(listener) as (url, _, seen):
        code, body = await post(url + "/x", b"x" * 5000)
        assert code == 413 and body["error"]["code"] == "payload_too_large"
        assert (await post(url + "/x", b"small"))[0] == 200
    assert [m.payload for m in seen] == [b"small"]


async def test_paused_intake_answers_503_with_retry_after() -> None:
    listener = RestListener(config(), host="127.0.0.1")
    async with serving(listener) as (url, intake, seen):
        intake.stop_accepting()
        async with aiohttp.ClientSession() as session, session.post(url + "/x", data=b"{}") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert seen == [] and listener.status()["refused"] == 1


async def test_port_in_use_is_a_bind_error_naming_the_listener() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        listener = RestListener(config(), port=port, host="127.0.0.1")
        with pytest.raises(ListenerBindError) as info:
            await listener.start(Intake(10, Counters()))
    assert info.value.key == "restin" and info.value.port == port
    assert listener.status()["state"] == "failed"


async def test_a_message_whose_record_is_not_committed_gets_no_2xx() -> None:
    """Issue 18: nothing is acknowledged that is not committed; a REST 2xx waits for the record's commit."""
    listener = RestListener(config(keep_alive_to_send_reply_timeout_ms=300), host="127.0.0.1")
    async with serving(listener, commits=False) as (url, _, seen):
        code, body = await post(url + "/sensor/d1/motion", b'{"a": 1}')
    assert len(seen) == 1
    assert code == 503 and body["error"]["code"] == "not_stored"
    assert listener.counters["notStored"] == 1
