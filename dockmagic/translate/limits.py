"""Kernel limits and parameters: ``--ulimit NAME=SOFT[:HARD]`` and ``--sysctl KEY=VALUE``."""
from __future__ import annotations

from typing import Tuple

from .errors import TranslateError
from .gocompat import _go_parse_int
from .spec import Ulimit


_ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
            "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")


def _parse_ulimit(value: str) -> Ulimit:
    what = f"--ulimit {value!r}"
    name, eq, limits = value.partition("=")
    if not eq:
        raise TranslateError(f"{what}: give NAME=SOFT[:HARD], e.g. nofile=65536 or memlock=-1")
    if name not in _ULIMITS:
        raise TranslateError(f"{what}: unknown ulimit {name!r} (one of {', '.join(_ULIMITS)})")
    vals = limits.split(":")
    if len(vals) > 2:
        raise TranslateError(f"{what}: at most two values, SOFT[:HARD]")
    try:
        nums = [_go_parse_int(v, 10) for v in vals]
    except ValueError:
        raise TranslateError(f"{what}: limits must be integers (-1 = unlimited)") from None
    soft, hard = nums[0], nums[-1]
    if hard != -1:
        if soft == -1:
            raise TranslateError(f"{what}: soft limit -1 (unlimited) exceeds hard limit {hard}")
        if soft > hard:
            raise TranslateError(f"{what}: soft limit {soft} exceeds hard limit {hard}")
    return Ulimit(name, soft, hard)


_SYSCTL_OK = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
              "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _parse_sysctl(value: str) -> Tuple[str, str]:
    """``--sysctl KEY=VALUE``, with the CLI's allow-list of namespaced keys."""
    key, eq, val = value.partition("=")
    if not eq or not key or not (key in _SYSCTL_OK or key.startswith(("net.", "fs.mqueue."))):
        raise TranslateError(f"--sysctl {value!r} is not allowed: give KEY=VALUE with a "
                             f"namespaced key (net.*, fs.mqueue.*, kernel.shm*/msg*/sem)")
    return key, val
