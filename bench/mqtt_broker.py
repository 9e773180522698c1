"""Built-in MQTT broker candidates: messages/s through the broker into the Intake, startup time, QoS 1 loss.

    .venv/bin/python bench/mqtt_broker.py [--messages 20000] [--broker mosquitto|amqtt|both]

amqtt is not a dependency; to measure it, install it somewhere apart and put that on ``AMQTT_PATH``
(``pip install --target /tmp/amqtt_site amqtt==0.12.0``). Devices are played by ``mosquitto_pub -l -q 1``
(a C process, one connection, every stdin line one message), so the publisher costs our loop nothing.
The runtime side is what the listener runs: ``MqttClientListener`` subscribed to ``#`` at QoS 1, acking
each message as soon as it is taken from the Intake (a dispatcher that commits instantly).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.adapters.listeners.mqtt import MqttClientListener
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.support.net import free_port


async def wait_port(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            await w.wait_closed()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def start_mosquitto(port: int, workdir: Path) -> tuple[float, object]:
    conf = workdir / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n"
                    "max_queued_messages 1000000\npersistence false\n")
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("mosquitto", "-c", str(conf), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    await wait_port(port)
    return time.perf_counter() - t0, proc


async def stop_mosquitto(proc: object) -> None:
    proc.terminate()  # type: ignore[attr-defined]
    await proc.wait()  # type: ignore[attr-defined]


async def start_amqtt(port: int, workdir: Path) -> tuple[float, object]:
    sys.path.append(os.environ.get("AMQTT_PATH", "/tmp/amqtt_site"))
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    t0 = time.perf_counter()
    broker = Broker(config)
    await broker.start()
    await wait_port(port)
    return time.perf_counter() - t0, broker


async def stop_amqtt(broker: object) -> None:
    await broker.shutdown()  # type: ignore[attr-defined]


async def run(kind: str, n: int) -> dict[str, float | int | str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        starter, stopper = (start_mosquitto, stop_mosquitto) if kind == "mosquitto" else (start_amqtt, stop_amqtt)
        startup, handle = await starter(port, Path(tmp))
        intake = Intake(100_000, Counters())
        cfg = Listener(key="b", listener_type="mqttclient", host_name="127.0.0.1", connect_to_port=port,
                       mqtt_subscriptions=[{"topic": "#", "qos": "qos1"}], client_id=f"bench-{kind}")
        lst = MqttClientListener(cfg, instance_id="bench")
        await lst.start(intake)
        seen: set[bytes] = set()
        dupes = 0
        pub = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", "dev/1/motion", "-l",
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        assert pub.stdin is not None
        pub.stdin.write(b"".join(b'{"seq":%d}\n' % i for i in range(n)))
        await pub.stdin.drain()
        pub.stdin.close()
        try:
            async with asyncio.timeout(120):
                while len(seen) < n:
                    for m in await intake.take(1000):
                        if m.payload in seen:
                            dupes += 1
                        seen.add(m.payload)
                        if m.ack:
                            m.ack()
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - t0
        await pub.wait()
        await lst.stop()
        await stopper(handle)
    return {"broker": kind, "messages": n, "received": len(seen), "duplicates": dupes,
            "msgs_per_s": round(len(seen) / elapsed), "startup_ms": round(startup * 1000, 1)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--broker", choices=["mosquitto", "amqtt", "both"], default="both")
    args = ap.parse_args()
    kinds = ["mosquitto", "amqtt"] if args.broker == "both" else [args.broker]
    for kind in kinds:
        print(await run(kind, args.messages))


if __name__ == "__main__":
    asyncio.run(main())
