"""The baseline: a bare aiomqtt subscriber in one Python process (uvloop, like the daemon).

``python -m bench.baseline HOST PORT TOPIC QOS N``: prints ``ready`` once subscribed, then counts
messages (``async for message in client.messages: count += 1``) until N arrive or none for 3 s, and
prints one JSON line ``{"count", "first_at", "last_at"}`` (epoch seconds of the first and last message).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiomqtt


async def main(host: str, port: int, topic: str, qos: int, n: int) -> None:
    count = 0
    first_at = last_at = 0.0
    async with aiomqtt.Client(host, port, identifier=f"bench-baseline-{qos}", clean_session=True) as client:
        await client.subscribe(topic, qos=qos)
        print("ready", flush=True)

        async def consume() -> None:
            nonlocal count, first_at, last_at
            async for _ in client.messages:
                if not count:
                    first_at = time.time()
                count += 1
                last_at = time.time()
                if count >= n:
                    return

        task = asyncio.ensure_future(consume())
        while not task.done():
            before = count
            await asyncio.wait({task}, timeout=3.0 if count else 60.0)
            if count == before:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    print(json.dumps({"count": count, "first_at": first_at, "last_at": last_at}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    host, port, topic, qos, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    runner(main(host, port, topic, qos, n))
