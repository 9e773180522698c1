"""The broker goes away for a while and comes back.

The MQTT listener and the MQTT command channel reconnect by themselves, the instance stays Running all
along, and no message acknowledged by the runtime is lost. The broker persists its sessions (it is
stopped with SIGTERM and writes its database), so messages it accepted but had not delivered, or
delivered without a PUBACK from us, come after the reconnection: every acknowledged message is recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from tests.faults.conftest import (
    PublisherThread,
    bench_daemon,
    listener_state,
    provision,
    recorded,
    wait_until,
)
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

N = 4000


def command_channel(d: Daemon) -> dict:
    code, st = d.request("GET", "/status", timeout=3)
    return st.get("commandChannel", {}) if code == 200 else {}


def test_broker_outage_reconnects_and_loses_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    data = tmp_path / "data"
    db = data / "runtime.db"
    d = bench_daemon(data, broker, "--control-mqtt", broker.url)
    try:
        with d:
            d.wait_state("Running", timeout=30)
            provision(d)
            wait_until(lambda: listener_state(d) == "connected", 15, "listener connected")
            wait_until(lambda: command_channel(d).get("connected"), 15, "command channel connected")

            before = PublisherThread(broker, run="a", n=N, qos=1, rate=2000.0)
            before.start()
            before.join(60)
            assert before.error is None and before.result is not None and before.result.acked == N
            broker.stop()  # while the daemon is still working through the stream
            down_at = time.monotonic()
            wait_until(lambda: listener_state(d) in ("disconnected", "connecting"), 15, "listener sees the outage")
            wait_until(lambda: not command_channel(d).get("connected"), 15, "command channel sees the outage")
            states = set()
            while time.monotonic() - down_at < 3.0:  # the broker stays away for a while
                states.add(d.request("GET", "/status", timeout=3)[1]["state"])
                assert d.request("GET", "/health", token=None, timeout=3)[0] == 200
                time.sleep(0.2)
            assert states == {"Running"}

            broker.start()  # same port, its persisted sessions back
            wait_until(lambda: listener_state(d) == "connected", 30, "listener reconnected")
            wait_until(lambda: command_channel(d).get("connected"), 30, "command channel reconnected")
            after = PublisherThread(broker, run="b", n=N // 4, qos=1)
            after.start()
            after.join(60)
            assert after.error is None and after.result is not None and after.result.acked == N // 4
            wait_until(lambda: len(recorded(db, "a")) >= N and len(recorded(db, "b")) >= N // 4, 60,
                       "every acknowledged message recorded", every=0.25)
            assert d.request("GET", "/status")[1]["state"] == "Running"
            reply = asyncio.run(_control_over_mqtt(broker, d.token))  # the command channel answers again
            assert reply.get("requestId") == "r1", reply
            assert d.terminate() == 0
    finally:
        broker.stop()
    for run, n in (("a", N), ("b", N // 4)):
        got = recorded(db, run)
        assert {f"{run}-{i}" for i in range(n)} <= set(got), f"run {run}: {n - len(got)} lost"


async def _control_over_mqtt(broker: Mosquitto, token: str) -> dict:
    """``start`` while Running (refused, 409-like): the reply shows the channel serves commands again."""
    base = "nuviot/instances/bench/control/start"
    async with aiomqtt.Client(broker.host, broker.port, identifier="faults-operator") as client:
        await client.subscribe(base + "/reply", qos=1)
        await client.publish(base, json.dumps({"token": token, "requestId": "r1"}), qos=1)
        async with asyncio.timeout(10):
            async for m in client.messages:
                reply = json.loads(m.payload)  # type: ignore[arg-type]
                if reply.get("requestId") == "r1":
                    return reply
    return {}
