"""Pure views of a GPU snapshot for ``%gpus``: render, join processes to containers, choose GPUs.

* :func:`to_html` / :func:`to_text` - the snapshot's ``_repr_html_`` and ``__repr__``, and
  :class:`GpuTable` (what ``%gpus`` returns: the same, with the chosen GPUs marked); the
  reading names, thresholds and bars the panel shares, so both name readings alike.
* :func:`attach_process_info` - each process's user and command from ``/proc/PID``.
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
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from . import units
from .nvml import ContainerRef, GpuInfo, GpuProcess, GpuSnapshot

__all__ = [
    "GpuTable", "to_html", "to_text",
    "memory_percent", "level", "header_text", "process_where", "html_bar",
    "UTIL_NAME", "MEM_UTIL_NAME", "MEMORY_NAME", "UTIL_LEVELS", "MEMORY_LEVELS",
    "parse_cgroup_container_id", "container_ref", "container_for_pid", "attach_containers",
    "attach_process_info",
    "GpuChoiceError", "choose_gpus", "chosen_indices", "describe_choice", "explain_auto",
    "snapshot_for_choice", "query_with_containers",
]

NA = units.NA


class GpuTable:
    """A snapshot as `%gpus` displays it: a table for Jupyter, text for a terminal, the GPUs of
    ``choice`` (the `--gpus` value the next cells get) marked. Its fields are the snapshot's
    (`snap = %gpus` then `snap.gpus`, `snap.error`)."""

    __slots__ = ("snapshot", "choice")

    def __init__(self, snapshot: GpuSnapshot, choice: Optional[str] = None):
        self.snapshot = snapshot
        self.choice = choice

    def __getattr__(self, name):
        return getattr(self.snapshot, name)

    @property
    def chosen(self) -> Tuple[int, ...]:
        return chosen_indices(self.choice, self.snapshot)

    def __repr__(self) -> str:
        return to_text(self.snapshot, self.chosen)

    def _repr_html_(self) -> str:
        return to_html(self.snapshot, self.chosen)


# --------------------------------------------------------------------------------------------
# Formatting cells (shared with the panel, so both say the same thing the same way)
# --------------------------------------------------------------------------------------------

# the units and words shared with the panel (units.py)
format_percent, format_bytes, format_memory_pair, format_temp, format_power_pair = (
    units.pct, units.mem, units.mem_pair, units.temp, units.power_pair)

#: Column names. "mem util" is NVML's memory-controller utilisation (how busy the memory bus
#: is); "memory" is memory used out of total. They are different readings and never share a name.
UTIL_NAME, MEM_UTIL_NAME, MEMORY_NAME = "GPU util", "mem util", "memory"
#: (light below, heavy from) in percent: nvitop's thresholds for utilisation and memory use.
UTIL_LEVELS = (10, 75)
MEMORY_LEVELS = (10, 80)
CHOSEN_MARK = "●"


def memory_percent(gpu: GpuInfo) -> Optional[float]:
    if gpu.mem_used is None or not gpu.mem_total:
        return None
    return 100.0 * gpu.mem_used / gpu.mem_total


def level(pct: Optional[float], levels: Tuple[int, int]) -> str:
    """"light", "moderate" or "heavy" (nvitop's three colours), or "na" for no reading."""
    if pct is None:
        return "na"
    return "light" if pct < levels[0] else "moderate" if pct < levels[1] else "heavy"


def header_text(snap: GpuSnapshot) -> str:
    """Driver, CUDA, GPU count and the reading's time: what ``%gpus`` heads its table with."""
    parts = [f"NVIDIA driver {snap.driver or NA}", f"CUDA {snap.cuda_driver or NA}",
             f"{len(snap.gpus)} GPU" + ("" if len(snap.gpus) == 1 else "s")]
    if snap.time:
        parts.append(_time.strftime("%H:%M:%S", _time.localtime(snap.time)))
    return " · ".join(parts)


def process_where(proc: GpuProcess) -> str:
    """Where a process runs: ``name (image) · notebook.ipynb [7]``, or "" on the host."""
    c = proc.container
    if c is None:
        return ""
    text = f"{c.name} ({c.image})"
    if c.managed:
        text += f" · {notebook_cell_words(c)}"
    return text


def notebook_cell_words(c: ContainerRef) -> str:
    """``train.ipynb [7]``; with no notebook named, whose kernel the cell number is of
    (a bare ``[7]`` would read as this notebook's cell 7)."""
    if c.notebook:
        return f"{c.notebook.rstrip('/').rsplit('/', 1)[-1]} [{c.cell or NA}]"
    return f"cell [{c.cell or NA}] of kernel {c.label('dockmagic.kernel') or NA}"


def _lost_text(gpu: GpuInfo) -> str:
    return f"GPU lost or unreadable: {gpu.error or NA}"


def _empty_text(snap: GpuSnapshot) -> str:
    return f"the NVIDIA driver ({snap.driver or NA}) reports no GPUs"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

_BAR_WIDTH = 10
_COMMAND_WIDTH = 40


def _text_bar(pct: Optional[float]) -> str:
    if pct is None:
        return "·" * _BAR_WIDTH
    filled = int(round(_BAR_WIDTH * max(0.0, min(100.0, pct)) / 100.0))
    return "█" * filled + "░" * (_BAR_WIDTH - filled)


_TEXT_COLUMNS = ("", "GPU", "name", UTIL_NAME, MEM_UTIL_NAME, MEMORY_NAME + " used / total",
                 "temp", "power draw / limit")
_TEXT_RIGHT = {1, 3, 4, 5, 6, 7}  # numbers (and their headings) end on the right


def _text_row(gpu: GpuInfo, chosen: bool) -> List[str]:
    return [CHOSEN_MARK if chosen else "", str(gpu.index), gpu.name or NA,
            f"{_text_bar(gpu.util_gpu)} {format_percent(gpu.util_gpu):>4}",
            format_percent(gpu.util_mem),
            f"{_text_bar(memory_percent(gpu))} {format_memory_pair(gpu.mem_used, gpu.mem_total):>17}",
            format_temp(gpu.temperature), format_power_pair(gpu.power_mw, gpu.power_limit_mw)]


_PROC_COLUMNS = ("GPU", "PID", "user", "command", "GPU memory", "container")


def _process_cells(gpu: GpuInfo, proc: GpuProcess, chosen: bool) -> List[str]:
    return [f"{CHOSEN_MARK if chosen else ''}{gpu.index}", str(proc.pid), proc.user or NA,
            _truncate(proc.command or NA, _COMMAND_WIDTH), format_bytes(proc.used_memory),
            process_where(proc)]


def _text_processes(snap: GpuSnapshot, chosen: set) -> List[str]:
    """One table of every GPU's processes (as nvidia-smi and nvitop print them)."""
    rows = [_process_cells(g, p, g.index in chosen)
            for g in snap.gpus if not g.lost for p in g.processes]
    if not rows:
        return ["no GPU processes"]
    widths = [max(len(r[i]) for r in [_PROC_COLUMNS, *rows]) for i in range(6)]
    right = {0, 1, 4}
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [_PROC_COLUMNS, *rows]]


