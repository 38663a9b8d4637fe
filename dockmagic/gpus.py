"""Pure views of a GPU snapshot for ``%gpus``: render, join processes to containers, choose GPUs.

* :func:`to_html` / :func:`to_text` - the snapshot's ``_repr_html_`` and ``__repr__``.
* :func:`parse_cgroup_container_id`, :func:`container_for_pid`, :func:`attach_containers` -
  which Docker container a GPU process runs in, from ``/proc/PID/cgroup`` and the engine's
  container list (``client.api.containers(all=True)`` entries).
* :func:`choose_gpus` / :func:`describe_choice` - ``%gpus ARG`` to a ``docker run --gpus`` value.

All of the above are pure: inputs are snapshots and plain dicts, and nothing here imports pynvml
or docker. Two small I/O entry points for the magic sit at the end: :func:`snapshot_for_choice`
and :func:`query_with_containers` (through :mod:`dockmagic.nvml` and :mod:`dockmagic.runner`).
"""
from __future__ import annotations

import dataclasses
import html
import re
import time as _time
from typing import Iterable, List, Mapping, Optional, Sequence

from . import units
from .nvml import ContainerRef, GpuInfo, GpuProcess, GpuSnapshot

__all__ = [
    "GpuTable", "to_html", "to_text", "header_text",
    "parse_cgroup_container_id", "container_ref", "container_for_pid", "attach_containers",
    "GpuChoiceError", "choose_gpus", "describe_choice",
    "snapshot_for_choice", "query_with_containers",
]

NA = units.NA


class GpuTable:
    """A snapshot as `%gpus` displays it: a table for Jupyter, text for a terminal. Its fields
    are the snapshot's (`snap = %gpus` then `snap.gpus`, `snap.error`)."""

    __slots__ = ("snapshot",)

    def __init__(self, snapshot: GpuSnapshot):
        self.snapshot = snapshot

    def __getattr__(self, name):
        return getattr(self.snapshot, name)

    def __repr__(self) -> str:
        return to_text(self.snapshot)

    def _repr_html_(self) -> str:
        return to_html(self.snapshot)

# --------------------------------------------------------------------------------------------
# Formatting cells
# --------------------------------------------------------------------------------------------

# the units and words shared with the panel (units.py)
_pct, _mem, _mem_pair, _temp, _power_pair = (units.pct, units.mem, units.mem_pair, units.temp,
                                              units.power_pair)


def header_text(snap: GpuSnapshot) -> str:
    """`NVIDIA driver X · CUDA Y · N GPUs · HH:MM:SS`: the line above every GPU view."""
    parts = [f"NVIDIA driver {snap.driver or NA}", f"CUDA {snap.cuda_driver or NA}",
             f"{len(snap.gpus)} GPU" + ("" if len(snap.gpus) == 1 else "s")]
    if snap.time:
        parts.append(_time.strftime("%H:%M:%S", _time.localtime(snap.time)))
    return " · ".join(parts)


def _where(proc: GpuProcess) -> str:
    """Where a process runs: container name (image), and notebook/cell for dockmagic's own."""
    c = proc.container
    if c is None:
        return ""
    text = f"{c.name} ({c.image})"
    if c.managed:
        text += f" · notebook {c.notebook or NA} · cell {c.cell or NA}"
    return text


def _process_line(proc: GpuProcess) -> str:
    where = _where(proc)
    line = f"PID {proc.pid} · {_mem(proc.used_memory)}"
    return f"{line} · {where}" if where else line


def _row_cells(gpu: GpuInfo) -> List[str]:
    return [
        str(gpu.index), gpu.name or NA,
        f"{_pct(gpu.util_gpu)} / {_pct(gpu.util_mem)}",
        _mem_pair(gpu.mem_used, gpu.mem_total),
        _temp(gpu.temperature),
        _power_pair(gpu.power_mw, gpu.power_limit_mw),
    ]


_COLUMNS = ["GPU", "Name", "Util GPU / mem", "Memory used / total", "Temp",
            "Power draw / limit"]


def _lost_text(gpu: GpuInfo) -> str:
    return f"GPU lost or unreadable: {gpu.error or NA}"


