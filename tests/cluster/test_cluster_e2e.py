"""The Cluster edition end to end (issue 14): real daemons, 1 ingest + 2 workers, real mosquitto, RabbitMQ
and PostgreSQL. QoS1 readings cluster/{device}/reading {"seq": N}; the records say which reading each was
(the planner's message id is the seq), in the order they were committed.

- every PUBACKed reading has its record, per-device order holds, although a worker is killed (-9) in the
  middle of the readings: the other takes its partitions;
- pause on one replica pauses every replica (the ingest closes its listener), start on another starts all;
- ``/status`` lists the members with their role, state and partitions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.cluster.conftest import amqp_url
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto
from tests.support.rabbitmq import Rabbit

pytestmark = pytest.mark.e2e

PARTITIONS = 8


def replica_env(rabbit: Rabbit, database_url: str, instance_id: str, broker: Mosquitto,
                partitions: int) -> dict[str, str]:
    """What every replica of one test's instance is given: its queue, database, instance id, partitions, broker."""
    return {"NUVIOT_QUEUE_URL": amqp_url(rabbit), "NUVIOT_DATABASE_URL": database_url,
            "NUVIOT_INSTANCE_ID": instance_id, "CLUSTER_INSTANCE": instance_id,
            "NUVIOT_QUEUE_PARTITIONS": str(partitions), "MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port)}


def replica(tmp: Path, name: str, role: str, solution: Path, env: dict[str, str]) -> Daemon:
    return Daemon(tmp / name, "--role", role, "--solution", str(solution), "--input-command-port", "0",
                  env={**env, "MQTT_CLIENT_ID": f"cluster-{name}-{env['NUVIOT_INSTANCE_ID']}"})


async def call(d: Daemon, method: str, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(d.request, method, path)


async def wait_for(what: str, check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within}s (last {last!r})")


async def records(d: Daemon, devices: int = 8) -> list[dict[str, Any]]:
    """Every device's records, each device's oldest (first committed) first."""
    out: list[dict[str, Any]] = []
    for n in range(devices):
        code, body = await call(d, "GET", f"/messages?deviceId=dev{n}&limit=1000")
        assert code == 200, body
        out += reversed(body)
    return out


def per_device(recs: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for r in recs:
        assert r["status"] == "Completed", r
        out[r["deviceId"]].append(int(r["messageId"]))
    return out


def order_holds(seqs: list[int]) -> bool:
    """Committed in the order sent: a redelivered run (after a worker died before its ack) may repeat
    readings already committed, but never puts an older reading after a newer one that was new."""
    high = 0
    for i, s in enumerate(seqs):
        if s > high:
            high = s
        elif s not in seqs[:i]:
            return False  # an older reading seen for the first time after a newer one
    return True


async def publish(host: str, port: int, start: int, count: int, acked: list[int], name: str,
                  devices: int = 8, kill_at: tuple[int, Any] | None = None) -> None:
    async with aiomqtt.Client(host, port, identifier=name) as client:
        for seq in range(start, start + count):
            await client.publish(f"cluster/dev{seq % devices}/reading", json.dumps({"seq": seq}), qos=1)
            acked.append(seq)  # publish() returned: the PUBACK came
            if kill_at is not None and len(acked) == kill_at[0]:
                kill_at[1]()


async def test_ingest_two_workers_order_kill_and_pause(tmp_path: Path, own_mosquitto: Mosquitto, rabbit: Rabbit,
                                                       database_url: str, instance_id: str,
                                                       cluster_solution: Path) -> None:
    env = replica_env(rabbit, database_url, instance_id, own_mosquitto, PARTITIONS)
    ingest = replica(tmp_path, "ingest", "ingest", cluster_solution, env)
    worker_a = replica(tmp_path, "worker-a", "worker", cluster_solution, env)
    worker_b = replica(tmp_path, "worker-b", "worker", cluster_solution, env)
    with ingest, worker_a, worker_b:
        for d in (ingest, worker_a, worker_b):
            await asyncio.to_thread(d.wait_state, "Running", timeout=60)
        for d in (ingest, worker_a, worker_b):
            await wait_for("ready", lambda d=d: _ready(d))

        # members: every replica lists all three, with role and state
        async def three_members() -> list[dict[str, Any]] | None:
            members = (await call(worker_b, "GET", "/status"))[1]["cluster"]["members"]
            return members if len(members) == 3 and {m["state"] for m in members} == {"Running"} else None

        members = await wait_for("three members", three_members)
        assert sorted(m["role"] for m in members) == ["ingest", "worker", "worker"]
        assert {m["state"] for m in members} == {"Running"}

        # readings in; the first worker that holds partitions is killed -9 in the middle of the next run
        acked: list[int] = []
        await publish(own_mosquitto.host, own_mosquitto.port, 1, 200, acked, f"pub1-{instance_id}")
        await wait_for("first 200 records", lambda: _count_at_least(ingest, 200))
        held = {}
        for name, d in (("a", worker_a), ("b", worker_b)):
            held[name] = set((await call(d, "GET", "/status"))[1]["cluster"]["held"])
        assert held["a"] | held["b"], "no worker says it holds a partition"
        assert not held["a"] & held["b"], f"a partition held twice: {held}"
        victim, survivor = (worker_a, worker_b) if held["a"] else (worker_b, worker_a)
        await publish(own_mosquitto.host, own_mosquitto.port, 201, 400, acked, f"pub2-{instance_id}",
                      kill_at=(300, victim.kill))
        assert victim.proc is not None and victim.proc.returncode is not None, "the worker was not killed"

        recs = await wait_for("every acked reading recorded", lambda: _all_recorded(ingest, acked), within=60)
        seqs = per_device(recs)
        for device, got in seqs.items():
            assert order_holds(got), f"{device}: out of order: {got}"
            assert got == sorted(set(got)), f"{device}: recorded twice or out of order: {got}"
        duplicates = len(recs) - len({int(r['messageId']) for r in recs})
        assert duplicates == 0  # what the dead worker committed is not recorded again (docs/cluster.md)
        survivor_held = set((await call(survivor, "GET", "/status"))[1]["cluster"]["held"])
        assert held["a"] | held["b"] <= survivor_held, (held, survivor_held)
        print(f"records {len(recs)} for {len(acked)} readings, duplicates {duplicates}")

        # the device state followed: each device's last reading, read on the ingest (another replica)
        for n in range(8):
            last = max(s for s in acked if s % 8 == n)
            device = await wait_for(f"dev{n} state", lambda n=n, last=last: _device_seq(ingest, f"dev{n}", last))
            assert device["attributes"]["seq"] == last

        # pause on the surviving worker pauses the ingest too (its listener closes); start on the ingest
        assert (await call(survivor, "POST", "/control/pause"))[0] == 202
        for d in (survivor, ingest):
            await asyncio.to_thread(d.wait_state, "Paused", timeout=20)
        before = (await call(ingest, "GET", "/status"))[1]
        assert not [x for x in before["listeners"] if x["key"] == "mqttin"], "the ingest's listener is still open"
        assert (await call(ingest, "GET", "/ready"))[0] == 503
        more: list[int] = []
        await publish(own_mosquitto.host, own_mosquitto.port, 601, 16, more, f"pub3-{instance_id}")
        after = (await call(ingest, "GET", "/status"))[1]
        assert after["counters"]["received"] == before["counters"]["received"]  # nothing taken while Paused
        assert (await call(ingest, "POST", "/control/start"))[0] == 202
        for d in (survivor, ingest):
            await asyncio.to_thread(d.wait_state, "Running", timeout=20)
        # the broker kept the listener's session: what was published while Paused is processed now
        await wait_for("readings after start", lambda: _all_recorded(ingest, acked + more), within=30)

        # SIGTERM: each replica drains and exits 0 within 10 s (Kubernetes' grace period is 20 s)
        for d in (ingest, survivor):
            began = time.monotonic()
            assert await asyncio.to_thread(d.terminate, 10.0) == 0
            assert time.monotonic() - began < 10.0


async def _ready(d: Daemon) -> bool:
    return (await call(d, "GET", "/ready"))[0] == 200


async def _count_at_least(d: Daemon, n: int) -> bool:
    return len(await records(d)) >= n


async def _all_recorded(d: Daemon, acked: list[int]) -> list[dict[str, Any]] | None:
    recs = await records(d)
    seen = {int(r["messageId"]) for r in recs}
    return recs if set(acked) <= seen else None


async def _device_seq(d: Daemon, device_id: str, seq: int) -> dict[str, Any] | None:
    code, body = await call(d, "GET", f"/devices/{device_id}")
    return body if code == 200 and body["attributes"].get("seq") == seq else None