def to_text(snap: GpuSnapshot, chosen: Optional[Iterable[int]] = None) -> str:
    """A terminal table (the snapshot's ``__repr__``); the no-driver state is one line.

    ``chosen``: GPU indices the next ``%%docker`` cells get, marked with ``●``.
    """
    if snap.error:
        return snap.error
    if not snap.gpus:
        return _empty_text(snap)
    chosen = set(chosen or ())
    rows = [_text_row(g, g.index in chosen) for g in snap.gpus if not g.lost]
    widths = [max(len(c) for c in col) for col in zip(_TEXT_COLUMNS, *rows)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in _TEXT_RIGHT else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [header_text(snap), fmt(_TEXT_COLUMNS)]
    for gpu in snap.gpus:
        if gpu.lost:
            lines.append(" " * (widths[0] + 2) + str(gpu.index).rjust(widths[1]) + "  "
                         + _lost_text(gpu))
            continue
        lines.append(fmt(_text_row(gpu, gpu.index in chosen)))
    lines.append("")
    lines.extend(_text_processes(snap, chosen))
    if chosen:
        lines.append(f"{CHOSEN_MARK} chosen for the next %%docker cells")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

#: Colours come from JupyterLab's theme variables (light and dark alike); the fallbacks are
#: for other front ends. Numbers never wrap; long process text is cut with its whole in a tooltip.
GPUS_CSS = """<style>
.dockmagic-gpus{font-size:12px;color:var(--jp-ui-font-color1,#1f2328);container-type:inline-size;
  --dmg-light:var(--jp-success-color1,#1a7f37);--dmg-moderate:var(--jp-warn-color1,#bf8700);
  --dmg-heavy:var(--jp-error-color1,#cf222e);--dmg-track:var(--jp-layout-color3,#d0d7de)}
.dockmagic-gpus .dmg-cap{color:var(--jp-ui-font-color2,#57606a);margin:0 0 4px}
.dockmagic-gpus table.dmg{border-collapse:collapse;margin:0;table-layout:auto;
  font-variant-numeric:tabular-nums}
.dockmagic-gpus table.dmg th,.dockmagic-gpus table.dmg td{white-space:nowrap;padding:3px 8px;
  vertical-align:middle;line-height:1.35;border:none;text-align:left}
.dockmagic-gpus table.dmg th{font-weight:600;color:var(--jp-ui-font-color2,#57606a);
  border-bottom:1px solid var(--jp-border-color1,#d0d7de)}
.dockmagic-gpus table.dmg tbody tr{background:transparent}
.dockmagic-gpus table.dmg tbody tr.dmg-gpu td{border-top:1px solid var(--jp-border-color2,#eaeef2)}
.dockmagic-gpus table.dmg tbody tr:hover{background:var(--jp-layout-color2,transparent)}
.dockmagic-gpus table.dmg .dmg-r{text-align:right}
.dockmagic-gpus .dmg-mark{width:1em;color:var(--jp-brand-color1,#0969da);padding-right:0}
.dockmagic-gpus tr.dmg-chosen td{background:color-mix(in srgb,var(--jp-brand-color1,#0969da) 10%,transparent)}
.dockmagic-gpus tr.dmg-chosen td.dmg-idx{font-weight:700;color:var(--jp-brand-color1,#0969da)}
.dockmagic-gpus .dmg-bar{display:inline-block;width:70px;height:8px;border-radius:4px;
  background:var(--dmg-track);overflow:hidden;vertical-align:middle;margin-right:6px}
.dockmagic-gpus .dmg-bar>span{display:block;height:100%;border-radius:4px}
.dockmagic-gpus .dmg-light{--dmg-c:var(--dmg-light)}
.dockmagic-gpus .dmg-moderate{--dmg-c:var(--dmg-moderate)}
.dockmagic-gpus .dmg-heavy{--dmg-c:var(--dmg-heavy)}
.dockmagic-gpus .dmg-bar>span{background:var(--dmg-c)}
.dockmagic-gpus .dmg-v{display:inline-block;min-width:3.2em;text-align:right}
.dockmagic-gpus .dmg-mv{display:inline-block;min-width:8.5em;text-align:right}
.dockmagic-gpus .dmg-hot{color:var(--dmg-heavy)}.dockmagic-gpus .dmg-warm{color:var(--dmg-moderate)}
.dockmagic-gpus .dmg-muted{color:var(--jp-ui-font-color2,#57606a)}
.dockmagic-gpus .dmg-na{color:var(--jp-ui-font-color3,#8c959f)}
.dockmagic-gpus .dmg-sub{margin:8px 0 2px}
.dockmagic-gpus table.dmg-procs tbody tr td{border-top:1px solid var(--jp-border-color2,#eaeef2)}
.dockmagic-gpus .dmg-nobar{visibility:hidden}
.dockmagic-gpus .dmg-cut{display:inline-block;vertical-align:bottom;overflow:hidden;
  text-overflow:ellipsis;white-space:nowrap}
.dockmagic-gpus .dmg-cmd .dmg-cut{max-width:26em}.dockmagic-gpus .dmg-where .dmg-cut{max-width:30em}
.dockmagic-gpus .dmg-short{display:none}
/* narrow output areas (a window of 1024 px with the file browser open): shorter bars and
   headings first, then the model name (on the GPU number's hover), then the power limit and
   the process text; numbers never wrap and never go */
@container (max-width:760px){.dockmagic-gpus .dmg-bar{width:40px;margin-right:4px}
  .dockmagic-gpus .dmg-long{display:none}.dockmagic-gpus .dmg-short{display:inline}
  .dockmagic-gpus .dmg-cmd .dmg-cut{max-width:12em}.dockmagic-gpus .dmg-where .dmg-cut{max-width:18em}}
@container (max-width:660px){.dockmagic-gpus .dmg-name{display:none}
  .dockmagic-gpus table.dmg th,.dockmagic-gpus table.dmg td{padding:3px 5px}}
@container (max-width:540px){.dockmagic-gpus .dmg-plim{display:none}
  .dockmagic-gpus .dmg-bar{width:24px}
  .dockmagic-gpus .dmg-cmd .dmg-cut{max-width:7em}.dockmagic-gpus .dmg-where .dmg-cut{max-width:11em}}
.dockmagic-gpus .dmg-legend{color:var(--jp-ui-font-color2,#57606a);margin-top:3px;font-size:11px}
</style>"""


def _td(body: str, cls: str = "", reason: Optional[str] = None, markup: bool = False,
        colspan: int = 0) -> str:
    """One ``<td>``; ``reason`` (why a reading is N/A) becomes its tooltip."""
    title = f' title="{html.escape(reason)}"' if reason else ""
    klass = f' class="{cls}"' if cls else ""
    span = f' colspan="{colspan}"' if colspan else ""
    return f"<td{klass}{span}{title}>{body if markup else html.escape(body)}</td>"


def _reasons(gpu: GpuInfo, *prefixes: str) -> Optional[str]:
    found = [f"{k}: {v}" for k, v in gpu.field_errors if k.split(".")[0] in prefixes]
    return "; ".join(found) or None


def html_bar(pct: Optional[float], levels: Tuple[int, int]) -> str:
    """A small bar coloured by nvitop's thresholds (``dmg-light|moderate|heavy``). No reading
    draws no bar (an empty track would read as 0 %); its place is kept, so columns align."""
    if pct is None:
        return '<span class="dmg-bar dmg-nobar"></span>'
    width = max(0.0, min(100.0, pct))
    return (f'<span class="dmg-bar dmg-{level(pct, levels)}">'
            f'<span style="width:{width:.1f}%"></span></span>')


def _html_value(text: str, cls: str) -> str:
    na = " dmg-na" if text == NA else ""
    return f'<span class="{cls}{na}">{html.escape(text)}</span>'


def _html_temp(value: Optional[int]) -> str:
    text = html.escape(format_temp(value))
    if value is not None and value >= 75:
        return f'<span class="{"dmg-hot" if value >= 85 else "dmg-warm"}">{text}</span>'
    return text if value is not None else f'<span class="dmg-na">{text}</span>'


def _html_processes(snap: GpuSnapshot, chosen: set) -> str:
    """Every GPU's processes in one table under the GPUs (aligned, as nvitop lists them)."""
    rows = []
    for gpu in snap.gpus:
        if gpu.lost:
            continue
        reason = _reasons(gpu, "compute_processes", "graphics_processes")
        if reason and not gpu.processes:
            rows.append(f'<tr>{_td(str(gpu.index), "dmg-r")}'
                        + _td(f"processes unreadable: {reason}", "dmg-na", colspan=5) + "</tr>")
        for p in gpu.processes:
            cmd, where = p.command or NA, process_where(p)
            mark = gpu.index in chosen
            rows.append(
                f'<tr class="dmg-proc{" dmg-chosen" if mark else ""}">'
                + _td(f"{CHOSEN_MARK if mark else ''}{gpu.index}", "dmg-r dmg-idx")
                + _td(str(p.pid), "dmg-r")
                + _td(p.user or NA, "" if p.user else "dmg-na")
                + f'<td class="dmg-cmd{"" if p.command else " dmg-na"}" '
                  f'title="{html.escape(cmd)}"><span class="dmg-cut">{html.escape(cmd)}</span></td>'
                + _td(format_bytes(p.used_memory), "dmg-r")
                + f'<td class="dmg-where" title="{html.escape(where)}">'
                  f'<span class="dmg-cut">{html.escape(where)}</span></td>'
                + "</tr>")
    if not rows:
        return '<div class="dmg-legend">no GPU processes</div>'
    head = "".join(f'<th class="{c}">{html.escape(h)}</th>' for h, c in zip(
        _PROC_COLUMNS, ("dmg-r", "dmg-r", "", "", "dmg-r", "")))
    return (f'<table class="dmg dmg-procs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


# (heading, its short form for narrow output, class)
_HTML_HEAD = (("", "", "dmg-mark"), ("GPU", "GPU", "dmg-r"), ("name", "name", "dmg-name"),
              (UTIL_NAME, UTIL_NAME, ""), (MEM_UTIL_NAME, MEM_UTIL_NAME, "dmg-r"),
              (MEMORY_NAME + " used / total", MEMORY_NAME, ""), ("temp", "temp", "dmg-r"),
              ("power draw / limit", "power", "dmg-r"))


def _head_html(text: str, short: str) -> str:
    if text == short:
        return html.escape(text)
    return (f'<span class="dmg-long">{html.escape(text)}</span>'
            f'<span class="dmg-short">{html.escape(short)}</span>')


def _power_html(gpu: GpuInfo) -> str:
    """``694 / 700 W``; the limit part goes first when the output is narrow (``694 W``)."""
    if gpu.power_mw is None or gpu.power_limit_mw is None:
        return _html_value(format_power_pair(gpu.power_mw, gpu.power_limit_mw), "")
    return (f"{gpu.power_mw / 1000:.0f}<span class=\"dmg-plim\"> / "
            f"{gpu.power_limit_mw / 1000:.0f}</span> W")


def to_html(snap: GpuSnapshot, chosen: Optional[Iterable[int]] = None) -> str:
    """An HTML table (the snapshot's ``_repr_html_``); the no-driver state is one line.

    One row per GPU with bars for utilisation and memory (coloured at nvitop's thresholds),
    its processes (PID, user, command, GPU memory, container) on a row under it; ``chosen``
    GPU indices are marked.
    """
    if snap.error:
        return f'<div class="dockmagic-gpus dockmagic-gpus-error">{html.escape(snap.error)}</div>'
    if not snap.gpus:
        return f'<div class="dockmagic-gpus">{html.escape(_empty_text(snap))}</div>'
    chosen = set(chosen or ())
    titles = {MEM_UTIL_NAME: "memory-controller utilisation: how busy the memory bus was",
              UTIL_NAME: "share of time a kernel ran on the GPU",
              "": "● = chosen for the next %%docker cells"}
    titles[MEMORY_NAME] = "memory used / total"
    titles["power"] = "power draw / limit"
    head = "".join(f'<th class="{c}" title="{html.escape(titles.get(h, titles.get(short, "")))}">'
                   f"{_head_html(h, short)}</th>" for h, short, c in _HTML_HEAD)
    body = []
    width = len(_HTML_HEAD)
    for gpu in snap.gpus:
        mark = gpu.index in chosen
        cls = "dmg-gpu dmg-chosen" if mark else "dmg-gpu"
        if gpu.lost:
            body.append(f'<tr class="{cls}">' + _td(CHOSEN_MARK if mark else "", "dmg-mark")
                        + _td(str(gpu.index), "dmg-r dmg-idx")
                        + _td(_lost_text(gpu), "dmg-hot", colspan=width - 2) + "</tr>")
            continue
        mem_pct = memory_percent(gpu)
        util = html_bar(gpu.util_gpu, UTIL_LEVELS) + _html_value(format_percent(gpu.util_gpu),
                                                                 "dmg-v")
        memory = html_bar(mem_pct, MEMORY_LEVELS) + _html_value(
            format_memory_pair(gpu.mem_used, gpu.mem_total), "dmg-mv")
        body.append(
            f'<tr class="{cls}">'
            + _td(CHOSEN_MARK if mark else "", "dmg-mark",
                  "chosen for the next %%docker cells" if mark else None)
            + _td(str(gpu.index), "dmg-r dmg-idx",
                  " · ".join(x for x in (gpu.name, gpu.uuid) if x) or None)
            + _td(gpu.name or NA, "dmg-name", _reasons(gpu, "name", "uuid") or gpu.pci_bus_id)
            + _td(util, "", _reasons(gpu, "utilization"), markup=True)
            + _td(_html_value(format_percent(gpu.util_mem), ""), "dmg-r",
                  _reasons(gpu, "utilization"), markup=True)
            + _td(memory, "", _reasons(gpu, "memory"), markup=True)
            + _td(_html_temp(gpu.temperature), "dmg-r", _reasons(gpu, "temperature_gpu"),
                  markup=True)
            + _td(_power_html(gpu), "dmg-r",
                  _reasons(gpu, "power_usage_mw", "power_limit_mw")
                  or format_power_pair(gpu.power_mw, gpu.power_limit_mw), markup=True)
            + "</tr>")
    legend = (f'<div class="dmg-legend">{CHOSEN_MARK} chosen for the next %%docker cells</div>'
              if chosen else "")
    return (f'<div class="dockmagic-gpus">{GPUS_CSS}'
            f'<div class="dmg-cap">{html.escape(header_text(snap))}</div>'
            f'<table class="dmg"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            f'<div class="dmg-cap dmg-sub">processes</div>{_html_processes(snap, chosen)}'
            f"{legend}</div>")


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
    return _with_processes(snapshot, lambda pid: container_for_pid(pid, containers, proc_root),
                           lambda p, container: dataclasses.replace(p, container=container))


def _with_processes(snapshot: GpuSnapshot, look_up, apply) -> GpuSnapshot:
    """A new snapshot whose every process is ``apply(process, look_up(pid))``, each PID looked
    up once (a process on several GPUs is one process)."""
    cache: dict = {}
    gpus = []
    for gpu in snapshot.gpus:
        procs = []
        for p in gpu.processes:
            if p.pid not in cache:
                cache[p.pid] = look_up(p.pid)
            procs.append(apply(p, cache[p.pid]))
        gpus.append(dataclasses.replace(gpu, processes=tuple(procs)))
    return dataclasses.replace(snapshot, gpus=tuple(gpus))


def _read_proc(pid: int, name: str, proc_root: str) -> Optional[bytes]:
    try:
        with open(f"{proc_root}/{int(pid)}/{name}", "rb") as f:
            return f.read(65536)
    except (OSError, ValueError):  # gone, another PID namespace, or no permission
        return None


def _proc_user(pid: int, proc_root: str) -> Optional[str]:
    status = _read_proc(pid, "status", proc_root)
    m = re.search(rb"^Uid:\s+(\d+)", status or b"", re.M)
    if not m:
        return None
    uid = int(m.group(1))
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):  # a uid only the container knows by name
        return str(uid)


def _proc_command(pid: int, proc_root: str) -> Optional[str]:
    raw = _read_proc(pid, "cmdline", proc_root)
    if not raw:
        return None
    text = " ".join(p.decode("utf-8", "replace") for p in raw.split(b"\0") if p)
    return text.strip() or None


def attach_process_info(snapshot: GpuSnapshot, proc_root: str = "/proc") -> GpuSnapshot:
    """A new snapshot whose processes carry their user and command line from
    ``/proc/PID/status`` and ``/proc/PID/cmdline`` (NVML gives PIDs only). A PID this kernel
    cannot see (another PID namespace, gone, no permission) keeps None, shown as N/A; readings
    already present are kept."""
    if snapshot.error or not any(g.processes for g in snapshot.gpus):
        return snapshot
    return _with_processes(
        snapshot, lambda pid: (_proc_user(pid, proc_root), _proc_command(pid, proc_root)),
        lambda p, found: dataclasses.replace(p, user=p.user or found[0],
                                             command=p.command or found[1]))


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


def _device_ids(value: Optional[str]) -> Optional[List[str]]:
    v = (value or "").strip().strip('"')
    return v[len("device="):].split(",") if v.startswith("device=") else None


def chosen_indices(value: Optional[str], snapshot: Optional[GpuSnapshot] = None
                   ) -> Tuple[int, ...]:
    """The GPU indices a :func:`choose_gpus` value names, as far as ``snapshot`` knows them:
    every GPU for ``all``, none for a count (docker picks) or ``None``."""
    if value is None or not _usable(snapshot):
        return ()
    if value.strip().strip('"') == "all":
        return tuple(g.index for g in snapshot.gpus if not g.lost)
    ids = _device_ids(value) or []
    by_uuid = {g.uuid: g.index for g in snapshot.gpus if g.uuid}
    known = {g.index for g in snapshot.gpus}
    out = [by_uuid[i] if i in by_uuid else int(i) for i in ids
           if i in by_uuid or (i.isdigit() and int(i) in known)]
    return tuple(sorted(set(out)))


def _joined(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _load_lines(gpus: Sequence[GpuInfo], notes: Sequence[str]) -> List[str]:
    """One short line per GPU, columns aligned: ``GPU 3  139.8 GiB free   12% util``."""
    cells = [(str(g.index), format_bytes(g.free_memory), format_percent(g.util_gpu))
             for g in gpus]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return [f"GPU {i:>{widths[0]}}  {free:>{widths[1]}} free  {util:>{widths[2]}} util"
            + (f"  ({note})" if note else "") for (i, free, util), note in zip(cells, notes)]


def explain_auto(n: int, snapshot: GpuSnapshot) -> str:
    """Why ``auto:N`` chose what it chose: the rule, then one line per chosen GPU (free
    memory, utilisation) and one for the best GPU left out (pure; the same order as
    :func:`choose_gpus`). Short lines, one GPU each: a narrow output area wraps none of them."""
    ranked = sorted((g for g in snapshot.gpus if not g.lost and g.uuid), key=_load_key)
    chosen = sorted(ranked[:n], key=lambda g: g.index)
    shown = chosen + ranked[n:n + 1]
    notes = [""] * len(chosen) + ["next best"] * (len(shown) - len(chosen))
    return "\n".join([f"auto:{n} ranks by free memory, then utilisation:"]
                     + ["  " + line for line in _load_lines(shown, notes)])


def describe_choice(value: Optional[str], snapshot: Optional[GpuSnapshot] = None,
                    arg: Optional[str] = None) -> str:
    """What the next ``%%docker`` cells get for a :func:`choose_gpus` value (pure).

    UUIDs are shown as indices when ``snapshot`` knows them ("GPUs 3 and 6 (pinned by UUID)").
    With ``arg`` (what the user typed) an ``auto:N`` choice adds lines saying why (the rule,
    then one line per GPU).
    """
    prefix = "next %%docker cells get: "
    if value is None:
        return prefix + "no GPUs"
    v = value.strip().strip('"')
    if v == "all":
        return prefix + "all GPUs"
    if v.isdigit():
        return prefix + f"{v} GPU{'s' if v != '1' else ''} (any)"
    ids = _device_ids(value)
    if ids is None:
        return prefix + f"--gpus {value}"
    by_uuid = {g.uuid: g.index for g in snapshot.gpus if g.uuid} if _usable(snapshot) else {}
    shown = [str(by_uuid[i]) if i in by_uuid else i for i in ids]
    text = prefix + f"{'GPU' if len(ids) == 1 else 'GPUs'} {_joined(shown)}"
    if any(i in by_uuid for i in ids):
        text += " (pinned by UUID)"
    auto = (arg or "").strip().strip("'\"").strip().lower()
    if auto.startswith("auto:") and auto[5:].strip().isdigit() and by_uuid:
        why = explain_auto(int(auto[5:].strip()), snapshot).split("\n")
        text += "\n  why: " + "\n  ".join(why)
    return text


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
    snap = attach_process_info(snap)
    from .errors import DockmagicError
    try:
        if engine is None:
            from . import engine as engines
            engine = engines.default()
        containers = engine.containers(all=False)
    except DockmagicError:  # no engine, or it refused: the GPU table is still worth showing
        return snap
    return attach_containers(snap, containers)
