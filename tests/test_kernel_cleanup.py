"""Nothing outlives what owns it (#8 item 6), in real kernels (jupyter_client + ipykernel) against
real engines: a SIGKILLed kernel's containers and exchange folders go (its reaper), a session a
live kernel reattached to survives `prune --orphans` (claims), interrupted cells leave nothing,
and a cell whose engine stops mid-cell ends with a short error and leaves nothing once the engine
is back (a second dockerd, in its own network namespace)."""
import os
import random
import subprocess
import time
import uuid

import pytest

from conftest import BASE_IMAGE
from kernels import Kernel

pytestmark = pytest.mark.engine

RUN = uuid.uuid4().hex[:8]
CASE = "dockmagic.test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XFER_ROOT = f"/dev/shm/dockmagic-{os.getuid()}"


@pytest.fixture
def kernels(tmp_path, docker_client):
    """Kernels a test starts; afterwards they are closed and their containers removed."""
    started = []

    def start(**kw):
        k = Kernel(cwd=tmp_path, **kw)
        started.append(k)
        return k

    yield start
    for k in started:
        k.close()
    for k in started:
        for c in docker_client.containers.list(
                all=True, filters={"label": f"dockmagic.kernel={k.kernel_id}"}):
            c.remove(force=True)
    for c in docker_client.containers.list(all=True, filters={"label": f"{CASE}={RUN}"}):
        c.remove(force=True)


def of_kernel(client, kernel_id) -> list:
    return client.api.containers(all=True, filters={"label": f"dockmagic.kernel={kernel_id}"})


