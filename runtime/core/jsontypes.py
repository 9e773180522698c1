"""The type of a decoded JSON value, for signatures in core/ (no ``Any``).

``JsonValue`` is what ``orjson.loads`` / ``json.loads`` give: a tree of ``dict``/``list`` with scalar leaves.
``JsonObject`` is a decoded JSON object. Readers that only look at a document take ``Mapping[str, object]``
(any mapping fits it; ``dict`` is invariant, so ``dict[str, JsonValue]`` does not accept a ``dict[str, int]``)
and narrow with ``isinstance`` where they use a value.
"""

from __future__ import annotations

from typing import TypeAlias

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"
