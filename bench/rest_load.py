"""REST load generator: aiohttp clients (keep-alive) in one process (uvloop). ``wrk`` is used by nobody.

``python -m bench.rest_load URL_PREFIX N CONCURRENCY DEVICES RUN``: N POSTs of the benchmark payload to
``URL_PREFIX/bench/<device>/rest`` from CONCURRENCY clients, each waiting for its answer (the REST listener
answers once the message is processed). Prints one JSON line: count, seconds, status histogram,
latency p50/p99 in ms.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp

from bench.publisher import device_of, payload


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main(prefix: str, n: int, concurrency: int, devices: int, run: str) -> dict:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    next_i = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            body = payload(run, i, time.time(), devices)
            t0 = time.perf_counter()
            try:
                async with session.post(f"{prefix}/bench/{device_of(i, devices)}/rest", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000.0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return {"count": sum(statuses.values()), "seconds": seconds, "statuses": dict(statuses),
            "p50_ms": pct(latencies, 0.50), "p99_ms": pct(latencies, 0.99)}


if __name__ == "__main__":
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    prefix, n, conc, devices, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    print(json.dumps(runner(main(prefix, n, conc, devices, run))), flush=True)
