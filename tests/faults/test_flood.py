"""A flood beyond capacity: back-pressure, counted refusals, bounded memory, /health keeps answering.

- Against the real daemon: an MQTT QoS 0 flood (hand-built packets, far faster than the pipeline) and a
  REST flood (many concurrent aiohttp clients) at once. The listener stops reading while the intake is
  a quarter full (TCP pushes back on the broker), the worker waits while the store is behind: intake and
  store queue stay within their bounds, RSS stays bounded, /health answers throughout, and every message
  taken in is accounted for (processed, failed or counted as refused).
- In process: a REST listener whose intake is full answers 503 with Retry-After and counts each refusal.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bench.harness import rss_mb
from runtime.adapters.listeners.rest import RestListener
from runtime.core.messages import MessageRecord, PemStatus
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.faults.conftest import PublisherThread, bench_daemon, listener_state, provision, wait_until
from tests.support.daemon import REPO
from tests.support.mosquitto import Mosquitto

N_MQTT = 120_000
N_REST = 4_000
RSS_LIMIT_MB = 250


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_mqtt_and_rest_flood_is_bounded_and_health_answers(own_mosquitto: Mosquitto, tmp_path: Path) -> None:
    d = bench_daemon(tmp_path / "data", own_mosquitto)
    with d:
        d.wait_state("Running", timeout=30)
        provision(d)
        wait_until(lambda: listener_state(d) == "connected", 15, "listener connected")
        st = d.request("GET", "/status")[1]
        rest_port = next(x["port"] for x in st["listeners"] if x["key"] == "restin")
        assert d.proc is not None
        pid = d.proc.pid

        pub = PublisherThread(own_mosquitto, run="fl", n=N_MQTT, qos=0)
        rest = subprocess.Popen([sys.executable, "-m", "bench.rest_load", f"http://127.0.0.1:{rest_port}",
                                 str(N_REST), "200", "20", "flr"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        pub.start()
        worst_health = 0.0
        peak_rss = 0.0
        depths: list[tuple[int, int, int]] = []
        try:
            while pub.is_alive() or rest.poll() is None:
                t0 = time.monotonic()
                assert d.request("GET", "/health", token=None, timeout=5)[0] == 200
                worst_health = max(worst_health, time.monotonic() - t0)
                peak_rss = max(peak_rss, rss_mb(pid))
                status = d.request("GET", "/status", timeout=5)[1]
                depths.append((status.get("intake", {}).get("depth", 0), status["storage"]["queueDepth"],
                               status.get("intake", {}).get("capacity", 10_000)))
                time.sleep(0.2)
        finally:
            pub.join(60)
            out, _ = rest.communicate(timeout=120)
        assert pub.error is None, pub.error
        rest_result = json.loads(out.strip().splitlines()[-1])

        def settled() -> dict | None:
            c = d.request("GET", "/status")[1]["counters"]
            return c if c["received"] == c["processed"] + c["failed"] else None
        counters = wait_until(settled, 120, "every message taken in is processed")
        status = d.request("GET", "/status")[1]
        mqtt = next(x for x in status["listeners"] if x["key"] == "mqttin")
        print(f"flood: health worst {worst_health * 1000:.0f} ms, RSS peak {peak_rss:.0f} MB, "
              f"counters {counters}, mqtt received {mqtt['received']} refused {mqtt['refused']}, "
              f"REST {rest_result['statuses']}, max intake/store depth "
              f"{max(x[0] for x in depths) if depths else 0}/{max(x[1] for x in depths) if depths else 0}")
        assert worst_health < 5.0
        assert peak_rss < RSS_LIMIT_MB
        assert all(depth <= cap for depth, _, cap in depths)
        assert all(store < 20_000 for _, store, _ in depths)  # the writer's high-water mark holds it far below 100k
        assert set(rest_result["statuses"]) <= {"200", "202", "503"}
        assert rest_result["count"] == N_REST
        assert mqtt["received"] + mqtt["refused"] <= N_MQTT
        assert status["state"] == "Running"
        assert d.terminate() == 0


def _record(msg_id: str) -> MessageRecord:
    return MessageRecord(id=msg_id, received_at=time.time(), listener="rl", status=PemStatus.COMPLETED)


async def test_rest_listener_refuses_with_503_when_the_intake_is_full() -> None:
    counters = Counters()
    intake = Intake(4, counters)
    lst = RestListener(Listener(key="rl", listener_type="rest", listen_on_port=0, anonymous=True), port=0,
                       host="127.0.0.1")
    await lst.start(intake)
    try:
        url = f"http://127.0.0.1:{lst.bound_port}/devices/d1/m"
        async with aiohttp.ClientSession() as session:

            async def post(i: int) -> tuple[int, str | None]:
                async with session.post(url, data=b'{"i": %d}' % i) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("Retry-After")

            tasks = [asyncio.ensure_future(post(i)) for i in range(12)]
            for _ in range(500):  # bounded: no worker, so the intake stays full
                if len(intake) + lst.counters["refused"] >= 12:
                    break
                await asyncio.sleep(0.01)
            for msg in await intake.take(10):  # now answer the four that got in, and commit them
                assert msg.done is not None and msg.ack is not None
                msg.done(_record(msg.id))
                msg.ack()
            results = await asyncio.gather(*tasks)
    finally:
        await lst.stop()
    refused = [r for r in results if r[0] == 503]
    assert len(refused) == 8 and all(retry == "1" for _, retry in refused)
    assert sorted(s for s, _ in results if s != 503) == [200] * 4
    assert counters.refused == 8 and counters.received == 4
    assert lst.counters["refused"] == 8
