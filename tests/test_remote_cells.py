"""Cells on a remote engine (the rig: its own sshd and dockerd), through a real IPython shell.

The rig's filesystem is its own: the notebook folder does not exist there, so a cell that reads
data/in.txt there proves the folder travelled (rsync over the engine's SSH connection)."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from dockmagic import errors
from dockmagic.kernel import kernel_id

from remote_rig import rig_containers, rig_exec

pytestmark = pytest.mark.engine
IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
MINE = f"dockmagic.kernel={kernel_id()}"


def local_containers(label=MINE):
    import subprocess
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True).stdout
    return out.split()


@pytest.fixture(scope="module")
def rshell(rig, tmp_path_factory):
    from IPython.core.interactiveshell import InteractiveShell

    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    ip.run_line_magic("docker", f"engines add rig ssh://{rig}")
    yield ip
    ip.run_line_magic("unload_ext", "dockmagic")
    from dockmagic.remote import engines
    engines.close_all()
    mp.undo()
    # Cleanup: nothing this kernel made is left, on the rig or here.
    deadline = time.monotonic() + 20
    while (rig_containers(MINE) or local_containers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    left_rig, left_here = rig_containers(MINE), local_containers()
    kinds = [rig_exec("docker", "inspect", "-f", '{{index .Config.Labels "dockmagic.kind"}} '
                      "{{.State.Status}}", c, check=False).stdout.decode().strip()
             for c in left_rig]
    if left_rig:
        rig_exec("docker", "rm", "-f", *left_rig, check=False)
    assert not left_rig and not left_here, (left_rig, kinds, left_here)


@pytest.fixture
def nb(tmp_path, monkeypatch):
    folder = tmp_path / "notebook"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "in.txt").write_text("hello from here\n")
    monkeypatch.chdir(folder)
    return folder


def test_engines_add_puts_the_rig_in_the_table_as_reachable(rshell, rig):
    table = rshell.run_line_magic("docker", "engines")
    rows = {r.name.rstrip(" *"): r for r in table.rows}
    assert rows["rig"].reachable and rows["rig"].endpoint == f"ssh://{rig}"
    assert rows["rig"].version and rows["rig"].rtt_ms > 0 and rows["rig"].running is not None
    assert "rig" in repr(table) and "<table" in table._repr_html_()


def test_one_shot_cell_reads_and_writes_the_notebook_folder(rshell, nb, capfd):
    rshell.run_cell_magic("docker", f"--engine rig {IMAGE}", (
        "import os, pathlib, socket\n"
        "print('cwd', os.getcwd())\n"
        "pathlib.Path('results').mkdir(exist_ok=True)\n"
        "pathlib.Path('results/out.txt').write_text(open('data/in.txt').read().upper())\n"))
    out = capfd.readouterr().out
    assert f"cwd {nb}" in out.splitlines()
    result = nb / "results" / "out.txt"
    assert result.read_text() == "HELLO FROM HERE\n"
    st = result.stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    # the folder is not on the rig: the cell's files travelled there by sync
    assert rig_exec("test", "-e", str(nb), check=False).returncode != 0


def test_sync_none_leaves_the_folder_alone(rshell, nb):
    rshell.run_cell_magic("docker", f"--engine rig --sync none --no-raise-error {IMAGE}",
                          "import os; open('made.txt', 'w').write('x')")
    assert not (nb / "made.txt").exists()


def test_session_keeps_state_and_runs_on_the_rig_only(rshell, nb, capfd):
    rshell.run_line_magic("docker", f"session rsess --engine rig --rm {IMAGE}")
    try:
        rshell.run_cell_magic("docker", "@rsess", "x = 41\nopen('from_session.txt', 'w')"
                                                  ".write(open('data/in.txt').read())")
        capfd.readouterr()
        rshell.run_cell_magic("docker", "@rsess", "print(x + 1)")
        assert capfd.readouterr().out.strip().splitlines()[-1] == "42"
        assert (nb / "from_session.txt").read_text() == "hello from here\n"
        on_rig = rig_exec("docker", "ps", "-q", "--filter", "name=^rsess$").stdout.split()
        assert len(on_rig) == 1
        assert local_containers("dockmagic.kind=session") == [] or not any(
            c for c in local_containers(MINE))
        import subprocess
        here = subprocess.run(["docker", "ps", "-aq", "--filter", "name=^rsess$"],
                              capture_output=True, text=True).stdout.split()
        assert here == []
        # --in/--out in the session, through the synced folder
        rshell.user_ns["v"] = np.arange(5.0)
        rshell.run_cell_magic("docker", "@rsess --in v --out w", "w = v * x")
        assert rshell.user_ns["w"].tolist() == [0.0, 41.0, 82.0, 123.0, 164.0]
    finally:
        rshell.run_line_magic("docker", "session --stop rsess")
    assert rig_exec("docker", "ps", "-aq", "--filter", "name=^rsess$").stdout.split() == []


def test_in_out_of_a_numpy_array_in_a_one_shot_cell(rshell, nb):
    rshell.user_ns["a"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    rshell.run_cell_magic("docker", f"--engine rig --in a --out b {IMAGE}", "b = a.T * 2")
    b = rshell.user_ns["b"]
    assert b.shape == (4, 3) and b.dtype == np.float32 and b[3, 2] == 22.0
    assert not list(nb.glob(".dockmagic-xfer-*"))


def test_exit_status_3_fails_the_cell(rshell, nb):
    with pytest.raises(errors.CellFailed) as info:
        rshell.run_cell_magic("docker", f"--engine rig {IMAGE}", "import sys; sys.exit(3)")
    assert info.value.exit_code == 3


def _after(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()
    return t


def test_interrupt_stops_the_remote_container(rshell, nb, capfd):
    main = threading.main_thread().ident
    _after(4.0, lambda: signal.pthread_kill(main, signal.SIGINT))
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rshell.run_cell_magic("docker", f"--engine rig {IMAGE}",
                              "import time\nprint('started', flush=True)\ntime.sleep(60)")
    assert time.monotonic() - t0 < 30
    err = capfd.readouterr().err
    assert "KeyboardInterrupt" in err or "interrupted" in err
    assert rig_containers("dockmagic.kind=oneshot") == []


def test_killed_ssh_connection_mid_cell_reconnects_or_fails_in_one_line(rshell, nb, capfd):
    from dockmagic.remote import engines
    link = engines.get_engine("rig").link
    link.ensure()
    pid = link.pid
    _after(3.0, lambda: os.kill(pid, signal.SIGKILL))
    outcome = None
    try:
        rshell.run_cell_magic("docker", f"--engine rig {IMAGE}",
                              "import time\nprint('a', flush=True)\ntime.sleep(6)\nprint('b')")
        outcome = "completed"
    except errors.DockmagicError as exc:
        outcome = str(exc)
        assert "\n" not in outcome and "rig" in outcome
    err = capfd.readouterr().err
    assert outcome == "completed" and "dropped" in err or outcome != "completed"
    assert link.pid != pid  # a new connection
    deadline = time.monotonic() + 15
    while rig_containers("dockmagic.kind=oneshot") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rig_containers("dockmagic.kind=oneshot") == []
    # and the engine works again
    rshell.run_cell_magic("docker", f"--engine rig {IMAGE}", "print('again')")
    assert "again" in capfd.readouterr().out


def test_default_engine_from_config_and_dry_run_names_it(rshell, nb, capfd):
    rshell.run_line_magic("docker", "config --engine rig")
    try:
        rshell.run_cell_magic("docker", f"--dry-run {IMAGE}", "print(1)")
        out = capfd.readouterr().out
        assert "on engine rig" in out and "-u 0:0" in out  # the SSH user there (root on the rig)
    finally:
        rshell.run_line_magic("docker", "config --engine local")


def test_unknown_engine_is_a_usage_error(rshell, nb):
    from IPython.core.error import UsageError
    with pytest.raises(UsageError, match="no engine named 'nope'"):
        rshell.run_cell_magic("docker", f"--engine nope {IMAGE}", "print(1)")


def test_gpus_on_the_rig_say_there_is_no_driver(rshell):
    shown = rshell.run_line_magic("gpus", "--engine rig")
    text = repr(shown)
    assert "engine rig" in text and "nvidia-smi not found" in text


def test_engine_auto_without_gpus_anywhere_says_why(rshell, nb):
    from IPython.core.error import UsageError
    with pytest.raises(UsageError, match="no engine has 1 GPU"):
        rshell.run_cell_magic("docker", f"--engine auto --gpus auto:1 {IMAGE}", "print(1)")


def test_gpus_on_an_engine_without_the_nvidia_runtime_name_the_engine(rshell, nb):
    with pytest.raises(errors.EngineError) as info:
        rshell.run_cell_magic("docker", f"--engine rig --gpus all {IMAGE}", "print(1)")
    msg = str(info.value)
    assert msg.startswith("engine rig: no NVIDIA runtime") and "nvidia-ctk" in msg
    assert rig_containers("dockmagic.kind=oneshot") == []


def test_image_missing_there_says_push_pull_or_build_it_there(rshell, nb):
    with pytest.raises(errors.ImageUnavailable) as info:
        rshell.run_cell_magic("docker", "--engine rig dockmagic-test:not-on-the-rig", "print(1)")
    msg = str(info.value)
    assert msg.startswith("engine rig: image 'dockmagic-test:not-on-the-rig' is not on that "
                          "engine") and "push it" in msg and "build it there" in msg


def test_lifecycle_and_dockerfile_cells_take_the_engine(rshell, nb, capfd):
    tag = f"dockmagic-remote-test:{os.getpid()}"
    rshell.run_cell_magic("dockerfile", f"--engine rig -t {tag}",
                          f"FROM {IMAGE}\nRUN echo built-on-the-rig > /built.txt\n")
    try:
        assert rig_exec("docker", "image", "inspect", tag, check=False).returncode == 0
        import subprocess
        assert subprocess.run(["docker", "image", "inspect", tag],
                              capture_output=True).returncode != 0  # not here
        rshell.run_cell_magic("docker", f"--engine rig {tag}", "print(open('/built.txt').read())")
        assert "built-on-the-rig" in capfd.readouterr().out
        shown = rshell.run_line_magic("docker", f"images --engine rig {tag.split(':')[0]}")
        text = capfd.readouterr().out + repr(shown) + getattr(shown, "_repr_html_", str)()
        assert tag.split(":")[1] in text
    finally:
        rig_exec("docker", "rmi", "-f", tag, check=False)


def test_engines_add_from_a_docker_cli_context_and_rm(rshell, rig, tmp_path, monkeypatch, capfd):
    import subprocess
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    subprocess.run(["docker", "context", "create", "dm-rig-ctx", "--docker",
                    f"host=ssh://{rig}"], check=True, capture_output=True)
    shown = rshell.run_line_magic("docker", "engines add viactx --context dm-rig-ctx")
    (row,) = shown.rows
    assert row.reachable and row.endpoint == f"ssh://{rig}"
    assert "engine viactx added" in capfd.readouterr().out
    rshell.run_line_magic("docker", "engines rm viactx")
    names = [r.name.rstrip(" *") for r in rshell.run_line_magic("docker", "engines").rows]
    assert "viactx" not in names and "rig" in names


def test_an_unreachable_engine_is_saved_and_reported_in_one_line(rshell, capfd):
    t0 = time.monotonic()
    shown = rshell.run_line_magic("docker", "engines add nowhere ssh://root@127.0.0.1:1")
    assert time.monotonic() - t0 < 10
    (row,) = shown.rows
    assert not row.reachable and "\n" not in row.error
    assert row.error.startswith("engine nowhere:") and "unreachable" in row.error
    from IPython.core.error import UsageError
    with pytest.raises(errors.DockmagicError) as info:
        rshell.run_cell_magic("docker", f"--engine nowhere {IMAGE}", "print(1)")
    assert "\n" not in str(info.value) and "engine nowhere" in str(info.value)
    rshell.run_line_magic("docker", "engines rm nowhere")
    with pytest.raises(UsageError, match="no engine named 'nowhere'"):
        rshell.run_line_magic("docker", "engines rm nowhere")


def test_adding_an_engine_again_reconnects_it(rshell, rig, nb, capfd):
    """Regression: re-adding closed the engine's link, and the closed link was handed out."""
    (row,) = rshell.run_line_magic("docker", f"engines add rig ssh://{rig}").rows
    assert row.reachable, row.error
    rshell.run_cell_magic("docker", f"--engine rig {IMAGE}", "print('still here')")
    assert "still here" in capfd.readouterr().out


