"""The reaper (dockmagic/engine/reaper.py) and claims (dockmagic/claims.py): the folder removal's
safety on a real filesystem, the claim rule, and the reaper process against the real engine."""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from dockmagic import claims
from dockmagic.engine import reaper, reaping
from conftest import BASE_IMAGE

RUN = uuid.uuid4().hex[:8]
CASE = "dockmagic.test"
ENDPOINT = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


# -- folders ------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    return r, outside


def test_globs_remove_matching_folders_and_nothing_through_links(root):
    r, outside = root
    for name in (".dmx-K1-a", ".dmx-K1-b", ".dmx-K2-a", "dmx-K1-visible"):
        (r / name).mkdir()
        (r / name / "data.npy").write_bytes(b"x" * 100)
    (r / ".dmx-K1-a" / "sub").mkdir()
    (r / ".dmx-K1-a" / "sub" / "link").symlink_to(outside)       # a link inside: unlinked only
    (r / ".dmx-K1-link").symlink_to(outside)                      # a matching link: unlinked only
    (r / ".dmx-K1-b" / "up").symlink_to(outside / "precious")

    removed = reaper.remove_globs(str(r), [f"{r}/.dmx-K1-*", "../outside", f"{outside}/*"])

    assert sorted(removed) == [".dmx-K1-a", ".dmx-K1-b", ".dmx-K1-link"]
    assert sorted(os.listdir(r)) == [".dmx-K2-a", "dmx-K1-visible"]
    assert (outside / "precious").read_text() == "keep me"


def test_globs_remove_a_folder_a_cell_made_read_only(tmp_path):
    """As a kernel user that is not root (root would not notice the read-only folder)."""
    from conftest import as_kernel_user

    code = (
        "import os, tempfile; from dockmagic.engine import reaper\n"
        "r = tempfile.mkdtemp(dir='/tmp')\n"
        "os.makedirs(r + '/k1/ro'); open(r + '/k1/ro/f', 'w').close()\n"
        "os.chmod(r + '/k1/ro', 0o500)\n"
        "print(reaper.remove_globs(r, ['k1']), os.listdir(r)); os.rmdir(r)\n")
    argv = [sys.executable, "-c", code] if os.getuid() else as_kernel_user(
        1000, [sys.executable, "-c", code])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['k1'] []"


def test_globs_nested_and_hidden_names_need_a_dot_pattern(root):
    r, _ = root
    (r / "k1").mkdir()
    (r / "k1" / "cell-1").mkdir()
    (r / "k1" / ".hidden").mkdir()
    assert reaper.remove_globs(str(r), ["k1/*"]) == ["k1/cell-1"]
    assert os.listdir(r / "k1") == [".hidden"]


def test_globs_refuse_a_root_others_may_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (shared / "x").mkdir()
    with pytest.raises(OSError, match="not ours alone"):
        reaper.remove_globs(str(shared), ["x"])
    assert (shared / "x").exists()


def test_globs_refuse_a_root_reached_through_a_link(root, tmp_path):
    r, _ = root
    (r / "x").mkdir()
    link = tmp_path / "link"
    link.symlink_to(r)
    with pytest.raises(OSError):
        reaper.remove_globs(str(link), ["x"])
    assert (r / "x").exists()


def test_tracked_path_is_removed_but_not_through_a_linked_parent(root, tmp_path):
    r, outside = root
    (r / "xfer").mkdir()
    (r / "xfer" / "a").write_text("1")
    (outside / "xfer").mkdir()
    link = tmp_path / "via"
    link.symlink_to(outside)
    assert reaper.remove_path(str(link / "xfer")) is False
    assert (outside / "xfer").exists()
    assert reaper.remove_path(str(r / "xfer")) is True
    assert not (r / "xfer").exists()
    assert reaper.remove_path("relative/path") is False


def test_root_of_a_pattern():
    assert reaper._root_of("/dev/shm/dockmagic-0/.dmx-K-*") == "/dev/shm/dockmagic-0"
    assert reaper._root_of("/dev/shm/d-*/x") == "/dev/shm"


