"""Where the CPU goes per message with a PostgreSQL data stream on and off:
``python -m bench.stream_profile [-n 60000] [--rounds 3] [--devices 200] [--py-spy DIR]``.

Starts its own mosquitto and PostgreSQL (``tests/support/databases.py``), then per round, back to back like
the bench's ``datastream`` phase: a fresh daemon on the plain benchmark solution, then a fresh daemon on the
streams solution (``bench/streams.py``, a new table each round). QoS 0 at full speed. For each run: the
committed rate (the stream run counts a message once its row is committed in PostgreSQL), and the CPU time
per committed message of each of the daemon's threads (``/proc/<pid>/task/*/stat``, as ``bench.profile``)
and of the PostgreSQL server's processes, from the first message to the last row. One JSON line per run.
``--sink down`` points the stream at a port nothing listens on: the route's step and the queue only (rows
stay queued). ``--py-spy DIR`` samples each run (``--format raw``) for a per-function comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, Poll, Publisher
from bench.profile import CpuSnapshot, children_cpu, classify, python_thread_names, thread_cpu
from bench.streams import stream_written, streams_solution, table_rows


def one_run(workdir: Path, broker: Any, pg: Any, devices: int, n: int, run: str, stream: bool,
            pyspy: Path | None, sink: str = "postgres") -> dict[str, Any]:
    bench = Bench(workdir, broker, devices)
    table = f"t{run}"
    where = (pg.host, pg.port) if sink == "postgres" else ("127.0.0.1", 9)  # "down": rows stay queued
    solution = streams_solution(workdir.with_suffix(".yaml"), postgres=where, table=table) if stream else None
    stream = stream and sink == "postgres"
    if solution is not None:
        bench.start_daemon(solution=solution)
    else:
        bench.start_daemon()
    spy: subprocess.Popen[bytes] | None = None
    kid_spies: list[subprocess.Popen[bytes]] = []
    try:
        pid = bench.pid
        if pyspy is not None:
            pyspy.mkdir(parents=True, exist_ok=True)
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--threads", "--format",
                                    "raw", "-o", str(pyspy / f"{run}-{'stream' if stream else 'plain'}.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            kid_spies = [subprocess.Popen(  # the stream process, apart
                [exe, "record", "--pid", str(kid), "--rate", "1000", "--threads", "--format", "raw", "-o",
                 str(pyspy / f"{run}-{'stream' if stream else 'plain'}-process{kid}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for kid in children_cpu(pid)]
            time.sleep(1.0)
        snap0, cpu0 = CpuSnapshot.take(pid, pg.data), thread_cpu(pid)
        kid_threads0 = {kid: thread_cpu(kid) for kid in snap0.children}
        poll = Poll(bench.max_seq())
        pub = Publisher(broker.host, broker.port, run=run, n=n, qos=0, devices=devices).start()
        bench.poll_until(poll, n, pub, interval=0.02)
        pub.result()
        rows, done_at = (stream_written(bench, "pgtelemetry", poll.count, 600) if stream else (0, 0.0))
        snap1, cpu1 = CpuSnapshot.take(pid, pg.data), thread_cpu(pid)
        kid_threads = {kid: thread_cpu(kid) for kid in snap1.children}
        if stream:
            rows = min(rows, table_rows(pg.dsn, table, run))
        for one in ([spy] if spy is not None else []) + kid_spies:
            one.send_signal(signal.SIGINT)
            one.wait(60)
        names = python_thread_names(pid)
    finally:
        bench.stop_daemon()
    count = poll.count
    start = poll.first_received_at or 0.0
    end = done_at if stream else (poll.samples[-1][0] if poll.samples else 0.0)
    done = rows if stream else count
    per: dict[str, float] = {}
    per_sys: dict[str, float] = {}
    threads: dict[str, float] = {}
    for tid, (comm, after, after_sys) in cpu1.items():
        _, before, before_sys = cpu0.get(tid, (comm, 0.0, 0.0))
        used = after - before
        name = names.get(tid, comm)
        role = classify(name, tid, pid)
        per[role] = per.get(role, 0.0) + used
        per_sys[role] = per_sys.get(role, 0.0) + after_sys - before_sys
        if used > 0.01:
            threads[name] = threads.get(name, 0.0) + used
    parts = snap1.us_per(snap0, done)  # machine, stream process, PostgreSQL
    us = {k: round(v / done * 1e6, 1) for k, v in per.items()} if done else {}
    kid_per: dict[str, float] = {}  # the stream process's threads: its event loop and the SQLite queue's
    for kid, tasks in kid_threads.items():
        for tid, (comm, after, _) in tasks.items():
            name = "loop" if tid == kid else comm
            kid_per[name] = kid_per.get(name, 0.0) + after - kid_threads0.get(kid, {}).get(tid, (comm, 0.0, 0.0))[1]
    return {"run": run, "stream": stream, "committed": count, "rows": rows,
            "msgs_per_s": round(done / (end - start)) if done and end > start else 0,
            "cpu_us_per_msg": us,
            "sys_us_per_msg": {k: round(v / done * 1e6, 1) for k, v in per_sys.items()} if done else {},
            "tail_s": round(done_at - poll.samples[-1][0], 3) if stream and poll.samples else None, "daemon_us_per_msg": round(sum(per.values()) / done * 1e6, 1) if done else None,
            "pg_us_per_msg": parts["postgres"] if done and stream else None,
            "stream_process_us_per_msg": parts["stream_process"] if done else None,
            "stream_process_threads_us": {k: round(v / done * 1e6, 2) for k, v in kid_per.items()} if done else {},
            "machine_us_per_msg": parts["machine"] if done else None,
            "threads_us": {k: round(v / done * 1e6, 1) for k, v in threads.items()} if done else {},
            "load": round(os.getloadavg()[0], 2)}


def main() -> int:
    from tests.support.databases import Postgres
    from tests.support.mosquitto import Mosquitto

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--only", choices=("plain", "stream"), help="one kind of run only")
    ap.add_argument("--sink", choices=("postgres", "down"), default="postgres",
                    help="down: the stream's database unreachable (the route's step and the queue only)")
    ap.add_argument("--py-spy", dest="pyspy", type=Path, help="also sample with py-spy record into this dir")
    args = ap.parse_args()
    tag = int(time.time()) % 100000
    with tempfile.TemporaryDirectory(prefix="nuviot-stream-profile-") as tmp, \
            Mosquitto(Path(tmp) / "broker") as broker, Postgres(Path(tmp) / "postgres") as pg:
        for r in range(args.rounds):
            pair: dict[bool, dict[str, Any]] = {}
            for stream in (False, True):
                if args.only is not None and stream != (args.only == "stream"):
                    continue
                run = f"s{tag}r{r}{'s' if stream else 'p'}"
                pair[stream] = res = one_run(Path(tmp) / run, broker, pg, args.devices, args.n, run, stream,
                                             args.pyspy, args.sink)
                print(json.dumps(res), flush=True)
            if len(pair) == 2 and pair[False]["msgs_per_s"]:
                print(json.dumps({"round": r, "ratio": round(pair[True]["msgs_per_s"] / pair[False]["msgs_per_s"],
                                                              3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
