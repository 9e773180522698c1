"""Micro-benchmark: MQTT messages/s from a broker into the data plane's Intake (not a test).

Starts its own mosquitto on a free port (``max_queued_messages`` high, from ``tests/support``), then,
in the same run and against the same broker, measures:

- ``bare``: a bare aiomqtt subscriber, ``async for message in client.messages: count += 1``;
- ``listener``: ``MqttClientListener`` offering every message to an ``Intake`` that a stand-in worker
  drains in batches (``intake.take(256)``), as the data plane does; on its fast path, then on the plain-aiomqtt
  fallback (``fast_path=False``, what ``mqtt_fastpath.py`` falls back to).

The publisher is a paho client in a separate process (QoS 0, ``-n`` messages of ``-s`` bytes). The rate
is counted from the first to the last message received. Usage::

    .venv/bin/python bench/mqtt_intake.py [-n 100000] [-s 64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.adapters.listeners.mqtt import MqttClientListener
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.support.mosquitto import Mosquitto

TOPIC = "bench/dev1/data"


def _publish(host: str, port: int, n: int, size: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    payload = b'{"temp":21.5,"hum":40}'.ljust(size, b" ")
    info = None
    for _ in range(n):
        info = client.publish(TOPIC, payload, qos=0)
    if info is not None:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def _start_publisher(broker: Mosquitto, n: int, size: int) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=_publish, args=(broker.host, broker.port, n, size), daemon=True)
    proc.start()
    return proc


async def _wait_count(get: callable, n: int, within: float) -> tuple[float, float, int]:  # type: ignore[valid-type]
    """Wait until ``get()`` reaches n (or stops moving); return (first_at, last_at, count)."""
    first = last = 0.0
    seen = 0
    deadline = time.perf_counter() + within
    idle_since = None
    while time.perf_counter() < deadline:
        c = get()
        now = time.perf_counter()
        if c and not first:
            first = now
        if c != seen:
            seen, last, idle_since = c, now, None
        elif seen and idle_since is None:
            idle_since = now
        if seen >= n or (idle_since is not None and now - idle_since > 2.0):
            break
        await asyncio.sleep(0.001)
    return first, last, seen


async def bench_bare(broker: Mosquitto, n: int, size: int) -> tuple[float, int]:
    count = 0
    first_at = last_at = 0.0
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-bare") as client:
        await client.subscribe("bench/+/data", qos=0)
        proc = _start_publisher(broker, n, size)

        async def consume() -> None:
            nonlocal count, first_at, last_at
            async for _ in client.messages:
                if not count:
                    first_at = time.perf_counter()
                count += 1
                if count >= n:
                    break
            last_at = time.perf_counter()

        try:
            await asyncio.wait_for(consume(), timeout=120)
        except TimeoutError:
            last_at = time.perf_counter()
        proc.join(30)
    return (count - 1) / (last_at - first_at) if count > 1 else 0.0, count


async def bench_listener(broker: Mosquitto, n: int, size: int, fast_path: bool = True) -> tuple[float, int, int]:
    counters = Counters()
    intake = Intake(10_000, counters)
    taken = 0
    first_at = last_at = 0.0

    async def worker() -> None:
        nonlocal taken, first_at, last_at
        while True:
            batch = await intake.take(256)
            if not batch:
                return
            if not taken:
                first_at = time.perf_counter()
            taken += len(batch)
            last_at = time.perf_counter()
            await asyncio.sleep(0)

    cfg = Listener(
        key="bench",
        listener_type="mqttclient",
        host_name=broker.host,
        connect_to_port=broker.port,
        client_id="bench-listener",
        mqtt_subscriptions=[{"topic": "bench/+/data", "qos": "qos0"}],
    )
    listener = MqttClientListener(cfg, instance_id="bench", clean_session=True, fast_path=fast_path)
    w = asyncio.create_task(worker(), name="bench:worker")
    await listener.start(intake)
    proc = _start_publisher(broker, n, size)
    await _wait_count(lambda: taken + counters.refused, n, 120)
    await listener.stop()
    intake.close()
    await w
    proc.join(30)
    rate = (taken - 1) / (last_at - first_at) if taken > 1 else 0.0
    return rate, taken, counters.refused


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("-s", "--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        for r in range(args.rounds):
            bare, bare_n = await bench_bare(broker, args.n, args.size)
            ours, ours_n, refused = await bench_listener(broker, args.n, args.size)
            plain, plain_n, plain_refused = await bench_listener(broker, args.n, args.size, fast_path=False)
            print(f"round {r + 1}: n={args.n} payload={args.size}B")
            print(f"  bare aiomqtt async-for : {bare:10.0f} msg/s  ({bare_n} received)")
            print(f"  MqttClientListener     : {ours:10.0f} msg/s  ({ours_n} into the intake, {refused} refused)")
            print(f"  same, fast path off    : {plain:10.0f} msg/s  ({plain_n} into the intake, {plain_refused} refused)")
            print(f"  ratio listener/bare    : {ours / bare if bare else float('nan'):10.2f}")
            print(f"  fast path gain         : {ours / plain if plain else float('nan'):10.2f}")


if __name__ == "__main__":
    asyncio.run(main())
