"""What the composition root shares between its parts about *this* instance (part of the composition root).

- ``InstanceIdentity``: the instance id, resolved once for the life of the process.
- ``CurrentSolution``: the solution document the runtime runs now.

Both are plain state, filled by their one writer (the state listener in ``app``, ``AppPlanes.solution_changed``)
and read by the others (cloud sink, planes, /status), so no part needs another that is built after it.
"""

from __future__ import annotations

import asyncio

from runtime.core.solution.model import SolutionDocument
from runtime.settings import Settings, Source


class InstanceIdentity:
    """The instance id, fixed for the life of the process so that MQTT topics, client ids, cloud paths and
    /status never move under an operator: the flag or env when given, else the solution's instance key at the
    first load (``local`` when that load failed)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._value: str | None = settings.instance_id or None
        self.source: Source = settings.sources.get("instance_id", "flag") if self._value else "default"
        self.settled = asyncio.Event()
        if self._value:
            self.settled.set()

    def pin(self, doc: SolutionDocument | None) -> None:
        if self._value is None:
            self._value = self._settings.effective_instance_id(doc)
            self.source = "document" if doc is not None and doc.instance.key else "default"
        self.settled.set()

    @property
    def value(self) -> str:
        return self._value or self._settings.effective_instance_id(None)

    @property
    def entry(self) -> tuple[str, Source]:
        """The id and where it came from (flag, env, document, default), for ``/status``."""
        return self.value, self.source


class CurrentSolution:
    """The solution document adopted last (``None`` before the first good load)."""

    def __init__(self) -> None:
        self.doc: SolutionDocument | None = None
