"""The benchmark's moving parts: broker, daemon, publisher process, baseline subscriber, SQLite poller.

How each figure is measured (so the numbers can be trusted, or argued with):

- **Every rate** (baseline, end to end, Node-RED in ``bench.nodered``) is the same quotient: messages
  done / (the moment the last one is seen done - the publisher's first send, ``PublishResult.first_at``).
  One start for every consumer: a consumer that reads a big backlog before its first output is visible
  (Node-RED: ~0.9 s of 60,000 messages, docs/performance.md "End to end: where the rate goes") is timed
  from the same moment as one whose first record is visible at once.
- **Baseline** (msg/s): ``bench.baseline`` (bare aiomqtt, uvloop, one process) subscribed to the same
  broker, fed by the same publisher; its last message's arrival.
- **End to end** (msg/s): messages whose record is *committed* in ``runtime.db``, read by this process
  from the SQLite file (read-only WAL reader polling ``max(seq)`` of ``messages``: rowids grow by one per
  record and are never reused, so pruning does not disturb the count), to the moment the last one is seen
  committed. The device state is saved in the same transactions. Cross-checked with ``/status`` counters
  (processed, failed, refused). ``first_received_at`` (the first record's ``receivedAt``) is kept beside it.
- **Latency**: the publisher paces messages at a fixed rate and keeps each one's send time; the poller
  (every 2 ms) notes when each record (found by the unique ``seq`` the planner stores as the message id)
  is first visible in the database: *committed* latency = seen - sent, an upper bound (poll interval and
  the reader's own work included). *Processed* latency = ``receivedAt + processingMs - sent`` (the
  record's own figures, commit not included) is reported beside it.
- **RSS**: ``VmRSS`` of the daemon process from ``/proc/<pid>/status``, sampled every second.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.publisher import PublishResult, publish
from tests.support.daemon import REPO, Daemon

SOLUTION = Path(__file__).resolve().parent / "solution.yaml"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rate(count: int, published_at: float, last_at: float) -> float:
    """Messages per second from the publisher's first send to the last message seen done (0 if none)."""
    return count / (last_at - published_at) if count and last_at > published_at else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _publish_entry(queue: Any, host: str, port: int, kwargs: dict[str, Any]) -> None:
    queue.put(publish(host, port, **kwargs))


class Publisher:
    """``bench.publisher.publish`` in a separate process (its CPU is not the measuring process's)."""

    def __init__(self, host: str, port: int, **kwargs: Any) -> None:
        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        self._proc = ctx.Process(target=_publish_entry, args=(self._queue, host, port, kwargs), daemon=True)

    def start(self) -> Publisher:
        self._proc.start()
        return self

    @property
    def running(self) -> bool:
        return self._proc.is_alive() and self._queue.empty()

    def result(self, timeout: float = 600.0) -> PublishResult:
        out = self._queue.get(timeout=timeout)
        self._proc.join(10)
        return out


def run_baseline(host: str, port: int, qos: int, n: int, devices: int, run: str) -> dict[str, Any]:
    topic = f"bench/+/{'q1' if qos else 'q0'}"
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline", host, str(port), topic, str(qos), str(n)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the baseline subscriber did not start")
    pub = Publisher(host, port, run=run, n=n, qos=qos, devices=devices).start()
    sent = pub.result()
    line = proc.stdout.readline()
    proc.wait(30)
    got = json.loads(line)
    return {"qos": qos, "sent": sent.sent, "received": got["count"],
            "msgs_per_s": rate(got["count"], sent.first_at, got["last_at"]),
            "published_at": sent.first_at, "first_at": got["first_at"], "last_at": got["last_at"]}


@dataclass
class Poll:
    """What the SQLite poller saw during one phase."""

    start_seq: int
    samples: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, records committed)
    rss: list[tuple[float, int, float]] = field(default_factory=list)  # (epoch s, records, MB)
    seen: dict[str, float] = field(default_factory=dict)  # message id (seq) -> first seen committed
    rows: dict[str, tuple[float, float]] = field(default_factory=dict)  # seq -> (receivedAt, processingMs)
    first_received_at: float | None = None  # receivedAt of the phase's first records (read before pruning)

    @property
    def count(self) -> int:
        return self.samples[-1][1] if self.samples else 0


