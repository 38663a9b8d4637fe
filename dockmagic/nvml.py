"""NVML reader and the GPU snapshot it produces; the only module that imports ``pynvml``.

Implements the data side of ``%gpus``:

* frozen snapshot dataclasses (:class:`GpuSnapshot`, :class:`GpuInfo`, :class:`GpuProcess`,
  :class:`ContainerRef`), constructible without pynvml;
* :func:`query_record` - one NVML pass as a JSON-able record (the format of
  ``tests/fixtures/nvml-h200.json``);
* :func:`snapshot_from_record` - the one builder from record to snapshot, used by the live reader
  and by tests on fixtures alike;
* :func:`query_snapshot` - the two together; never raises.

Failures come in tiers (as in nvitop and gpustat): no bindings / no driver -> a snapshot whose
``error`` is one line naming the fix; one field fails -> that field is ``None`` (shown ``N/A``);
one GPU fails -> a placeholder row with ``lost=True``.

pynvml is imported on first query, ``nvmlInit`` runs once under a lock, ``nvmlShutdown`` at exit.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Tuple

__all__ = [
    "ContainerRef", "GpuProcess", "GpuInfo", "GpuSnapshot",
    "query_record", "query_snapshot", "snapshot_from_record", "shutdown",
]

# --------------------------------------------------------------------------------------------
# Snapshot data (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerRef:
    """The container a GPU process runs in, from a ``client.api.containers()`` entry."""

    id: str
    name: str
    image: str
    state: Optional[str] = None
    labels: Tuple[Tuple[str, str], ...] = ()

    def label(self, key: str, default: Optional[str] = None) -> Optional[str]:
        for k, v in self.labels:
            if k == key:
                return v
        return default

    @property
    def managed(self) -> bool:
        """True for containers dockmagic made (``labels.is_managed``, as the panel says)."""
        from .labels import is_managed
        return is_managed(dict(self.labels))

    @property
    def notebook(self) -> Optional[str]:
        return self.label("dockmagic.notebook")

    @property
    def cell(self) -> Optional[str]:
        return self.label("dockmagic.cell")


@dataclass(frozen=True)
class GpuProcess:
    """A process holding a GPU context; ``used_memory`` in bytes (None when NVML cannot say).

    NVML gives only the PID: ``user`` and ``command`` come from ``/proc/PID`` where this
    kernel can see it (:func:`dockmagic.gpus.attach_process_info`), else None (shown N/A).
    """

    pid: int
    used_memory: Optional[int] = None
    container: Optional[ContainerRef] = None
    user: Optional[str] = None
    command: Optional[str] = None


@dataclass(frozen=True)
class GpuInfo:
    """One GPU. Any reading NVML could not give is None; ``field_errors`` says why.

    Units: bytes for memory, percent for utilisation, degrees C, milliwatts for power.
    A GPU NVML lost or could not open is a placeholder: ``lost=True``, ``error`` says why.
    """

    index: int
    name: Optional[str] = None
    uuid: Optional[str] = None
    pci_bus_id: Optional[str] = None
    util_gpu: Optional[int] = None
    util_mem: Optional[int] = None
    mem_used: Optional[int] = None
    mem_total: Optional[int] = None
    mem_free: Optional[int] = None
    temperature: Optional[int] = None
    power_mw: Optional[int] = None
    power_limit_mw: Optional[int] = None
    processes: Tuple[GpuProcess, ...] = ()
    lost: bool = False
    error: Optional[str] = None
    field_errors: Tuple[Tuple[str, str], ...] = ()

    @property
    def free_memory(self) -> Optional[int]:
        """Free bytes: NVML's own figure, else total - used, else None."""
        if self.mem_free is not None:
            return self.mem_free
        if self.mem_total is not None and self.mem_used is not None:
            return self.mem_total - self.mem_used
        return None


@dataclass(frozen=True)
class GpuSnapshot:
    """All GPUs at one moment. ``error`` set means NVML gave nothing (no bindings or driver).

    Plain data: :class:`dockmagic.gpus.GpuTable` displays it (HTML for Jupyter, text for a
    terminal).
    """

    time: float = 0.0
    driver: Optional[str] = None
    cuda_driver: Optional[str] = None
    gpus: Tuple[GpuInfo, ...] = ()
    error: Optional[str] = None


# --------------------------------------------------------------------------------------------
# Record -> snapshot (pure; the one constructor path)
# --------------------------------------------------------------------------------------------


def _is_error(value: Any) -> bool:
    return isinstance(value, dict) and "nvml_error" in value


