"""dockmagic.nvml: the no-driver state, per-field N/A, lost-GPU placeholders, fixture snapshots.

Fixture records are real H200 readings (nvml-h200.json) plus one synthetic 8-GPU record
(nvml-8gpu-mixed.json, see its "synthetic" note). Tests marked ``gpu`` read a real driver and
skip where none answers.
"""
import copy
import json
import re
import os
import statistics
import subprocess
import sys
import time
import types

import pytest

from dockmagic.gpus import to_html, to_text

from dockmagic import nvml
from dockmagic.nvml import GpuInfo, GpuSnapshot, query_record, query_snapshot, snapshot_from_record

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures")


def load_records(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return {s["label"]: s for s in json.load(f)["snapshots"]}


H200 = load_records("nvml-h200.json")
MIXED = load_records("nvml-8gpu-mixed.json")["mixed_8gpu"]


@pytest.fixture
def fresh_nvml():
    """NVML state reset before and after (a test may swap the pynvml module)."""
    nvml.shutdown()
    yield
    nvml.shutdown()


@pytest.fixture
def live_snapshot(fresh_nvml):
    snap = query_snapshot()
    if snap.error:
        pytest.skip(f"needs an NVIDIA driver: {snap.error}")
    return snap


# ---------------------------------------------------------------------------- no driver


def test_importing_dockmagic_does_not_import_pynvml():
    code = ("import sys, dockmagic, dockmagic.nvml, dockmagic.gpus; "
            "assert 'pynvml' not in sys.modules, 'pynvml imported at import time'")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_no_driver_is_one_clear_line(fresh_nvml):
    snap = query_snapshot()
    if snap.error is None:
        pytest.skip("this machine has an NVIDIA driver")
    assert snap.error.startswith("no NVIDIA driver found: ")
    assert "nvidia-smi" in snap.error and "nvidia-container-toolkit" in snap.error
    assert "\n" not in snap.error
    assert snap.gpus == ()
    assert to_text(snap) == snap.error
    assert to_html(snap).count("<div") == 1
    assert "no NVIDIA driver found" in to_html(snap)
    # asking again neither raises nor changes the answer
    assert query_snapshot().error == snap.error


def test_pynvml_missing_is_one_clear_line(fresh_nvml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    snap = query_snapshot()
    assert snap.error.startswith("NVML bindings missing")
    assert "pip install nvidia-ml-py" in snap.error
    assert "\n" not in snap.error and to_text(snap) == snap.error


def test_error_record_is_the_no_driver_state():
    snap = snapshot_from_record({"time": 1.0, "error": "no NVIDIA driver found: x"})
    assert snap == GpuSnapshot(time=1.0, error="no NVIDIA driver found: x")


def test_constructors_need_no_pynvml():
    gpu = GpuInfo(index=0)
    assert gpu.name is None and gpu.processes == () and not gpu.lost
    snap = GpuSnapshot(gpus=(gpu,))
    assert "N/A" in to_text(snap)
    hash(snap)  # frozen all the way down


# ---------------------------------------------------------------------------- fixtures render


EXPECTED = {  # label -> strings every rendering of that snapshot must show
    "idle": ["0", "NVIDIA H200", "0%", "0.6 / 140.4 GiB", "35°C", "80 / 700 W"],
    "under_load": ["0", "NVIDIA H200", "100%", "23%", "7.1 / 140.4 GiB", "57°C", "694 / 700 W",
                   "495", "6.4 GiB"],
    "after_load": ["0", "NVIDIA H200", "0%", "0.6 / 140.4 GiB", "40°C", "394 / 700 W"],
}


@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_h200_fixture_renders_every_column(label):
    snap = snapshot_from_record(H200[label])
    assert snap.error is None and snap.driver == "580.159.04" and snap.cuda_driver == "13.0"
    text, page = to_text(snap), to_html(snap)
    # a heading's full words (a narrow output area shows its short form instead)
    heads = [re.sub(r'<span class="dmg-short">.*?</span>|<[^>]+>', "", th)
             for th in re.findall(r"<th[^>]*>(.*?)</th>", page)]
    for header in ["GPU", "name", "GPU util", "mem util", "memory used / total", "temp",
                   "power draw / limit"]:
        assert header in text and header in heads, header
    for want in EXPECTED[label] + ["580.159.04", "CUDA 13.0"]:
        assert want in text, (want, text)
        assert want in page, (want, page)
    gpu_rows, processes = text.split("\n\n")
    gpu = snap.gpus[0]  # GPU util, then mem util, each in its own column
    assert re.search(r"(\d+)%\s+(\d+)%", gpu_rows.splitlines()[2]).groups() == (
        str(gpu.util_gpu), str(gpu.util_mem))
    assert "N/A" not in gpu_rows  # every GPU reading is there (user and command are not in
    # NVML's record: read from /proc where visible, N/A in a recording)
    if snap.gpus[0].processes:
        assert processes.splitlines()[0].split() == ["GPU", "PID", "user", "command", "GPU",
                                                     "memory", "container"]
        assert "<th>PID</th>" in page.replace(' class="dmg-r"', "")


def test_under_load_fixture_fields():
    gpu = snapshot_from_record(H200["under_load"]).gpus[0]
    assert (gpu.index, gpu.uuid, gpu.pci_bus_id) == (
        0, "GPU-118e55a6-24c3-f964-cb16-f9bba356f8ee", "00000000:00:06.0")
    assert (gpu.util_gpu, gpu.util_mem, gpu.temperature) == (100, 23, 57)
    assert (gpu.mem_used, gpu.mem_total, gpu.free_memory) == (7572684800, 150754820096,
                                                             143182135296)
    assert (gpu.power_mw, gpu.power_limit_mw) == (694029, 700000)
    assert [(p.pid, p.used_memory, p.container) for p in gpu.processes] == [
        (495, 6918504448, None)]
    assert gpu.field_errors == () and not gpu.lost


def test_field_that_failed_reads_na_with_its_reason():
    snap = snapshot_from_record(MIXED)
    gpu = snap.gpus[2]
    assert gpu.mem_used is None and gpu.mem_total is None and gpu.power_mw is None
    assert gpu.power_limit_mw == 700000 and gpu.temperature == 33
    assert gpu.field_errors == (("memory", "Not Supported"), ("power_usage_mw", "Not Supported"))
    row = next(line for line in to_text(snap).splitlines() if line.lstrip().startswith("2 "))
    assert "N/A" in row and "N/A / 700 W" in row and "33°C" in row
    assert 'title="memory: Not Supported"' in to_html(snap)


def test_lost_gpu_is_a_placeholder_row():
    snap = snapshot_from_record(MIXED)
    lost = snap.gpus[7]
    assert lost.lost and lost.index == 7 and lost.error == "GPU is lost" and lost.name is None
    assert "7  GPU lost or unreadable: GPU is lost" in to_text(snap)
    assert "GPU lost or unreadable: GPU is lost" in to_html(snap)


def test_process_in_both_lists_is_listed_once():
    gpu = snapshot_from_record(MIXED).gpus[4]
    assert [p.pid for p in gpu.processes] == [1404]


def test_html_escapes_what_it_shows():
    record = copy.deepcopy(H200["idle"])
    record["devices"][0]["name"] = "<b>GPU</b>"
    page = to_html(snapshot_from_record(record))
    assert "<b>GPU</b>" not in page and "&lt;b&gt;GPU&lt;/b&gt;" in page


# ---------------------------------------------------------------------------- live reader path
# A replay of the recorded under_load device stands in for the driver, raising pynvml's real
# NVMLError classes where a test asks: it exercises the reader's choke point and tiers on a CPU.


class _Obj(types.SimpleNamespace):
    pass


def replay_pynvml(record, *, init_error=None, fail=(), lost_handles=(), lost_on=()):
    """A pynvml stand-in serving ``record``: ``fail`` = {(index, fn_name): code}."""
    import pynvml as real

    fail = dict(fail)
    devs = record["devices"]
    calls = []

    def op(name, getter):
        def fn(handle, *args):
            calls.append(name)
            code = fail.get((handle, name))
            if handle in lost_on and name == "nvmlDeviceGetUtilizationRates":
                code = real.NVML_ERROR_GPU_IS_LOST
            if code is not None:
                raise real.NVMLError(code)
            return getter(devs[handle], *args)
        return fn

    def init():
        if init_error is not None:
            raise real.NVMLError(init_error)

    def handle(i):
        if i in lost_handles:
            raise real.NVMLError(real.NVML_ERROR_UNKNOWN)
        return i

    def procs(d, key):
        return [_Obj(pid=p["pid"], usedGpuMemory=p["usedGpuMemory"]) for p in d[key]]

    fake = types.ModuleType("pynvml")
    fake.__dict__.update(
        NVMLError=real.NVMLError, NVMLLibraryMismatchError=real.NVMLLibraryMismatchError,
        NVML_TEMPERATURE_GPU=real.NVML_TEMPERATURE_GPU,
        nvmlInit=init, nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: len(devs), nvmlDeviceGetHandleByIndex=handle,
        nvmlSystemGetDriverVersion=lambda: record["driver"].encode(),  # old pynvml gave bytes
        nvmlSystemGetCudaDriverVersion_v2=lambda: record["cuda_driver"],
        nvmlDeviceGetName=op("nvmlDeviceGetName", lambda d: d["name"]),
        nvmlDeviceGetUUID=op("nvmlDeviceGetUUID", lambda d: d["uuid"]),
        nvmlDeviceGetPciInfo=op("nvmlDeviceGetPciInfo", lambda d: _Obj(busId=d["pci_bus_id"])),
        nvmlDeviceGetMemoryInfo=op("nvmlDeviceGetMemoryInfo", lambda d: _Obj(**d["memory"])),
        nvmlDeviceGetUtilizationRates=op("nvmlDeviceGetUtilizationRates",
                                         lambda d: _Obj(**d["utilization"])),
        nvmlDeviceGetTemperature=op("nvmlDeviceGetTemperature",
                                    lambda d, sensor: d["temperature_gpu"]),
        nvmlDeviceGetPowerUsage=op("nvmlDeviceGetPowerUsage", lambda d: d["power_usage_mw"]),
        nvmlDeviceGetEnforcedPowerLimit=op("nvmlDeviceGetEnforcedPowerLimit",
                                           lambda d: d["power_limit_mw"]),
        nvmlDeviceGetComputeRunningProcesses=op("nvmlDeviceGetComputeRunningProcesses",
                                                lambda d: procs(d, "compute_processes")),
        nvmlDeviceGetGraphicsRunningProcesses=op("nvmlDeviceGetGraphicsRunningProcesses",
                                                 lambda d: procs(d, "graphics_processes")),
    )
    fake.calls = calls
    return fake


def three_gpus():
    record = copy.deepcopy(H200["under_load"])
    for i in (1, 2):
        dev = copy.deepcopy(H200["idle"]["devices"][0])
        dev.update(index=i, uuid=f"GPU-{i}")
        record["devices"].append(dev)
    return record


def without_time(snap):
    return snap.__class__(**{**snap.__dict__, "time": 0.0})


def test_live_path_builds_the_same_snapshot_as_the_fixture(fresh_nvml, monkeypatch):
    pytest.importorskip("pynvml")
    record = H200["under_load"]
    monkeypatch.setitem(sys.modules, "pynvml", replay_pynvml(record))
    live = query_record()
    json.dumps(live)  # a live record is JSON, like the fixture
    assert without_time(snapshot_from_record(live)) == without_time(snapshot_from_record(record))


def test_live_field_failure_becomes_na(fresh_nvml, monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    fake = replay_pynvml(three_gpus(), fail={
        (0, "nvmlDeviceGetPowerUsage"): pynvml.NVML_ERROR_NOT_SUPPORTED,
        (1, "nvmlDeviceGetComputeRunningProcesses"): pynvml.NVML_ERROR_NO_PERMISSION,
    })
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    snap = query_snapshot()
    assert snap.error is None and len(snap.gpus) == 3
    g0, g1, g2 = snap.gpus
    assert g0.power_mw is None and g0.power_limit_mw == 700000 and g0.temperature == 57
    assert g0.field_errors == (("power_usage_mw", "Not Supported"),)
    assert g1.field_errors == (("compute_processes", "Insufficient Permissions"),)
    assert g2.field_errors == () and g2.temperature == 35
    assert "N/A / 700 W" in to_text(snap)


def test_live_lost_gpu_becomes_placeholder_and_others_still_read(fresh_nvml, monkeypatch):
    pytest.importorskip("pynvml")
    fake = replay_pynvml(three_gpus(), lost_handles={0}, lost_on={2})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    snap = query_snapshot()
    assert [g.lost for g in snap.gpus] == [True, False, True]
    assert snap.gpus[0].error == "Unknown Error"
    assert snap.gpus[2].error == "GPU is lost"
    assert snap.gpus[1].uuid == "GPU-1" and snap.gpus[1].mem_total == 150754820096
    assert "GPU lost or unreadable" in to_text(snap)


@pytest.mark.parametrize("code, start", [
    (9, "no NVIDIA driver found: Driver Not Loaded."),
    (12, "no NVIDIA driver found: NVML Shared Library Not Found."),
    (4, "no permission to use the NVIDIA driver"),
    (18, "NVIDIA driver and library versions differ"),
    (999, "NVML failed to start: Unknown Error."),
])
def test_init_failure_is_one_line_naming_the_fix(fresh_nvml, monkeypatch, code, start):
    pytest.importorskip("pynvml")
    monkeypatch.setitem(sys.modules, "pynvml", replay_pynvml(H200["idle"], init_error=code))
    snap = query_snapshot()
    assert snap.error.startswith(start) and "\n" not in snap.error and snap.gpus == ()


def test_init_once_and_shutdown(fresh_nvml, monkeypatch):
    pytest.importorskip("pynvml")
    fake = replay_pynvml(H200["idle"])
    inits = []
    fake.nvmlInit = lambda: inits.append(1)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    for _ in range(3):
        query_snapshot()
    assert len(inits) == 1
    nvml.shutdown()
    assert fake.calls.count("shutdown") == 1
    query_snapshot()
    assert len(inits) == 2


# ---------------------------------------------------------------------------- real GPU


@pytest.mark.gpu
def test_live_snapshot_reads_every_gpu(live_snapshot):
    snap = live_snapshot
    assert snap.driver and snap.cuda_driver and snap.gpus
    for gpu in snap.gpus:
        assert not gpu.lost, gpu.error
        assert gpu.name and gpu.uuid.startswith(("GPU-", "MIG-")) and gpu.mem_total > 0
        assert gpu.name in to_text(snap) and gpu.name in to_html(snap)
    json.dumps(query_record())


@pytest.mark.gpu
def test_live_snapshot_is_quick(live_snapshot):
    times = []
    for _ in range(20):
        t = time.perf_counter()
        query_snapshot()
        times.append(time.perf_counter() - t)
    per_gpu_ms = statistics.median(times) * 1000 / len(live_snapshot.gpus)
    assert per_gpu_ms < 50, f"{per_gpu_ms:.1f} ms per GPU"
