"""The live panel's data, pure: engine listing + GPU snapshot + stats -> frozen :class:`PanelState`.

* :func:`build_state` - the one row builder; the panel draws its widgets from its result,
  ``%docker ps`` prints its rows (commands.py) and :func:`to_text` prints them with ``%gpus``'s
  table, so what the panel shows and what the magics print agree;
* :func:`parse_inspect` / :func:`ids_to_inspect` - what the low-level listing lacks (GPU device
  requests, start time) comes from ``inspect``, asked only for new or changed containers;
* :func:`build_history` - the last 60 s of utilisation and memory per GPU, for the sparklines;
* :func:`with_precpu` - CPU % from two one-shot stats samples (a one-shot sample has no ``precpu``);
* :class:`EngineReading` -> :class:`EngineGroup` (:func:`build_group`) - every engine of
  ``%docker engines``: its rows join the table (an engine column), and its GPUs are grouped
  under a heading (name, endpoint, reachable, GPUs free/total); an engine that does not answer,
  or answers too slowly (:func:`to_engine_status`), is one line saying why.

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
    "to_notebook_text", "to_cell_text", "to_where_title", "OTHER_KERNEL", "to_gpu_header",
    "LOCAL", "row_key", "EngineReading", "EngineGroup", "build_group", "to_engine_status",
    "to_gpu_counts", "to_engine_heading", "to_engine_problem",
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
#: The local engine's name (as in ``%docker engines``; remote/urls.py's LOCAL).
LOCAL = "local"


def row_key(engine: str, cid: str) -> str:
    """A row's key in the panel: the container id on the local engine (as before engines
    existed), ``ENGINE/id`` on another one (ids are only unique per engine)."""
    return cid if engine == LOCAL else f"{engine}/{cid}"


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
    engine: str = LOCAL  # the engine it runs on (`%docker engines`)
    this_kernel: bool = False  # made by the kernel the panel (or `%docker ps`) runs in

    @property
    def key(self) -> str:
        """Unique among the panel's rows (see :func:`row_key`)."""
        return row_key(self.engine, self.id)

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
    def cell_known(self) -> bool:
        """Whether its cell number can send a reader to a cell: the notebook is named, or it is
        this kernel's own. A bare ``[5]`` of another kernel whose notebook is unknown reads
        as this notebook's cell 5, which it is not."""
        return bool(self.cell) and (bool(self.notebook) or self.this_kernel)

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
class EngineReading:
    """What the panel last read from one engine (plain data; the local engine's is read on the
    refresher's tick, every other one on its own thread, see :mod:`dockmagic.panelengines`).

    ``listing``: the last listing it gave (None: none yet); ``listed_at``: when; ``error``: why
    the last read failed (None: it answered); ``busy_since``: a read in flight since then (epoch
    seconds), to tell an engine that hangs; ``snapshot``: its GPUs (None: not read yet);
    ``history``: per GPU key its samples (:func:`build_history`)."""

    name: str
    endpoint: str = ""
    listing: Optional[Tuple[Mapping, ...]] = None
    listed_at: Optional[float] = None
    error: Optional[str] = None
    busy_since: Optional[float] = None
    snapshot: Optional[GpuSnapshot] = None
    history: Optional[Mapping[str, Tuple]] = None
    version: Optional[str] = None
    rtt_ms: Optional[float] = None


@dataclass(frozen=True)
class EngineGroup:
    """One engine as the panel heads its part: whether it answers (``reachable`` None: not
    read yet), why not (``error``), its GPUs (``snapshot``, ``cards``) and its counts."""

    name: str
    endpoint: str = ""
    reachable: Optional[bool] = None
    error: Optional[str] = None
    snapshot: Optional[GpuSnapshot] = None
    cards: Tuple[GpuCard, ...] = ()
    running: Optional[int] = None
    seen_at: Optional[float] = None
    version: Optional[str] = None
    rtt_ms: Optional[float] = None
    default: bool = False

    @property
    def gpus_free(self) -> Optional[int]:
        return to_gpu_counts(self.snapshot)[0]

    @property
    def gpus_total(self) -> Optional[int]:
        return to_gpu_counts(self.snapshot)[1]


@dataclass(frozen=True)
class PanelState:
    """Everything the panel shows at one moment. ``rows`` are in scope, newest first, from
    every engine; ``listed``: how many containers the local listing had; ``engine_error`` set
    means the local listing is the last one the engine gave (or empty). ``groups``: the local
    engine, then each engine of ``%docker engines``, with their GPUs."""

    time: float = 0.0
    scope: str = "dockmagic"
    rows: Tuple[ContainerRow, ...] = ()
    listed: int = 0
    snapshot: GpuSnapshot = GpuSnapshot()
    cards: Tuple[GpuCard, ...] = ()
    engine_error: Optional[str] = None
    groups: Tuple[EngineGroup, ...] = ()

    @property
    def multi_engine(self) -> bool:
        """More than the local engine: the table shows its engine column."""
        return len(self.groups) > 1

    @property
    def engine_problems(self) -> Tuple[EngineGroup, ...]:
        """The engines other than the local one that do not answer (the local one has its
        banner, ``engine_error``)."""
        return tuple(g for g in self.groups[1:] if g.reachable is False)

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
         stats: Optional[Mapping], snapshot: Optional[GpuSnapshot],
         engine: str = LOCAL, kernel: Optional[str] = None) -> ContainerRow:
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
        engine=engine,
        this_kernel=bool(managed and kernel and labels.get(KERNEL_LABEL) == kernel),
    )


