"""Sizes and CPU amounts: ``--shm-size``, ``-m/--memory``, ``--memory-swap``, ``tmpfs-size``
(go-units ``RAMInBytes``) and ``--cpus`` (nano CPUs, both ways)."""
from __future__ import annotations

import re
from fractions import Fraction

from .errors import TranslateError
from .gocompat import INT64_MAX, INT64_MIN, _go_parse_float, _go_parse_int, _go_parse_rat


_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """go-units ``RAMInBytes`` (``--shm-size``, ``-m``, ``tmpfs-size``): binary multiples,
    ``8g`` = ``8G`` = ``8gb`` = ``8GiB`` = 8589934592, fractions truncated. TranslateError
    (without a flag name) when invalid."""
    if not isinstance(text, str):
        raise TranslateError(f"invalid size {text!r}: give a string like 8g")
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise TranslateError(f"invalid size {text!r}: give a number with an optional unit "
                             f"b, k, m, g, t or p (e.g. 8g)")
    if text[sep] != " ":
        num, sfx = text[:sep + 1], text[sep + 1:]
    else:
        num, sfx = text[:sep], text[sep + 1:]
    try:
        size = _go_parse_float(num)
    except ValueError:
        raise TranslateError(f"invalid size {text!r}: {num!r} is not a number") from None
    if size < 0:
        raise TranslateError(f"invalid size {text!r}: sizes cannot be negative")
    if sfx:
        low = sfx.lower()
        ok = len(sfx) <= 3 and (low == "b" or (low[0] in _SIZE_UNITS and (
            len(low) == 1 or (len(low) == 2 and low[1] == "b") or (len(low) == 3 and
                                                                   low[1:] == "ib"))))
        if not ok:
            raise TranslateError(f"invalid size {text!r}: unknown unit {sfx!r} "
                                 f"(use b, k, m, g, t or p, optionally followed by b or ib)")
        if low[0] != "b":
            size *= _SIZE_UNITS[low[0]]
    if size >= 2.0 ** 63:
        raise TranslateError(f"invalid size {text!r}: too large")
    return int(size)  # truncates toward zero, like Go's int64(float64)


def _parse_cpus(text: str) -> int:
    """``--cpus``: an exact rational (``1.5``, ``.25``, ``1/2``, ``1e-1``) -> nano CPUs."""
    def rat_int(s: str, signed: bool) -> int:
        if not signed and s[:1] in "+-":
            raise ValueError
        return _go_parse_int(s, 0, 4096)

    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = Fraction(rat_int(num, True), rat_int(den, False))
        elif re.fullmatch(r"[+-]?0[bBoO][0-7_]+|[+-]?0[xX][0-9a-fA-F_]+", text, re.ASCII):
            value = Fraction(_go_parse_int(text, 0, 4096))
        else:
            value = _go_parse_rat(text)
    except (ValueError, ZeroDivisionError):
        raise TranslateError(f"--cpus {text!r}: not a number of CPUs (e.g. 1.5 or 0.25)"
                             ) from None
    nano = value * 1_000_000_000
    if nano.denominator != 1:
        raise TranslateError(f"--cpus {text!r}: too precise (the unit is 1e-9 CPU)")
    if not INT64_MIN <= nano.numerator <= INT64_MAX:
        raise TranslateError(f"--cpus {text!r}: out of range")
    return nano.numerator


def _format_cpus(nano: int) -> str:
    whole, rest = divmod(abs(nano), 1_000_000_000)
    text = str(whole) + (("." + f"{rest:09d}".rstrip("0")) if rest else "")
    return ("-" if nano < 0 else "") + text
