"""Counters and Prometheus metrics. Per-message counting is plain integer arithmetic on ``Counters``;
Prometheus reads them through a collector at scrape time, so the hot path pays nothing for it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runtime.core.lifecycle import InstanceState


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    refused: int = 0  # intake full or paused: refused at the listener
    by_listener: Counter[str] = field(default_factory=Counter)
    failed_by_stage: Counter[str] = field(default_factory=Counter)
    transmitted: Counter[str] = field(default_factory=Counter)
    transmit_failed: Counter[str] = field(default_factory=Counter)

    def as_status(self) -> dict[str, int]:
        return {
            "received": self.received,
            "processed": self.processed,
            "failed": self.failed,
            "deadLettered": self.dead_lettered,
            "refused": self.refused,
        }


class _CountersCollector(Collector):
    def __init__(self, counters: Counters, gauges: dict[str, callable]) -> None:  # type: ignore[valid-type]
        self._c = counters
        self._gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self._c
        for name, value, doc in (
            ("nuviot_messages_received", c.received, "Device messages taken in by listeners"),
            ("nuviot_messages_processed", c.processed, "Messages whose route completed"),
            ("nuviot_messages_failed", c.failed, "Messages that failed a stage"),
            ("nuviot_messages_dead_lettered", c.dead_lettered, "Failed messages kept as dead letters"),
            ("nuviot_messages_refused", c.refused, "Messages refused at intake (full or not running)"),
        ):
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], value)
            yield fam
        fam = CounterMetricFamily("nuviot_listener_messages", "Messages received per listener", labels=["listener"])
        for key, value in c.by_listener.items():
            fam.add_metric([key], value)
        yield fam
        fam = CounterMetricFamily("nuviot_stage_failures", "Failed messages per stage", labels=["stage"])
        for key, value in c.failed_by_stage.items():
            fam.add_metric([key], value)
        yield fam
        fam = CounterMetricFamily("nuviot_transmitted", "Outgoing messages sent per transmitter", labels=["transmitter"])
        for key, value in c.transmitted.items():
            fam.add_metric([key], value)
        yield fam
        fam = CounterMetricFamily(
            "nuviot_transmit_failures", "Outgoing messages that failed per transmitter", labels=["transmitter"]
        )
        for key, value in c.transmit_failed.items():
            fam.add_metric([key], value)
        yield fam
        for name, fn in self._gauges.items():
            g = GaugeMetricFamily(name, name.replace("_", " "))
            g.add_metric([], float(fn()))
            yield g


class RuntimeMetrics:
    """One registry per runtime (not the process-global one), so tests do not share state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.counters = Counters()
        self._gauges: dict[str, callable] = {}  # type: ignore[valid-type]
        self.registry.register(_CountersCollector(self.counters, self._gauges))
        self.state = Gauge(
            "nuviot_instance_state", "1 for the current instance state", ["state"], registry=self.registry
        )
        self.transitions = PromCounter(
            "nuviot_state_transitions", "Instance state transitions", ["from_state", "to_state"], registry=self.registry
        )
        for s in InstanceState:
            self.state.labels(s.value).set(0)

    def add_gauge(self, name: str, fn: callable) -> None:  # type: ignore[valid-type]
        self._gauges[name] = fn

    def on_transition(self, previous: InstanceState | None, state: InstanceState) -> None:
        if previous is not None:
            self.state.labels(previous.value).set(0)
        self.state.labels(state.value).set(1)
        self.transitions.labels(previous.value if previous else "", state.value).inc()