def build_state(containers: Optional[Sequence[Mapping]], snapshot: Optional[GpuSnapshot],
                stats: Optional[Mapping[str, Mapping]] = None, scope: str = "dockmagic",
                notebook: Optional[str] = None, now: float = 0.0, *,
                kernel: Optional[str] = None,
                inspected: Optional[Mapping[str, Inspected]] = None,
                history: Optional[Mapping[str, Sequence]] = None,
                engine_error: Optional[str] = None,
                engines: Sequence[EngineReading] = (),
                local_endpoint: str = "", default_engine: Optional[str] = None,
                timeout: float = 10.0) -> PanelState:
    """The panel's state from one local engine listing (``client.api.containers(all=True)``),
    one local GPU snapshot, the latest stats sample per row key (CPU % needs ``precpu_stats``,
    see :func:`with_precpu`) and the cached inspect results per row key (:func:`row_key`: the
    id, for the local engine), plus what was last read from every other engine (``engines``).

    ``scope``: "notebook" (labelled with this ``kernel``, or this ``notebook`` path),
    "dockmagic" (labelled ``dockmagic.managed``) or "all". Rows are newest first.
    ``history``: per local GPU key (see :func:`build_history`) its samples. ``timeout``: an
    engine whose read has been in flight longer is shown as not answering.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    containers = containers or ()
    stats = stats or {}
    inspected = inspected or {}
    snap = snapshot if snapshot is not None else GpuSnapshot(time=now, error="no GPU reading yet")
    rows = [_row(e, now, inspected.get(e.get("Id", "")), stats.get(e.get("Id", "")), snap,
                 kernel=kernel)
            for e in containers if _in_scope(e.get("Labels") or {}, scope, notebook, kernel)]
    history = history or {}
    local = EngineReading(LOCAL, local_endpoint, tuple(containers), now, engine_error,
                          snapshot=snap, history=history)
    for reading in engines:
        snap_there = reading.snapshot
        for e in reading.listing or ():
            if not _in_scope(e.get("Labels") or {}, scope, notebook, kernel):
                continue
            key = row_key(reading.name, e.get("Id", ""))
            rows.append(_row(e, now, inspected.get(key), stats.get(key), snap_there,
                             reading.name, kernel))
    rows.sort(key=lambda r: (-r.created, r.name, r.engine))
    running: Dict[str, int] = {}
    for r in rows:
        if r.state == "running" and not r.spare:
            running[r.engine] = running.get(r.engine, 0) + 1
    groups = [build_group(g, now, timeout, default_engine, running.get(g.name, 0))
              for g in (local, *engines)]
    return PanelState(time=now, scope=scope, rows=tuple(rows), listed=len(containers),
                      snapshot=snap, cards=groups[0].cards, engine_error=engine_error,
                      groups=tuple(groups))


def to_engine_status(reading: EngineReading, now: float,
                     timeout: float = 10.0) -> Tuple[Optional[bool], Optional[str]]:
    """(reachable, why not) for one engine's last reading: a read in flight longer than
    ``timeout`` seconds is "no answer for N s" (with the last failure, if any); a failed read
    is its one-line reason; no reading yet is (None, None)."""
    if reading.busy_since is not None and now - reading.busy_since > timeout:
        waited = f"no answer for {now - reading.busy_since:.0f} s"
        return False, f"{waited} (before: {reading.error})" if reading.error else waited
    if reading.error:
        return False, reading.error
    if reading.listing is None:
        return None, None
    return True, None


def to_gpu_counts(snapshot: Optional[GpuSnapshot]) -> Tuple[Optional[int], Optional[int]]:
    """(free, total) GPUs, free = readable with no process on it (as ``%docker engines``
    counts); (None, None) without a reading or a driver."""
    if snapshot is None or snapshot.error:
        return None, None
    free = sum(1 for g in snapshot.gpus if not g.lost and not g.processes)
    return free, len(snapshot.gpus)


def build_group(reading: EngineReading, now: float, timeout: float = 10.0,
                default_engine: Optional[str] = None,
                running: Optional[int] = None) -> EngineGroup:
    """One engine's heading and GPU cards from its last reading; ``running``: its running
    jobs among the rows in scope (None: not counted)."""
    reachable, error = to_engine_status(reading, now, timeout)
    snap = reading.snapshot
    history = reading.history or {}
    cards = () if snap is None or snap.error else tuple(
        GpuCard(g, tuple(history.get(_gpu_key(g), ()))) for g in snap.gpus)
    return EngineGroup(name=reading.name, endpoint=reading.endpoint, reachable=reachable,
                       error=error, snapshot=snap, cards=cards,
                       running=None if reading.listing is None else running,
                       seen_at=reading.listed_at, version=reading.version,
                       rtt_ms=reading.rtt_ms,
                       default=reading.name == (default_engine or LOCAL))


def to_engine_heading(group: EngineGroup) -> Tuple[str, ...]:
    """The parts of an engine's heading, in order: name (``*`` for the notebook's default),
    endpoint, reachable, GPUs free/total (or why none), then running and RTT when known."""
    name = group.name + (" *" if group.default else "")
    if group.reachable is None:
        return (name, group.endpoint, "connecting…")
    if not group.reachable:
        return (name, group.endpoint, "not reachable")
    snap = group.snapshot
    if snap is None:
        gpus = "GPUs …"
    elif snap.error:
        gpus = "no GPUs: " + snap.error.split(". ", 1)[0]
    else:
        gpus = f"GPUs {group.gpus_free}/{group.gpus_total} free"
    parts = [name, group.endpoint, "reachable", gpus]
    if group.running is not None:
        parts.append(f"{group.running} running")
    if group.rtt_ms is not None:
        parts.append(f"{group.rtt_ms:.1f} ms")
    return tuple(p for p in parts if p)


def to_engine_problem(group: EngineGroup) -> str:
    """The one line for an engine that does not answer: which one, where, and why."""
    where = f" ({group.endpoint})" if group.endpoint else ""
    return f"engine {group.name}{where} does not answer: {group.error or 'no reason given'}"


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


#: The notebook column of a dockmagic container another kernel made without naming its notebook.
OTHER_KERNEL = "other kernel"


def to_notebook_text(row: ContainerRow) -> str:
    """The notebook's file name (the label holds the path); "other kernel" for dockmagic's
    container of another kernel that did not name its notebook; "" for others' containers."""
    if row.notebook:
        return row.notebook.rstrip("/").rsplit("/", 1)[-1]
    return OTHER_KERNEL if row.managed and not row.this_kernel else ""


