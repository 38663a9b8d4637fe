"""`%gpus` through a real IPython shell: no-driver state, fixture rendering, and the choice
reaching the next `%%docker` cell's container (checked with the engine's own inspect).

Without a GPU here, the recorded H200 / 8-GPU readings stand in for NVML's answers by replacing
`nvml.query_record` (the one NVML read); everything after it is the real code path.
"""
import json
import os
import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from dockmagic import nvml, runner
from conftest import BASE_IMAGE, FIXTURES, HERE


def record(name, label=None):
    with open(os.path.join(FIXTURES, name)) as f:
        snaps = json.load(f)["snapshots"]
    return next(s for s in snaps if label in (None, s.get("label")))


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    yield ip
    ip.run_line_magic("gpus", "none")
    ip.run_line_magic("unload_ext", "dockmagic")


@pytest.fixture
def recorded(monkeypatch):
    def use(name, label=None):
        rec = record(name, label)
        monkeypatch.setattr(nvml, "query_record", lambda: dict(rec))
        return rec
    return use


def test_without_a_driver_one_clear_line(shell, capsys):
    if not nvml.query_snapshot().error:
        pytest.skip("this machine has an NVIDIA driver")
    snap = shell.run_line_magic("gpus", "")
    assert repr(snap).startswith("no NVIDIA driver found")
    assert "no NVIDIA driver found" in snap._repr_html_()
    assert "next %%docker cells get: no GPUs" in capsys.readouterr().out
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("gpus", "auto:2")
    assert "driver" in str(info.value)
    shell.run_line_magic("gpus", "none")     # still works
    shell.run_line_magic("gpus", "all")      # the engine may be remote: passed through
    assert "all GPUs" in capsys.readouterr().out


def test_a_device_choice_without_a_driver_is_recorded_and_says_so_in_one_line(shell, capsys):
    """A notebook prepared on a laptop for a GPU server: `%gpus 0,1` is kept, with one line
    saying no driver is visible here (it used to be silent and fail at the next cell)."""
    if not nvml.query_snapshot().error:
        pytest.skip("this machine has an NVIDIA driver")
    shell.run_line_magic("gpus", "0,1")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["next %%docker cells get: GPUs 0 and 1", lines[1]] and len(lines) == 2
    assert lines[1].startswith("no NVIDIA driver is visible here") and "recorded" in lines[1]
    magics = shell.magics_manager.registry["DockerMagics"]
    plan = magics.plan("img")
    assert [g.device_ids for g in plan.spec.gpus] == [("0", "1")]
    shell.run_line_magic("gpus", "none")
    assert "no NVIDIA driver" not in capsys.readouterr().out  # nothing to warn about


def test_fixture_renders_every_column(shell, recorded):
    recorded("nvml-h200.json", "under_load")
    snap = shell.run_line_magic("gpus", "")
    html, text = snap._repr_html_(), repr(snap)
    for want in ("NVIDIA H200", "100%", "57°C", "694 / 700 W", "495", "6.4 GiB",
                 "140.4 GiB", "GPU util", "mem util", "memory used / total", "PID", "user",
                 "command"):
        assert want in html and want in text, want


def test_auto_2_pins_the_least_loaded_pair_on_the_next_cells_container(
        shell, recorded, docker_client, base_image, capsys):
    rec = recorded("nvml-8gpu-mixed.json")
    uuids = {d["index"]: d.get("uuid") for d in rec["devices"]}
    shell.run_line_magic("gpus", "auto:2")
    said = capsys.readouterr().out
    assert said.startswith("next %%docker cells get: GPUs 3 and 6 (pinned by UUID)\n  why: "
                           "auto:2 ranks by free memory, then utilisation:\n    GPU 3  ")
    assert re.search(r"^    GPU 5 .* \(next best\)$", said, re.M)
    magics = shell.magics_manager.registry["DockerMagics"]
    plan = magics.plan(f"-l test.case=gpus-auto {BASE_IMAGE}")
    engine = magics.engine
    cid = engine.create(plan.spec)   # created, not started: no GPUs here
    try:
        reqs = engine.inspect(cid)["HostConfig"]["DeviceRequests"]
        assert [r["DeviceIDs"] for r in reqs] == [[uuids[3], uuids[6]]]
        assert reqs[0]["Capabilities"] == [["gpu"]]
    finally:
        engine.remove(cid)
    # A cell's own --gpus wins over the choice.
    plan = magics.plan(f"--gpus device=1 {BASE_IMAGE}")
    assert [g.device_ids for g in plan.spec.gpus] == [("1",)]
    # %gpus with no argument shows the current choice too, and marks the chosen GPUs.
    view = shell.run_line_magic("gpus", "")
    assert "GPUs 3 and 6 (pinned by UUID)" in capsys.readouterr().out
    table = repr(view).split("\n\n")[0]  # the GPU rows (processes follow)
    marked = [line.split()[1] for line in table.splitlines() if line.startswith("●")]
    assert marked == ["3", "6"]
    html = view._repr_html_()
    assert html.count('class="dmg-gpu dmg-chosen"') == 2


@pytest.mark.parametrize("arg,want", [("all", -1), ("2", 2)])
def test_counts_reach_the_plan(shell, recorded, arg, want):
    recorded("nvml-8gpu-mixed.json")
    shell.run_line_magic("gpus", arg)
    plan = shell.magics_manager.registry["DockerMagics"].plan(BASE_IMAGE)
    assert plan.spec.gpus[0].count == want


def test_bad_choice_names_the_accepted_forms(shell, recorded):
    recorded("nvml-8gpu-mixed.json")
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("gpus", "fastest")
    assert "auto:N" in str(info.value) and "\n" not in str(info.value)


def test_gpus_notebook_runs_headless(base_image, tmp_path):
    """notebooks/gpus.ipynb on a real kernel: without a driver it shows that state, not a failure."""
    import subprocess
    import sys

    import nbformat

    root = os.path.dirname(HERE)
    out = tmp_path / "gpus.executed.ipynb"
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "scripts", "run_notebook.py"),
         os.path.join(root, "notebooks", "gpus.ipynb"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(
        "".join(o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", ""))
                for o in c.get("outputs", []))
        for c in nb.cells if c.cell_type == "code")
    if nvml.query_snapshot().error:
        assert "no NVIDIA driver found" in text
        assert "auto:2 needs to see the GPUs" in text
    else:
        assert "most free memory:" in text
    assert "next %%docker cells get: all GPUs" in text
    assert "--gpus '\"device=0,2\"'" in text
    assert "CUDA_DEVICE_ORDER = PCI_BUS_ID" in text