def test_session_sync_modes(rshell, nb):
    from IPython.core.error import UsageError
    rshell.run_line_magic("docker", f"session rnosync --engine rig --sync none --rm {IMAGE}")
    try:
        rshell.run_cell_magic("docker", "@rnosync", "import os\nprint(os.path.exists('data'))\n"
                                                    "open('made-there.txt', 'w').write('x')")
        assert not (nb / "made-there.txt").exists()
        # --in/--out travel in their own private folder, whatever --sync says
        rshell.user_ns["q"] = 20
        rshell.run_cell_magic("docker", "@rnosync --in q --out r", "r = q + 1")
        assert rshell.user_ns["r"] == 21
    finally:
        rshell.run_line_magic("docker", "session --stop rnosync")
    rshell.run_cell_magic("docker", f"--engine rig --sync none --in q --out z {IMAGE}",
                          "z = q * 2")
    assert rshell.user_ns["z"] == 40
    with pytest.raises(UsageError, match="--sync"):
        rshell.run_cell_magic("docker", f"--engine rig --sync sideways {IMAGE}", "z = 1")


def test_killed_ssh_connection_mid_session_cell_reattaches(rshell, nb, capfd):
    from dockmagic.remote import engines
    rshell.run_line_magic("docker", f"session rdrop --engine rig --rm {IMAGE}")
    try:
        rshell.run_cell_magic("docker", "@rdrop", "x = 7")
        link = engines.get_engine("rig").link
        pid = link.pid
        _after(2.0, lambda: os.kill(pid, signal.SIGKILL))
        capfd.readouterr()
        rshell.run_cell_magic("docker", "@rdrop", "import time\ntime.sleep(5)\nprint('after', x)")
        out, err = capfd.readouterr()
        assert link.pid != pid and "reattached to session rdrop" in err
        assert "after 7" in out
        rshell.run_cell_magic("docker", "@rdrop", "print('next', x * 2)")
        assert "next 14" in capfd.readouterr().out
    finally:
        rshell.run_line_magic("docker", "session --stop rdrop")
    assert rig_exec("docker", "ps", "-aq", "--filter", "name=^rdrop$").stdout.split() == []


