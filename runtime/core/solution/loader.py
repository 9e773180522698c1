"""One entry point for every solution: detect the form, read it, validate it (CONTRACT §7).

``load_solution`` returns the document or raises ``SolutionError`` carrying every error found;
``load_solution_report`` also hands back the warnings (e.g. SLN1001 "no listeners").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from runtime.core.errors import Problem, SolutionError
from runtime.core.solution.model import SolutionDocument
from runtime.core.solution.native import MAX_SOLUTION_BYTES, native_document, parse_tree
from runtime.core.solution.nuviot import export_form, export_report, is_export
from runtime.core.solution.validate import validate_document

SolutionForm = Literal["native", "nuviot-export", "nuviot-instance"]


@dataclass(frozen=True, slots=True)
class LoadedSolution:
    document: SolutionDocument
    warnings: tuple[Problem, ...]
    form: SolutionForm
    source: str


def _no_files(path: str) -> bytes:
    raise FileNotFoundError(path)


def load_solution_report(
    data: bytes,
    *,
    source: str,
    env: Mapping[str, str],
    read_file: Callable[[str], bytes] = _no_files,
    max_bytes: int = MAX_SOLUTION_BYTES,
) -> LoadedSolution:
    """Parse, read (native or NuvIoT export, detected) and cross-check. Raises ``SolutionError`` with all errors.

    ``read_file`` resolves ``file:`` secret references; it should raise ``OSError`` for a missing file.
    """
    tree = parse_tree(data, max_bytes=max_bytes)
    if is_export(tree):
        form: SolutionForm = "nuviot-instance" if export_form(tree) == "nuviot-instance" else "nuviot-export"
        document, read_warnings = export_report(tree)
    else:
        form = "native"
        document = native_document(tree, env=env, read_file=read_file)
        read_warnings = ()
    report = validate_document(document)
    if report.errors:
        raise SolutionError(report.errors)
    return LoadedSolution(document, read_warnings + report.warnings, form, source)


def load_solution(
    data: bytes,
    *,
    source: str,
    env: Mapping[str, str],
    read_file: Callable[[str], bytes] = _no_files,
) -> SolutionDocument:
    """The validated document, or ``SolutionError`` with every problem (never a library exception)."""
    return load_solution_report(data, source=source, env=env, read_file=read_file).document
