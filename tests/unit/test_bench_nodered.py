"""The Node-RED peer run's memory-only mode (bench/nodered.py, issue 17): what it counts is what it claims."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.nodered import EVERY, _Lines, flow, function_memory

NODE = shutil.which("node")

# The function node's body run in node with a stand-in for Node-RED's context (get/set on an object).
HARNESS = """
const body = %s;
const fn = new Function("msg", "context", body);
const store = {};
const context = { get: (k) => store[k], set: (k, v) => { store[k] = v; } };
const out = [];
for (const [topic, payload] of %s) {
  const r = fn({ topic, payload }, context);
  if (r !== null && r !== undefined) out.push(JSON.parse(r.payload));
}
console.log(JSON.stringify({ out, devices: store.devices }));
"""


def _run(messages: list[tuple[str, dict[str, object]]], run: str) -> dict[str, object]:
    assert NODE is not None
    script = HARNESS % (json.dumps(function_memory(run)), json.dumps(messages))
    done = subprocess.run([NODE, "-e", script], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="node is not installed: the function node's JavaScript cannot run")
def test_memory_function_passes_one_counted_message_in_every_and_keeps_all_state() -> None:
    msgs: list[tuple[str, dict[str, object]]] = [
        ("bench/d0000/q0", {"seq": "r1w-0", "ts": 1.0, "temperature": 1.5, "humidity": 1, "mode": "auto"}),
    ]
    for i in range(2 * EVERY + 7):
        msgs.append((f"bench/d{i % 3:04d}/q0", {"seq": f"r1-{i}", "ts": float(i), "temperature": 20.0 + i,
                                                "humidity": i, "mode": "manual" if i == 5 else "auto"}))
    got = _run(msgs, "r1")
    out = got["out"]
    assert [o["n"] for o in out] == [0, EVERY, 2 * EVERY]  # the warm-up line, then one per EVERY counted
    assert out[0]["seq"] == "r1w-0"
    assert out[1]["seq"] == f"r1-{EVERY - 1}"
    devices = got["devices"]
    assert isinstance(devices, dict)
    last = 2 * EVERY + 6
    assert devices[f"d{last % 3:04d}"]["attributes"] == {"temperature": 20.0 + last, "humidity": last,
                                                          "sentat": float(last)}
    # d0002 saw "manual" at i=5 (automatic -> manualmode), then "auto" again (-> automatic)
    assert {d["state"] for d in devices.values()} == {"automatic"}


def test_flow_uses_the_memory_function_only_when_asked(tmp_path: Path) -> None:
    file_flow = flow("127.0.0.1", 1883, 0, tmp_path / "out", "c")
    memory_flow = flow("127.0.0.1", 1883, 0, tmp_path / "out", "c", memory_run="r9")
    func = next(n for n in file_flow if n["type"] == "function")["func"]
    mfunc = next(n for n in memory_flow if n["type"] == "function")["func"]
    assert "EVERY" not in func
    assert mfunc.startswith('const RUN = "r9-";\nconst EVERY = 100;\n')


def test_counted_lines_read_the_latest_count_of_this_run_only(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    lines = _Lines(out, b'"seq":"r5-', counted=True)
    assert lines.poll() == 0  # no file yet
    out.write_bytes(b'{"seq":"r5w-0","n":0}\n{"seq":"r5-99","n":100}\n{"seq":"r5-1')
    assert lines.poll() == 100  # the partial line waits for its end
    with open(out, "ab") as fh:
        fh.write(b'99","n":200}\n{"seq":"r6-1","n":900}\n')
    assert lines.poll() == 200  # another run's line is not counted