class Bench:
    def __init__(self, workdir: Path, broker: Any, devices: int) -> None:
        self.workdir = workdir
        self.broker = broker
        self.devices = devices
        self.daemon: Daemon | None = None
        self.db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ daemon
    def start_daemon(self, *extra: str, env: dict[str, str] | None = None, solution: Path = SOLUTION) -> None:
        data = self.workdir / "data"
        env = {"MQTT_HOST": self.broker.host, "MQTT_PORT": str(self.broker.port), "MQTT_CLIENT_ID": "bench-runtime",
               "NUVIOT_LOG_LEVEL": "warning", **(env or {})}
        self.daemon = Daemon(data, "--solution", str(solution), "--listener-port", "restin=0",
                             "--input-command-port", "0", *extra, env=env)
        self.daemon.start()
        self.daemon.wait_state("Running", timeout=30)
        for d in range(self.devices):
            code, body = self.daemon.request("PUT", f"/devices/d{d:04d}", {"deviceConfiguration": "sensor"})
            if code not in (200, 201):
                raise RuntimeError(f"provisioning d{d:04d}: {code} {body}")
        self.db = sqlite3.connect(f"file:{data / 'runtime.db'}?mode=ro", uri=True, check_same_thread=False)

    def stop_daemon(self) -> int | None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.daemon is None:
            return None
        try:
            return self.daemon.terminate(timeout=30)
        finally:
            self.daemon.__exit__()

    @property
    def pid(self) -> int:
        assert self.daemon is not None and self.daemon.proc is not None
        return self.daemon.proc.pid

    def status(self) -> dict[str, Any]:
        assert self.daemon is not None
        code, body = self.daemon.request("GET", "/status", timeout=10)
        if code != 200:
            raise RuntimeError(f"/status: {code} {body}")
        return body

    def counters(self) -> dict[str, int]:
        st = self.status()
        c = dict(st["counters"])
        for listener in st.get("listeners", []):
            for k in ("refused", "received"):
                if k in listener:
                    c[f"{listener['key']}.{k}"] = listener[k]
        return c

    def rest_port(self) -> int:
        for listener in self.status()["listeners"]:
            if listener["key"] == "restin":
                return int(listener["port"])
        raise RuntimeError("no REST listener in /status")

    def max_seq(self) -> int:
        assert self.db is not None
        row = self.db.execute("SELECT max(seq) FROM messages").fetchone()
        return int(row[0] or 0)

    # ------------------------------------------------------------------ a phase
    def poll_until(self, poll: Poll, expected: int, publisher: Publisher | None, *, interval: float,
                   idle: float = 5.0, track: bool = False, within: float = 900.0) -> None:
        """Sample the database until ``expected`` records are committed, or none come for ``idle`` s after
        the publisher is done."""
        assert self.db is not None
        last_change = time.time()
        last_rss = 0.0
        last = poll.start_seq
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            now = time.time()
            if track:
                for seq, mid, rcv, ms in self.db.execute(
                        "SELECT seq, message_id, received_at, processing_ms FROM messages WHERE seq > ? "
                        "ORDER BY seq", (last,)):
                    last = seq
                    poll.seen.setdefault(mid, now)
                    poll.rows[mid] = (rcv, ms)
                top = last
            else:
                top = self.max_seq()
            count = top - poll.start_seq
            if count and poll.first_received_at is None:
                poll.first_received_at = self.first_received_at(poll.start_seq)
            if not poll.samples or count != poll.samples[-1][1]:
                poll.samples.append((now, count))
                last_change = now
            if now - last_rss >= 1.0:
                last_rss = now
                with contextlib.suppress(OSError):
                    poll.rss.append((now, count, rss_mb(self.pid)))
            if count >= expected:
                return
            publishing = publisher is not None and publisher.running
            if not publishing and now - last_change > idle:
                return
            time.sleep(interval)

    def first_received_at(self, start_seq: int) -> float:
        assert self.db is not None
        row = self.db.execute("SELECT min(received_at) FROM messages WHERE seq > ? AND seq <= ?",
                              (start_seq, start_seq + 100)).fetchone()
        return float(row[0])

    def throughput(self, qos: int, n: int, run: str) -> dict[str, Any]:
        before = self.counters()
        poll = Poll(self.max_seq())
        pub = Publisher(self.broker.host, self.broker.port, run=run, n=n, qos=qos, devices=self.devices).start()
        self.poll_until(poll, n, pub, interval=0.02)
        sent = pub.result()
        after = self.counters()
        count = poll.count
        start = poll.first_received_at or 0.0
        end = poll.samples[-1][0] if poll.samples else 0.0
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        return {
            "qos": qos,
            "sent": sent.sent,
            "committed": count,
            "msgs_per_s": rate(count, sent.first_at, end),
            "refused": delta.get("mqttin.refused", 0),
            "first_received_at": start,
            "published_at": sent.first_at,
            "last_at": end,
            "processed": delta.get("processed", 0),
            "failed": delta.get("failed", 0),
            "rss": poll.rss,
        }

    def latency(self, qos: int, rate: float, seconds: float, run: str) -> dict[str, Any]:
        n = int(rate * seconds)
        poll = Poll(self.max_seq())
        pub = Publisher(self.broker.host, self.broker.port, run=run, n=n, qos=qos, devices=self.devices,
                        rate=rate).start()
        self.poll_until(poll, n, pub, interval=0.002, track=True)
        sent = pub.result()
        committed: list[float] = []
        processed: list[float] = []
        for i, at in enumerate(sent.sent_at):
            mid = f"{run}-{i}"
            seen = poll.seen.get(mid)
            if seen is not None:
                committed.append((seen - at) * 1000.0)
                rcv, ms = poll.rows[mid]
                processed.append((rcv + ms / 1000.0 - at) * 1000.0)
        span = sent.last_at - sent.first_at
        return {
            "qos": qos,
            "offered_per_s": sent.sent / span if span > 0 else 0.0,
            "sent": sent.sent,
            "committed": len(committed),
            "p50_ms": pct(committed, 0.50),
            "p99_ms": pct(committed, 0.99),
            "max_ms": max(committed) if committed else float("nan"),
            "processed_p50_ms": pct(processed, 0.50),
            "processed_p99_ms": pct(processed, 0.99),
        }

    def rest(self, n: int, concurrency: int, run: str) -> dict[str, Any]:
        prefix = f"http://127.0.0.1:{self.rest_port()}"
        before = self.max_seq()
        out = subprocess.run([sys.executable, "-m", "bench.rest_load", prefix, str(n), str(concurrency),
                              str(self.devices), run], cwd=REPO, capture_output=True, text=True, timeout=900,
                             check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        poll = Poll(before)
        self.poll_until(poll, n, None, interval=0.02, idle=3.0)
        got["committed"] = poll.count
        got["req_per_s"] = got["count"] / got["seconds"] if got["seconds"] else 0.0
        return got


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mosq = ""
    with contextlib.suppress(Exception):
        from tests.support.mosquitto import mosquitto_binary
        mosq = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True,
                              timeout=5).stdout.splitlines()[0]
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1), "cpu": model,
            "python": sys.version.split()[0], "mosquitto": mosq, "platform": sys.platform}


def rss_series_summary(rss: list[tuple[float, int, float]]) -> dict[str, float]:
    """RSS at 10 % of the records and at the end, and the peak (flat means end ~ early)."""
    if not rss:
        return {}
    total = rss[-1][1] or 1
    early = next((mb for _, c, mb in rss if c >= total * 0.1), rss[0][2])
    return {"rss_at_10pct_mb": early, "rss_end_mb": rss[-1][2], "rss_peak_mb": max(mb for _, _, mb in rss)}
