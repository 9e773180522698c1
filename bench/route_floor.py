"""How far the general pipeline is from this route's own work: ``python -m bench.route_floor [-n 20000]``.

Times, in the same process and interleaved (CPU time, the best of ``--reps``), per message of
``bench/solution.yaml``'s route with 1,000 devices:

- ``dispatcher``: ``Dispatcher.handle`` on the general path (planner -> sentinel -> translator -> workflow ->
  record; ``compiled_routes=False``, as ``NUVIOT_COMPILED_ROUTES=0`` runs it) and the writer's ``batch.prepare``
  (rows for the record and the coalesced device state), as the daemon runs them;
- ``compiled``: ``Dispatcher.handle`` taking the route compiled at solution load (``core/pipeline/compiled.py``,
  the daemon's default), and the same rows;
- ``straight``: the same outcome written by hand for this one route (one JSON decode, the topic's device id,
  the four typed values, the attributes and the ``mode`` machine, a ``MessageRecord`` and the device state),
  and the same rows. No generality, no error handling beyond what the happy path needs.

The gap between ``dispatcher`` and ``straight`` is what a route compiled once per solution load could at most
remove from the event loop thread; ``compiled`` is what it does remove. ``docs/performance.md`` reads it.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from typing import Any

import orjson

from bench.dispatch_micro import SOLUTION, Best, _Registry, _Sink, fresh_inputs
from runtime.adapters.storage.batch import prepare
from runtime.adapters.storage.items import Item, Limits
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage, MessageRecord, PemStatus
from runtime.core.solution.loader import load_solution_report
from runtime.services.dataplane import GC_THRESHOLDS
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters

TRANSITIONS = {"automatic": {"manual": "manualmode"}, "manualmode": {"auto": "automatic"}}


def straight(msg: InboundMessage, devices: dict[str, Device], out: list[Item]) -> None:
    started = time.perf_counter()
    p = orjson.loads(msg.payload)
    device_id = (msg.topic or "").split("/")[1]
    device = devices[device_id]
    temperature, humidity, ts, mode = float(p["temperature"]), int(p["humidity"]), float(p["ts"]), p["mode"]
    if not (math.isfinite(temperature) and math.isfinite(ts)):
        raise ValueError("not finite")
    attributes = dict(device.attributes)
    attributes["temperature"], attributes["humidity"], attributes["sentat"] = temperature, humidity, ts
    machines = dict(device.state_machines)
    new_state = TRANSITIONS[machines.get("mode", "automatic")].get(mode)
    if new_state is not None:
        machines["mode"] = new_state
    updated = device.copy()
    updated.attributes, updated.state_machines = attributes, machines
    updated.updated_at = updated.last_seen = time.time()
    devices[device_id] = updated
    out.append(updated)
    out.append(MessageRecord(msg.id, msg.received_at, msg.listener, PemStatus.COMPLETED, device_id, p["seq"], None,
                             None, (time.perf_counter() - started) * 1000.0, msg.kind))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    n, nd = args.n, args.devices
    doc = load_solution_report(SOLUTION.read_bytes(), source=str(SOLUTION), env=dict(os.environ)).document
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # as the daemon runs
    now = time.time()
    best = Best(n)

    def fresh() -> tuple[dict[str, Device], list[InboundMessage]]:
        return fresh_inputs(n, nd, now)

    for _ in range(args.reps):
        for name, compiled in (("dispatcher", False), ("compiled", True)):
            devices, msgs = fresh()
            sink = _Sink()
            counters = Counters()
            d = Dispatcher(doc, _Registry(devices, sink), sink, counters, build_engines(doc, {}), {},
                           compiled_routes=compiled)
            t0 = time.process_time()
            for i in range(0, n, 256):
                d.process(msgs[i:i + 256])
            t1 = time.process_time()
            assert counters.compiled == (n if compiled else 0), counters
            items: list[Item] = []
            for device, rec in zip(sink.devices, sink.records, strict=True):
                items += (device, rec)
            t2 = time.process_time()
            for i in range(0, len(items), 500):
                prepare(items[i:i + 500], Limits())
            t3 = time.process_time()
            best.note(name, t1 - t0)
            best.note(f"{name} rows", t3 - t2)
        devices, msgs = fresh()
        out: list[Item] = []
        t0 = time.process_time()
        for msg in msgs:
            straight(msg, devices, out)
        t1 = time.process_time()
        for i in range(0, len(out), 500):
            prepare(out[i:i + 500], Limits())
        t2 = time.process_time()
        best.note("straight", t1 - t0)
        best.note("straight rows", t2 - t1)
    result: dict[str, Any] = {k: round(v, 2) for k, v in best.us.items()}
    print(f"dispatcher.handle {result['dispatcher']:6.2f} us/msg, rows (batch.prepare) {result['dispatcher rows']:5.2f}")
    print(f"compiled route    {result['compiled']:6.2f} us/msg, rows (batch.prepare) {result['compiled rows']:5.2f}")
    print(f"straight          {result['straight']:6.2f} us/msg, rows (batch.prepare) {result['straight rows']:5.2f}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
