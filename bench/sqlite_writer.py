"""Rows/s of batched ``SqliteStore.record_message`` on a real file (not part of the tests).

    .venv/bin/python bench/sqlite_writer.py [--rows 200000] [--batch-size 500] [--devices 1000] [--failed-every 0]

The producer offers records as fast as it can in chunks (yielding to the loop between chunks, like a
data plane would), then flushes; rows/s counts committed rows over the whole run, flush included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from pathlib import Path

from runtime.adapters.storage.sqlite import Retention, SqliteStore
from runtime.core.messages import MessageRecord, PemStatus


def _record(i: int, failed_every: int, devices: int) -> MessageRecord:
    failed = failed_every > 0 and i % failed_every == 0
    return MessageRecord(
        id=os.urandom(16).hex(),
        received_at=time.time(),
        listener="mqtt1",
        status=PemStatus.FAILED if failed else PemStatus.COMPLETED,
        device_id=f"dev{i % devices:06d}",
        message_id="motion",
        stage="sentinel" if failed else None,
        error="unauthorized_device: bad key" if failed else None,
        processing_ms=0.42,
        payload=b'{"motion": true}' if failed else None,
        topic="nuviot/dev/motion" if failed else None,
        headers={"content-type": "application/json"} if failed else None,
    )


async def _watch_loop_lag(worst: list[float]) -> None:
    """How late a 5 ms timer fires: what the writer costs the rest of the event loop."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], time.perf_counter() - t - 0.005)


async def run(rows: int, batch_size: int, failed_every: int, chunk: int, devices: int) -> None:
    records = [_record(i, failed_every, devices) for i in range(rows)]
    gc.collect()
    gc.freeze()  # the bench's pre-built records are not the writer's garbage: keep full GCs out of the lag
    with tempfile.TemporaryDirectory() as tmp:
        retention = Retention(messages=None, deadletters=None)
        async with SqliteStore.open(
            Path(tmp) / "runtime.db", batch_size=batch_size, queue_size=rows + 1, retention=retention
        ) as store:
            lag = [0.0]
            ticker = asyncio.create_task(_watch_loop_lag(lag), name="bench:lag")
            started = time.perf_counter()
            for start in range(0, rows, chunk):
                for rec in records[start : start + chunk]:
                    store.record_message(rec)
                await asyncio.sleep(0)
            offered = time.perf_counter() - started
            await store.flush()
            elapsed = time.perf_counter() - started
            written = store.written["message"]
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        print(
            f"rows={written} batch_size={batch_size} devices={devices} elapsed={elapsed:.2f}s "
            f"rows/s={written / elapsed:,.0f} (offering took {offered * 1e3:.0f} ms; dropped={store.dropped_total}; "
            f"max event-loop lag {lag[0] * 1e3:.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--failed-every", type=int, default=0, help="every Nth record is a dead letter")
    parser.add_argument("--devices", type=int, default=1000, help="distinct device ids")
    parser.add_argument("--chunk", type=int, default=100, help="records offered between loop yields")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.batch_size, args.failed_every, args.chunk, args.devices))


if __name__ == "__main__":
    main()