def wait_until(predicate, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def exchange_folders(notebook_dir=None) -> set:
    """The kernel's tmpfs exchange root's entries, and the notebook folder's hidden ones."""
    found = set()
    for place in (XFER_ROOT, notebook_dir):
        try:
            found |= {os.path.join(place, n) for n in os.listdir(place)
                      if place == XFER_ROOT or n.startswith(".dockmagic-")}
        except (FileNotFoundError, TypeError):
            pass
    return found


# -- killed kernel --------------------------------------------------------------------------------
def test_sigkilled_kernel_leaves_no_container_and_no_exchange_folder(kernels, docker_client,
                                                                     tmp_path):
    k = kernels()
    label = f"-l {CASE}={RUN}"
    k.run(f"%docker session dm-reap-{RUN} --rm {label} {BASE_IMAGE}", check=True)
    k.run(f"%%docker {label} {BASE_IMAGE}\nprint('warm')", check=True)  # leaves a spare
    assert "True" in k.run("from dockmagic import spare; print(spare.SPARES.ready(60))").stdout
    k.run("x = list(range(1000))", check=True)
    before = exchange_folders(tmp_path)
    # `--name` keeps this one-shot cell away from the spare, so both exist when the kernel dies.
    msg = k.send(f"%%docker --name dm-reap-cell-{RUN} --in x {label} {BASE_IMAGE}\n"
                 "import time; print(len(x), flush=True); time.sleep(600)")
    k.collect(msg, timeout=120, until=lambda r: "1000" in r.stdout)
    folders = exchange_folders(tmp_path) - before
    kinds = sorted(c["Labels"].get("dockmagic.kind") for c in of_kernel(docker_client,
                                                                       k.kernel_id))
    assert kinds == ["oneshot", "session", "spare"], kinds
    assert any(f.startswith(str(tmp_path)) for f in folders) and any(
        f.startswith(XFER_ROOT) for f in folders), f"the --in cell's exchange folders: {folders}"

    k.kill()
    killed = time.monotonic()
    gone = wait_until(lambda: not of_kernel(docker_client, k.kernel_id)
                      and not (folders & exchange_folders(tmp_path)), timeout=60)
    took = time.monotonic() - killed
    left = [(c["Names"], c["Labels"].get("dockmagic.kind"), c["State"])
            for c in of_kernel(docker_client, k.kernel_id)]
    assert gone, (f"60 s after SIGKILL: containers {left}, "
                  f"folders {folders & exchange_folders(tmp_path)}")
    print(f"killed kernel: its 3 containers and {len(folders)} exchange folder(s) gone "
          f"{took:.1f} s after SIGKILL")


# -- orphans and claims ---------------------------------------------------------------------------
def test_prune_orphans_keeps_a_session_a_live_kernel_reattached_to(kernels, docker_client):
    a, b = kernels(), kernels()
    label = f"-l {CASE}={RUN}"
    rm_name, keep_name = f"dm-claim-rm-{RUN}", f"dm-claim-keep-{RUN}"
    a.run(f"%docker session {rm_name} --rm {label} {BASE_IMAGE}", check=True)
    a.run(f"%docker session {keep_name} {label} {BASE_IMAGE}", check=True)
    a.run(f"%%docker @{rm_name}\nv = 41", check=True)
    reaper_pid = int(a.run("from dockmagic.engine import reaper\n"
                           "print(next(iter(reaper._REAPERS.values())).pid)").stdout)
    # B reattaches to A's --rm session while A lives: B claims it.
    out = b.run(f"%docker session {rm_name}", check=True)
    assert "reattached" in out.text
    # An orphan proper: a one-shot container of a kernel that is gone, no one claims it.
    orphan = docker_client.containers.create(
        BASE_IMAGE, ["sleep", "300"], init=True,
        labels={"dockmagic.managed": "1", "dockmagic.kernel": f"{os.uname().nodename}:1:1",
                "dockmagic.kind": "oneshot", "dockmagic.reap": "1", CASE: RUN})
    orphan.start()

    a.kill()  # A's reaper removes A's reapable containers, except the one B claims
    assert wait_until(lambda: not _pid_alive(reaper_pid), 60), "A's reaper never finished"
    names = {c.name for c in docker_client.containers.list(all=True,
                                                            filters={"label": f"{CASE}={RUN}"})}
    assert rm_name in names and keep_name in names

    c = kernels()
    verdicts = c.run("from dockmagic import lifecycle\n"
                     "for e, v in lifecycle.query_owners():\n"
                     "    print(e['Names'][0].lstrip('/'), v)\n"
                     "print(lifecycle.report_orphans())", check=True).stdout
    assert f"{keep_name} session" in verdicts, verdicts   # kept by design, listed as a session
    assert f"{rm_name} claimed" in verdicts, verdicts     # B holds it
    assert "kept from earlier kernels" in verdicts.splitlines()[-1], verdicts
    c.run(f"%docker prune -f --orphans --filter label={CASE}={RUN}", check=True)
    names = {c.name for c in docker_client.containers.list(all=True,
                                                            filters={"label": f"{CASE}={RUN}"})}
    assert names == {rm_name, keep_name}, names  # the orphan went; both sessions stay
    assert "42" in b.run(f"%%docker @{rm_name}\nprint(v + 1)", check=True).stdout

    b.kill()  # B's reaper takes the --rm session it claimed; the other session persists
    assert wait_until(lambda: not docker_client.containers.list(
        all=True, filters={"name": f"^/{rm_name}$"}), 60), "B's reaper left its claimed session"
    assert docker_client.containers.list(all=True, filters={"name": f"^/{keep_name}$"})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


# -- interrupts -----------------------------------------------------------------------------------
N_INTERRUPTS = int(os.environ.get("DOCKMAGIC_INTERRUPT_CELLS", "50"))


@pytest.mark.parametrize("spares", ["off", "on"])
def test_cells_interrupted_at_any_moment_leave_no_container(kernels, docker_client, spares):
    k = kernels()
    k.run(f"%docker config --spare {spares}", check=True)
    rng = random.Random(f"{RUN}-{spares}")
    delays = []
    for _ in range(N_INTERRUPTS):
        msg = k.send(f"%%docker -l {CASE}={RUN} {BASE_IMAGE}\nimport time; time.sleep(3)")
        k.collect(msg, timeout=60, until=lambda r: True)  # the first message: the cell started
        delay = rng.uniform(0, 0.060)
        time.sleep(delay)
        k.km.interrupt_kernel()
        k.collect(msg, timeout=60)
        delays.append(delay)
    k.run("%docker config --spare off", check=True)  # the spare (if any) goes too
    assert "1" in k.run("print(1)", timeout=30).stdout, "the kernel no longer answers"
    wait_until(lambda: not of_kernel(docker_client, k.kernel_id), 10)
    left = of_kernel(docker_client, k.kernel_id)
    states = {}
    for c in left:
        key = f"{c['Labels'].get('dockmagic.kind')}/{c['State']}"
        states[key] = states.get(key, 0) + 1
    assert not left, (f"{len(left)} of {N_INTERRUPTS} interrupted cells (spares {spares}) left "
                      f"a container: {states}")
