"""The live panel's data, pure: engine listing + GPU snapshot + stats -> frozen :class:`PanelState`.

* :func:`build_state` - the one row builder; the panel draws its widgets from its result,
  ``%docker ps`` prints its rows (commands.py) and :func:`to_text` prints them with ``%gpus``'s
  table, so what the panel shows and what the magics print agree;
* :func:`parse_inspect` / :func:`ids_to_inspect` - what the low-level listing lacks (GPU device
  requests, start time) comes from ``inspect``, asked only for new or changed containers;
* :func:`build_history` - the last 60 s of utilisation and memory per GPU, for the sparklines;
* :func:`with_precpu` - CPU % from two one-shot stats samples (a one-shot sample has no ``precpu``).

Inputs are plain engine dicts (``client.api.containers(all=True)`` entries, ``inspect`` and
``stats`` answers) and :class:`~dockmagic.nvml.GpuSnapshot`; nothing here talks to a service.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

from .gpus import container_ref, header_text  # the same names as %gpus
from .units import mem as format_bytes  # the same formatting as %gpus
from .gpus import to_text as gpus_to_text
from .labels import KERNEL as KERNEL_LABEL
from .labels import is_managed
from .lifecycle import cpu_percent, memory_usage
from .nvml import GpuInfo, GpuSnapshot

__all__ = [
    "SCOPES", "SCOPE_NAMES", "HISTORY_S", "Inspected", "ContainerRow", "GpuCard", "PanelState",
    "build_state", "build_history", "parse_inspect", "parse_docker_time", "status_age_bounds",
    "ids_to_inspect", "with_precpu", "to_gpu_assignment", "to_duration", "to_text",
    "container_name",
    "COLUMNS", "to_cells", "to_state_text", "to_cpu_text", "to_mem_text", "to_gpus_text",
    "to_notebook_text", "to_gpu_header",
]

#: Row filters: this notebook's containers, every container dockmagic made, every container.
SCOPES = ("notebook", "dockmagic", "all")
SCOPE_NAMES = {"notebook": "this notebook", "dockmagic": "dockmagic's", "all": "all containers"}
#: How much GPU history the sparklines show, in seconds.
HISTORY_S = 60.0
#: States `docker container prune` would remove; the panel's "prune stopped" takes dockmagic's.
STOPPED = frozenset({"created", "exited", "dead"})
ACTIVE = frozenset({"running", "paused", "restarting"})
#: The ``dockmagic.kind`` label value spare.py gives its warm containers.
SPARE_KIND = "spare"


# --------------------------------------------------------------------------------------------
# What inspect adds to the listing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspected:
    """The parts of ``inspect`` the listing lacks. ``gpu_requests``: (count, device ids) per
    GPU device request (count -1 = all); ``state``: the state when inspected (to see changes)."""

    gpu_requests: Tuple[Tuple[int, Tuple[str, ...]], ...] = ()
    started_at: Optional[float] = None
    state: Optional[str] = None


_NANOS = re.compile(r"(\.\d{1,6})\d*")


def parse_docker_time(text: Optional[str]) -> Optional[float]:
    """Engine RFC 3339 time with nanoseconds (``2024-05-01T10:00:00.123456789Z``) -> epoch
    seconds; the zero time (``0001-01-01T00:00:00Z``, never started) -> None."""
    if not text or text.startswith("0001-"):
        return None
    cleaned = _NANOS.sub(r"\1", text.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _is_gpu_request(req: Mapping) -> bool:
    caps = [c for group in (req.get("Capabilities") or ()) for c in (group or ())]
    return req.get("Driver") == "nvidia" or "gpu" in caps


def parse_inspect(info: Mapping) -> Inspected:
    """An ``inspect`` answer -> :class:`Inspected` (``--gpus`` is in HostConfig.DeviceRequests)."""
    requests = []
    for req in (info.get("HostConfig") or {}).get("DeviceRequests") or ():
        if isinstance(req, Mapping) and _is_gpu_request(req):
            requests.append((int(req.get("Count") or 0),
                             tuple(str(d) for d in (req.get("DeviceIDs") or ()))))
    state = info.get("State") or {}
    return Inspected(gpu_requests=tuple(requests),
                     started_at=parse_docker_time(state.get("StartedAt")),
                     state=state.get("Status"))


_UNITS = {"second": 1, "minute": 60, "hour": 3600}


def status_age_bounds(status: str) -> Optional[Tuple[float, float]]:
    """The uptime range docker's ``Status`` text ("Up 5 minutes") allows, in seconds, or None.

    Docker rounds coarsely (``units.HumanDuration``); the bounds are loose on purpose. Days and
    longer are not bounded. Used to notice a restart the cached start time missed.
    """
    m = re.match(r"Up (Less than a second|About an? (minute|hour)|(\d+) (second|minute|hour)s?)",
                 status or "")
    if not m:
        return None
    if m.group(1) == "Less than a second":
        return 0.0, 1.0
    unit = m.group(2) or m.group(4)
    n = 1 if m.group(2) else int(m.group(3))
    size = _UNITS[unit]
    if unit == "hour":  # docker rounds hours to the nearest one
        return max(0.0, (n - 0.5) * size), (n + 0.5) * size
    return n * size, (n + 1) * size


def ids_to_inspect(containers: Iterable[Mapping], inspected: Mapping[str, Inspected],
                   now: float, slack: float = 30.0) -> Tuple[str, ...]:
    """Ids whose cached inspect is missing or out of date: new containers, a changed state, or
    a start time docker's own ``Status`` contradicts (restarted between two refreshes)."""
    wanted = []
    for entry in containers:
        cid = entry.get("Id", "")
        seen = inspected.get(cid)
        if seen is None or seen.state != entry.get("State"):
            wanted.append(cid)
            continue
        bounds = status_age_bounds(entry.get("Status", ""))
        if bounds and seen.started_at is not None and now - seen.started_at > bounds[1] + slack:
            wanted.append(cid)
    return tuple(wanted)


