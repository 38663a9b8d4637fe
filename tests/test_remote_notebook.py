"""notebooks/remote.ipynb runs headless on a real kernel (nbclient) against the rig."""
import os
import subprocess
import sys

import nbformat
import pytest

from remote_rig import rig_containers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.engine


def test_remote_notebook_runs_headless_against_the_rig(rig, tmp_path):
    out = tmp_path / "remote.executed.ipynb"
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "run_notebook.py"),
         os.path.join(ROOT, "notebooks", "remote.ipynb"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(
        "".join(o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", ""))
                for o in c.get("outputs", []))
        for c in nb.cells if c.cell_type == "code")
    folder = os.path.join(ROOT, "notebooks")
    assert "engine rig added" in text and "reachable" in text
    assert f"working directory: {folder}" in text
    assert "read there: measurements from the lab" in text
    assert f"back here: MEASUREMENTS FROM THE LAB | owned by uid {os.getuid()}" in text
    assert "weights live on the rig" in text and "y came back:" in text
    assert "nvidia-smi not found" in text
    assert (tmp_path / "xdg" / "dockmagic" / "engines.toml").exists()
    # the session was stopped, and nothing else of the notebook's is left on the rig
    assert rig_containers("dockmagic.kind=session") == []
    assert rig_containers("dockmagic.kind=oneshot") == []
