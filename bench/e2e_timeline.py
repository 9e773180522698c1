"""Where the end-to-end rate goes: the bench's QoS 0 phases, interleaved, with every process watched.

    .venv/bin/python -m bench.e2e_timeline [--rounds 3] [-n 60000] [--devices 200] [--order bnr]

Each round runs, in ``--order`` (rotated by one each round so no side always goes first): ``b`` the bare
aiomqtt baseline, ``n`` Node-RED memory only (``bench.nodered.run_nodered(memory=True)``), ``r`` the runtime
(a fresh daemon: ``Bench.throughput(0, ...)``), all against one mosquitto, fed by the same publisher, and
measured exactly as ``make bench-quick`` measures them. Beside each phase a sampler thread (every 10 ms) reads:

- ``/proc/<pid>/task/<tid>/schedstat`` of every process this one started (publisher, mosquitto, consumer and
  their threads): nanoseconds on a CPU and nanoseconds runnable but waiting for one (the run queue);
- ``/proc/net/tcp``: the bytes queued on the consumer's connection to the broker (``rx``: arrived, not read
  by the consumer yet; the broker side's ``tx``: not yet taken by the consumer's kernel);
- the load average.

Per phase it prints the bench's rate (``harness.rate``: messages / first send to last message seen; for
Node-RED also the old figure timed from its first output line), CPU and run-queue wait per process over the
phase (CPU seconds / messages = CPU per message), the consumer's CPU per thread, and for its main thread
(event loop / JS thread) the share of 10 ms slices on a CPU (``main_busy_share``: >= 90 %), waiting in the run
queue (>= 10 %), and off the CPU, not waiting for one, while bytes waited in its socket (``main_stalled_share``:
it could have read but did not). The kernel adds run-queue wait when a task gets the CPU, so a long wait
shows as empty slices then one big one: read the stalls beside ``runqueue_wait_s``. ``--json`` writes every
phase's summary and its timeline (t, main on CPU, main waiting, socket rx bytes, broker tx bytes, the
consumer's other threads on CPU) to a file. ``--env NAME=VALUE`` is passed to the daemon.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Bench, run_baseline
from bench.nodered import ensure_installed, run_nodered
from tests.support.mosquitto import Mosquitto

TICK = 0.010


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _stat(pid: int) -> tuple[str, int, str]:
    """(comm, ppid, state) of a process or task."""
    raw = _read(f"/proc/{pid}/stat")
    head, rest = raw.rsplit(")", 1)
    comm = head.split("(", 1)[1]
    fields = rest.split()
    return comm, int(fields[1]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/cmdline").replace("\0", " ")
    except OSError:
        return ""


def role(cmd: str) -> str:
    if "mosquitto" in cmd:
        return "mosquitto"
    if "red.js" in cmd or cmd.startswith("node "):
        return "node-red"
    if "bench.baseline" in cmd:
        return "baseline"
    if "-m runtime" in cmd:
        return "runtime"
    if "multiprocessing" in cmd:
        return "publisher"
    return "other"


@dataclass
class Sample:
    t: float
    tasks: dict[tuple[int, int], tuple[int, int]]  # (pid, tid) -> (run ns, run-queue wait ns)
    tcp: dict[tuple[int, int], tuple[int, int]]  # (local port, remote port) -> (tx bytes, rx bytes)
    load: float


@dataclass
class Sampler:
    """Samples every process descended from this one, and the broker's TCP queues, every ``TICK``."""

    broker_port: int
    samples: list[Sample] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)
    names: dict[tuple[int, int], str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="e2e-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _scan(self) -> None:
        me = os.getpid()
        parents = {me} | set(self.roles)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if self.roles.get(pid, "other") != "other":
                continue
            try:
                _, ppid, _ = _stat(pid)
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents:
                self.roles[pid] = role(_cmdline(pid))

    def _tcp(self) -> dict[tuple[int, int], tuple[int, int]]:
        out: dict[tuple[int, int], tuple[int, int]] = {}
        port = self.broker_port
        with open("/proc/net/tcp") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                lp, rp = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)
                if lp == port or rp == port:
                    tx, rx = f[4].split(":")
                    out[(lp, rp)] = (int(tx, 16), int(rx, 16))
        return out

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            now = time.time()
            scan = now >= next_scan
            if scan:
                self._scan()
                next_scan = now + 0.2
            tasks: dict[tuple[int, int], tuple[int, int]] = {}
            for pid in list(self.roles):
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for t in tids:
                    tid = int(t)
                    try:
                        run_ns, wait_ns, _ = _read(f"/proc/{pid}/task/{tid}/schedstat").split()
                    except (OSError, ValueError):
                        continue
                    tasks[(pid, tid)] = (int(run_ns), int(wait_ns))
                    if scan or (pid, tid) not in self.names:
                        try:
                            self.names[(pid, tid)] = _stat(tid)[0]
                        except (OSError, IndexError):
                            self.names[(pid, tid)] = "?"
            try:
                tcp = self._tcp()
            except OSError:
                tcp = {}
            load = float(_read("/proc/loadavg").split()[0])
            self.samples.append(Sample(now, tasks, tcp, load))
            self._stop.wait(max(0.0, TICK - (time.time() - now)))