def with_precpu(sample: Mapping, previous: Optional[Mapping]) -> dict:
    """A one-shot stats sample with ``precpu_stats`` taken from the previous sample, so that
    :func:`dockmagic.lifecycle.cpu_percent` gives the CPU % between the two (None without one)."""
    pre = previous.get("cpu_stats") if previous else None
    return dict(sample, precpu_stats=pre)


# --------------------------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerRow:
    """One container as the panel and ``%docker ps`` show it. ``id``: the full id;
    ``status``: docker's own words ("Up 3 minutes", "Exited (0) 2 minutes ago");
    ``gpus``: "" none, "all", "any 2", "0,2"; None while not yet inspected. ``cpu`` in percent
    of one core; memory in bytes. ``managed``: labelled ``dockmagic.managed=1`` (an image
    committed from one of dockmagic's containers carries the label blanked: not dockmagic's);
    ``notebook`` / ``cell`` / ``kernel`` / ``kind``: its labels, None for others' containers."""

    id: str
    name: str
    image: str
    state: str
    status: str
    created: int = 0
    uptime: Optional[float] = None
    gpus: Optional[str] = None
    cpu: Optional[float] = None
    mem_used: Optional[int] = None
    mem_limit: Optional[int] = None
    managed: bool = False
    notebook: Optional[str] = None
    cell: Optional[str] = None
    kind: Optional[str] = None
    kernel: Optional[str] = None  # host:pid:start of the kernel that made it

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def stopped(self) -> bool:
        return self.state in STOPPED

    @property
    def spare(self) -> bool:
        """A warm container dockmagic keeps for the next identical cell (``dockmagic.kind=spare``,
        see :mod:`dockmagic.spare`), not a job of the user's."""
        return self.kind == SPARE_KIND

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def mem_percent(self) -> Optional[float]:
        """Memory used out of the container's limit (the host's memory when it has none)."""
        if self.mem_used is None or not self.mem_limit:
            return None
        return 100.0 * self.mem_used / self.mem_limit

    @property
    def exit_code(self) -> Optional[int]:
        m = re.match(r"Exited \((-?\d+)\)", self.status or "")
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class GpuCard:
    """One GPU and its recent history: ``(time, util %, memory %)`` samples, oldest first."""

    info: GpuInfo
    history: Tuple[Tuple[float, Optional[float], Optional[float]], ...] = ()


@dataclass(frozen=True)
class PanelState:
    """Everything the panel shows at one moment. ``rows`` are in scope, newest first;
    ``listed``: how many containers the listing had; ``engine_error`` set means the listing is
    the last one the engine gave (or empty)."""

    time: float = 0.0
    scope: str = "dockmagic"
    rows: Tuple[ContainerRow, ...] = ()
    listed: int = 0
    snapshot: GpuSnapshot = GpuSnapshot()
    cards: Tuple[GpuCard, ...] = ()
    engine_error: Optional[str] = None

    @property
    def gpu_error(self) -> Optional[str]:
        return self.snapshot.error

    @property
    def running(self) -> int:
        """Running jobs: spares (warm containers waiting for a cell) are not jobs."""
        return sum(r.state == "running" and not r.spare for r in self.rows)

    @property
    def spares(self) -> int:
        return sum(r.spare and r.active for r in self.rows)

    @property
    def prunable(self) -> Tuple[ContainerRow, ...]:
        """dockmagic's stopped containers among the rows: what "prune stopped" removes."""
        return tuple(r for r in self.rows if r.managed and r.stopped)


