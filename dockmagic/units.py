"""Units and their words, shared by every view (`%gpus`, the panel, `%docker ps`). Pure.

``NA`` for a value that could not be read; bytes as MiB/GiB; milliwatts as W; degrees C.
"""
from __future__ import annotations

from typing import Optional

NA = "N/A"
GIB = 1024 ** 3
MIB = 1024 ** 2


def pct(value: Optional[int]) -> str:
    return NA if value is None else f"{value}%"


def mem_pair(used: Optional[int], total: Optional[int]) -> str:
    """`used / total GiB`."""
    if used is None and total is None:
        return NA
    u = NA if used is None else f"{used / GIB:.1f}"
    t = NA if total is None else f"{total / GIB:.1f}"
    return f"{u} / {t} GiB"


def mem(value: Optional[int]) -> str:
    """Bytes as MiB below 1 GiB, else GiB."""
    if value is None:
        return NA
    if value < GIB:
        return f"{value / MIB:.0f} MiB"
    return f"{value / GIB:.1f} GiB"


def temp(value: Optional[int]) -> str:
    return NA if value is None else f"{value}°C"


def power_pair(draw: Optional[int], limit: Optional[int]) -> str:
    """Milliwatts drawn / limit as `draw / limit W`."""
    if draw is None and limit is None:
        return NA
    d = NA if draw is None else f"{draw / 1000:.0f}"
    lim = NA if limit is None else f"{limit / 1000:.0f}"
    return f"{d} / {lim} W"