def summarize(s: Sampler, t0: float, t1: float, consumer: str) -> dict[str, Any]:
    """CPU and run-queue wait per role over [t0, t1]; the consumer main thread's stalls."""
    window = [x for x in s.samples if t0 <= x.t <= t1]
    if len(window) < 3:
        return {"samples": len(window)}
    first, last = window[0], window[-1]
    span = last.t - first.t
    cpu: dict[str, float] = {}
    wait: dict[str, float] = {}
    threads: dict[str, float] = {}
    for a, b in itertools.pairwise(window):  # tasks that end inside the window count up to then
        for key, (run1, wait1) in b.tasks.items():
            if key not in a.tasks:
                continue
            run0, wait0 = a.tasks[key]
            r = s.roles.get(key[0], "other")
            cpu[r] = cpu.get(r, 0.0) + (run1 - run0) / 1e9
            wait[r] = wait.get(r, 0.0) + (wait1 - wait0) / 1e9
            if r == consumer:
                name = "main" if key[0] == key[1] else s.names.get(key, "?")
                threads[name] = threads.get(name, 0.0) + (run1 - run0) / 1e9
    # the consumer's main thread, slice by slice: on CPU (share of the slice), waiting, bytes waiting for it
    main = next(((p, t) for x in window for (p, t) in x.tasks if p == t and s.roles.get(p) == consumer), None)
    stalls = slices = busy = waiting = 0
    stalled_others = 0.0
    timeline: list[tuple[float, float, float, int, int, float]] = []
    for a, b in itertools.pairwise(window):
        dt = b.t - a.t
        if main is None or main not in a.tasks or main not in b.tasks or dt <= 0:
            continue
        on = (b.tasks[main][0] - a.tasks[main][0]) / 1e9 / dt
        rq = (b.tasks[main][1] - a.tasks[main][1]) / 1e9 / dt
        others = sum(b.tasks[k][0] - a.tasks[k][0] for k in b.tasks
                     if k[0] == main[0] and k != main and k in a.tasks) / 1e9 / dt
        rx = sum(v[1] for (lp, rp), v in b.tcp.items() if rp == s.broker_port and lp not in _publisher_ports(s, b))
        tx = sum(v[0] for (lp, rp), v in b.tcp.items() if lp == s.broker_port)
        slices += 1
        if on >= 0.9:
            busy += 1
        if rq >= 0.1:
            waiting += 1
        if on < 0.5 and rq < 0.1 and rx > 0:
            stalls += 1
            stalled_others += others
        timeline.append((round(b.t - t0, 3), round(on, 2), round(rq, 2), rx, tx, round(others, 2)))
    return {
        "seconds": round(span, 3),
        "cpu_s": {k: round(v, 3) for k, v in sorted(cpu.items())},
        "cpu_share": {k: round(v / span, 2) for k, v in sorted(cpu.items())},
        "runqueue_wait_s": {k: round(v, 3) for k, v in sorted(wait.items())},
        "consumer_threads_cpu_s": {k: round(v, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:6]},
        "main_slices": slices, "main_busy_share": round(busy / slices, 2) if slices else None,
        "main_runqueue_share": round(waiting / slices, 2) if slices else None,
        "main_stalled_share": round(stalls / slices, 2) if slices else None,
        "other_threads_on_cpu_when_stalled": round(stalled_others / stalls, 2) if stalls else None,
        "load": [window[0].load, window[-1].load],
        "timeline": timeline,
    }


def _publisher_ports(s: Sampler, x: Sample) -> set[int]:
    """Local ports of connections whose client sends (the publisher): the broker side has rx bytes or the
    connection belongs to no consumer. Cheap rule: the publisher's connection has tx bytes on the client."""
    return {lp for (lp, rp), (tx, _) in x.tcp.items() if rp == s.broker_port and tx > 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=60_000)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--order", default="bnr")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon")
    args = ap.parse_args()
    red, why = ensure_installed()
    env = dict(e.split("=", 1) for e in args.env)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nuviot-e2e-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        sampler = Sampler(broker.port).start()
        try:
            for rnd in range(args.rounds):
                k = rnd % len(args.order)
                for phase in args.order[k:] + args.order[:k]:
                    run = f"e{int(time.time()) % 100000}{phase}{rnd}"
                    res: dict[str, Any]
                    if phase == "b":
                        t0 = time.time()
                        res = run_baseline(broker.host, broker.port, 0, args.n, args.devices, run)
                        consumer = "baseline"
                    elif phase == "n":
                        if red is None:
                            print(f"Node-RED skipped: {why}")
                            continue
                        t0 = time.time()
                        res = run_nodered(broker.host, broker.port, 0, args.n, args.devices, run, memory=True)
                        consumer = "node-red"
                    else:
                        bench = Bench(Path(tmp) / f"r{rnd}", broker, args.devices)
                        bench.start_daemon(env=env)
                        try:
                            t0 = time.time()
                            res = bench.throughput(0, args.n, run)
                            res.pop("rss", None)
                        finally:
                            bench.stop_daemon()
                        consumer = "runtime"
                    t1 = time.time()
                    summary = summarize(sampler, t0, t1, consumer)
                    got = res.get("received", res.get("committed"))
                    line = {"round": rnd, "phase": consumer, "msgs_per_s": round(res.get("msgs_per_s", 0)),
                            "count": got, "sent": res.get("sent")} | summary
                    if "msgs_per_s_from_first_line" in res:  # Node-RED timed the old way, for comparison
                        line["msgs_per_s_from_first_line"] = round(res["msgs_per_s_from_first_line"])
                        line["first_line_after_s"] = res["first_line_after_s"]
                    out.append(line | {"result": res})
                    tl = line.pop("timeline", [])
                    print(json.dumps(line), flush=True)
                    del tl
                    time.sleep(1.0)
        finally:
            sampler.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
