"""SIGTERM with many listeners and busy transmitters stays inside Docker's 10 s (issue 16 item 5, 18 item 6).

20 listeners (REST, raw TCP, WebSocket servers, each with a stalled client) and 10 REST transmitters whose
endpoint never answers, each with a request in flight: one after another at 5 s each this took minutes;
now every stop runs at once under one deadline (``NUVIOT_STOP_TIMEOUT``, 7 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tests.support.daemon import Daemon
from tests.support.intake import until

pytestmark = pytest.mark.e2e

LISTENERS = [
    *({"key": f"rest{i}", "listenerType": "rest", "restListenerType": "pipelinemodule", "restServerType": "http",
       "listenOnPort": 0, "contentType": "json", "anonymous": True} for i in range(7)),
    *({"key": f"tcp{i}", "listenerType": "rawtcp", "listenOnPort": 0, "contentType": "json"} for i in range(7)),
    *({"key": f"ws{i}", "listenerType": "websocket", "listenOnPort": 0, "contentType": "json"} for i in range(6)),
]


def solution(endpoint: str) -> dict:
    transmitters = [f"tx{i}" for i in range(10)]
    return {
        "solution": {
            "key": "many",
            "listeners": LISTENERS,
            "planner": {
                "key": "bodyplanner",
                "deviceIdParsers": [{"key": "d", "searchLocation": "body", "contentType": "json",
                                     "jsonPath": "deviceId"}],
                "messageTypeIdParsers": [{"key": "m", "searchLocation": "body", "contentType": "json",
                                          "jsonPath": "msgid"}],
            },
            "deviceConfigurations": [{
                "key": "meter",
                "routes": [{
                    "key": "reading",
                    "messageDefinition": "reading",
                    "steps": [
                        {"id": "s1", "type": "sentinel", "module": "anon", "next": {"to": "s2"}},
                        {"id": "s2", "type": "inputtranslator", "module": "tr",
                         "next": {"to": "s3", "mappings": {"value": "value"}}},
                        {"id": "s3", "type": "workflow", "module": "wf",
                         "next": {"to": "s4", "mappings": {"ack": {"outgoingMessage": "ack",
                                                                   "fieldMappings": {"value": "value"}}}}},
                        {"id": "s4", "type": "outputtranslator", "module": "out",
                         "secondary": [{"to": f"t{i}", "mappings": {"ack": ""}} for i in range(10)]},
                        *({"id": f"t{i}", "type": "transmitter", "module": key} for i, key in enumerate(transmitters)),
                    ],
                }],
            }],
        },
        "messages": [
            {"key": "reading", "messageId": "reading", "contentType": "json",
             "fields": [{"key": "value", "searchLocation": "body", "jsonPath": "value", "storageType": "integer",
                         "isRequired": True}]},
            {"key": "ack", "messageId": "ack", "messageDirection": "outgoing", "contentType": "json",
             "restMethod": "post", "pathAndQueryString": "/ack", "fields": [{"key": "value", "storageType": "integer"}]},
        ],
        "sentinels": [{"key": "anon"}],
        "inputTranslators": [{"key": "tr"}],
        "outputTranslators": [{"key": "out"}],
        "transmitters": [{"key": key, "transmitterType": "rest", "hostName": endpoint} for key in transmitters],
        "workflows": [{
            "key": "wf",
            "inputs": [{"key": "value", "inputType": "integer",
                        "outgoingConnections": [{"nodeKey": "last", "nodeType": "attribute"}]}],
            "attributes": [{"key": "last", "attributeType": "integer",
                            "outgoingConnections": [{"nodeKey": "ack", "nodeType": "outputcommand"}]}],
            "outputCommands": [{"key": "ack", "parameters": [{"key": "value", "parameterType": "integer"}]}],
        }],
        "devices": [{"deviceId": "m1", "deviceConfiguration": "meter"}],
    }


async def test_sigterm_with_20_listeners_and_10_busy_transmitters_exits_0_within_10_s(tmp_path: Path) -> None:
    arrived = 0
    hang = asyncio.Event()  # never set: the endpoint holds every request

    async def endpoint(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        await hang.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/ack", endpoint)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(solution(f"http://127.0.0.1:{port}")))
    held: list[asyncio.StreamWriter] = []
    try:
        with Daemon(tmp_path / "data", "--solution", str(path), "--input-command-port", "0") as d:
            status = await asyncio.to_thread(d.wait_state, "Running", timeout=60)
            listeners = {lst["key"]: lst["port"] for lst in status["listeners"]}
            assert len(listeners) == 20 and all(lst["state"] == "listening" for lst in status["listeners"])
            for key, lport in listeners.items():  # a stalled client on every listener
                _, writer = await asyncio.open_connection("127.0.0.1", lport)
                if not key.startswith("tcp"):
                    writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nX-Slow:")
                held.append(writer)
            body = json.dumps({"deviceId": "m1", "msgid": "reading", "value": 1}).encode()
            _, writer = await asyncio.open_connection("127.0.0.1", listeners["tcp0"])
            writer.write(body + b"\n")
            held.append(writer)
            await until(lambda: arrived >= 10, within=30)  # every transmitter has a request in flight

            t0 = time.monotonic()
            code = await asyncio.to_thread(d.terminate, 15.0)
            elapsed = time.monotonic() - t0
            assert code == 0
            assert elapsed < 10.0, elapsed
            print(f"SIGTERM to exit: {elapsed:.2f} s")
            events = d.json_lines()
            assert [e.get("state") for e in events if e.get("event") == "state_changed"][-1] == "Stopped"
    finally:
        for writer in held:
            writer.close()
        hang.set()
        await runner.cleanup()