def _uuid_to_index(snapshot: Optional[GpuSnapshot]) -> Dict[str, int]:
    if snapshot is None or snapshot.error:
        return {}
    return {g.uuid: g.index for g in snapshot.gpus if g.uuid}


def to_gpu_assignment(requests: Sequence[Tuple[int, Tuple[str, ...]]],
                      snapshot: Optional[GpuSnapshot] = None) -> str:
    """GPU device requests -> "all", "any 2", "0,2" (UUIDs the snapshot knows become indices;
    others are shortened to ``GPU-1a2b3c4d``), or "" for none."""
    by_uuid = _uuid_to_index(snapshot)
    parts = []
    for count, ids in requests:
        if ids:
            parts.extend(str(by_uuid[i]) if i in by_uuid else i[:12] for i in ids)
        elif count < 0:
            parts.append("all")
        elif count > 0:
            parts.append(f"any {count}")
    return ",".join(parts)


def _in_scope(labels: Mapping, scope: str, notebook: Optional[str], kernel: Optional[str]) -> bool:
    if scope == "all":
        return True
    if not _managed(labels):
        return False
    if scope == "dockmagic":
        return True
    # this notebook: the same kernel, or the same notebook path when the kernel knows it
    return bool((kernel and labels.get("dockmagic.kernel") == kernel)
                or (notebook and labels.get("dockmagic.notebook") == notebook))


def _managed(labels: Mapping) -> bool:
    return is_managed(labels)  # the one rule (labels.py): `=1`, blanked labels are not


def container_name(entry: Mapping) -> str:
    """A listing entry's name, as :func:`dockmagic.gpus.container_ref` gives it."""
    return container_ref({"Id": entry.get("Id", ""), "Names": entry.get("Names")}).name


def _row(entry: Mapping, now: float, inspected: Optional[Inspected],
         stats: Optional[Mapping], snapshot: Optional[GpuSnapshot]) -> ContainerRow:
    # read the labels dict directly: this runs for every container on every tick
    labels = entry.get("Labels") or {}
    managed = _managed(labels)
    state = entry.get("State") or "unknown"
    uptime = None
    if state in ACTIVE and inspected is not None and inspected.started_at is not None:
        uptime = max(0.0, now - inspected.started_at)
    cpu = mem_used = mem_limit = None
    if state == "running" and stats:
        cpu = cpu_percent(stats)
        mem = memory_usage(stats)
        if mem:
            mem_used, mem_limit = mem
    return ContainerRow(
        id=entry.get("Id", ""), name=container_name(entry), image=entry.get("Image", ""),
        state=state, status=entry.get("Status") or "", created=int(entry.get("Created") or 0),
        uptime=uptime,
        gpus=None if inspected is None else to_gpu_assignment(inspected.gpu_requests, snapshot),
        cpu=cpu, mem_used=mem_used, mem_limit=mem_limit, managed=managed,
        notebook=labels.get("dockmagic.notebook") if managed else None,
        cell=labels.get("dockmagic.cell") if managed else None,
        kind=labels.get("dockmagic.kind") if managed else None,
        kernel=labels.get(KERNEL_LABEL) if managed else None,
    )


