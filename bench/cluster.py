"""``make bench BENCH_ARGS=--cluster``: the Cluster edition measured (docs/cluster.md, issue 14 item 4).

Against a real RabbitMQ and PostgreSQL (the machine's when they answer, else private ones; the RabbitMQ
restart always on a private node), with real daemons on tests/fixtures/cluster.yaml:

1. scaling: 1, 2, 4 workers drain the same preloaded partition queues (the workers are started, paused,
   the queue is filled, then started): messages per worker CPU-second, N workers vs 1;
2. end to end: 1 ingest + 2 workers beside ``--role all``, the same QoS1 readings through mosquitto;
3. faults: ``kill -9`` of a worker in the middle of QoS1 readings; RabbitMQ (private node) stopped and
   started in the middle: every PUBACKed reading has its record, per-device order, duplicates.

``--cluster-size N`` sets the number of readings (default 20,000; the issue's 100,000 is
``--cluster-size 100000``). Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import asyncpg

from runtime.adapters.queue.rabbitmq import RabbitPublisher
from runtime.core.messages import InboundMessage
from runtime.services.cluster import PartitionSequencer, encode_envelope, partition_of, partition_queue
from tests.support import postgres, rabbitmq
from tests.support.daemon import Daemon
from tests.support.mosquitto import Mosquitto

SOLUTION = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cluster.yaml"
DEVICES = 8
PARTITIONS = 8
IDLE_WINDOW = 3.0  # seconds the paused workers are watched before the drain


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of the process's threads: how often it waited for work,
    how often the kernel took the core from it."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol += int(line.split()[1])
    return vol, invol


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its descendants (with their reaped children): a private server's cost."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            stats[int(entry.name)] = fields
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            f = stats[pid]
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def server_pids(env: Env) -> dict[str, int]:
    """The private RabbitMQ's and PostgreSQL's root processes (none for the machine's)."""
    out: dict[str, int] = {}
    proc = getattr(env.rabbit, "_proc", None)
    if proc is not None:
        out["rabbitmq"] = proc.pid
    if env.pg.private is not None:
        out["postgresql"] = int((env.pg.private.data / "postmaster.pid").read_text().split()[0])
    return out


class Env:
    def __init__(self, tmp: Path, broker: Mosquitto, pg: postgres.Server, rabbit: rabbitmq.Rabbit) -> None:
        self.tmp, self.broker, self.pg, self.rabbit = tmp, broker, pg, rabbit
        self.instances: list[str] = []

    async def delete_queues(self) -> None:
        """The partition queues this run made on the (possibly shared) RabbitMQ."""
        r = self.rabbit
        conn = await aio_pika.connect(f"amqp://{r.user}:{r.password}@{r.host}:{r.port}/")
        async with conn:
            channel = await conn.channel()
            for instance in self.instances:
                for p in range(PARTITIONS):
                    await channel.queue_delete(partition_queue(instance, p))

    def instance(self, rabbit: rabbitmq.Rabbit | None = None) -> tuple[str, str, dict[str, str]]:
        r = rabbit or self.rabbit
        instance = f"b{uuid.uuid4().hex[:8]}"
        if rabbit is None:
            self.instances.append(instance)
        db = self.pg.create()
        env = {"NUVIOT_QUEUE_URL": f"amqp://{r.user}:{r.password}@{r.host}:{r.port}/",
               "NUVIOT_DATABASE_URL": self.pg.url(db), "NUVIOT_INSTANCE_ID": instance, "CLUSTER_INSTANCE": instance,
               "NUVIOT_QUEUE_PARTITIONS": str(PARTITIONS), "MQTT_HOST": self.broker.host,
               "MQTT_PORT": str(self.broker.port), "NUVIOT_LOG_LEVEL": "warning"}
        return instance, db, env

    def daemon(self, name: str, role: str, env: dict[str, str]) -> Daemon:
        return Daemon(self.tmp / name, "--role", role, "--solution", str(SOLUTION), "--input-command-port", "0",
                      env={**env, "MQTT_CLIENT_ID": f"bench-{name}-{env.get('NUVIOT_INSTANCE_ID', 'all')}"})


async def count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM messages"))
    finally:
        await conn.close()


async def wait_count(url: str, n: int, within: float) -> float:
    """Seconds until ``n`` records are committed."""
    t0 = time.perf_counter()
    while await count(url) < n:
        if time.perf_counter() - t0 > within:
            raise TimeoutError(f"{await count(url)} of {n} records after {within:g} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


async def publish_mqtt(host: str, port: int, n: int, acked: list[int], name: str, window: int = 200,
                       at: tuple[int, Any] | None = None) -> float:
    """QoS1 readings 1..n; ``acked`` gets each one whose PUBACK came; ``at=(k, fn)`` calls fn after k."""
    t0 = time.perf_counter()
    async with aiomqtt.Client(host, port, identifier=name, max_inflight_messages=window) as client:
        async def one(seq: int) -> None:
            await client.publish(f"cluster/dev{seq % DEVICES}/reading", json.dumps({"seq": seq}), qos=1)
            acked.append(seq)

        for start in range(1, n + 1, window):
            await asyncio.gather(*(one(s) for s in range(start, min(n + 1, start + window))))
            if at is not None and len(acked) >= at[0]:
                fn, at = at[1], None
                await asyncio.to_thread(fn)
    return time.perf_counter() - t0


async def check(url: str, acked: list[int]) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT device_id, message_id FROM messages ORDER BY seq")
    finally:
        await conn.close()
    by_device: dict[str, list[int]] = defaultdict(list)
    for device, mid in rows:
        by_device[device].append(int(mid))
    out_of_order = 0
    for seqs in by_device.values():
        high, seen = 0, set()
        for s in seqs:
            if s < high and s not in seen:
                out_of_order += 1
            high = max(high, s)
            seen.add(s)
    recorded = {int(r[1]) for r in rows}
    return {"acked": len(acked), "lost": len(set(acked) - recorded), "records": len(rows),
            "duplicates": len(rows) - len(recorded), "outOfOrder": out_of_order}


def wait_all(daemons: list[Daemon], state: str) -> None:
    for d in daemons:
        d.wait_state(state, timeout=90)


def wait_ready(d: Daemon, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while d.request("GET", "/ready")[0] != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("not ready")
        time.sleep(0.05)


async def start_cost(ds: list[Daemon]) -> list[float]:
    """CPU seconds each paused worker spends on a start with nothing queued (connect, declare and consume the
    partitions, settle the heap, read the devices), less its idle CPU; the drain below starts the same way,
    so with N workers it pays this N times: a fixed cost, not a per-message one. Leaves them paused."""
    pids = [d.proc.pid for d in ds if d.proc]
    idle0 = [cpu_seconds(p) for p in pids]
    await asyncio.sleep(1.0)
    cpu0 = [cpu_seconds(p) for p in pids]
    assert ds[0].request("POST", "/control/start")[0] == 202
    await asyncio.to_thread(wait_all, ds, "Running")
    for d in ds:
        await asyncio.to_thread(wait_ready, d)
    await asyncio.sleep(1.0)
    cpu1 = [cpu_seconds(p) for p in pids]
    assert ds[0].request("POST", "/control/pause")[0] == 202
    await asyncio.to_thread(wait_all, ds, "Paused")
    return [round(max(0.0, (c1 - c0) - (c0 - i0)), 3) for i0, c0, c1 in zip(idle0, cpu0, cpu1, strict=True)]


async def scaling(env: Env, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in (1, 2, 4):
        instance, db, e = env.instance()
        ds = [env.daemon(f"s{workers}w{i}", "worker", e) for i in range(workers)]
        for d in ds:
            d.start()
        try:
            await asyncio.to_thread(wait_all, ds, "Running")
            assert ds[0].request("POST", "/control/pause")[0] == 202
            await asyncio.to_thread(wait_all, ds, "Paused")
            start_cpu = await start_cost(ds)
            pub = RabbitPublisher(e["NUVIOT_QUEUE_URL"], instance, PARTITIONS, name=f"{instance}-preload")
            sequencer = PartitionSequencer(f"{instance}-preload", PARTITIONS)  # numbered, as an ingest does
            await pub.start()
            for seq in range(1, n + 1):
                device = f"dev{seq % DEVICES}"
                msg = InboundMessage(listener="mqttin", payload=json.dumps({"seq": seq}).encode(),
                                     topic=f"cluster/{device}/reading")
                partition = partition_of(device, PARTITIONS)
                pub.publish(partition, encode_envelope(msg, device, seq, sequencer.next(partition)), lambda: None)
                if seq % 1000 == 0:
                    await pub.writable()
            await pub.stop(120)
            idle0 = [cpu_seconds(d.proc.pid) for d in ds if d.proc]
            await asyncio.sleep(IDLE_WINDOW)  # paused: what a worker costs doing nothing
            cpu0 = [cpu_seconds(d.proc.pid) for d in ds if d.proc]
            servers0 = {k: tree_cpu_seconds(pid) for k, pid in server_pids(env).items()}
            idle = [round((b - a) / IDLE_WINDOW, 4) for a, b in zip(idle0, cpu0, strict=True)]
            before = [d.request("GET", "/status")[1] for d in ds]
            sw0 = [switches(d.proc.pid) for d in ds if d.proc]
            assert ds[-1].request("POST", "/control/start")[0] == 202
            seconds = await wait_count(e["NUVIOT_DATABASE_URL"], n, 600)
            per_worker = [round(cpu_seconds(d.proc.pid) - c, 2) for d, c in zip(ds, cpu0, strict=True) if d.proc]
            servers = {k: round(tree_cpu_seconds(pid) - servers0[k], 2) for k, pid in server_pids(env).items()}
            cpu = sum(per_worker)
            after = [d.request("GET", "/status")[1] for d in ds]
            sw1 = [switches(d.proc.pid) for d in ds if d.proc]
            waits = sum(b[0] - a[0] for a, b in zip(sw0, sw1, strict=True))
            preempted = sum(b[1] - a[1] for a, b in zip(sw0, sw1, strict=True))
            held = [s["cluster"]["held"] for s in after]
            transactions = sum(a["storage"]["transactions"] - b["storage"]["transactions"]
                               for a, b in zip(after, before, strict=True))
            start_total = sum(start_cpu)
            out[str(workers)] = {"seconds": round(seconds, 2), "msgsPerSecond": round(n / seconds),
                                 "startCpuSeconds": start_cpu,
                                 "messagesPerWait": round(n / max(1, waits), 1),
                                 "preemptionsPer1000": round(preempted / n * 1000, 1),
                                 "msgsPerWorkerCpuSecondWithoutStart": round(n / max(0.01, cpu - start_total)),
                                 "workerCpuSeconds": round(cpu, 2), "msgsPerWorkerCpuSecond": round(n / cpu),
                                 "perWorkerCpuSeconds": per_worker, "idleCpuPerSecond": idle,
                                 "transactions": transactions, "serverCpuSeconds": servers,
                                 "recordsPerTransaction": round(n / max(1, transactions), 1),
                                 "partitionsHeld": held}
        finally:
            for d in ds:
                d.__exit__(None, None, None)
            env.pg.drop(db)
    base = out["1"]["msgsPerWorkerCpuSecond"]
    base_running = out["1"]["msgsPerWorkerCpuSecondWithoutStart"]
    for k in ("2", "4"):
        out[k]["efficiencyVs1"] = round(out[k]["msgsPerWorkerCpuSecond"] / base, 2)
        out[k]["efficiencyVs1WithoutStart"] = round(out[k]["msgsPerWorkerCpuSecondWithoutStart"] / base_running, 2)
    return out


async def end_to_end(env: Env, n: int) -> dict[str, Any]:
    instance, db, e = env.instance()
    ds = [env.daemon("e2e-ingest", "ingest", e), env.daemon("e2e-w0", "worker", e), env.daemon("e2e-w1", "worker", e)]
    res: dict[str, Any] = {}
    try:
        for d in ds:
            d.start()
        await asyncio.to_thread(wait_all, ds, "Running")
        acked: list[int] = []
        t0 = time.perf_counter()
        await publish_mqtt(env.broker.host, env.broker.port, n, acked, f"{instance}-e2e")
        await wait_count(e["NUVIOT_DATABASE_URL"], n, 600)
        res["cluster_1ingest_2workers_msgs_per_s"] = round(n / (time.perf_counter() - t0))
    finally:
        for d in ds:
            d.__exit__(None, None, None)
        env.pg.drop(db)
    single = Daemon(env.tmp / "e2e-all", "--solution", str(SOLUTION), "--input-command-port", "0",
                    env={"MQTT_HOST": env.broker.host, "MQTT_PORT": str(env.broker.port),
                         "MQTT_CLIENT_ID": "bench-all", "CLUSTER_INSTANCE": "benchall", "NUVIOT_LOG_LEVEL": "warning"})
    with single:
        await asyncio.to_thread(single.wait_state, "Running", timeout=60)
        acked = []
        t0 = time.perf_counter()
        await publish_mqtt(env.broker.host, env.broker.port, n, acked, "bench-all-pub")
        while True:
            if single.request("GET", "/status")[1]["counters"]["processed"] >= n:
                break
            await asyncio.sleep(0.1)
        res["role_all_msgs_per_s"] = round(n / (time.perf_counter() - t0))
    return res


async def fault(env: Env, n: int, kind: str) -> dict[str, Any]:
    own = rabbitmq.start_own(env.tmp / f"rabbit-{kind}") if kind == "rabbitmq_restart" else None
    instance, db, e = env.instance(own)
    ds = [env.daemon(f"{kind}-ingest", "ingest", e), env.daemon(f"{kind}-w0", "worker", e),
          env.daemon(f"{kind}-w1", "worker", e)]
    try:
        for d in ds:
            d.start()
        await asyncio.to_thread(wait_all, ds, "Running")

        def strike() -> None:
            if own is not None:
                own._ctl("stop_app")
                time.sleep(2)
                own._ctl("start_app")
            else:
                holder = max(ds[1:], key=lambda d: len(d.request("GET", "/status")[1]["cluster"]["held"]))
                holder.kill()

        acked: list[int] = []
        await publish_mqtt(env.broker.host, env.broker.port, n, acked, f"{instance}-{kind}", at=(n // 2, strike))
        t0 = time.perf_counter()
        while True:
            result = await check(e["NUVIOT_DATABASE_URL"], acked)
            if result["lost"] == 0 or time.perf_counter() - t0 > 180:
                break
            await asyncio.sleep(0.5)
        order: dict[str, int] = defaultdict(int)  # the surviving workers' order keepers (docs/cluster.md)
        for d in ds[1:]:
            if d.proc is not None and d.proc.returncode is None:
                for listener in d.request("GET", "/status")[1]["listeners"]:
                    for k in ("duplicates", "gaps", "late"):
                        order[k] += int(listener.get(k) or 0)
        result["workerOrder"] = dict(order)
        return result
    finally:
        for d in ds:
            d.__exit__(None, None, None)
        env.pg.drop(db)
        if own is not None:
            own.stop()


async def run(n: int, phases: list[str]) -> dict[str, Any]:
    pg = postgres.find_or_start()
    with tempfile.TemporaryDirectory(prefix="nuviot-bench-cluster-") as tmp, \
            Mosquitto(Path(tmp) / "broker") as broker:
        rabbit = rabbitmq.find_or_start(Path(tmp) / "rabbit")
        if rabbit is None:
            raise SystemExit("no RabbitMQ: install rabbitmq-server (make rabbitmq)")
        env = Env(Path(tmp), broker, pg, rabbit)
        try:
            res: dict[str, Any] = {"size": n, "partitions": PARTITIONS, "devices": DEVICES}
            if "scaling" in phases:
                res["scaling"] = await scaling(env, n)
                print(f"scaling: {json.dumps(res['scaling'])}", file=sys.stderr)
            if "e2e" in phases:
                res["endToEnd"] = await end_to_end(env, n)
                print(f"end to end: {json.dumps(res['endToEnd'])}", file=sys.stderr)
            if "kill" in phases:
                res["killWorker"] = await fault(env, n, "kill_worker")
                print(f"kill -9 worker: {json.dumps(res['killWorker'])}", file=sys.stderr)
            if "restart" in phases:
                res["rabbitmqRestart"] = await fault(env, n, "rabbitmq_restart")
                print(f"RabbitMQ restart: {json.dumps(res['rabbitmqRestart'])}", file=sys.stderr)
            return res
        finally:
            await env.delete_queues()
            if rabbit.own:
                rabbit.stop()
            if pg.private is not None:
                pg.private.close()


def main(n: int, phases: list[str] | None = None) -> int:
    res = asyncio.run(run(n, phases or ["scaling", "e2e", "kill", "restart"]))
    print(json.dumps(res))
    return 0
