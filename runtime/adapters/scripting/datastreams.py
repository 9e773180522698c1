"""The scripts' ``addToDataStream(streamKey, values)`` and ``updateDataStream(streamKey, values, filter)``,
installed into a workflow's QuickJS context apart from the rest of the glue (``datastreams.js``).

The calls are collected in the context and taken after each hook (one extra JS call, made only for a
workflow whose scripts mention a data stream at all); they come back with that hook's effects
(``HookEffects.stream_writes``), and the dispatcher checks the rows against the stream's fields and queues
them once the message's workflow has run (docs/datastreams.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson

_JS = resources.files(__package__).joinpath("datastreams.js").read_text(encoding="utf-8")

StreamWrite = tuple[str, str, dict[str, Any], dict[str, Any] | None]


class StreamCalls:
    def __init__(self, ctx: Any, used: bool) -> None:
        self._take = ctx.get("__gStreamTake")
        self.used = used

    def take(self) -> list[StreamWrite]:
        """The calls the last hook made (none without a JS call when no script uses data streams)."""
        if not self.used:
            return []
        raw = self._take()
        if not raw:
            return []
        return [(op, str(key), values, where) for op, key, values, where in orjson.loads(raw)]


def install(ctx: Any, sources: Iterable[str]) -> StreamCalls:
    """Define the two functions in ``ctx`` (before it is sealed); returns what takes the calls per hook."""
    ctx.eval(_JS)
    return StreamCalls(ctx, any("DataStream" in (s or "") for s in sources))
