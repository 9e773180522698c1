"""``python -m bench [--quick]``: the runtime's end-to-end benchmark (``make bench`` / ``make bench-quick``).

Starts its own mosquitto and the real daemon on ``bench/solution.yaml``, provisions the devices through the
admin API, then, in one run: the bare-aiomqtt baseline (QoS 0 and 1), the end-to-end rate (records
committed in SQLite, QoS 0 and 1), latency at a fixed offered load, REST through aiohttp clients, and the
daemon's RSS. Prints a table, then, as the last line, one JSON object. Writes ``bench/results/<mode>.json``
and ``.md`` unless ``--no-save``. Measurement details: ``bench/harness.py``. Never part of ``make test``.
Then, unless ``--no-fallback``, a second daemon with ``NUVIOT_MQTT_FASTPATH=0`` (the MQTT listener on plain
aiomqtt, the fallback ``runtime/adapters/listeners/mqtt_fastpath.py`` chooses when paho's internals differ)
measures the same end-to-end QoS 0 and QoS 1 rates: ``fastpath_gain_q0``/``_q1`` is the fast path's gain.
``--nodered`` adds the peer runs (``bench/nodered.py``): the same flow in Node-RED 4, installed with npm on
first use, fed by the same publisher through the same broker (``make bench BENCH_ARGS=--nodered``), twice:
a file line per message (``ratio_to_nodered``) and memory only, the file node reached by one message in 100
(``ratio_to_nodered_memory``: issue 17's goal, >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, machine, rss_mb, rss_series_summary, run_baseline
from bench.nodered import ensure_installed, run_nodered
from bench.streams import run_datastream_phase
from tests.support.mosquitto import Mosquitto

RESULTS = Path(__file__).resolve().parent / "results"
# rss_mb: issue 17 (issue 7 asked < 200 MB); flat: the QoS0 run's RSS grows by less than rss_growth_mb after its
# first 10 % (the heap has reached its working size by then; a leak keeps growing with the messages)
GOALS = {"e2e_msgs_per_s": 10_000, "ratio_q0": 0.60, "p99_ms": 25.0, "rss_mb": 120.0, "rss_growth_mb": 10.0,
         "ratio_datastream": 0.80}

PROFILES = {
    #          e2e QoS0   e2e QoS1  baseline  latency s  REST n  devices
    "full": dict(n0=1_000_000, n1=200_000, nb=200_000, lat_s=30, rest_n=50_000, devices=1000, nds=200_000),
    "quick": dict(n0=60_000, n1=30_000, nb=60_000, lat_s=8, rest_n=10_000, devices=200, nds=60_000),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer messages: under two minutes")
    ap.add_argument("--rate", type=float, default=2000.0, help="offered load of the latency runs (msg/s)")
    ap.add_argument("--concurrency", type=int, default=32, help="REST clients")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    ap.add_argument("--no-fallback", action="store_true",
                    help="skip the end-to-end run with the MQTT fast path off (NUVIOT_MQTT_FASTPATH=0)")
    ap.add_argument("--nodered", action="store_true",
                    help="peer run: the same flow in Node-RED 4 (installed with npm on first use; bench/nodered.py)")
    ap.add_argument("--cluster", action="store_true",
                    help="the Cluster edition instead: scaling, end to end, faults (bench/cluster.py)")
    ap.add_argument("--cluster-size", type=int, default=20_000, help="readings per cluster phase")
    ap.add_argument("--cluster-phases", default="scaling,e2e,kill,restart",
                    help="which cluster phases to run (comma-separated; default all)")
    args = ap.parse_args()
    if args.cluster:
        from bench.cluster import main as cluster_main

        return cluster_main(args.cluster_size, args.cluster_phases.split(","))
    mode = "quick" if args.quick else "full"
    p = PROFILES[mode]
    t0 = time.time()
    run = f"r{int(t0) % 100000}"
    res: dict[str, Any] = {"mode": mode, "devices": p["devices"], "machine": machine(), "load": {"start": load()}}
    red_js, why_not = ensure_installed() if args.nodered else (None, "")  # before the clock matters
    with tempfile.TemporaryDirectory(prefix="nuviot-bench-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        print(f"# nuviot-runtime benchmark ({mode}): broker {broker.host}:{broker.port}, {p['devices']} devices",
              file=sys.stderr)
        b0 = run_baseline(broker.host, broker.port, 0, p["nb"], p["devices"], run + "b0")
        b1 = run_baseline(broker.host, broker.port, 1, p["nb"] // 2, p["devices"], run + "b1")
        res["load"]["baseline_done"] = load()
        if args.nodered:
            res["nodered_q0"] = (run_nodered(broker.host, broker.port, 0, p["nb"], p["devices"], run + "nr")
                                 if red_js is not None else {"skipped": why_not})
            res["nodered_memory_q0"] = (run_nodered(broker.host, broker.port, 0, p["nb"], p["devices"], run + "nm",
                                                    memory=True) if red_js is not None else {"skipped": why_not})
            res["load"]["nodered_done"] = load()
        bench = Bench(Path(tmp), broker, p["devices"])
        bench.start_daemon()
        try:
            rss_start = rss_mb(bench.pid)
            q0 = bench.throughput(0, p["n0"], run + "q0")
            res["load"]["e2e_q0_done"] = load()
            rss_after_q0 = rss_mb(bench.pid)
            q1 = bench.throughput(1, p["n1"], run + "q1")
            l0 = bench.latency(0, args.rate, p["lat_s"], run + "l0")
            l1 = bench.latency(1, args.rate, p["lat_s"], run + "l1")
            rest = bench.rest(p["rest_n"], args.concurrency, run + "h")
            rss_end = rss_mb(bench.pid)
            final = bench.counters()
        finally:
            code = bench.stop_daemon()
        if not args.no_fallback:
            res["fallback_q0"], res["fallback_q1"] = run_fallback(Path(tmp) / "fallback", broker, p, run)
        try:  # issue 13: the same QoS0 flow with a PostgreSQL data stream written by every message
            ds = run_datastream_phase(Path(tmp), broker, p["devices"], p["nds"], run + "ds")
        except RuntimeError as exc:  # PostgreSQL not installed: `make bench` installs it
            ds = {"skipped": str(exc)}
    res.update({
        "baseline_q0": b0, "baseline_q1": b1,
        "e2e_q0": {k: v for k, v in q0.items() if k != "rss"} | rss_series_summary(q0["rss"]),
        "e2e_q1": {k: v for k, v in q1.items() if k != "rss"},
        "latency_q0": l0, "latency_q1": l1, "rest": rest, "datastream_q0": ds,
        "rss": {"start_mb": rss_start, "after_q0_mb": rss_after_q0, "end_mb": rss_end},
        "rss_samples_q0": [(c, round(mb, 1)) for _, c, mb in q0["rss"]],
        "final_counters": final, "daemon_exit": code, "seconds": round(time.time() - t0, 1),
    })
    summary = {
        "e2e_msgs_per_s": round(q0["msgs_per_s"]),
        "baseline_msgs_per_s": round(b0["msgs_per_s"]),
        "ratio_q0": round(q0["msgs_per_s"] / b0["msgs_per_s"], 3) if b0["msgs_per_s"] else None,
        "e2e_q1_msgs_per_s": round(q1["msgs_per_s"]),
        "baseline_q1_msgs_per_s": round(b1["msgs_per_s"]),
        "ratio_q1": round(q1["msgs_per_s"] / b1["msgs_per_s"], 3) if b1["msgs_per_s"] else None,
        "p50_ms": round(l0["p50_ms"], 2), "p99_ms": round(l0["p99_ms"], 2),
        "p99_processed_ms": round(l0["processed_p99_ms"], 2), "p99_q1_ms": round(l1["p99_ms"], 2),
        "rss_mb": round(max(rss_end, res["e2e_q0"].get("rss_peak_mb", 0.0)), 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_growth_mb": round(res["e2e_q0"].get("rss_peak_mb", 0.0) - res["e2e_q0"].get("rss_at_10pct_mb", 0.0), 1),
        "rest_req_per_s": round(rest["req_per_s"]), "rest_p99_ms": round(rest["p99_ms"], 2),
        "messages_q0": q0["committed"], "refused_q0": q0["refused"], "mode": mode,
        "nproc": res["machine"]["nproc"],
        "load": [res["load"]["start"], res["load"]["e2e_q0_done"]],  # 1-minute load average: start, after QoS0
    }
    if "fallback_q0" in res:
        f0, f1 = res["fallback_q0"], res["fallback_q1"]
        summary["fallback_q0_msgs_per_s"] = round(f0["msgs_per_s"])
        summary["fastpath_gain_q0"] = round(q0["msgs_per_s"] / f0["msgs_per_s"], 2) if f0["msgs_per_s"] else None
        summary["fallback_q1_msgs_per_s"] = round(f1["msgs_per_s"])
        summary["fastpath_gain_q1"] = round(q1["msgs_per_s"] / f1["msgs_per_s"], 2) if f1["msgs_per_s"] else None
    if "msgs_per_s" in ds:
        base = ds["without_stream_msgs_per_s"]
        summary["datastream_msgs_per_s"] = round(ds["msgs_per_s"])
        summary["datastream_without_msgs_per_s"] = round(base)
        summary["ratio_datastream"] = round(ds["msgs_per_s"] / base, 3) if base else None
        w, c = ds.get("cpu_us_per_msg_without") or {}, ds.get("cpu_us_per_msg") or {}
        if w.get("machine") and c.get("machine"):
            summary["datastream_cpu_us_per_msg"] = [w["machine"], c["machine"]]
        summary["datastream_pair_ratios"] = ds.get("pair_ratios")
    nr = res.get("nodered_q0")
    if nr is not None and "msgs_per_s" in nr:
        summary["nodered_msgs_per_s"] = round(nr["msgs_per_s"])
        summary["ratio_to_nodered"] = round(q0["msgs_per_s"] / nr["msgs_per_s"], 2) if nr["msgs_per_s"] else None
    nm = res.get("nodered_memory_q0")
    if nm is not None and "msgs_per_s" in nm:
        summary["nodered_memory_msgs_per_s"] = round(nm["msgs_per_s"])
        summary["ratio_to_nodered_memory"] = (round(q0["msgs_per_s"] / nm["msgs_per_s"], 2) if nm["msgs_per_s"]
                                              else None)
        # the figure timed from Node-RED's first output line instead of the first send (what it read before)
        summary["nodered_memory_msgs_per_s_from_first_line"] = round(nm["msgs_per_s_from_first_line"])
    res["summary"] = summary
    table = render_table(res, summary)
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{mode}.json").write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS / f"{mode}.md").write_text(render_markdown(res, table))
    print(json.dumps(summary))
    return 0


def run_fallback(workdir: Path, broker: Mosquitto, p: dict[str, Any], run: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """End-to-end QoS 0 and QoS 1 rates with the MQTT listener on plain aiomqtt (fresh data dir, same broker)."""
    bench = Bench(workdir, broker, p["devices"])
    bench.start_daemon(env={"NUVIOT_MQTT_FASTPATH": "0"})
    try:
        fast_path = {x["key"]: x.get("fastPath") for x in bench.status()["listeners"]}
        if fast_path.get("mqttin") is not False:
            raise RuntimeError(f"the fallback daemon runs the fast path: {fast_path}")
        f0 = bench.throughput(0, p["n0"], run + "f0")
        f1 = bench.throughput(1, p["n1"], run + "f1")
    finally:
        bench.stop_daemon()
    return ({k: v for k, v in f0.items() if k != "rss"}, {k: v for k, v in f1.items() if k != "rss"})


def load() -> float:
    """The 1-minute load average (the machine is shared: read every rate beside it)."""
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def render_table(res: dict[str, Any], s: dict[str, Any]) -> str:
    q0, q1, b0, b1 = res["e2e_q0"], res["e2e_q1"], res["baseline_q0"], res["baseline_q1"]
    l0, l1, rest, rss = res["latency_q0"], res["latency_q1"], res["rest"], res["rss"]
    rows = [
        ("baseline QoS0 (bare aiomqtt)", f"{b0['msgs_per_s']:,.0f} msg/s", f"{b0['received']:,} of {b0['sent']:,}", ""),
        ("baseline QoS1 (bare aiomqtt)", f"{b1['msgs_per_s']:,.0f} msg/s", f"{b1['received']:,} of {b1['sent']:,}", ""),
        ("end to end QoS0 (committed)", f"{q0['msgs_per_s']:,.0f} msg/s",
         f"{q0['committed']:,} of {q0['sent']:,}; refused {q0['refused']:,}",
         f">= {GOALS['e2e_msgs_per_s']:,}: {_ok(s['e2e_msgs_per_s'] >= GOALS['e2e_msgs_per_s'])}"),
        ("  ratio to baseline QoS0", f"{s['ratio_q0']:.2f}", "", f">= 0.60: {_ok((s['ratio_q0'] or 0) >= 0.6)}"),
        ("end to end QoS1 (committed)", f"{q1['msgs_per_s']:,.0f} msg/s",
         f"{q1['committed']:,} of {q1['sent']:,}; refused {q1['refused']:,}", ""),
        ("  ratio to baseline QoS1", f"{s['ratio_q1']:.2f}", "", ""),
        (f"latency QoS0 @ {l0['offered_per_s']:,.0f}/s committed", f"p50 {l0['p50_ms']:.1f} / p99 {l0['p99_ms']:.1f} ms",
         f"max {l0['max_ms']:.1f}; {l0['committed']:,} of {l0['sent']:,}", f"p99 < 25 ms: {_ok(l0['p99_ms'] < 25)}"),
        ("  same, processed (receivedAt+processingMs)",
         f"p50 {l0['processed_p50_ms']:.1f} / p99 {l0['processed_p99_ms']:.1f} ms", "", ""),
        (f"latency QoS1 @ {l1['offered_per_s']:,.0f}/s committed", f"p50 {l1['p50_ms']:.1f} / p99 {l1['p99_ms']:.1f} ms",
         f"max {l1['max_ms']:.1f}; {l1['committed']:,} of {l1['sent']:,}", ""),
        (f"REST ({rest['count']:,} POSTs)", f"{rest['req_per_s']:,.0f} req/s",
         f"p50 {rest['p50_ms']:.1f} / p99 {rest['p99_ms']:.1f} ms; {rest['statuses']}", ""),
        ("RSS start / after QoS0 / end", f"{rss['start_mb']:.0f} / {rss['after_q0_mb']:.0f} / {rss['end_mb']:.0f} MB",
         f"QoS0 run: at 10% {q0.get('rss_at_10pct_mb', 0):.0f}, peak {q0.get('rss_peak_mb', 0):.0f} MB",
         f"< {GOALS['rss_mb']:.0f} MB and flat (+{s['rss_growth_mb']:.0f} MB after 10 %, < "
         f"{GOALS['rss_growth_mb']:.0f}): {_ok(s['rss_mb'] < GOALS['rss_mb'] and s['rss_growth_mb'] < GOALS['rss_growth_mb'])}"),
    ]
    if "fallback_q0" in res:
        f0, f1 = res["fallback_q0"], res["fallback_q1"]
        rows.insert(4, ("  fallback QoS0 (fast path off)", f"{f0['msgs_per_s']:,.0f} msg/s",
                        f"{f0['committed']:,} of {f0['sent']:,}; refused {f0['refused']:,}",
                        f"fast path gain: {s['fastpath_gain_q0'] or 0:.2f}x"))
        rows.insert(7, ("  fallback QoS1 (fast path off)", f"{f1['msgs_per_s']:,.0f} msg/s",
                        f"{f1['committed']:,} of {f1['sent']:,}; refused {f1['refused']:,}",
                        f"fast path gain: {s['fastpath_gain_q1'] or 0:.2f}x"))
    ds = res.get("datastream_q0") or {}
    if "msgs_per_s" in ds:
        rows.append(("end to end QoS0 + PostgreSQL stream", f"{ds['msgs_per_s']:,.0f} msg/s",
                        f"{ds['rows']:,} rows of {ds['sent']:,}; refused {ds['refused']:,}; overflow {ds['overflow']}",
                        ""))
        pairs = ds.get("pair_ratios") or []
        of_pairs = f" (median of {len(pairs)} pairs: {', '.join(f'{r:.3f}' for r in sorted(pairs))})" if pairs else ""
        rows.append(("  same without the stream, back to back", f"{ds['without_stream_msgs_per_s']:,.0f} msg/s",
                        f"ratio {s['ratio_datastream']:.3f}{of_pairs}",
                        f">= 0.80: {_ok((s['ratio_datastream'] or 0) >= GOALS['ratio_datastream'])}"))
        w, c = ds.get("cpu_us_per_msg_without") or {}, ds.get("cpu_us_per_msg") or {}
        if w.get("machine") and c.get("machine"):  # both runs CPU-bound: the rates follow the CPU per message
            rows.append(("  CPU per message, whole machine", f"{w['machine']:.1f} / {c['machine']:.1f} µs",
                         f"without / with the stream: ratio {w['machine'] / c['machine']:.2f}", ""))
            rows.append(("  the stream's share of it", f"+{c['machine'] - w['machine']:.1f} µs",
                         f"PostgreSQL {c['postgres']:.1f}, stream process {c['stream_process']:.1f}, "
                         f"daemon +{c['daemon'] - w['daemon']:.1f}",
                         f"0.80 allows +{w['machine'] * (1 / GOALS['ratio_datastream'] - 1):.1f} µs"))
    elif ds:
        rows.append(("end to end QoS0 + PostgreSQL stream", "skipped", ds.get("skipped", "")[:60], ""))
    nr = res.get("nodered_q0")
    if nr is not None:
        if "msgs_per_s" in nr:
            rows.insert(4, (f"peer: Node-RED {nr['version']} QoS0 (file sink)", f"{nr['msgs_per_s']:,.0f} msg/s",
                            f"{nr['received']:,} of {nr['sent']:,}; RSS {nr['rss_mb']:.0f} MB",
                            f"end to end / Node-RED: {s['ratio_to_nodered']:.2f}"))
        else:
            rows.insert(4, ("peer: Node-RED", "skipped", nr["skipped"][:60], ""))
    nm = res.get("nodered_memory_q0")
    if nm is not None and "msgs_per_s" in nm:
        ratio = s.get("ratio_to_nodered_memory") or 0.0
        rows.insert(5, (f"peer: Node-RED {nm['version']} QoS0 (memory only)", f"{nm['msgs_per_s']:,.0f} msg/s",
                        f"{nm['received']:,} of {nm['sent']:,}; RSS {nm['rss_mb']:.0f} MB",
                        f"end to end / Node-RED memory: {ratio:.2f} (>= 1.0: {_ok(ratio >= 1.0)})"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    m = res["machine"]
    ld = res.get("load", {})
    head = (f"nuviot-runtime benchmark ({res['mode']}, {res['devices']} devices): {m['nproc']} CPUs, "
            f"{m['memory_gb']} GB, Python {m['python']}, {res['seconds']} s; load average "
            + " / ".join(f"{v:.2f}" for v in ld.values()))
    return head + "\n" + "\n".join(lines)


def render_markdown(res: dict[str, Any], table: str) -> str:
    m = res["machine"]
    return (
        f"# Benchmark results ({res['mode']})\n\n"
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, {m['mosquitto']}.\n"
        "The machine is shared and noisy (a CI-like VM with other jobs on it): absolute figures move by tens of\n"
        "percent between runs. Read the ratios against the same-run baseline (bare aiomqtt subscriber on the\n"
        "same broker and the same publisher, measured minutes before), not the absolute numbers.\n\n"
        "Broker, publisher (hand-built MQTT packets, `bench/publisher.py`), daemon and the measuring\n"
        "process all share those CPUs. Method: `bench/harness.py`.\n\n"
        "```\n" + table + "\n```\n\n"
        "Summary (the JSON line `python -m bench` prints last):\n\n"
        "```json\n" + json.dumps(res["summary"]) + "\n```\n"
    )


if __name__ == "__main__":
    sys.exit(main())