# -- claims --------------------------------------------------------------------------------------
def test_claim_files_round_trip_and_refuse_odd_ids(tmp_path):
    d = str(tmp_path)
    cid = "ab" * 32
    reaper.write_claim(d, cid, "h:1:2")
    assert reaper.read_claim(d, cid) == "h:1:2"
    assert reaper.claims_of(d, "h:1:2") == {cid}
    reaper.drop_claim(d, cid, kernel="h:9:9")  # someone else's drop: no effect
    assert reaper.read_claim(d, cid) == "h:1:2"
    reaper.drop_claim(d, cid, kernel="h:1:2")
    assert reaper.read_claim(d, cid) is None
    with pytest.raises(ValueError):
        reaper.write_claim(d, "../../etc/passwd", "h:1:2")
    assert reaper.read_claim(d, "../x") is None
    os.symlink("/etc/hostname", os.path.join(d, "cd" * 32))
    assert reaper.read_claim(d, "cd" * 32) is None  # a planted link is no claim

    from dockmagic.kernel import kernel_id
    gone = subprocess.Popen(["true"])
    gone.wait()
    reaper.write_claim(d, "ef" * 32, f"{socket.gethostname()}:{gone.pid}:{int(time.time())}")
    reaper.write_claim(d, "ab" * 32, kernel_id())
    reaper.prune_claims(d)  # a dead claimer's file goes, a live one's stays
    assert reaper.read_claim(d, "ef" * 32) is None
    assert reaper.read_claim(d, "ab" * 32) == kernel_id()


def test_classify_table():
    live, dead, far = "live", "dead", "far"
    alive = {live: True, dead: False, far: None}.get

    def c(kind=None, kernel=dead, claimer=None, reap=False):
        labels = {"dockmagic.managed": "1", "dockmagic.kernel": kernel}
        if kind:
            labels["dockmagic.kind"] = kind
        if reap:
            labels["dockmagic.reap"] = "1"
        return claims.classify(labels, claimer, alive)

    assert c("oneshot", kernel=live, reap=True) == "held"
    assert c("oneshot", kernel=far, reap=True) == "held"      # another host: cannot tell
    assert c("oneshot", reap=True) == "orphan"
    assert c("spare", reap=True) == "orphan"
    assert c("session", reap=True) == "orphan"                 # a --rm session nobody holds
    assert c("session", reap=True, claimer=live) == "claimed"
    assert c("session", reap=True, claimer=far) == "claimed"
    assert c("session", reap=True, claimer=dead) == "orphan"   # a stale claim holds nothing
    assert c("session") == "session"                           # without --rm: kept by design
    assert c("detached") == "job"
    assert c("oneshot", kernel=live, claimer=live) == "claimed"
    assert c(None) == "orphan"                                 # unlabelled kind, kernel gone


# -- the reaper process against the real engine ---------------------------------------------------
def fake_kernel() -> str:
    return f"{socket.gethostname()}-reaper-test:{RUN}:{int(time.time())}"


@pytest.fixture
def made(docker_client):
    """Containers made by a test, removed afterwards whatever happens."""
    made = []

    def make(kernel, reap=True, kind="oneshot", **labels):
        all_labels = {"dockmagic.managed": "1", "dockmagic.kernel": kernel,
                      "dockmagic.kind": kind, CASE: f"reaper-{RUN}", **labels}
        if reap:
            all_labels["dockmagic.reap"] = "1"
        c = docker_client.containers.create(BASE_IMAGE, ["sleep", "300"], labels=all_labels,
                                            init=True)
        c.start()
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.remove(force=True)
        except Exception:
            pass


def exists(client, c) -> bool:
    return bool(client.containers.list(all=True, filters={"id": c.id}))


def wait_exit(r: reaping.Reaper, timeout=60.0):
    r.proc.wait(timeout)


