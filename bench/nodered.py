"""A peer run: the benchmark's flow in Node-RED 4, against the same broker and the same publisher.

``python -m bench.nodered [--quick]`` starts its own mosquitto, runs the bare-aiomqtt baseline (QoS 0) and
then :func:`run_nodered` (QoS 0), and prints both rates and their ratio. ``bench/__main__.py`` can call
:func:`run_nodered` beside the runtime's end-to-end phase and report the runtime's rate as a ratio to it.

What runs: ``mqtt in`` (``bench/+/q0`` or ``q1``, the QoS given, clean session) -> ``json`` -> ``function``
(the equivalent of ``bench/solution.yaml``'s route: device id from the topic, per-device attributes
temperature / humidity / sentat kept in the node's context, the two-state ``mode`` machine
automatic <-> manualmode) -> ``file`` (append one JSON line per message, newline added). Only core nodes:
``node-red-node-sqlite`` needs a native build that npm's install-scripts policy may refuse.

How it is measured, so the figure is comparable to the runtime's: the same ``Publisher`` (separate process,
as fast as the socket takes it) feeds the same mosquitto; this process reads the output file incrementally
every 20 ms and counts the lines carrying the run's ``seq`` prefix; the rate is count / (moment the last
line is seen - the publisher's first send), as for the baseline and the runtime (``harness.rate``). Before
the publisher starts, a few warm-up messages (another run id, not counted) must have reached the file: the
subscription is live. Not from the first line seen: Node-RED reads a backlog in big chunks (libuv reads up
to 32 x 64 KB per readable event, every node hands on through ``setImmediate``), so its first line shows
only after ~0.9 s of work on 60,000 messages; timed from there, its rate read 1.1-1.7x what it is
(``msgs_per_s_from_first_line`` keeps that figure; docs/performance.md "End to end: where the rate goes").

Memory only (``memory=True``): what most Node-RED flows do. The same flow and state update, but the
function passes on one message of the run in ``EVERY`` (100), carrying the count of the run's messages it
has processed so far; the file node writes only those lines. The rate is the count in the last line seen /
(the moment it was seen - the publisher's first send). Warm-up messages still all reach the file.

What differs: Node-RED writes one file line per message (no transaction, no fsync), the runtime commits one
SQLite record per message *and* saves the device state; Node-RED's device state lives only in memory. So
Node-RED does less durable work per message: the comparison favours it. ``rss_mb`` is Node-RED's ``VmRSS``
at the end; ``cpu_s`` its user+system CPU seconds during the measured run (start-up excluded).

Node-RED is not a project dependency: it is installed on demand with npm into
``$NUVIOT_BENCH_NODERED_DIR`` (default ``~/.cache/nuviot-bench/node-red``). Without node/npm, or if the
install or the start fails, the result is ``{"skipped": "<reason>"}``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Publisher, rate, rss_mb
from bench.publisher import publish
from tests.support.net import free_port

CACHE = Path(os.environ.get("NUVIOT_BENCH_NODERED_DIR") or Path.home() / ".cache/nuviot-bench/node-red")

# The workflow's state update, the same in both flows: the device's attributes and its state machine in
# the function node's context memory.
_STATE_UPDATE = """\
const device = msg.topic.split("/")[1];
let devices = context.get("devices");
if (devices === undefined) { devices = {}; context.set("devices", devices); }
let d = devices[device];
if (d === undefined) { d = devices[device] = { attributes: {}, state: "automatic" }; }
const p = msg.payload;
d.attributes.temperature = p.temperature;
d.attributes.humidity = p.humidity;
d.attributes.sentat = p.ts;
if (p.mode === "manual" && d.state === "automatic") { d.state = "manualmode"; }
else if (p.mode === "auto" && d.state === "manualmode") { d.state = "automatic"; }
"""

# File sink: every message goes on to the file node.
FUNCTION = _STATE_UPDATE + """\
msg.payload = JSON.stringify({ seq: p.seq, device: device, attributes: d.attributes, state: d.state });
return msg;
"""

# Memory only: the same state update; the file node is reached by one counted message in EVERY (and by every
# warm-up message), with the count of the run's messages processed so far: that count is what is measured.
FUNCTION_MEMORY = _STATE_UPDATE + """\
if (!p.seq.startsWith(RUN)) { msg.payload = JSON.stringify({ seq: p.seq, n: 0 }); return msg; }
const n = (context.get("n") || 0) + 1;
context.set("n", n);
if (n % EVERY !== 0) { return null; }
msg.payload = JSON.stringify({ seq: p.seq, n: n, device: device, attributes: d.attributes, state: d.state });
return msg;
"""
EVERY = 100


def function_memory(run: str, every: int = EVERY) -> str:
    return f"const RUN = {json.dumps(run + '-')};\nconst EVERY = {int(every)};\n" + FUNCTION_MEMORY


def ensure_installed(cache: Path = CACHE) -> tuple[Path | None, str]:
    """``(red.js, "")`` once Node-RED 4 is in ``cache``, else ``(None, reason)``."""
    red = cache / "node_modules" / "node-red" / "red.js"
    if not shutil.which("node"):
        return None, "node is not installed"
    if red.exists():
        return red, ""
    npm = shutil.which("npm")
    if not npm:
        return None, "npm is not installed"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), "node-red@4"],
                             capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"npm install node-red@4 failed: {exc}"
    if out.returncode != 0 or not red.exists():
        tail = " | ".join((out.stderr or out.stdout).strip().splitlines()[-5:])
        return None, f"npm install node-red@4 failed ({out.returncode}): {tail}"
    return red, ""


def flow(host: str, port: int, qos: int, out: Path, client_id: str, *,
         memory_run: str | None = None) -> list[dict[str, Any]]:
    """The flow; with ``memory_run`` the memory-only function (``function_memory``) counting that run."""
    # Ids must not equal any property value: the runtime reads such a value as a config-node reference.
    z, b, i, j, f, o = (f"{k:016x}" for k in range(0xbe0c0001, 0xbe0c0007))
    return [
        {"id": z, "type": "tab", "label": "bench"},
        {"id": b, "type": "mqtt-broker", "name": "mosquitto", "broker": host, "port": str(port),
         "clientid": client_id, "autoConnect": True, "usetls": False, "protocolVersion": "4", "keepalive": "60",
         "cleansession": True, "autoUnsubscribe": True},
        {"id": i, "type": "mqtt in", "z": z, "name": "mqtt in", "topic": f"bench/+/{'q1' if qos else 'q0'}",
         "qos": str(qos), "datatype": "utf8", "broker": b, "nl": False, "rap": True, "rh": 0,
         "inputs": 0, "wires": [[j]]},
        {"id": j, "type": "json", "z": z, "property": "payload", "action": "obj", "pretty": False,
         "wires": [[f]]},
        {"id": f, "type": "function", "z": z, "name": "workflow", "outputs": 1,
         "func": FUNCTION if memory_run is None else function_memory(memory_run),
         "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [], "wires": [[o]]},
        {"id": o, "type": "file", "z": z, "name": "records", "filename": str(out), "filenameType": "str",
         "appendNewline": True, "createDir": False, "overwriteFile": "false", "encoding": "none", "wires": [[]]},
    ]


def settings(user_dir: Path, flow_file: Path) -> str:
    return "module.exports = " + json.dumps({
        "uiPort": free_port(), "uiHost": "127.0.0.1",  # unused: with no admin/node root it runs headless
        "httpAdminRoot": False, "httpNodeRoot": False,
        "userDir": str(user_dir), "flowFile": str(flow_file), "credentialSecret": False,
        "logging": {"console": {"level": "warn", "metrics": False, "audit": False}},
        "telemetry": {"enabled": False}, "functionExternalModules": False,
        "externalModules": {"autoInstall": False, "palette": {"allowInstall": False},
                            "modules": {"allowInstall": False}},
    }, indent=2) + ";\n"


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


class _Lines:
    """Counts the newline-terminated lines containing ``needle`` appended to a file (read incrementally)."""

    def __init__(self, path: Path, needle: bytes, *, counted: bool = False) -> None:
        self.path, self.needle, self.counted = path, needle, counted
        self.pos, self.partial, self.count = 0, b"", 0

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except FileNotFoundError:
            return self.count
        self.pos += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        if self.counted:  # memory only: each line carries the count of messages processed so far
            for line in lines:
                if self.needle in line:
                    self.count = max(self.count, int(json.loads(line)["n"]))
        else:
            self.count += sum(1 for line in lines if self.needle in line)
        return self.count


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_nodered(host: str, port: int, qos: int, n: int, devices: int, run: str, *,
                memory: bool = False) -> dict[str, Any]:
    """One Node-RED run: ``memory`` False, a file line per message; True, state in context memory and the file
    node reached by one message in ``EVERY`` (rate from the count those lines carry)."""
    red, reason = ensure_installed()
    if red is None:
        return {"skipped": reason}
    node = shutil.which("node") or "node"
    version = json.loads((red.parent / "package.json").read_text())["version"]
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="nuviot-bench-nodered-") as tmp:
        d = Path(tmp)
        out, flow_file, settings_file, log = d / "records.jsonl", d / "flows.json", d / "settings.js", d / "log"
        flow_file.write_text(json.dumps(flow(host, port, qos, out, f"bench-nodered-{run}",
                                             memory_run=run if memory else None), indent=1))
        settings_file.write_text(settings(d, flow_file))
        with open(log, "wb") as log_fh:
            proc = subprocess.Popen([node, str(red), "--settings", str(settings_file), "--userDir", tmp,
                                     "--no-telemetry", str(flow_file)], cwd=tmp, stdout=log_fh,
                                    stderr=subprocess.STDOUT, env=os.environ | {"NODE_RED_DISABLE_TELEMETRY": "1"})
        try:
            # Warm-up: one message at a time (another run id) until one is in the file: subscribed, wired.
            warm, deadline = _Lines(out, f'"seq":"{run}w-'.encode()), time.monotonic() + 60
            while not warm.poll():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
                    return {"skipped": f"Node-RED did not start or connect (exit {proc.poll()}): {tail}"}
                publish(host, port, run=f"{run}w", n=1, qos=qos, devices=devices, client_id="bench-warmup")
                time.sleep(0.5)
            lines = _Lines(out, f'"seq":"{run}-'.encode(), counted=memory)
            lines.pos = out.stat().st_size  # warm-up lines are behind us
            cpu0 = cpu_s(proc.pid)
            pub = Publisher(host, port, run=run, n=n, qos=qos, devices=devices).start()
            first = last = 0.0
            count, last_change, deadline = 0, time.time(), time.monotonic() + 900
            base = 1  # messages already behind the first sighting (file: its line; memory: the count it carries)
            while time.monotonic() < deadline:
                now, got = time.time(), lines.poll()
                if got != count:
                    if not first and memory:
                        base = got
                    first, last, count, last_change = first or now, now, got, now
                if count >= n or (not pub.running and now - last_change > 5.0):
                    break
                time.sleep(0.02)
            sent = pub.result()
            used = cpu_s(proc.pid) - cpu0
            return {"qos": qos, "sent": sent.sent, "received": count,
                    "msgs_per_s": rate(count, sent.first_at, last),
                    "msgs_per_s_from_first_line": ((count - base) / (last - first) if count > base and last > first
                                                   else 0.0),
                    "published_at": sent.first_at, "first_line_after_s": round(first - sent.first_at, 3),
                    "last_at": last,
                    "rss_mb": rss_mb(proc.pid), "cpu_s": round(used, 2),
                    "cpu_us_per_msg": round(used / count * 1e6, 1) if count else None,
                    "version": version, "node": node_version,
                    "sink": f"memory (file node: 1 message in {EVERY})" if memory else "file (a line per message)"}
        finally:
            _stop(proc)


def main() -> int:
    import argparse
    import sys

    from bench.harness import run_baseline
    from tests.support.mosquitto import Mosquitto

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60,000 messages, 200 devices")
    args = ap.parse_args()
    n, devices = (60_000, 200) if args.quick else (200_000, 1000)
    run = f"r{int(time.time()) % 100000}"
    with tempfile.TemporaryDirectory(prefix="nuviot-bench-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        print(f"# Node-RED peer run: broker {broker.host}:{broker.port}, {n:,} messages, {devices} devices",
              file=sys.stderr)
        base = run_baseline(broker.host, broker.port, 0, n, devices, run + "b0")
        nr = run_nodered(broker.host, broker.port, 0, n, devices, run + "n0")
        nm = run_nodered(broker.host, broker.port, 0, n, devices, run + "m0", memory=True)
    print(f"baseline QoS0 (bare aiomqtt): {base['msgs_per_s']:,.0f} msg/s ({base['received']:,} of {base['sent']:,})")
    if "skipped" in nr:
        print(f"Node-RED: skipped: {nr['skipped']}")
        print(json.dumps({"baseline": base, "nodered": nr}))
        return 0
    ratio = nr["msgs_per_s"] / base["msgs_per_s"] if base["msgs_per_s"] else float("nan")
    print(f"Node-RED {nr['version']} (node {nr['node']}) QoS0: {nr['msgs_per_s']:,.0f} msg/s "
          f"({nr['received']:,} of {nr['sent']:,}); RSS {nr['rss_mb']:.0f} MB, CPU {nr['cpu_s']:.1f} s")
    print(f"Node-RED / baseline: {ratio:.3f}")
    if "msgs_per_s" in nm:
        print(f"Node-RED memory only QoS0: {nm['msgs_per_s']:,.0f} msg/s ({nm['received']:,} of {nm['sent']:,}); "
              f"RSS {nm['rss_mb']:.0f} MB, CPU {nm['cpu_s']:.1f} s")
    print(json.dumps({"baseline": base, "nodered": nr, "nodered_memory": nm, "ratio_to_baseline": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
