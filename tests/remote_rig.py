"""The test rig (a "remote GPU server" in a container, scripts/ensure-rig.sh) as fixtures."""
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RIG = os.environ.get("DOCKMAGIC_RIG_NAME", "dockmagic-rig")


def rig_exec(*argv, check=True, input=None) -> subprocess.CompletedProcess:
    """A command inside the rig itself (not over SSH): the tests' independent view of it."""
    return subprocess.run(["docker", "exec", "-i", RIG, *argv], input=input,
                          capture_output=True, check=check)


def rig_containers(label="dockmagic.managed"):
    out = rig_exec("docker", "ps", "-aq", "--filter", f"label={label}").stdout.decode()
    return out.split()


@pytest.fixture(scope="session")
def rig():
    """Start the rig (idempotent) and return the ssh alias ensure-rig.sh wrote."""
    res = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-rig.sh")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"the rig did not start (scripts/ensure-rig.sh): {res.stderr[-2000:]}")
    return RIG
