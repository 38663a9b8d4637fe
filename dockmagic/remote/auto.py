"""`--engine auto --gpus auto:N`: the engine, and the GPUs on it, with the most free memory.

`choose_engine` is pure (GPU snapshots in, a choice out, with `%gpus auto:N`'s own rule for
which GPUs on one host); `rewrite_line` turns the cell's line into one that names the engine and
pins the GPUs by UUID, so `--dry-run` shows what runs.
"""
from __future__ import annotations

import re
import shlex
from typing import Mapping, Optional, Tuple

_AUTO = re.compile(r"auto:(\d+)\Z")


class AutoChoiceError(ValueError):
    """No engine can give N GPUs; one line saying why for each engine."""


def choose_engine(snapshots: Mapping[str, object], n: int) -> Tuple[str, str]:
    """{engine: GpuSnapshot} -> (engine, `--gpus` value): of the engines that have N GPUs to
    give, the one whose N chosen GPUs have the most free memory together (ties: listed first)."""
    from ..gpus import choose_gpus

    best, why = None, []
    for name, snap in snapshots.items():
        if snap is None or getattr(snap, "error", None):
            why.append(f"{name}: {getattr(snap, 'error', None) or 'no GPU reading'}")
            continue
        try:
            value = choose_gpus(f"auto:{n}", snap)
        except ValueError as exc:
            why.append(f"{name}: {exc}")
            continue
        free = sum(g.free_memory or 0 for g in snap.gpus if g.uuid and g.uuid in value)
        if best is None or free > best[0]:
            best = (free, name, value)
    if best is None:
        raise AutoChoiceError(f"--engine auto --gpus auto:{n}: no engine has {n} GPU(s) to "
                              "give (" + "; ".join(why) + ")")
    return best[1], best[2]


def auto_count(argv) -> Optional[int]:
    """N of `--gpus auto:N` (or `--gpus=auto:N`) in ARGV, else None."""
    for i, a in enumerate(argv):
        value = a[len("--gpus="):] if a.startswith("--gpus=") else (
            argv[i + 1] if a == "--gpus" and i + 1 < len(argv) else None)
        if value is not None:
            m = _AUTO.match(value.strip("'\""))
            if m:
                return int(m.group(1))
    return None


def rewrite_line(line: str, engine: str, gpus_value: Optional[str]) -> str:
    """LINE with `--engine auto` -> `--engine ENGINE` and `--gpus auto:N` -> the pinned GPUs."""
    argv = shlex.split(line)
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--engine", "--gpus") and i + 1 < len(argv):
            value = argv[i + 1]
            if a == "--engine" and value == "auto":
                value = engine
            elif a == "--gpus" and _AUTO.match(value.strip("'\"")):
                value = gpus_value or "all"
            out += [a, value]
            i += 2
            continue
        if a == "--engine=auto":
            a = f"--engine={engine}"
        elif a.startswith("--gpus=") and _AUTO.match(a[len("--gpus="):].strip("'\"")):
            a = f"--gpus={gpus_value or 'all'}"
        out.append(a)
        i += 1
    return shlex.join(out)


def wants_auto(line: str) -> bool:
    try:
        argv = shlex.split(line)
    except ValueError:
        return False
    return any(a == "--engine=auto" or (a == "--engine" and i + 1 < len(argv)
                                        and argv[i + 1] == "auto") for i, a in enumerate(argv))


def pick(line: str, engine_names, snapshot_of) -> str:
    """The line with the engine and GPUs chosen (I/O through SNAPSHOT_OF(name))."""
    argv = shlex.split(line)
    n = auto_count(argv)
    if n is None:
        raise AutoChoiceError("--engine auto picks by free GPU memory: give --gpus auto:N too")
    from concurrent.futures import ThreadPoolExecutor
    names = list(engine_names)
    with ThreadPoolExecutor(max_workers=min(8, len(names)) or 1) as pool:
        snaps = dict(zip(names, pool.map(snapshot_of, names)))
    engine, value = choose_engine(snaps, n)
    return rewrite_line(line, engine, value)