def test_eof_reaps_the_kernels_reapable_containers_and_folders(docker_client, made, tmp_path):
    kernel = fake_kernel()
    other = fake_kernel() + "0"
    target = made(kernel)
    job = made(kernel, reap=False, kind="detached")
    someone_elses = made(other)
    held = made(kernel, kind="session")       # claimed by a live kernel (this process)
    inherited = made(other, kind="session")   # claimed by the dying kernel: it goes with it
    cdir = reaper.claims_dir()
    from dockmagic.kernel import kernel_id
    reaper.write_claim(cdir, held.id, kernel_id())
    reaper.write_claim(cdir, inherited.id, kernel)

    xroot = tmp_path / "x"
    xroot.mkdir(mode=0o700)
    (xroot / f"k-{RUN}-1").mkdir()
    (xroot / "unrelated").mkdir()
    tracked = tmp_path / "nb" / ".dockmagic-xfer-abc"
    tracked.mkdir(parents=True)
    (tracked / "in.pkl").write_bytes(b"data")

    with_target, with_held = tmp_path / "s-target", tmp_path / "s-held"
    with_target.mkdir()
    with_held.mkdir()

    r = reaping.start_reaper(ENDPOINT, kernel, [f"{xroot}/k-{RUN}-*"], grace_s=0.5)
    try:
        r.track(str(tracked))
        r.remove_with(target.id, str(with_target))  # a folder that goes with its container
        r.remove_with(held.id, str(with_held))      # ... and stays while that one stays
        started = time.monotonic()
        r.proc.stdin.close()  # the kernel's end of the pipe is gone, as when it is killed
        wait_exit(r)
        took = time.monotonic() - started
        assert not exists(docker_client, target)
        assert not exists(docker_client, inherited)
        assert exists(docker_client, job) and exists(docker_client, someone_elses)
        assert exists(docker_client, held)
        assert not (xroot / f"k-{RUN}-1").exists() and (xroot / "unrelated").exists()
        assert not tracked.exists() and tracked.parent.exists()
        assert not with_target.exists() and with_held.exists()
        assert reaper.read_claim(cdir, inherited.id) is None, "its own claims go with it"
        assert reaper.read_claim(cdir, held.id) == kernel_id()
        print(f"reaped in {took:.1f} s (grace 0.5 s, two clean passes {reaper.RETRY_S:g} s apart)")
    finally:
        reaper.drop_claim(cdir, held.id)
        r.proc.kill()
        r.proc.wait()


def test_close_keep_exits_without_reaping_and_close_reap_reaps_at_once(docker_client, made):
    kernel = fake_kernel()
    keep = made(kernel)
    r = reaping.start_reaper(ENDPOINT, kernel, grace_s=30)
    r.close(reap=False, wait=30)
    assert r.proc.returncode == 0 and exists(docker_client, keep)

    r = reaping.start_reaper(ENDPOINT, kernel, grace_s=30)  # a grace it must not wait out
    started = time.monotonic()
    r.close(reap=True, wait=30)
    assert r.proc.returncode == 0 and time.monotonic() - started < 25
    assert not exists(docker_client, keep)


def test_an_engine_whose_socket_folder_is_gone_is_given_up_at_once(tmp_path):
    """A private engine purged with its folder will not come back: no hour of retries."""
    r = reaping.start_reaper(f"unix://{tmp_path}/gone/docker.sock", fake_kernel(), grace_s=0.1)
    started = time.monotonic()
    r.proc.stdin.close()
    assert r.proc.wait(30) == 0
    assert time.monotonic() - started < 10  # the grace and one pass, not GIVE_UP_S of retries


def test_remove_later_removes_while_the_kernel_lives(docker_client, made):
    kernel = fake_kernel()
    c = made(fake_kernel() + "1", reap=False, kind="detached")
    r = reaping.start_reaper(ENDPOINT, kernel)
    try:
        r.remove_later(c.id)
        deadline = time.monotonic() + 30
        while exists(docker_client, c) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not exists(docker_client, c)
        assert r.alive(), "it stays for the kernel's death"
    finally:
        r.close(reap=False, wait=30)


def test_remove_labelled_takes_containers_that_appear_after_the_request(docker_client, made):
    """A create interrupted in flight may finish on the engine after the kernel looked for it:
    the reaper watches the create's token label for a while and removes what shows up."""
    token = f"dockmagic.token=reaper-test-{RUN}"
    r = reaping.start_reaper(ENDPOINT, fake_kernel())
    try:
        r.remove_labelled(token)
        time.sleep(1.5)  # the container comes later than the request
        # Created, never started: what a create interrupted in flight leaves.
        c = docker_client.containers.create(BASE_IMAGE, ["true"], labels={
            "dockmagic.managed": "1", "dockmagic.kernel": fake_kernel() + "2",
            "dockmagic.token": f"reaper-test-{RUN}", CASE: f"reaper-{RUN}"})
        deadline = time.monotonic() + 20
        while exists(docker_client, c) and time.monotonic() < deadline:
            time.sleep(0.2)
        if exists(docker_client, c):
            c.remove(force=True)
            pytest.fail("the reaper did not remove the container its token label named")
    finally:
        r.close(reap=False, wait=30)