def build_state(containers: Optional[Sequence[Mapping]], snapshot: Optional[GpuSnapshot],
                stats: Optional[Mapping[str, Mapping]] = None, scope: str = "dockmagic",
                notebook: Optional[str] = None, now: float = 0.0, *,
                kernel: Optional[str] = None,
                inspected: Optional[Mapping[str, Inspected]] = None,
                history: Optional[Mapping[str, Sequence]] = None,
                engine_error: Optional[str] = None) -> PanelState:
    """The panel's state from one engine listing (``client.api.containers(all=True)``), one GPU
    snapshot, the latest stats sample per container id (CPU % needs ``precpu_stats``, see
    :func:`with_precpu`) and the cached inspect results per id.

    ``scope``: "notebook" (labelled with this ``kernel``, or this ``notebook`` path),
    "dockmagic" (labelled ``dockmagic.managed``) or "all". Rows are newest first.
    ``history``: per GPU key (see :func:`build_history`) its samples.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    containers = containers or ()
    stats = stats or {}
    inspected = inspected or {}
    snap = snapshot if snapshot is not None else GpuSnapshot(time=now, error="no GPU reading yet")
    rows = [_row(e, now, inspected.get(e.get("Id", "")), stats.get(e.get("Id", "")), snap)
            for e in containers if _in_scope(e.get("Labels") or {}, scope, notebook, kernel)]
    rows.sort(key=lambda r: (-r.created, r.name))
    history = history or {}
    cards = () if snap.error else tuple(
        GpuCard(g, tuple(history.get(_gpu_key(g), ()))) for g in snap.gpus)
    return PanelState(time=now, scope=scope, rows=tuple(rows), listed=len(containers),
                      snapshot=snap, cards=cards, engine_error=engine_error)


# --------------------------------------------------------------------------------------------
# GPU history
# --------------------------------------------------------------------------------------------


def _gpu_key(gpu: GpuInfo) -> str:
    return gpu.uuid or f"#{gpu.index}"


def _mem_percent(gpu: GpuInfo) -> Optional[float]:
    if gpu.mem_used is None or not gpu.mem_total:
        return None
    return 100.0 * gpu.mem_used / gpu.mem_total


def build_history(previous: Optional[Mapping[str, Sequence]], snapshot: Optional[GpuSnapshot],
                  now: float, window: float = HISTORY_S) -> Dict[str, Tuple]:
    """Per GPU (keyed by UUID, else ``#index``): the samples of the last ``window`` seconds
    with one ``(now, util %, memory %)`` sample added; GPUs no longer listed are dropped.
    Returns a new dict of tuples; ``previous`` is not changed."""
    previous = previous or {}
    if snapshot is None or snapshot.error:
        return {}
    out = {}
    for gpu in snapshot.gpus:
        key = _gpu_key(gpu)
        kept = tuple(s for s in previous.get(key, ()) if now - window < s[0] < now)
        util = None if gpu.lost or gpu.util_gpu is None else float(gpu.util_gpu)
        mem = None if gpu.lost else _mem_percent(gpu)
        out[key] = kept + ((now, util, mem),)
    return out


# --------------------------------------------------------------------------------------------
# Text (what %docker ps / %gpus can print)
# --------------------------------------------------------------------------------------------


def to_duration(seconds: Optional[float]) -> str:
    """42s, 5m, 3h 12m, 2d 4h: coarse enough that a row changes rarely."""
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def to_state_text(row: ContainerRow) -> str:
    """``running``, ``exited (137)``, ``created`` ...; a running spare says ``spare``."""
    if row.spare and row.state == "running":
        return "spare"
    code = row.exit_code
    return f"{row.state} ({code})" if code is not None else row.state


def to_cpu_text(row: ContainerRow) -> str:
    return "" if row.cpu is None else f"{row.cpu:.0f}%" if row.cpu >= 10 else f"{row.cpu:.1f}%"


def to_mem_text(row: ContainerRow) -> str:
    """Memory used, and the container's limit when the engine gave one: ``62 MiB / 2.0 GiB``."""
    if row.mem_used is None:
        return ""
    used = format_bytes(row.mem_used)
    return f"{used} / {format_bytes(row.mem_limit)}" if row.mem_limit else used


def to_gpus_text(row: ContainerRow) -> str:
    return "…" if row.gpus is None else (row.gpus or "-")


def to_notebook_text(row: ContainerRow) -> str:
    """The notebook's file name (the label holds the path), or "" for others' containers."""
    return (row.notebook or "").rstrip("/").rsplit("/", 1)[-1]


COLUMNS = ("NAME", "IMAGE", "STATE", "UPTIME", "GPUS", "CPU", "MEM", "NOTEBOOK", "CELL")


def to_cells(row: ContainerRow) -> Tuple[str, ...]:
    """One row's cells, in :data:`COLUMNS` order, as text."""
    return (row.name, row.image, to_state_text(row), to_duration(row.uptime), to_gpus_text(row),
            to_cpu_text(row), to_mem_text(row), to_notebook_text(row) if row.managed else "",
            row.cell or "")


def to_text(state: PanelState, gpus: bool = True) -> str:
    """The panel as a terminal table: containers (like ``docker ps``), then the GPUs."""
    lines = []
    if state.engine_error:
        lines.append(f"engine: {state.engine_error}")
    if state.rows:
        table = [COLUMNS] + [to_cells(r) for r in state.rows]
        widths = [max(len(c) for c in col) for col in zip(*table)]
        for cells in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    else:
        lines.append(f"no containers ({SCOPE_NAMES[state.scope]})")
    if gpus:
        lines.append("")
        lines.append(gpus_to_text(state.snapshot))
    return "\n".join(lines)


def to_gpu_header(snapshot: GpuSnapshot) -> str:
    """Driver, CUDA, GPU count (as ``%gpus`` heads its table)."""
    return snapshot.error or header_text(snapshot)
