"""The reaper covers remote engines, and `%%docker @S` finds S on whatever engine it runs on (#10),
in real kernels (jupyter_client + ipykernel) against the rig (its own sshd and dockerd).

A kernel's reaper for an ssh:// engine runs on the engine's host (dockmagic/remote/hostreaper.py),
so a SIGKILLed kernel's containers and exchange folders there go; a dropped SSH connection that
the kernel reconnects from hands over to a new reaper there and takes nothing."""
import os
import subprocess
import time
import uuid

import pytest

from conftest import BASE_IMAGE, wait_until
from kernels import Kernel
from remote_rig import RIG, rig_containers, rig_exec

pytestmark = pytest.mark.engine

RUN = uuid.uuid4().hex[:8]
CASE = "dockmagic.test"
LABEL = f"-l {CASE}=rreap-{RUN}"
RIG_XFER = "/root/.cache/dockmagic/xfer"  # the exchange root there (the SSH user is root)
LOCAL_XFER = f"/dev/shm/dockmagic-{os.getuid()}"


@pytest.fixture
def kernels(rig, tmp_path):
    """Kernels with the rig added as engine `rig` (their own engines.toml); afterwards they are
    closed and what the test made on the rig removed."""
    xdg = tmp_path / "xdg"
    nbdir = tmp_path / "notebook"
    nbdir.mkdir()
    started = []

    def start(*engines):
        k = Kernel(cwd=nbdir, env={"XDG_CONFIG_HOME": str(xdg)})
        started.append(k)
        for name in engines or ("rig",):
            k.run(f"%docker engines add {name} ssh://{rig}", check=True)
        return k

    yield start
    for k in started:
        k.close()
    left = rig_containers(f"{CASE}=rreap-{RUN}")
    if left:
        rig_exec("docker", "rm", "-f", *left, check=False)


def rig_folders(kernel_id: str, session: str) -> list:
    """KERNEL_ID's exchange folders on the rig's own filesystem (cells', spares', SESSION's)."""
    from dockmagic import transfer
    out = rig_exec("sh", "-c", f"ls -a {RIG_XFER} 2>/dev/null || true").stdout.decode().split()
    return sorted(n for n in out if n.startswith((f"k-{transfer.kernel_tag(kernel_id)}-",
                                                  f"s-{session}-")))


def local_folders(kernel_id: str, session: str) -> list:
    from dockmagic import transfer
    try:
        names = os.listdir(LOCAL_XFER)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith((f"k-{transfer.kernel_tag(kernel_id)}-",
                                                    f"s-{session}-")))


def rig_reapers(kernel_id: str) -> list:
    """The pids of the reapers on the rig watching KERNEL_ID."""
    out = rig_exec("pgrep", "-f", "--", f"--kernel {kernel_id}", check=False).stdout.decode()
    return sorted(int(p) for p in out.split())


def test_sigkilled_kernel_leaves_nothing_on_the_rig(kernels):
    k = kernels()
    session = f"dm-rreap-{RUN}"
    k.run(f"%docker session {session} --rm --engine rig {LABEL} {BASE_IMAGE}", check=True)
    k.run(f"%%docker @{session}\nv = 41", check=True)
    k.run(f"%%docker --engine rig {LABEL} {BASE_IMAGE}\nprint('one-shot')", check=True)
    k.run("x = list(range(1000))", check=True)
    msg = k.send(f"%%docker --engine rig --name dm-rreap-cell-{RUN} --in x {LABEL} {BASE_IMAGE}\n"
                 "import time; print(len(x), flush=True); time.sleep(600)")
    k.collect(msg, timeout=120, until=lambda r: "1000" in r.stdout)
    mine = f"dockmagic.kernel={k.kernel_id}"
    kinds = sorted(rig_exec("docker", "inspect", "-f", '{{index .Config.Labels "dockmagic.kind"}}',
                            c).stdout.decode().strip() for c in rig_containers(mine))
    assert "oneshot" in kinds and "session" in kinds, kinds
    folders = rig_folders(k.kernel_id, session)
    assert sorted(f[:2] for f in folders)[-2:] == ["k-", "s-"], folders  # the cell's, the session's
    assert len(rig_reapers(k.kernel_id)) == 1
    assert not local_containers(mine), "everything ran on the rig"

    k.kill()
    killed = time.monotonic()
    gone = wait_until(lambda: not rig_containers(mine) and not rig_folders(k.kernel_id, session),
                      timeout=60)
    took = time.monotonic() - killed
    assert gone, (f"60 s after SIGKILL, on the rig: containers {rig_containers(mine)}, "
                  f"folders {rig_folders(k.kernel_id, session)}")
    assert wait_until(lambda: not local_folders(k.kernel_id, session), 20), \
        f"the local copies stay: {local_folders(k.kernel_id, session)}"
    assert wait_until(lambda: not rig_reapers(k.kernel_id), 20), "the reaper there never ended"
    print(f"killed kernel: its {len(kinds)} containers and {len(folders)} exchange folders on the "
          f"rig gone {took:.1f} s after SIGKILL")


def local_containers(label: str) -> list:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True).stdout
    return out.split()


