"""Per-stage budget from a ``bench.profile --py-spy DIR`` run: ``python -m bench.profile_budget DIR/profile.txt
--loop-us 33.6 --storage-us 8.6``.

Reads py-spy's collapsed stacks (``--format raw --threads``), takes each thread's samples (the event loop's
``MainThread``, the writer's ``sqlite-writer``), gives each sample to the first stage whose frame it
contains (``STAGES``, most specific first), and prints each stage's share of the thread's samples times the
thread's CPU microseconds per message (measured without py-spy: sampling inflates CPU time, not shares).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

# (stage, frame name prefix): the first that matches a sample's stack, innermost-first order of checking.
STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "loop": (
        ("workflow engine (WorkflowEngine.run)", "WorkflowEngine.run "),
        ("workflow: apply, state, size check", "Dispatcher._run_workflows "),
        ("translator (fields from the payload)", "translate "),
        ("planner (device id, message id)", "plan "),
        ("record + device state queued (_finish)", "Dispatcher._finish "),
        ("compiled route: fields, workflows, device (_Route.run)", "_Route.run "),
        ("compiled route: decode, planner, device, route", "CompiledRoutes.run "),
        ("compiled route: device stored, record queued", "Dispatcher._finish_compiled "),
        ("route, device, view, sentinel", "Dispatcher.handle "),
        ("intake, batches (DataPlane._work)", "DataPlane._work "),
        ("writer: rows from records (prepare)", "prepare "),
        ("writer: task, commit hand-off, accounting", "BatchWriter."),
        ("MQTT read + PUBLISH decode (fast path)", "FastPath."),
        ("MQTT (paho/aiomqtt, other)", "Client."),
    ),
    "storage": (
        ("SQLite: commit (inserts, upserts, COMMIT)", "commit "),
        ("retention pruning", "prune"),
    ),
}
THREADS = {"loop": "MainThread", "storage": "sqlite-writer"}
IDLE = "_worker ("  # an executor thread waiting for work: py-spy cannot tell that wait from running


def budget(path: Path, thread: str, stages: tuple[tuple[str, str], ...]) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or thread not in frames[0] or frames[-1].startswith(IDLE):
            continue
        total += int(n)
        names = frames[1:]
        for stage, prefix in stages:
            if any(f.startswith(prefix) for f in names):
                counts[stage] += int(n)
                break
        else:
            counts["other (event loop, interpreter)"] += int(n)
    return total, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", type=Path)
    ap.add_argument("--loop-us", type=float, required=True, help="loop thread CPU us per message (bench.profile)")
    ap.add_argument("--storage-us", type=float, required=True, help="writer thread CPU us per message")
    args = ap.parse_args()
    for role, us in (("loop", args.loop_us), ("storage", args.storage_us)):
        total, counts = budget(args.profile, THREADS[role], STAGES[role])
        print(f"| {role} thread: {us:.1f} us/message | share | us/message |")
        print("|---|---:|---:|")
        for stage, n in counts.most_common():
            print(f"| {stage} | {100 * n / total:.0f} % | {us * n / total:.1f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
