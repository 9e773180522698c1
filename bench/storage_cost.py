"""The storage side's CPU per message, per thread: ``python -m bench.storage_cost [-n 40000] [--reps 5]``.

In one process, interleaved, per message of ``bench/solution.yaml``'s route with 1,000 devices:

- ``sink``: ``Dispatcher.process`` with an in-memory sink (records and device states appended to lists);
- ``store``: the same, with a real ``SqliteStore`` on a temporary file as the sink (``record_message``,
  ``save_device_state``), as the daemon runs it: batches of ``--chunk`` messages, the loop yielding between
  them and waiting on ``writable()``, then ``flush``.

Reported (best of ``--reps``, CPU time): the loop thread's us/message with the store and with the sink (their
difference is what storage costs the event loop: queueing, row building, the commit hand-off, freeing the
batch), the SQLite writer thread's us/message, and the writer's mean batch (items per transaction).
No broker: the MQTT side is ``bench.profile``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

from bench.dispatch_micro import SOLUTION, Best, _Registry, _Sink, fresh_inputs
from runtime.adapters.storage.sqlite import Retention, SqliteStore
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage
from runtime.core.solution.loader import load_solution_report
from runtime.services.dataplane import GC_THRESHOLDS
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters

TICK = os.sysconf("SC_CLK_TCK")


def _thread_cpu(prefix: str) -> float:
    """CPU seconds of this process's threads whose Python name starts with ``prefix``."""
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith(prefix) and t.native_id is not None:
            try:
                with open(f"/proc/self/task/{t.native_id}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


class _StoreRegistry(_Registry):
    def __init__(self, devices: dict[str, Device], store: SqliteStore) -> None:
        self._d = devices
        self._store = store

    def state_changed(self, device: Device) -> None:
        self._d[device.device_id] = device
        self._store.save_device_state(device)


async def _with_store(doc: Any, devices: dict[str, Device], msgs: list[InboundMessage], chunk: int,
                      tmp: Path) -> tuple[float, float, float]:
    async with SqliteStore.open(tmp / "runtime.db", retention=Retention()) as store:
        d = Dispatcher(doc, _StoreRegistry(devices, store), store, Counters(), build_engines(doc, {}), {})  # type: ignore[arg-type]
        await store.flush()
        await asyncio.sleep(0)
        w0, b0 = _thread_cpu("sqlite-writer"), getattr(store, "batches", 0)  # absent before issue 17
        t0 = time.thread_time()
        for i in range(0, len(msgs), chunk):
            d.process(msgs[i:i + chunk])
            await asyncio.sleep(0)
            await store.writable()
        await store.flush()
        t1 = time.thread_time()
        w1 = _thread_cpu("sqlite-writer")
        items = 2 * len(msgs)
        batches = getattr(store, "batches", 0) - b0
        return t1 - t0, w1 - w0, items / batches if batches else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=64, help="messages per intake batch (the daemon's vary)")
    args = ap.parse_args()
    n, nd = args.n, args.devices
    doc = load_solution_report(SOLUTION.read_bytes(), source=str(SOLUTION), env=dict(os.environ)).document
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and up
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    now = time.time()
    best = Best(n)
    batch: list[float] = []

    def fresh() -> tuple[dict[str, Device], list[InboundMessage]]:
        return fresh_inputs(n, nd, now)

    with tempfile.TemporaryDirectory(prefix="nuviot-storage-cost-") as tmp:
        for rep in range(args.reps):
            devices, msgs = fresh()
            sink = _Sink()
            d = Dispatcher(doc, _Registry(devices, sink), sink, Counters(), build_engines(doc, {}), {})  # type: ignore[arg-type]
            t0 = time.thread_time()
            for i in range(0, n, args.chunk):
                d.process(msgs[i:i + args.chunk])
            best.note("loop with sink", time.thread_time() - t0)
            del sink, d
            devices, msgs = fresh()
            loop_s, writer_s, per_commit = asyncio.run(_with_store(doc, devices, msgs, args.chunk, Path(tmp) / str(rep)))
            best.note("loop with store", loop_s)
            best.note("writer thread", writer_s)
            batch.append(per_commit)
    result = {k: round(v, 2) for k, v in best.us.items()}
    result["storage on the loop"] = round(best["loop with store"] - best["loop with sink"], 2)
    result["items per commit"] = round(sum(batch) / len(batch), 1)
    result["load"] = round(os.getloadavg()[0], 2)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
