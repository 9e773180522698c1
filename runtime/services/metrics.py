"""Counters and Prometheus metrics. Per-message counting is plain integer arithmetic on ``Counters``;
Prometheus reads them through a collector at scrape time, so the hot path pays nothing for it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runtime.core.health import HealthEvent
from runtime.core.lifecycle import InstanceState


@dataclass
class ConnectionCounters:
    """What one server port's connection guard did (issue 18 item 5); ``/metrics`` labels them by server."""

    open: int = 0
    accepted: int = 0
    rejected: int = 0  # over the per-port connection cap
    header_timeouts: int = 0  # no whole request head in time (HTTP)
    body_timeouts: int = 0  # the body did not arrive in time (HTTP)
    idle_closed: int = 0  # closed after the keep-alive / idle time with nothing received
    bad_requests: int = 0  # malformed requests and bodies whose Content-Encoding cannot be decoded (400)
    too_large: int = 0  # bodies over the server's size limit (413)


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    refused: int = 0  # intake full or paused: refused at the listener
    compiled: int = 0  # messages a compiled route completed (core/pipeline/compiled.py)
    compiled_fallback: int = 0  # messages the compiled routes handed to the general path
    by_listener: Counter[str] = field(default_factory=Counter)
    failed_by_stage: Counter[str] = field(default_factory=Counter)
    transmitted: Counter[str] = field(default_factory=Counter)
    transmit_failed: Counter[str] = field(default_factory=Counter)
    connections: dict[str, ConnectionCounters] = field(default_factory=dict)
    device_errors_raised: Counter[str] = field(default_factory=Counter)  # per source (core/health.py)
    device_errors_cleared: Counter[str] = field(default_factory=Counter)
    # told of each device error raised or cleared after it is counted (services/health.report_health): the
    # ``/events`` rows and the cloud mirror, wired by the composition root. Here because every place that
    # reports health already holds the counters.
    health_sinks: list[Callable[[HealthEvent], None]] = field(default_factory=list)

    @property
    def device_error_events(self) -> int:
        """Device errors raised and cleared so far (the console refetches ``/events`` when it changes)."""
        return sum(self.device_errors_raised.values()) + sum(self.device_errors_cleared.values())

    def connection(self, server: str) -> ConnectionCounters:
        """The connection counters of one server (``admin``, ``inputcommands`` or a listener key)."""
        found = self.connections.get(server)
        if found is None:
            found = self.connections[server] = ConnectionCounters()
        return found

    def as_status(self) -> dict[str, int]:
        return {
            "received": self.received,
            "processed": self.processed,
            "failed": self.failed,
            "deadLettered": self.dead_lettered,
            "refused": self.refused,
        }


class _CountersCollector(Collector):
    def __init__(self, counters: Counters, gauges: dict[str, Callable[[], float]]) -> None:
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
            ("nuviot_messages_compiled", c.compiled, "Messages a compiled route completed"),
            ("nuviot_messages_compiled_fallback", c.compiled_fallback,
             "Messages the compiled routes handed to the general path"),
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
        yield from _connection_families(c.connections)
        for name, counts, doc in (
            ("nuviot_device_errors_raised", c.device_errors_raised, "Device error codes raised, per source"),
            ("nuviot_device_errors_cleared", c.device_errors_cleared, "Device error codes cleared, per source"),
        ):
            fam = CounterMetricFamily(name, doc, labels=["source"])
            for key, value in counts.items():
                fam.add_metric([key], value)
            yield fam
        for name, fn in self._gauges.items():
            g = GaugeMetricFamily(name, name.replace("_", " "))
            g.add_metric([], float(fn()))
            yield g


def _connection_families(conns: dict[str, ConnectionCounters]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    servers = sorted(conns.items())
    gauge = GaugeMetricFamily("nuviot_connections_open", "Open connections per server port", labels=["server"])
    for key, cc in servers:
        gauge.add_metric([key], cc.open)
    yield gauge
    for name, attr, doc in (
        ("nuviot_connections_accepted", "accepted", "Connections accepted per server port"),
        ("nuviot_connections_rejected", "rejected", "Connections refused over the per-port cap"),
        ("nuviot_http_bad_requests", "bad_requests", "Malformed requests and undecodable bodies (400)"),
        ("nuviot_http_too_large", "too_large", "Bodies over the size limit (413)"),
    ):
        fam = CounterMetricFamily(name, doc, labels=["server"])
        for key, cc in servers:
            fam.add_metric([key], getattr(cc, attr))
        yield fam
    fam = CounterMetricFamily("nuviot_connection_timeouts", "Connections closed by a read timeout",
                              labels=["server", "phase"])
    for key, cc in servers:
        fam.add_metric([key, "header"], cc.header_timeouts)
        fam.add_metric([key, "body"], cc.body_timeouts)
        fam.add_metric([key, "idle"], cc.idle_closed)
    yield fam


class RuntimeMetrics:
    """One registry per runtime (not the process-global one), so tests do not share state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.counters = Counters()
        self._gauges: dict[str, Callable[[], float]] = {}
        self.registry.register(_CountersCollector(self.counters, self._gauges))
        self.state = Gauge(
            "nuviot_instance_state", "1 for the current instance state", ["state"], registry=self.registry
        )
        self.transitions = PromCounter(
            "nuviot_state_transitions", "Instance state transitions", ["from_state", "to_state"], registry=self.registry
        )
        for s in InstanceState:
            self.state.labels(s.value).set(0)

    def add_gauge(self, name: str, fn: Callable[[], float]) -> None:
        self._gauges[name] = fn

    def on_transition(self, previous: InstanceState | None, state: InstanceState) -> None:
        if previous is not None:
            self.state.labels(previous.value).set(0)
        self.state.labels(state.value).set(1)
        self.transitions.labels(previous.value if previous else "", state.value).inc()