def test_a_warm_session_cell_that_changed_nothing_runs_no_rsync(rshell, nb, monkeypatch):
    """Regression: the agent's report of what changed was dropped from the reply, so every
    warm cell listed the whole workspace over SSH."""
    from dockmagic.remote import workspace
    calls = []
    real_run, real_list = workspace.run_rsync, workspace.Workspace.list_remote
    monkeypatch.setattr(workspace, "run_rsync", lambda *a, **k: calls.append("rsync")
                        or real_run(*a, **k))
    monkeypatch.setattr(workspace.Workspace, "list_remote", lambda self: calls.append("list")
                        or real_list(self))
    rshell.run_line_magic("docker", f"session rwarm --engine rig --rm {IMAGE}")
    try:
        rshell.run_cell_magic("docker", "@rwarm", "x = 1")
        rshell.run_cell_magic("docker", "@rwarm", "x += 1")  # the agent has its baseline
        calls.clear()
        rshell.run_cell_magic("docker", "@rwarm", "x += 1")
        assert calls == []
        rshell.run_cell_magic("docker", "@rwarm", "open('w.txt', 'w').write(str(x))")
        assert calls == ["rsync"] and (nb / "w.txt").read_text() == "3"
    finally:
        rshell.run_line_magic("docker", "session --stop rwarm")


def test_remote_cells_record_what_ran_on_the_rig(rshell, nb, capfd):
    """A one-shot and a session cell on the rig carry records naming the rig's engine and the
    container there (#12): the session's record follows the session to its engine."""
    from dockmagic import recording
    before = len(recording.HISTORY)
    rshell.run_cell_magic("docker", f"--engine rig {IMAGE}", "print('one-shot')")
    rshell.run_line_magic("docker", f"session rrec --engine rig --rm {IMAGE}")
    try:
        rshell.run_cell_magic("docker", "@rrec", "print('session')")
        sid = rig_exec("docker", "inspect", "-f", "{{.Id}}", "rrec").stdout.decode().strip()
    finally:
        rshell.run_line_magic("docker", "session --stop rrec")
    assert "could not record" not in capfd.readouterr().err
    records = [h["record"] for h in recording.HISTORY[before:]]
    kinds = [r["kind"] for r in records]
    assert kinds == ["oneshot", "session"], kinds
    for r in records:
        assert r["engine"]["name"] == "rig" and r["engine"]["endpoint"].startswith("ssh://")
        assert r["image"]["id"].startswith("sha256:"), r["image"]
    assert records[1]["container"]["id"] == sid
    assert records[1]["status"] == "ok"
