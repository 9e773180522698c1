"""Micro-benchmark: the JSON body decoder with and without Newtonsoft's leniency (issue 12 item 3).

A message body is decoded by ``runtime.core.parsing.view._load_json``: strict JSON (orjson) first; only a body it
refuses, up to 64 KiB and showing a leniency (a C-speed regex search), is normalised (``lenient_json.normalise``)
and read again. The goal is that strict JSON does not get slower. This times, in CPU time per decode (best of
``--repeats`` runs of ``-n`` decodes, A and B interleaved within each run, and the spread over the runs):

- strict bodies through the strict-only decoder (orjson, then the error: the decoder before the lenient fallback)
  and through the runtime's decoder;
- the lenient bodies NuvIoT accepts (single quotes, a trailing comma, a comment, bare names), whose second reading
  is what the leniency costs, and two bodies that are not JSON (with and without a leniency hint).

Usage::

    .venv/bin/python -m bench.lenient_json [-n 200000] [--repeats 7]

Figures: docs/fidelity.md ("Values").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from bench.publisher import payload
from runtime.core.parsing.errors import INVALID_JSON, ParseError
from runtime.core.parsing.view import _load_json

Decoder = Callable[[bytes], object]


def strict_only(data: bytes) -> object:
    """The decoder without the lenient fallback: orjson, else the error."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return ParseError(INVALID_JSON, f"body is not JSON: {exc.msg} at {exc.pos}")


def bodies() -> dict[str, bytes]:
    small = payload("b", 7, 1_764_000_000.0, 200)  # the bench's own message, 83 bytes
    large = orjson.dumps({f"field{i}": {"value": i * 1.5, "unit": "psi", "ok": True} for i in range(80)})
    return {
        "strict, bench message": small,
        f"strict, {len(large)} bytes": large,
        "single quotes (SK sample)": b"{'motion':'on'}",
        "trailing comma": small[:-1] + b",}",
        "comment": b'{"motion": "on" /* from the PIR */}',
        "bare names": b"{motion: 'on', level: 3}",
        "not JSON, no hint": b"temperature=21.5;humidity=40",
        "not JSON, with a hint": b"it's 21.5 degrees",
    }


def cpu_per_call(fn: Decoder, data: bytes, n: int) -> float:
    """CPU seconds per call over ``n`` calls."""
    start = time.process_time()
    for _ in range(n):
        fn(data)
    return (time.process_time() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    decoders: dict[str, Decoder] = {"strict only": strict_only, "runtime": _load_json}
    print(f"{'body':30} {'decoder':12} {'best ns':>9} {'range ns':>15}  result")
    for name, data in bodies().items():
        runs: dict[str, list[float]] = {k: [] for k in decoders}
        for _ in range(args.repeats):  # interleaved: load from the other helpers on the machine hits both alike
            for key, fn in decoders.items():
                runs[key].append(cpu_per_call(fn, data, args.n))
        for key, fn in decoders.items():
            best, worst = min(runs[key]) * 1e9, max(runs[key]) * 1e9
            result = fn(data)
            shown = "error" if isinstance(result, ParseError) else "value"
            print(f"{name:30} {key:12} {best:9.0f} {best:7.0f}-{worst:<7.0f}  {shown}")


if __name__ == "__main__":
    main()