def to_cell_text(row: ContainerRow) -> str:
    """The cell number when it can send a reader to a cell (:attr:`ContainerRow.cell_known`),
    else "": another kernel's bare number would read as this notebook's cell."""
    return row.cell if row.cell_known else ""


def to_where_title(row: ContainerRow) -> str:
    """The hover text of the notebook and cell columns: which notebook and cell, or for another
    kernel's container with no notebook, which kernel and its cell."""
    if not row.managed:
        return ""
    if row.notebook:
        return f"{row.notebook}" + (f", cell [{row.cell}]" if row.cell else "")
    if row.this_kernel:
        return "this kernel (its notebook is not known)" + (
            f", cell [{row.cell}]" if row.cell else "")
    cell = f" in its cell [{row.cell}]" if row.cell else ""
    return (f"made by another kernel ({row.kernel or 'unknown'}){cell}; "
            "that kernel did not name its notebook")


COLUMNS = ("NAME", "IMAGE", "STATE", "UPTIME", "GPUS", "CPU", "MEM", "NOTEBOOK", "CELL")


def to_cells(row: ContainerRow) -> Tuple[str, ...]:
    """One row's cells, in :data:`COLUMNS` order, as text."""
    return (row.name, row.image, to_state_text(row), to_duration(row.uptime), to_gpus_text(row),
            to_cpu_text(row), to_mem_text(row), to_notebook_text(row), to_cell_text(row))


def to_text(state: PanelState, gpus: bool = True) -> str:
    """The panel as a terminal table: containers (like ``docker ps``; with an ENGINE column
    when more than the local engine is known), then the GPUs (under each engine's heading)."""
    lines = []
    if state.engine_error:
        lines.append(f"engine: {state.engine_error}")
    lines.extend(to_engine_problem(g) for g in state.engine_problems)
    multi = state.multi_engine
    if state.rows:
        table = [(("ENGINE",) if multi else ()) + COLUMNS]
        table += [((r.engine,) if multi else ()) + to_cells(r) for r in state.rows]
        widths = [max(len(c) for c in col) for col in zip(*table)]
        for cells in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    else:
        lines.append(f"no containers ({SCOPE_NAMES[state.scope]})")
    if gpus and not multi:
        lines.append("")
        lines.append(gpus_to_text(state.snapshot))
    elif gpus:
        for group in state.groups:
            lines.append("")
            lines.append("engine " + " · ".join(to_engine_heading(group)))
            if group.snapshot is not None and group.reachable:
                lines.append(gpus_to_text(group.snapshot))
    return "\n".join(lines)


def to_gpu_header(snapshot: GpuSnapshot) -> str:
    """Driver, CUDA, GPU count (as ``%gpus`` heads its table)."""
    return snapshot.error or header_text(snapshot)
