"""Micro-benchmark: the dispatcher alone (planner -> translator -> workflow -> record), per message.

No broker, no database: ``Dispatcher.handle`` on ``bench/solution.yaml`` with in-memory stand-ins, and the
writer's row building (``rows.message_params``/``device_params``) timed apart. Usage::

    .venv/bin/python -m bench.dispatch_micro [-n 100000]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from bench.publisher import device_of, payload
from runtime.adapters.storage import rows
from runtime.core.devices import Device
from runtime.core.messages import InboundMessage
from runtime.core.solution.loader import load_solution_report
from runtime.services.dispatcher import Dispatcher, build_engines
from runtime.services.metrics import Counters

SOLUTION = Path(__file__).resolve().parent / "solution.yaml"


class _Sink:
    def __init__(self) -> None:
        self.records: list = []
        self.devices: list = []

    def record_message(self, rec, on_commit=None) -> None:
        self.records.append(rec)

    def save_device_state(self, device) -> None:
        self.devices.append(device)


class _Registry:
    def __init__(self, devices: dict[str, Device], sink: _Sink) -> None:
        self._d = devices
        self._sink = sink

    def get(self, device_id: str) -> Device | None:
        return self._d.get(device_id)

    def state_changed(self, device: Device) -> None:
        self._d[device.device_id] = device
        self._sink.save_device_state(device)


def fresh_inputs(n: int, nd: int, now: float) -> tuple[dict[str, Device], list[InboundMessage]]:
    """``nd`` new devices and ``n`` of the bench publisher's messages for them (the daemon's listener id)."""
    devices = {device_of(i, nd): Device(device_of(i, nd), "sensor") for i in range(nd)}
    msgs = [InboundMessage("mqttin", payload("m", i, now, nd), f"bench/{device_of(i, nd)}/q0") for i in range(n)]
    return devices, msgs


class Best:
    """The best (lowest) microseconds per message seen for each key, over repeated runs of ``n`` messages."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.us: dict[str, float] = {}

    def note(self, key: str, seconds: float) -> None:
        self.us[key] = min(self.us.get(key, math.inf), seconds / self.n * 1e6)

    def __getitem__(self, key: str) -> float:
        return self.us[key]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=200)
    args = ap.parse_args()
    doc = load_solution_report(SOLUTION.read_bytes(), source=str(SOLUTION), env=dict(os.environ)).document
    sink = _Sink()
    devices = {device_of(i, args.devices): Device(device_of(i, args.devices), "sensor") for i in range(args.devices)}
    d = Dispatcher(doc, _Registry(devices, sink), sink, Counters(), build_engines(doc, {}), {})
    now = time.time()
    msgs = [InboundMessage("mqttin", payload("m", i, now, args.devices), f"bench/{device_of(i, args.devices)}/q0")
            for i in range(args.n)]
    t0 = time.perf_counter()
    for i in range(0, args.n, 256):
        d.process(msgs[i:i + 256])
    t1 = time.perf_counter()
    assert all(r.status.value == "Completed" for r in sink.records[:10]), sink.records[0]
    t2 = time.perf_counter()
    for rec in sink.records:
        rows.message_params(rec)
    t3 = time.perf_counter()
    for dev in sink.devices:
        rows.device_params(dev, now)
    t4 = time.perf_counter()
    n = args.n
    print(f"dispatcher.handle : {(t1 - t0) / n * 1e6:6.1f} us/msg  ({n / (t1 - t0):,.0f} msg/s)")
    print(f"message_params    : {(t3 - t2) / n * 1e6:6.1f} us/msg")
    print(f"device_params     : {(t4 - t3) / n * 1e6:6.1f} us/msg (per save, before coalescing)")


if __name__ == "__main__":
    main()
