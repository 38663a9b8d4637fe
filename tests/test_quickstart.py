"""The README's main job: notebooks/quickstart.ipynb runs headless on a real kernel (nbclient)."""
import os
import subprocess
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.engine


def test_quickstart_notebook_runs_headless(base_image, tmp_path):
    out = tmp_path / "quickstart.executed.ipynb"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "run_notebook.py"),
         os.path.join(ROOT, "notebooks", "quickstart.ipynb"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    nb = nbformat.read(out, as_version=4)
    # Output arrives in chunks as it is written: join a cell's stream outputs as they came.
    text = "\n".join(
        "".join(o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", ""))
                for o in c.get("outputs", []))
        for c in nb.cells if c.cell_type == "code")
    assert "hello from the container 2" in text
    assert "numpy 1." in text                      # Debian's numpy inside, whatever the host has
    assert "done owned by uid" in text
    assert "docker run " in text and "--entrypoint python3" in text
    assert "shell in " in text and "hi from bash" in text
    assert "about to fail" in text                 # --no-raise-error cell showed its stderr
    assert "default image, PYTHONUNBUFFERED = 1" in text
    assert "no NVIDIA driver" in text or "NVIDIA" in text
