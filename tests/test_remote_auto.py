"""`--engine auto --gpus auto:N`: the engine, then its GPUs, with the most free memory. Pure,
on recorded readings (an 8-GPU server, an H200 read through nvidia-smi, a host without driver)."""
import json
import os

import pytest

from dockmagic.nvml import GpuSnapshot, snapshot_from_record
from dockmagic.remote import auto, nvsmi

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fixtures", "nvml-8gpu-mixed.json")) as f:
    MIXED = snapshot_from_record(json.load(f)["snapshots"][0])
with open(os.path.join(HERE, "fixtures", "nvidia-smi-q-h200.xml")) as f:
    H200 = snapshot_from_record(nvsmi.record_from_xml(f.read()))
NO_DRIVER = GpuSnapshot(error="engine rig: no NVIDIA driver there (nvidia-smi not found)")


def test_two_gpus_come_from_the_only_engine_that_has_two():
    engine, value = auto.choose_engine({"local": NO_DRIVER, "h200": H200, "gpu8": MIXED}, 2)
    from dockmagic.gpus import choose_gpus
    assert engine == "gpu8" and value == choose_gpus("auto:2", MIXED)


def test_one_gpu_comes_from_the_engine_with_the_most_free_memory():
    best8 = max(g.free_memory or 0 for g in MIXED.gpus if not g.lost)
    engine, value = auto.choose_engine({"gpu8": MIXED, "h200": H200}, 1)
    expected = "h200" if H200.gpus[0].free_memory > best8 else "gpu8"
    assert engine == expected
    if expected == "h200":
        assert H200.gpus[0].uuid in value


def test_no_engine_with_enough_gpus_says_why_for_each():
    with pytest.raises(auto.AutoChoiceError) as info:
        auto.choose_engine({"local": NO_DRIVER, "h200": H200}, 2)
    msg = str(info.value)
    assert "no engine has 2 GPU(s)" in msg and "local: engine rig: no NVIDIA driver" in msg
    assert "h200:" in msg


def test_the_line_names_the_engine_and_pins_the_gpus():
    line = "--engine auto --gpus auto:2 -v /data:/data IMAGE python3"
    assert auto.wants_auto(line) and auto.auto_count(line.split()) == 2
    out = auto.rewrite_line(line, "gpu8", '"device=GPU-a,GPU-b"')
    assert out == "--engine gpu8 --gpus '\"device=GPU-a,GPU-b\"' -v /data:/data IMAGE python3"
    assert auto.rewrite_line("--engine=auto --gpus=auto:1 IMG", "h200", "GPU-x") == \
        "--engine=h200 --gpus=GPU-x IMG"
    assert not auto.wants_auto("--engine rig IMG")
