"""Per-message cost of the daemon, per thread: ``python -m bench.profile [-n 200000] [--py-spy DIR]``.

Starts its own mosquitto and the real daemon on ``bench/solution.yaml`` (like ``make bench``), sends ``n``
QoS 0 messages, and reads the CPU time of each of the daemon's threads from ``/proc/<pid>/task/*/stat``
before and after: microseconds of CPU per committed message on the event loop thread, the SQLite writer's
thread and the rest. CPU time per message is what a change is judged by on this shared machine (rates move
with the other jobs; a thread's CPU time much less). Thread names are those Python gives the threads
(read through ``py-spy dump`` when it is installed), else ``/proc``'s ``comm``.

With ``--py-spy DIR`` the run is also sampled by ``py-spy record`` (``--format raw``: collapsed stacks
per thread, ``DIR/profile.txt``; ``bench/profile_budget.py`` reads them into a per-stage budget).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Bench, Poll, Publisher, rss_mb

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """tid -> (comm, user+system CPU seconds, system CPU seconds) for every thread of ``pid``."""
    out: dict[int, tuple[str, float, float]] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(task)] = (comm, (int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK)
    return out


def _processes() -> list[tuple[int, int, float]]:
    """(pid, parent pid, user+system CPU seconds) of every process, from ``/proc/<pid>/stat``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.append((int(entry), int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK))
    return out


def pg_cpu(data: Path) -> dict[int, float]:
    """pid -> user+system CPU seconds of the postmaster and its children (the server's processes)."""
    try:
        master = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return {pid: cpu for pid, ppid, cpu in _processes() if master in (pid, ppid)}


def children_cpu(parent: int) -> dict[int, float]:
    """pid -> user+system CPU seconds of ``parent``'s child processes (the stream process)."""
    return {pid: cpu for pid, ppid, cpu in _processes() if ppid == parent}


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all CPUs: everything but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far: the whole machine, the daemon (all its threads), its child processes (the
    stream process) and the PostgreSQL server's processes (``pg_data``: its data directory, or None)."""

    machine: float
    daemon: float
    children: dict[int, float]
    postgres: dict[int, float]

    @classmethod
    def take(cls, pid: int, pg_data: Path | None = None) -> CpuSnapshot:
        return cls(machine_busy(), sum(cpu for _, cpu, _ in thread_cpu(pid).values()), children_cpu(pid),
                   pg_cpu(pg_data) if pg_data is not None else {})

    def us_per(self, before: CpuSnapshot, n: int) -> dict[str, float]:
        """Microseconds of CPU per one of ``n`` (messages or rows) since ``before``, by part."""
        def used(now: dict[int, float], then: dict[int, float]) -> float:
            return sum(v - then.get(p, 0.0) for p, v in now.items())

        scale = 1e6 / n if n else 0.0
        return {"machine": round((self.machine - before.machine) * scale, 1),
                "daemon": round((self.daemon - before.daemon) * scale, 1),
                "stream_process": round(used(self.children, before.children) * scale, 1),
                "postgres": round(used(self.postgres, before.postgres) * scale, 1)}


def python_thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from ``py-spy dump`` (empty when py-spy is not there)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {}
    try:
        text = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for m in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \((?:active|idle)[^)]*\): "([^"]+)"', text, re.M):
        names[int(m.group(1), 0)] = m.group(2)
    return names


def classify(name: str, tid: int, pid: int) -> str:
    if tid == pid or name == "MainThread":
        return "loop"
    if name.startswith("sqlite-writer"):
        return "storage"
    return "other"


def main() -> int:
    from tests.support.mosquitto import Mosquitto

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="QoS 0 messages (default 200,000)")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--py-spy", dest="pyspy", type=Path, help="also sample with py-spy record into this dir")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon (repeatable)")
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    run = f"p{int(time.time()) % 100000}"
    with tempfile.TemporaryDirectory(prefix="nuviot-profile-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        bench = Bench(Path(tmp), broker, args.devices)
        bench.start_daemon(env=env)
        spy: subprocess.Popen[bytes] | None = None
        try:
            pid = bench.pid
            names = python_thread_names(pid)
            if args.pyspy is not None:
                args.pyspy.mkdir(parents=True, exist_ok=True)
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--threads",
                                        "--format", "raw", "-o", str(args.pyspy / "profile.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            cpu0, proc0, t0 = thread_cpu(pid), time.process_time(), time.time()
            poll = Poll(bench.max_seq())
            pub = Publisher(broker.host, broker.port, run=run, n=args.n, qos=args.qos,
                            devices=args.devices).start()
            bench.poll_until(poll, args.n, pub, interval=0.02)
            sent = pub.result()
            cpu1 = thread_cpu(pid)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            names = names or python_thread_names(pid)
            rss = rss_mb(pid)
        finally:
            bench.stop_daemon()
    count = poll.count
    start, end = poll.first_received_at or t0, poll.samples[-1][0] if poll.samples else t0
    per: dict[str, float] = {}
    per_sys: dict[str, float] = {}
    threads: list[dict[str, Any]] = []
    for tid, (comm, after, after_sys) in cpu1.items():
        _, before, before_sys = cpu0.get(tid, (comm, 0.0, 0.0))
        used, sys_used = after - before, after_sys - before_sys
        name = names.get(tid, comm)
        role = classify(name, tid, pid)
        per[role] = per.get(role, 0.0) + used
        per_sys[role] = per_sys.get(role, 0.0) + sys_used
        if used > 0.005:
            threads.append({"tid": tid, "name": name, "role": role, "cpu_s": round(used, 2),
                            "sys_s": round(sys_used, 2)})
    us = {k: round(v / count * 1e6, 2) if count else None for k, v in per.items()}
    out = {"n": args.n, "sent": sent.sent, "committed": count,
           "msgs_per_s": round(count / (end - start)) if count and end > start else 0,
           "cpu_us_per_msg": us,
           "sys_us_per_msg": {k: round(v / count * 1e6, 2) if count else None for k, v in per_sys.items()}, "cpu_us_per_msg_total": round(sum(per.values()) / count * 1e6, 2) if count else None,
           "threads": threads, "rss_mb": round(rss, 1), "python": sys.version.split()[0],
           "load": os.getloadavg()[0], "env": env, "measuring_cpu_s": round(time.process_time() - proc0, 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
