"""The instance's time zone (NuvIoT ``DeploymentInstance.TimeZone``) as a ``tzinfo``.

NuvIoT names a time zone by its Windows id, the ``Id`` of an EntityHeader (LagoVista/Deployments
``DeploymentInstance.cs``: default ``{Id: "UTC"}``; ``Services/TimeZoneService.cs`` looks a zone up by that id in
``Data/TimeZones.json``, Windows' list). This runtime reads a Windows id through CLDR's Windows-to-IANA table
(``tzlocal.windows_tz``), an IANA name as it is, and ``UTC``; the zone data is the system's or the ``tzdata``
package's. Where NuvIoT applies the zone, and where this runtime does: docs/fidelity.md ("Documents").
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

# Windows ids in NuvIoT's list that CLDR's table no longer has (Windows retired them)
_RETIRED = {"Mid-Atlantic Standard Time": "Etc/GMT+2", "Kamchatka Standard Time": "Asia/Kamchatka"}
_UTC_NAMES = frozenset({"", "utc", "etc/utc", "z", "gmt", "coordinated universal time"})


@lru_cache(maxsize=64)
def zone_named(name: str | None) -> tzinfo | None:
    """The zone a NuvIoT (Windows) id or an IANA name stands for; None when it names no zone known here."""
    text = (name or "").strip()
    if text.lower() in _UTC_NAMES:
        return UTC
    iana = win_tz.get(text) or _RETIRED.get(text) or text
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def iana_name(name: str | None) -> str | None:
    """The IANA name the runtime uses for ``name`` (``/status`` shows it), or None when unknown."""
    zone = zone_named(name)
    if zone is None:
        return None
    return "UTC" if zone is UTC else str(getattr(zone, "key", zone))
