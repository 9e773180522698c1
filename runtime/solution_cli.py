"""``nuviot-runtime validate FILE`` and ``nuviot-runtime import EXPORT.json -o FILE.yaml`` (CONTRACT §7).

Both print one line per problem, ``path: CODE message``, to stdout and return the exit status.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from runtime.adapters.scripting.engine import build_solution_scripts
from runtime.core.errors import Problem, SolutionError
from runtime.core.solution import codes
from runtime.core.solution.dump import dump_native, yaml_text
from runtime.core.solution.loader import LoadedSolution, load_solution_report


def _read_file(path: str) -> bytes:
    return Path(path).read_bytes()


def _print_problem(p: Problem, source: str, out: TextIO, *, warning: bool = False) -> None:
    kind = "warning " if warning else ""
    print(f"{p.path or source}: {kind}{p.code} {p.message}", file=out)


def _load(path: str, out: TextIO) -> LoadedSolution | None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        _print_problem(
            Problem("", codes.READ_FAILED, f"cannot read the file: {exc.strerror or exc}"), path, out
        )
        return None
    try:
        loaded = load_solution_report(data, source=path, env=os.environ, read_file=_read_file)
        build_solution_scripts(loaded.document)  # a script that does not compile fails the start: say so now
    except SolutionError as exc:
        for p in exc.problems:
            _print_problem(p, path, out)
        return None
    for w in loaded.warnings:
        _print_problem(w, path, out, warning=True)
    return loaded


def validate_main(path: str, *, out: TextIO | None = None) -> int:
    """Print every problem and return 1, or print an ok line and return 0."""
    out = out or sys.stdout
    loaded = _load(path, out)
    if loaded is None:
        return 1
    sol = loaded.document.solution
    print(
        f"{path}: ok ({loaded.form}; solution {sol.key} version {sol.version}; "
        f"{len(sol.listeners)} listener(s), {len(sol.device_configurations)} device configuration(s); "
        f"{len(loaded.warnings)} warning(s))",
        file=out,
    )
    return 0


def _write_atomic(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_main(src: str, out_path: str, *, out: TextIO | None = None) -> int:
    """Read a NuvIoT export (or a native file), write the native YAML; the written file validates and round-trips."""
    out = out or sys.stdout
    loaded = _load(src, out)
    if loaded is None:
        return 1
    dump = dump_native(loaded.document)
    text = yaml_text(dump, header=f"Native nuviot-runtime solution, imported from {Path(src).name}.")
    try:
        again = load_solution_report(
            text.encode(), source=out_path, env=dump.secret_env(), read_file=_read_file
        )
    except SolutionError as exc:  # a bug in the dump: say so, write nothing
        for p in exc.problems:
            _print_problem(p, out_path, out)
        return 1
    if again.document != loaded.document:
        _print_problem(
            Problem("", codes.INVALID_VALUE, "internal error: the native form does not round-trip"),
            out_path,
            out,
        )
        return 1
    try:
        _write_atomic(Path(out_path), text)
    except OSError as exc:
        _print_problem(
            Problem("", codes.READ_FAILED, f"cannot write the file: {exc.strerror or exc}"), out_path, out
        )
        return 1
    print(f"{out_path}: written ({loaded.form} -> native)", file=out)
    for s in dump.secrets:
        print(f"{out_path}: set {s.env_name} for {s.path}", file=out)
    return 0