def _cuda_version(value: Any) -> Optional[str]:
    """NVML's integer CUDA driver version (13000) as text ("13.0")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value // 1000}.{value % 1000 // 10}"
    return value if isinstance(value, str) else None


def _processes(entries: Any) -> Tuple[GpuProcess, ...]:
    """Compute and graphics process lists merged by PID (a process can be in both)."""
    seen: dict = {}
    for entry in entries:
        pid = entry.get("pid")
        if not isinstance(pid, int) or pid in seen:
            continue
        mem = entry.get("usedGpuMemory")
        user, command = entry.get("user"), entry.get("command")  # absent from NVML's records
        seen[pid] = GpuProcess(pid=pid, used_memory=mem if isinstance(mem, int) else None,
                               user=user if isinstance(user, str) else None,
                               command=command if isinstance(command, str) else None)
    return tuple(seen.values())


def _gpu_from_record(dev: dict, position: int) -> GpuInfo:
    index = dev.get("index", position)
    if dev.get("lost") or ("name" not in dev and _is_error(dev)):
        return GpuInfo(index=index, uuid=dev.get("uuid"), lost=True,
                       error=dev.get("nvml_error") or "GPU is lost")
    errors: dict = {}  # field -> NVML's reason, once per field (memory feeds three readings)

    def get(key, sub=None):
        value = dev.get(key)
        if _is_error(value):
            errors[key] = str(value["nvml_error"])
            return None
        if sub is not None:
            value = value.get(sub) if isinstance(value, dict) else None
            if _is_error(value):
                errors[f"{key}.{sub}"] = str(value["nvml_error"])
                return None
        return value

    procs = []
    for key in ("compute_processes", "graphics_processes"):
        value = get(key)
        if isinstance(value, list):
            procs.extend(p for p in value if isinstance(p, dict))
    return GpuInfo(
        index=index,
        name=get("name"),
        uuid=get("uuid"),
        pci_bus_id=get("pci_bus_id"),
        util_gpu=get("utilization", "gpu"),
        util_mem=get("utilization", "memory"),
        mem_used=get("memory", "used"),
        mem_total=get("memory", "total"),
        mem_free=get("memory", "free"),
        temperature=get("temperature_gpu"),
        power_mw=get("power_usage_mw"),
        power_limit_mw=get("power_limit_mw"),
        processes=_processes(procs),
        field_errors=tuple(errors.items()),
    )


def snapshot_from_record(record: dict) -> GpuSnapshot:
    """Build a :class:`GpuSnapshot` from one record (the ``nvml-h200.json`` snapshot format).

    A field given as ``{"nvml_error": "..."}`` becomes None; a device given as
    ``{"index": i, "lost": true, "nvml_error": "..."}`` becomes a placeholder row;
    ``{"error": "..."}`` at the top is the no-driver state.
    """
    when = record.get("time") or 0.0
    if record.get("error"):
        return GpuSnapshot(time=when, error=str(record["error"]))
    driver = record.get("driver")
    return GpuSnapshot(
        time=when,
        driver=None if _is_error(driver) else driver,
        cuda_driver=_cuda_version(record.get("cuda_driver")),
        gpus=tuple(_gpu_from_record(d, i) for i, d in enumerate(record.get("devices", ()))),
    )


# --------------------------------------------------------------------------------------------
# Live reader (I/O): lazy import, locked init, one choke point per NVML call
# --------------------------------------------------------------------------------------------

_lock = threading.Lock()
_nv = None  # the pynvml module once nvmlInit succeeded

_FIX = ("Install the NVIDIA driver (and nvidia-container-toolkit for containers); "
        "check with nvidia-smi")
# NVML error codes (nvml.h) that decide which single line the no-driver state shows.
_NO_DRIVER = {9, 12}          # DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND
_NO_PERMISSION = 4
_LOST = 15                    # GPU_IS_LOST
_VERSION_MISMATCH = 18        # LIB_RM_VERSION_MISMATCH


class _Unavailable(Exception):
    """NVML cannot be used at all; the message is the snapshot's one-line ``error``."""


class _GpuLost(Exception):
    """A call on one GPU said the GPU is gone; the device becomes a placeholder."""


def _init_message(exc: BaseException) -> str:
    code = getattr(exc, "value", None)
    if code in _NO_DRIVER:
        return f"no NVIDIA driver found: {exc}. {_FIX}"
    if code == _NO_PERMISSION:
        return (f"no permission to use the NVIDIA driver: {exc}. "
                "Check the permissions of /dev/nvidia*; check with nvidia-smi")
    if code == _VERSION_MISMATCH:
        return (f"NVIDIA driver and library versions differ: {exc}. "
                "Reboot (or reload the nvidia kernel module) after a driver update")
    return f"NVML failed to start: {exc}. {_FIX}"