def test_ensure_reaper_is_one_per_endpoint_and_restarts_a_dead_one(monkeypatch):
    monkeypatch.setattr(reaping, "_REAPERS", {})
    kernel = fake_kernel()
    a = reaping.ensure_reaper(ENDPOINT, kernel)
    try:
        assert reaping.ensure_reaper(ENDPOINT, kernel) is a
        b = reaping.ensure_reaper("tcp://127.0.0.1:1", kernel)
        assert b is not a and b.pid != a.pid
        b.close(reap=False, wait=30)
        a.proc.kill()
        a.proc.wait()
        c = reaping.ensure_reaper(ENDPOINT, kernel)
        assert c is not a and c.alive()
        c.close(reap=False, wait=30)
        assert reaping.ensure_reaper("ssh://user@host", kernel) is None  # its host's business
    finally:
        for r in list(reaping._REAPERS.values()):
            r.close(reap=False, wait=30)
        if a.proc.poll() is None:
            a.proc.kill()


def test_sigkill_of_the_kernels_process_group_does_not_reach_the_reaper(docker_client, made):
    """A kernel process (plain Python here; real kernels in test_kernel_cleanup.py) starts its
    reaper and is killed with its whole process group: the reaper survives and reaps."""
    kernel = fake_kernel()
    c = made(kernel)
    code = ("import sys, time; from dockmagic.engine import reaping; "
            f"r = reaping.ensure_reaper({ENDPOINT!r}, {kernel!r}); "
            "print(r.pid, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    try:
        reaper_pid = int(proc.stdout.readline())
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while exists(docker_client, c) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not exists(docker_client, c)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(reaper_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"reaper {reaper_pid} did not exit after reaping")


def test_the_reaper_runs_from_its_source_alone_as_on_another_host(docker_client, made):
    """How it runs on another host (`remote_argv`, over ssh): the source passed with -c, stdlib
    only, no dockmagic installed, the pipe on stdin; EOF there reaps."""
    kernel = fake_kernel()
    c = made(kernel)
    argv = reaping.remote_argv(ENDPOINT, kernel, python=sys.executable, grace_s=0.2)
    assert argv[:4] == [sys.executable, "-I", "-S", "-c"] and "import dockmagic" not in argv[4]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd="/", env={"PATH": "/usr/bin:/bin"})
    r = reaping.Reaper(ENDPOINT, kernel, proc)
    assert r.alive()
    r.proc.stdin.close()
    out = proc.stdout.read().decode()  # to EOF: the reaper has exited
    assert proc.wait(60) == 0, out
    assert not exists(docker_client, c), out
    assert f"removed {c.id[:12]}" in out


# -- --remote: a reaper on an engine's host (started over SSH by remote/hostreaper.py) ----------
def start_remote_mode(kernel: str, grace_s: float, *extra) -> subprocess.Popen:
    """A reaper in its --remote mode, here (its host's runtime folder, a log file there, the
    watch file): as `HostReaper` runs it over ssh, the pipe on stdin."""
    argv = reaping.remote_argv(ENDPOINT, kernel, python=sys.executable, grace_s=grace_s,
                               remote=True) + list(extra)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd="/", env={"PATH": "/usr/bin:/bin"})
    first = proc.stdout.readline().decode()  # then its output goes to its log there
    assert f"reaper {proc.pid} on {socket.gethostname()}: log " in first, first
    return proc


def test_a_remote_reaper_hands_over_to_a_newer_one_of_the_same_kernel(docker_client, made):
    """The kernel's SSH connection dropped and came back: the old reaper's channel closed, the
    kernel started a new one; the old one, in its grace, exits without reaping."""
    kernel = fake_kernel()
    c = made(kernel)
    old = start_remote_mode(kernel, 30)
    try:
        old.stdin.close()  # the channel closed
        time.sleep(1.0)
        assert old.poll() is None, "it waits its grace"
        new = start_remote_mode(kernel, 0.5)
        started = time.monotonic()
        assert old.wait(15) == 0
        handed = time.monotonic() - started
        assert exists(docker_client, c), "handed over: the kernel's container stays"
        new.stdin.close()  # now the kernel is gone for good
        assert new.wait(60) == 0
        assert not exists(docker_client, c)
        print(f"handed over {handed:.1f} s after the new reaper started")
    finally:
        for p in (old, locals().get("new")):
            if p is not None and p.poll() is None:
                p.kill()