def _empty_text(snap: GpuSnapshot) -> str:
    return f"the NVIDIA driver ({snap.driver or NA}) reports no GPUs"


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def to_text(snap: GpuSnapshot) -> str:
    """A compact terminal table (the snapshot's ``__repr__``); the no-driver state is one line."""
    if snap.error:
        return snap.error
    if not snap.gpus:
        return _empty_text(snap)
    rows = [_row_cells(g) for g in snap.gpus if not g.lost]
    widths = [max(len(c) for c in col) for col in zip(_COLUMNS, *rows)]
    right = {0, 2, 3, 4, 5}  # numbers line up on the right

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [header_text(snap), fmt(_COLUMNS)]
    for gpu in snap.gpus:
        if gpu.lost:
            lines.append(f"{str(gpu.index).rjust(widths[0])}  {_lost_text(gpu)}")
            continue
        lines.append(fmt(_row_cells(gpu)))
        for proc in gpu.processes:
            lines.append(" " * (widths[0] + 2) + "└ " + _process_line(proc))
    return "\n".join(lines)


def _cell(text: str, reason: Optional[str] = None, align: str = "right",
          markup: bool = False) -> str:
    """One ``<td>``; ``reason`` (why a reading is N/A) becomes its tooltip."""
    title = f' title="{html.escape(reason)}"' if reason else ""
    body = text if markup else html.escape(text)
    return f'<td style="text-align:{align}"{title}>{body}</td>'


def _reasons(gpu: GpuInfo, *prefixes: str) -> Optional[str]:
    found = [f"{k}: {v}" for k, v in gpu.field_errors if k.split(".")[0] in prefixes]
    return "; ".join(found) or None


def _html_process(proc: GpuProcess) -> str:
    parts = [f"PID {proc.pid}", html.escape(_mem(proc.used_memory))]
    c = proc.container
    if c is not None:
        parts.append(f"<b>{html.escape(c.name)}</b> ({html.escape(c.image)})")
        if c.managed:
            parts.append(f"notebook {html.escape(c.notebook or NA)}, "
                         f"cell {html.escape(c.cell or NA)}")
    return "<div>" + " · ".join(parts) + "</div>"


