"""`%docker engines`: every engine with whether it answers, its version, GPUs (free/total),
running containers and round-trip time. Each engine is asked on its own thread, so one
unreachable host costs the table at most its 5 s connect timeout, not 5 s per engine."""
from __future__ import annotations

import dataclasses
import html
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .. import errors
from . import nvsmi, store, urls

HEADERS = ("engine", "endpoint", "reachable", "version", "GPUs free/total", "running", "RTT")


@dataclass(frozen=True)
class EngineRow:
    name: str
    endpoint: str
    reachable: bool
    version: Optional[str] = None
    gpus_free: Optional[int] = None
    gpus_total: Optional[int] = None
    running: Optional[int] = None
    rtt_ms: Optional[float] = None
    error: Optional[str] = None
    default: bool = False

    def cells(self) -> tuple:
        gpus = "–" if self.gpus_total is None else f"{self.gpus_free}/{self.gpus_total}"
        return (self.name + (" *" if self.default else ""), self.endpoint,
                "yes" if self.reachable else "no",
                self.version or "–", gpus,
                "–" if self.running is None else str(self.running),
                "–" if self.rtt_ms is None else f"{self.rtt_ms:.1f} ms")


def query_gpu_snapshot(engine):
    """The GPUs of ENGINE's host, processes joined to that engine's containers. Local: NVML.
    ssh://: `nvidia-smi -q -x` over the engine's connection. Never raises."""
    from ..nvml import GpuSnapshot, snapshot_from_record
    link = getattr(engine, "link", None)
    if link is None:
        if getattr(engine, "remote", False):
            return GpuSnapshot(error=f"engine {engine.name}: GPUs are read over SSH; this "
                                     "engine has no SSH connection")
        from ..gpus import query_with_containers
        return query_with_containers(engine)
    try:
        res = link.run(nvsmi.QUERY_COMMAND, timeout=20)
    except errors.DockmagicError as exc:
        return GpuSnapshot(error=str(exc))
    if res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace").strip()
        if res.returncode == nvsmi.NO_NVIDIA_SMI or "not found" in err:
            why = "no NVIDIA driver there (nvidia-smi not found)"
        else:
            why = err.splitlines()[-1] if err else f"nvidia-smi exited {res.returncode}"
        return GpuSnapshot(time=time.time(), error=f"engine {engine.name}: {why}")
    record, cgroups = nvsmi.parse_output(res.stdout.decode("utf-8", "replace"), time.time())
    snap = snapshot_from_record(record)
    if snap.error or not cgroups:
        return snap
    return _join(snap, cgroups, engine)


def _join(snap, cgroups, engine):
    from ..gpus import container_ref, parse_cgroup_container_id
    try:
        containers = engine.containers(all=False)
    except errors.DockmagicError:
        return snap
    gpus = []
    for gpu in snap.gpus:
        procs = []
        for p in gpu.processes:
            cid = parse_cgroup_container_id(cgroups.get(p.pid, ""))
            ref = next((container_ref(c) for c in containers
                        if cid and str(c.get("Id", "")).startswith(cid)), None)
            procs.append(dataclasses.replace(p, container=ref))
        gpus.append(dataclasses.replace(gpu, processes=tuple(procs)))
    return dataclasses.replace(snap, gpus=tuple(gpus))


def _gpu_counts(engine):
    snap = query_gpu_snapshot(engine)
    if snap.error or not snap.gpus:
        return None, None
    free = sum(1 for g in snap.gpus if not g.lost and not g.processes)
    return free, len(snap.gpus)


def probe(name: str, endpoint: str, default: bool = False) -> EngineRow:
    """One engine's row; an engine that does not answer is a row saying why, never an error."""
    from .engines import get_engine
    try:
        engine = get_engine(name)
        link = getattr(engine, "link", None)
        if link is not None:
            link.ensure()
            rtt = link.ping()
        else:
            engine.ping()
            t0 = time.perf_counter()
            engine.ping()
            rtt = time.perf_counter() - t0
        version = engine.version().get("Version")
        running = len(engine.containers(all=False))
        free, total = _gpu_counts(engine)
        return EngineRow(name, endpoint, True, version, free, total, running, rtt * 1000,
                         default=default)
    except (errors.DockmagicError, urls.EndpointError) as exc:
        return EngineRow(name, endpoint, False, error=str(exc), default=default)


def query_engines(default: Optional[str] = None) -> List[EngineRow]:
    from ..engine import resolve_endpoint
    try:
        local_url = resolve_endpoint().url
    except Exception:  # the row will say why
        local_url = "?"
    wanted = [(urls.LOCAL, local_url)]
    wanted += [(name, ep.url) for name, ep in store.load_engines().items()]
    default = default or urls.LOCAL
    with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
        futures = [pool.submit(probe, n, u, n == default) for n, u in wanted]
        return [f.result() for f in futures]


# -- rendering (pure) ----------------------------------------------------------------------------
class EnginesTable:
    def __init__(self, rows: Sequence[EngineRow]):
        self.rows = tuple(rows)

    def __repr__(self) -> str:
        return to_text(self.rows)

    def _repr_html_(self) -> str:
        return to_html(self.rows)


def to_text(rows: Sequence[EngineRow]) -> str:
    table = [HEADERS] + [r.cells() for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    notes = [f"{r.name}: {r.error}" for r in rows if r.error]
    tail = ["", "* the notebook's default engine (`%docker config --engine NAME`)"]
    return "\n".join(lines + notes + tail)


def to_html(rows: Sequence[EngineRow]) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    for r in rows:
        cells = "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in r.cells())
        title = f" title='{html.escape(r.error, quote=True)}'" if r.error else ""
        body.append(f"<tr{title}>{cells}</tr>")
        if r.error:
            body.append(f"<tr><td></td><td colspan='{len(HEADERS) - 1}' "
                        f"style='text-align:left;color:#b00'>{html.escape(r.error)}</td></tr>")
    return (f"<table class='dockmagic-engines'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