def test_a_dropped_ssh_connection_does_not_reap_the_live_kernels_session(kernels):
    from dockmagic.engine.reaper import REMOTE_GRACE_S

    k = kernels()
    session = f"dm-rreap-drop-{RUN}"
    k.run(f"%docker session {session} --rm --engine rig {LABEL} {BASE_IMAGE}", check=True)
    k.run(f"%%docker @{session}\nv = 41", check=True)
    (first,) = rig_reapers(k.kernel_id)
    master = int(k.run("from dockmagic.remote import engines\n"
                       "print(engines.get_engine('rig').link.pid)", check=True).stdout)
    os.kill(master, 9)  # the ControlMaster only: the kernel lives and reconnects
    # The old reaper's channel closed: it waits its grace, finds the new one and hands over.
    assert wait_until(lambda: first not in rig_reapers(k.kernel_id), REMOTE_GRACE_S + 20), \
        "the old reaper on the rig never ended"
    assert len(rig_reapers(k.kernel_id)) == 1, "a new reaper watches the kernel there"
    assert rig_containers(f"dockmagic.kernel={k.kernel_id}"), "the session was reaped"
    assert "42" in k.run(f"%%docker @{session}\nprint(v + 1)", check=True).stdout
    restarts = k.run("from dockmagic.engine import reaping\n"
                     "print([getattr(r, 'restarts', None) for r in reaping.reapers()])",
                     check=True).stdout
    assert "1" in restarts, restarts
    # A clean unload: the session goes (--rm) and the reaper there ends at once, reaping nothing.
    k.run("%unload_ext dockmagic", check=True)
    assert wait_until(lambda: not rig_reapers(k.kernel_id), 10), "the reaper there stays"
    assert not rig_containers(f"dockmagic.kernel={k.kernel_id}")


def test_session_on_the_rig_is_found_by_at_name_after_a_restart(kernels):
    session = f"dm-rreap-keep-{RUN}"
    a = kernels()
    a.run(f"%docker session {session} --engine rig {LABEL} {BASE_IMAGE}", check=True)
    a.run(f"%%docker @{session}\nv = 41", check=True)
    a.close()  # a restart: the session (no --rm) persists on the rig

    b = kernels()
    assert "42" in b.run(f"%%docker @{session}\nprint(v + 1)", check=True).stdout
    b.close()

    # On two engines (the rig added twice): one line naming both, and how to pick.
    c = kernels("rig", "rig2")
    # (IPython shows a UsageError as one line on stderr, without a traceback.)
    res = c.run(f"%%docker @{session}\nprint(v)")
    assert res.stderr.strip() == (
        f"UsageError: session {session} runs on engines rig and rig2; say which: "
        f"`%docker session {session} --engine rig` reattaches to that one"), res
    res = c.run(f"%%docker @nosuch-{RUN}\nprint(1)")
    assert res.stderr.strip() == (
        f"UsageError: no session nosuch-{RUN} on engines local, rig and rig2; start one with "
        f"`%docker session nosuch-{RUN} IMAGE`"), res
    # Picking one reattaches, and @S follows it.
    c.run(f"%docker session {session} --engine rig2", check=True)
    assert "42" in c.run(f"%%docker @{session}\nprint(v + 1)", check=True).stdout


def test_no_python3_there_is_one_line_and_the_cell_still_runs(kernels):
    """The rig has python3; a name it lacks stands in for a host without it (the same check,
    over the same connection)."""
    k = kernels()
    k.run("from dockmagic.remote import hostreaper\nhostreaper.PYTHON = 'python3-not-there'",
          check=True)
    res = k.run(f"%%docker --engine rig {LABEL} {BASE_IMAGE}\nprint('still runs')", check=True)
    assert "still runs" in res.stdout
    said = [ln for ln in res.stderr.splitlines() if "reaper" in ln]
    assert said == [f"dockmagic: engine rig: no python3-not-there on {RIG}, so this "
                    "kernel's reaper cannot run there: if the kernel dies, its containers there "
                    "stay (install python3-not-there there)"], res.stderr
    res = k.run(f"%%docker --engine rig {LABEL} {BASE_IMAGE}\nprint('again')", check=True)
    assert "again" in res.stdout and "reaper" not in res.stderr, "said once"
    assert not rig_reapers(k.kernel_id)


def test_prune_orphans_on_the_rig_keeps_what_a_kernel_of_another_host_claimed_there(kernels):
    """A kernel on another machine reattached to a session on the rig: its claim is in the rig's
    claims folder (its reaper there wrote it), not in this host's. Prune reads both."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{os.uname().nodename}:{gone.pid}:{int(time.time())}"  # a kernel of ours, gone
    cid = rig_exec("docker", "run", "-d", "--init", "-l", "dockmagic.managed=1", "-l",
                   f"dockmagic.kernel={dead}", "-l", "dockmagic.kind=session", "-l",
                   "dockmagic.reap=1", "-l", f"{CASE}=rreap-{RUN}", BASE_IMAGE,
                   "sleep", "300").stdout.decode().strip()
    claims = "/dev/shm/dockmagic-run-0/claims"
    rig_exec("sh", "-c", f"mkdir -p -m 700 {claims} && echo laptop-far:4242:1700000000 "
                         f"> {claims}/{cid}")
    k = kernels()
    show = ("from dockmagic import lifecycle\nfrom dockmagic.remote import engines\n"
            "print([v for e, v in lifecycle.query_owners(engine=engines.get_engine('rig'))\n"
            f"       if e['Id'] == {cid!r}])")
    try:
        assert "['claimed']" in k.run(show, check=True).stdout
        k.run(f"%docker prune -f --orphans --filter label={CASE}=rreap-{RUN} --engine rig",
              check=True)
        assert cid[:12] in " ".join(rig_containers(f"{CASE}=rreap-{RUN}")), "prune took it"
        rig_exec("rm", "-f", f"{claims}/{cid}")  # unclaimed: an orphan of a kernel that is gone
        assert "['orphan']" in k.run(show, check=True).stdout
        k.run(f"%docker prune -f --orphans --filter label={CASE}=rreap-{RUN} --engine rig",
              check=True)
        assert cid[:12] not in " ".join(rig_containers(f"{CASE}=rreap-{RUN}"))
    finally:
        rig_exec("rm", "-f", f"{claims}/{cid}", check=False)
