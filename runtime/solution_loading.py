"""Wires the solution source (file or URL, last-good cache) to the loader for the supervisor."""

from __future__ import annotations

import asyncio
import os
import time
from importlib import resources
from pathlib import Path

import structlog

from runtime.adapters.scripting.engine import build_solution_scripts
from runtime.adapters.solution_source import FetchedSolution, SolutionSource
from runtime.core.solution.loader import load_solution_report
from runtime.services.supervisor import LoadedSolution
from runtime.settings import Settings

log = structlog.get_logger(__name__)


def demo_solution_path() -> Path:
    return Path(str(resources.files("runtime") / "demo" / "solution.yaml"))


def _read_file(path: str) -> bytes:
    return Path(path).read_bytes()


class AppSolutionLoader:
    def __init__(self, settings: Settings) -> None:
        self.location = settings.solution or str(demo_solution_path())
        self._source = SolutionSource(
            self.location,
            settings.data_dir,
            access_key=settings.access_key,
            version=settings.solution_version,
        )
        self._last_fetch: FetchedSolution | None = None

    async def load(self) -> LoadedSolution:
        fetched = await self._source.fetch()
        # parsing a large export is CPU work: keep it off the event loop
        report = await asyncio.to_thread(
            load_solution_report, fetched.data, source=fetched.origin, env=dict(os.environ), read_file=_read_file
        )
        doc = report.document
        for warning in report.warnings:
            log.warning("solution_warning", path=warning.path, code=warning.code, problem=warning.message)
        scripts = build_solution_scripts(doc)  # raises SolutionError naming every script that does not compile
        self._last_fetch = fetched
        log.info("solution_loaded", solution=doc.solution.key, version=doc.solution.version, origin=fetched.origin,
                 from_cache=fetched.from_cache, form=report.form, scripted_workflows=sorted(scripts))
        return LoadedSolution(
            doc=doc,
            origin=fetched.origin,
            from_cache=fetched.from_cache,
            version=fetched.version,
            loaded_at=time.time(),
            scripts=scripts,
            warnings=tuple(str(w) for w in report.warnings),
        )

    async def accepted(self, loaded: LoadedSolution) -> None:
        if self._last_fetch is not None and not self._last_fetch.from_cache:
            await self._source.remember_good(self._last_fetch)