def to_html(snap: GpuSnapshot) -> str:
    """An HTML table (the snapshot's ``_repr_html_``); the no-driver state is one line."""
    if snap.error:
        return f'<div class="dockmagic-gpus dockmagic-gpus-error">{html.escape(snap.error)}</div>'
    if not snap.gpus:
        return f'<div class="dockmagic-gpus">{html.escape(_empty_text(snap))}</div>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS + ["Processes"])
    body = []
    for gpu in snap.gpus:
        if gpu.lost:
            body.append(f"<tr>{_cell(str(gpu.index))}"
                        f'<td colspan="{len(_COLUMNS)}">{html.escape(_lost_text(gpu))}</td></tr>')
            continue
        c = _row_cells(gpu)
        procs = "".join(_html_process(p) for p in gpu.processes) or "none"
        body.append(
            "<tr>"
            + _cell(c[0]) + _cell(c[1], _reasons(gpu, "name", "uuid"), "left")
            + _cell(c[2], _reasons(gpu, "utilization"))
            + _cell(c[3], _reasons(gpu, "memory"))
            + _cell(c[4], _reasons(gpu, "temperature_gpu"))
            + _cell(c[5], _reasons(gpu, "power_usage_mw", "power_limit_mw"))
            + _cell(procs, _reasons(gpu, "compute_processes", "graphics_processes"), "left",
                    markup=True)
            + "</tr>"
        )
    return (f'<div class="dockmagic-gpus"><table>'
            f"<caption>{html.escape(header_text(snap))}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


# --------------------------------------------------------------------------------------------
# Process -> container join
# --------------------------------------------------------------------------------------------

# cgroup v1 ".../docker/<id>" and v2 (systemd driver) ".../docker-<id>.scope", possibly nested
# (docker in docker) or with a sub-cgroup below (".../docker/<id>/init.scope").
_DOCKER_CGROUP = re.compile(r"(?:^|/)docker[-/]([0-9a-f]{64})(?:\.scope)?(?=/|$)")


def parse_cgroup_container_id(text: str) -> Optional[str]:
    """The Docker container id in ``/proc/PID/cgroup`` text, or None.

    Lines are ``hierarchy:controllers:path``; the innermost docker id of the first line that
    names one wins (all lines agree for a containerised process).
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        ids = _DOCKER_CGROUP.findall(path)
        if ids:
            return ids[-1]
    return None


def container_ref(entry: Mapping) -> ContainerRef:
    """A :class:`ContainerRef` from one ``client.api.containers()`` entry."""
    names = entry.get("Names") or []
    name = names[0].lstrip("/") if names else str(entry.get("Id", ""))[:12]
    labels = entry.get("Labels") or {}
    return ContainerRef(
        id=entry.get("Id", ""), name=name, image=entry.get("Image", ""),
        state=entry.get("State"), labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
    )


def _read_cgroup(pid: int, proc_root: str) -> Optional[str]:
    try:
        with open(f"{proc_root}/{int(pid)}/cgroup", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):  # gone, another PID namespace, or no permission
        return None


def container_for_pid(pid: int, containers: Iterable[Mapping],
                      proc_root: str = "/proc") -> Optional[ContainerRef]:
    """The container (from ``containers``, docker's low-level list) that process ``pid`` is in."""
    text = _read_cgroup(pid, proc_root)
    cid = parse_cgroup_container_id(text) if text else None
    if cid is None:
        return None
    for entry in containers:
        if str(entry.get("Id", "")).startswith(cid):
            return container_ref(entry)
    return None


def attach_containers(snapshot: GpuSnapshot, containers: Optional[Sequence[Mapping]],
                      proc_root: str = "/proc") -> GpuSnapshot:
    """A new snapshot whose processes carry the container they run in (None for host ones)."""
    if snapshot.error or not containers:
        return snapshot
    containers = list(containers)
    cache: dict = {}
    gpus = []
    for gpu in snapshot.gpus:
        procs = []
        for p in gpu.processes:
            if p.pid not in cache:
                cache[p.pid] = container_for_pid(p.pid, containers, proc_root)
            procs.append(dataclasses.replace(p, container=cache[p.pid]))
        gpus.append(dataclasses.replace(gpu, processes=tuple(procs)))
    return dataclasses.replace(snapshot, gpus=tuple(gpus))


# --------------------------------------------------------------------------------------------
# %gpus ARG -> docker run --gpus value
# --------------------------------------------------------------------------------------------


class GpuChoiceError(ValueError):
    """``%gpus ARG`` cannot be honoured; the message is one line naming the fix."""


ACCEPTED = ("all | none | N (a count) | 0,2 or device=0,2 (indices or UUIDs) | "
            "auto:N (the N least-loaded GPUs)")
_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z-]+$")


def _quoted_devices(ids: Sequence[str]) -> str:
    # docker's CLI reads --gpus as CSV, so "device=0,2" must keep its quotes to stay one field.
    return '"device=' + ",".join(ids) + '"'


def _usable(snapshot: Optional[GpuSnapshot]) -> bool:
    return snapshot is not None and not snapshot.error and bool(snapshot.gpus)


def _devices(spec: str, snapshot: Optional[GpuSnapshot]) -> str:
    ids = [t.strip() for t in spec.split(",")]
    if not all(ids):
        raise GpuChoiceError(f"empty GPU id in {spec!r}; accepted: {ACCEPTED}")
    for t in ids:
        if not (t.isdigit() or _UUID.match(t)):
            raise GpuChoiceError(f"{t!r} is not a GPU index or UUID; accepted: {ACCEPTED}")
    dupes = sorted({t for t in ids if ids.count(t) > 1})
    if dupes:
        raise GpuChoiceError(f"GPU {','.join(dupes)} named twice in {spec!r}")
    if _usable(snapshot):
        known = {str(g.index) for g in snapshot.gpus} | {g.uuid for g in snapshot.gpus if g.uuid}
        missing = [t for t in ids if t not in known]
        if missing:
            raise GpuChoiceError(
                f"no GPU {','.join(missing)} here; GPUs are "
                f"{','.join(str(g.index) for g in snapshot.gpus)} (see %gpus)")
    return _quoted_devices(ids)


def _load_key(gpu: GpuInfo):
    """Least loaded first: most free memory, then lowest utilisation, then lowest index.

    Unknown readings sort last. Free memory compares exactly, so utilisation only breaks ties
    between GPUs with the same free bytes (typically idle ones).
    """
    free = gpu.free_memory
    util = gpu.util_gpu
    return (free is None, -(free or 0), util is None, util or 0, gpu.index)


def _auto(n: int, snapshot: Optional[GpuSnapshot]) -> str:
    if snapshot is None or snapshot.error:
        reason = snapshot.error if snapshot is not None else "no GPU snapshot was given"
        raise GpuChoiceError(f"auto:{n} needs to see the GPUs, but {reason}")
    candidates = [g for g in snapshot.gpus if not g.lost and g.uuid]
    if len(candidates) < n:
        raise GpuChoiceError(
            f"auto:{n} asks for {n} GPU{'s' if n != 1 else ''} but only {len(candidates)} "
            f"{'is' if len(candidates) == 1 else 'are'} usable here (see %gpus)")
    chosen = sorted(sorted(candidates, key=_load_key)[:n], key=lambda g: g.index)
    return _quoted_devices([g.uuid for g in chosen])


def choose_gpus(arg: str, snapshot: Optional[GpuSnapshot] = None) -> Optional[str]:
    """``%gpus ARG`` -> the value for ``docker run --gpus`` (as after shell unquoting), or None.

    ``all`` -> ``all``; ``N`` -> ``N`` (a count, as docker reads it); ``0,2`` or ``device=0,2``
    -> ``"device=0,2"`` with the double quotes (docker's CLI splits ``--gpus`` as CSV, so a
    device list must be quoted to stay one field); ``auto:N`` -> the N least-loaded GPUs of
    ``snapshot``, pinned by UUID (``"device=GPU-...,GPU-..."``), in index order; ``none`` -> None
    (no GPUs). Explicit indices/UUIDs are checked against ``snapshot`` when it lists GPUs.
    Raises :class:`GpuChoiceError` (a ValueError) with one line.
    """
    text = (arg or "").strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()  # pasted from a shell: '"device=0,2"'
    low = text.lower()
    if low == "all":
        return "all"
    if low == "none":
        return None
    if low.isdigit():
        n = int(low)
        if n == 0:
            raise GpuChoiceError("0 GPUs: use `%gpus none` for no GPUs")
        if _usable(snapshot) and n > len(snapshot.gpus):
            raise GpuChoiceError(f"{n} GPUs asked for, {len(snapshot.gpus)} here (see %gpus)")
        return str(n)
    if low.startswith("auto:"):
        count = low[len("auto:"):].strip()
        if not count.isdigit() or int(count) == 0:
            raise GpuChoiceError(f"auto:N needs a positive count, got {text!r}")
        return _auto(int(count), snapshot)
    if low.startswith("device="):
        return _devices(text[len("device="):], snapshot)
    if "," in text or _UUID.match(text):
        return _devices(text, snapshot)
    raise GpuChoiceError(f"%gpus {arg!r} not understood; accepted: {ACCEPTED}")


def describe_choice(value: Optional[str], snapshot: Optional[GpuSnapshot] = None) -> str:
    """One line saying what the next ``%%docker`` cells get for a :func:`choose_gpus` value.

    UUIDs are shown as indices when ``snapshot`` knows them.
    """
    prefix = "next %%docker cells get: "
    if value is None:
        return prefix + "no GPUs"
    v = value.strip().strip('"')
    if v == "all":
        return prefix + "all GPUs"
    if v.isdigit():
        return prefix + f"{v} GPU{'s' if v != '1' else ''} (any)"
    if v.startswith("device="):
        ids = v[len("device="):].split(",")
        by_uuid = {g.uuid: g.index for g in snapshot.gpus if g.uuid} if snapshot else {}
        shown = [str(by_uuid[i]) if i in by_uuid else i for i in ids]
        word = "GPU" if len(ids) == 1 else "GPUs"
        text = prefix + f"{word} {','.join(shown)}"
        if any(i in by_uuid for i in ids):
            text += " (pinned by UUID)"
        return text
    return prefix + f"--gpus {value}"


# --------------------------------------------------------------------------------------------
# I/O entry points for the %gpus magic (everything above is pure)
# --------------------------------------------------------------------------------------------


def describe_no_driver(value: Optional[str], snapshot: Optional[GpuSnapshot]) -> Optional[str]:
    """One line when a recorded choice names GPUs this machine cannot show (no driver), e.g. a
    notebook prepared on a laptop for a GPU server; None otherwise."""
    if value is None or snapshot is None or not snapshot.error:
        return None
    return ("no NVIDIA driver is visible here, so this choice is not checked; it is recorded "
            "and cells that run here with it will fail (`%gpus none` runs them without GPUs)")


def snapshot_for_choice(arg: str) -> Optional[GpuSnapshot]:
    """The snapshot :func:`choose_gpus` needs for ``arg``: None for ``all`` / ``none``.

    Those two never touch NVML; every other form is checked against (or, for ``auto:N``,
    chosen from) a fresh reading.
    """
    if (arg or "").strip().strip("'\"").strip().lower() in ("all", "none"):
        return None
    from .nvml import query_snapshot

    return query_snapshot()


def query_with_containers(engine=None) -> GpuSnapshot:
    """A fresh snapshot whose processes name their containers; never raises.

    The engine is asked (running containers only) just when some GPU lists a process; when it
    does not answer, processes show without a container rather than failing the display.
    """
    from .nvml import query_snapshot

    snap = query_snapshot()
    if snap.error or not any(g.processes for g in snap.gpus):
        return snap
    from .errors import DockmagicError
    try:
        if engine is None:
            from . import engine as engines
            engine = engines.default()
        containers = engine.containers(all=False)
    except DockmagicError:  # no engine, or it refused: the GPU table is still worth showing
        return snap
    return attach_containers(snap, containers)