def test_a_remote_reaper_whose_channel_closed_as_it_started_still_reaps(docker_client, made):
    """The kernel died while its reaper was starting there: the channel is gone before the
    reaper says where its log is. Writing there must not end it before it reaps."""
    kernel = fake_kernel()
    c = made(kernel)
    argv = reaping.remote_argv(ENDPOINT, kernel, python=sys.executable, grace_s=0.2,
                               remote=True)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd="/", env={"PATH": "/usr/bin:/bin"})
    proc.stdout.close()
    proc.stdin.close()
    try:
        assert proc.wait(60) == 0
        assert not exists(docker_client, c)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_remote_reaper_takes_silence_for_a_dead_kernel(docker_client, made):
    """A laptop asleep never closes its TCP connection: no ping for --silence seconds counts."""
    kernel = fake_kernel()
    c = made(kernel)
    proc = start_remote_mode(kernel, 0.5, "--silence", "2")
    try:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0, "the pipe is still open: silence alone ended it"
        assert not exists(docker_client, c)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()


def test_a_claim_sent_to_a_remote_reaper_is_written_on_its_host(docker_client, made):
    """`claim ID` over the pipe: the claims folder of the reaper's host holds it, so the reaper of
    the kernel that made the container keeps it; the claimer's own reaper takes it later."""
    maker, claimer = fake_kernel() + "m", fake_kernel() + "c"
    c = made(maker, kind="session")
    held = start_remote_mode(claimer, 0.5)
    try:
        held.stdin.write(f"claim {c.id}\n".encode())
        held.stdin.flush()
        cdir = reaper.claims_dir()
        deadline = time.monotonic() + 10
        while reaper.read_claim(cdir, c.id) != claimer and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reaper.read_claim(cdir, c.id) == claimer
        r = reaping.start_reaper(ENDPOINT, maker, grace_s=0.2)
        r.proc.stdin.close()
        wait_exit(r)
        assert exists(docker_client, c), "claimed by a kernel this host cannot judge: kept"
        held.stdin.close()
        assert held.wait(60) == 0
        assert not exists(docker_client, c)
        assert reaper.read_claim(cdir, c.id) is None
    finally:
        if held.poll() is None:
            held.kill()


def test_a_namesake_host_judges_no_kernel_by_pid(monkeypatch):
    """A remote reaper on a host named like the kernel's: a pid there says nothing."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    label = f"{socket.gethostname()}:{gone.pid}:{int(time.time())}"
    assert reaper.kernel_alive(label) is False
    monkeypatch.setattr(reaper, "UNJUDGED_HOSTS", {socket.gethostname()})
    assert reaper.kernel_alive(label) is None


# -- orphans: what `prune --orphans` takes, and what the report says -------------------------
def test_orphans_exclude_sessions_jobs_and_claimed_containers(shell, docker_client, made):
    from dockmagic import lifecycle
    from dockmagic.kernel import kernel_id

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:{int(time.time())}"
    orphan = made(dead)                                   # a one-shot cell's, kernel gone
    sess = made(dead, reap=False, kind="session")         # a session without --rm
    job = made(dead, reap=False, kind="detached")         # a -d job
    claimed = made(dead, kind="session")                  # a --rm session this kernel claimed
    claimed.stop(timeout=0)                               # stopped: plain prune's kind of target
    cdir = reaper.claims_dir()
    reaper.write_claim(cdir, claimed.id, kernel_id())
    try:
        scope = f"{CASE}=reaper-{RUN}"
        verdicts = {e["Id"]: v for e, v in lifecycle.query_owners(labels=[scope])}
        assert verdicts == {orphan.id: "orphan", sess.id: "session", job.id: "job",
                            claimed.id: "claimed"}
        report = lifecycle.report_orphans()
        assert "\n" not in report
        for words in ("left by kernels that are gone", "prune --orphans",
                      "kept from earlier kernels", "`%docker session NAME` reattaches",
                      "detached job"):
            assert words in report, report
        shell.run_line_magic("docker", f"prune -f --orphans --filter label={scope}")
        assert not exists(docker_client, orphan)
        assert all(exists(docker_client, c) for c in (sess, job, claimed))
    finally:
        reaper.drop_claim(cdir, claimed.id)
