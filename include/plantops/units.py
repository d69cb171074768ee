"""Durations as the YAML writes them ('3min', '1h', '1d'): shared by the config and the model kinds."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_DURATION = re.compile(r"^(\d+)\s*(s|min|h|d)$")
_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """'3min' -> 3 minutes. Units: s, min, h, d."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"expected a duration such as '3min', '1h' or '1d', got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def utc_day(value: str | datetime) -> datetime:
    """An ISO day or time (or a datetime) as an aware UTC datetime; a naive one is read as UTC."""
    from datetime import timezone

    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)
