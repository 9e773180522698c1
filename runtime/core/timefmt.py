"""Timestamps on the wire: ISO-8601 UTC with milliseconds and 'Z' (NuvIoT's YYYY-MM-DDTHH:MM:SS.sssZ)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