def _load():
    """Return the initialised pynvml module, or raise :class:`_Unavailable` with one line.

    Failures are not cached: a failed ``nvmlInit`` costs well under a millisecond, and a driver
    installed later is picked up without restarting the kernel.
    """
    global _nv
    if _nv is not None:
        return _nv
    with _lock:
        if _nv is not None:
            return _nv
        try:
            import pynvml
        except ImportError as exc:
            raise _Unavailable(
                f"NVML bindings missing ({exc}). Install them with: pip install nvidia-ml-py"
            ) from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise _Unavailable(_init_message(exc)) from None
        _nv = pynvml
        from .kernel import on_shutdown
        on_shutdown(shutdown)  # process exit, or unloading the extension (idempotent)
        return _nv


def shutdown() -> None:
    """``nvmlShutdown`` if initialised; the next query initialises again. Registered at exit."""
    global _nv
    with _lock:
        nv, _nv = _nv, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:  # at exit, or a driver already gone: nothing useful to say
                pass


def _call(nv, fn, *args):
    """The choke point: call one NVML function; a failure becomes ``{"nvml_error": reason}``.

    The record keeps the reason so the snapshot can say why a field reads N/A. A lost GPU
    aborts the whole device instead.
    """
    try:
        value = fn(*args)
    except nv.NVMLError as exc:
        if getattr(exc, "value", None) == _LOST:
            raise _GpuLost(str(exc)) from None
        return {"nvml_error": str(exc)}
    except getattr(nv, "NVMLLibraryMismatchError", ()) as exc:
        return {"nvml_error": str(exc)}
    return value.decode() if isinstance(value, bytes) else value


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _read_processes(nv, fn, handle):
    procs = _call(nv, fn, handle)
    if _is_error(procs):
        return procs
    return [{"pid": p.pid, "usedGpuMemory": p.usedGpuMemory} for p in procs]


def _read_device(nv, index: int) -> dict:
    """One device as a record entry (same keys as the fixture)."""
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
    except nv.NVMLError as exc:
        return {"index": index, "lost": True, "nvml_error": str(exc)}
    try:
        dev: dict = {"index": index}
        dev["name"] = _call(nv, nv.nvmlDeviceGetName, handle)
        dev["uuid"] = _call(nv, nv.nvmlDeviceGetUUID, handle)
        pci = _call(nv, nv.nvmlDeviceGetPciInfo, handle)
        dev["pci_bus_id"] = pci if _is_error(pci) else _text(pci.busId)
        mem = _call(nv, nv.nvmlDeviceGetMemoryInfo, handle)
        dev["memory"] = mem if _is_error(mem) else {
            "total": mem.total, "free": mem.free, "used": mem.used}
        util = _call(nv, nv.nvmlDeviceGetUtilizationRates, handle)
        dev["utilization"] = util if _is_error(util) else {"gpu": util.gpu, "memory": util.memory}
        dev["temperature_gpu"] = _call(nv, nv.nvmlDeviceGetTemperature, handle,
                                       nv.NVML_TEMPERATURE_GPU)
        dev["power_usage_mw"] = _call(nv, nv.nvmlDeviceGetPowerUsage, handle)
        dev["power_limit_mw"] = _call(nv, nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        dev["compute_processes"] = _read_processes(
            nv, nv.nvmlDeviceGetComputeRunningProcesses, handle)
        dev["graphics_processes"] = _read_processes(
            nv, nv.nvmlDeviceGetGraphicsRunningProcesses, handle)
        return dev
    except _GpuLost as exc:
        return {"index": index, "lost": True, "nvml_error": str(exc)}
    except Exception as exc:  # one misbehaving GPU must not blank the others
        return {"index": index, "lost": True, "nvml_error": f"{type(exc).__name__}: {exc}"}


def query_record() -> dict:
    """Read every GPU once through NVML into a JSON-able record; never raises.

    The record has the format of ``tests/fixtures/nvml-h200.json`` snapshots, or
    ``{"time": t, "error": "..."}`` when NVML is unusable.
    """
    now = time.time()
    try:
        nv = _load()
        count = nv.nvmlDeviceGetCount()
        return {
            "time": now,
            "driver": _call(nv, nv.nvmlSystemGetDriverVersion),
            "cuda_driver": _call(nv, nv.nvmlSystemGetCudaDriverVersion_v2),
            "count": count,
            "devices": [_read_device(nv, i) for i in range(count)],
        }
    except _Unavailable as exc:
        return {"time": now, "error": str(exc)}
    except Exception as exc:  # a refresh never raises; start NVML afresh on the next one
        shutdown()
        return {"time": now, "error": f"reading NVML failed: {type(exc).__name__}: {exc}. "
                                      "Check with nvidia-smi"}


def query_snapshot() -> GpuSnapshot:
    """Read all GPUs now (through :func:`snapshot_from_record`); never raises."""
    record = query_record()
    try:
        return snapshot_from_record(record)
    except Exception as exc:  # pragma: no cover - a builder bug must still not break a refresh
        return GpuSnapshot(time=record.get("time", 0.0),
                           error=f"could not read the NVML record: {type(exc).__name__}: {exc}")

