"""Sessions (`%docker session`, `%%docker @NAME`) and spares, through a real IPython shell against
the real engine; everything made here carries `dockmagic.test=session-RUN` and is removed by label."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import dockmagic.engine as engines
from dockmagic import kernel
from IPython.core.error import UsageError

from conftest import BASE_IMAGE, ENV_IMAGE, remove_labelled
from dockmagic import agent, errors, lifecycle, runner, session, spare

pytestmark = pytest.mark.engine
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Per run: concurrent runs on one engine must not remove each other's containers by label.
LABEL = f"dockmagic.test=session-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shell(shell, docker_client):
    """conftest's shell, plus this module's containers removed by label afterwards."""
    yield shell
    kernel.shutdown()
    remove_labelled(docker_client, LABEL)


@pytest.fixture
def sess(shell, workdir, docker_client):
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    shell.run_line_magic("docker", f"session {name} -l {LABEL} {BASE_IMAGE}")
    try:
        yield name
    finally:
        kernel.shutdown()
        remove_labelled(docker_client, f"{LABEL}")


def interrupt_when(text, after=0.3):
    """A stdout stand-in that sends SIGINT to this process once TEXT was printed."""
    seen = threading.Event()

    class Watch:
        def write(self, s):
            if text in s:
                seen.set()
            return len(s)

        def flush(self):
            pass

    def fire():
        if seen.wait(30):
            time.sleep(after)
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    return Watch(), thread


# -- sessions -------------------------------------------------------------------------------------
def test_state_persists_across_session_cells(shell, sess, capsys):
    shell.run_cell_magic("docker", f"@{sess}", (
        "import json\n"
        "counter = 1\n"
        "def bump(n):\n"
        "    global counter\n"
        "    counter += n\n"
        "    return counter\n"))
    shell.run_cell_magic("docker", f"@{sess}", "print(bump(41), json.dumps({'ok': True}))")
    shell.run_cell_magic("docker", f"@{sess} python3", "print('pid', __import__('os').getpid())")
    shell.run_cell_magic("docker", f"@{sess}", "print('pid', __import__('os').getpid())")
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == '42 {"ok": true}'
    assert out[-2] == out[-1], "the cells ran in different interpreters"


def test_session_container_is_labelled_and_mounted(shell, sess, workdir, docker_client):
    c = docker_client.containers.get(sess)
    assert c.status == "running"
    labels = c.labels
    assert labels["dockmagic.managed"] == "1" and labels["dockmagic.kind"] == "session"
    assert {"dockmagic.kernel", "dockmagic.notebook"} <= set(labels)
    assert any(m["Source"] == str(workdir) and m["Destination"] == str(workdir)
               for m in c.attrs["Mounts"])
    assert c.attrs["HostConfig"]["AutoRemove"] is False
    assert c.attrs["HostConfig"]["LogConfig"]["Config"] == session.SESSION_LOG_OPTS
    shell.run_cell_magic("docker", f"@{sess}", (
        "import os\nopen('from-session.txt', 'w').write(str(os.getuid()))\n"))
    assert (workdir / "from-session.txt").read_text() == str(os.getuid())


def test_print_streams_live_from_a_session_cell(shell, sess, monkeypatch):
    log = []

    class Stamp:
        def write(self, s):
            log.append((time.monotonic(), s))
            return len(s)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Stamp())
    shell.run_cell_magic("docker", f"@{sess}", (
        "import time\nprint('first')\ntime.sleep(1)\nprint('second')\n"))
    end = time.monotonic()
    first = next(t for t, s in log if "first" in s)
    assert end - first > 0.8, "output arrived only at the end: not streamed"
    assert "".join(s for _, s in log) == "first\nsecond\n"


def test_exception_shows_the_container_traceback_and_fails_the_cell(shell, sess, capsys):
    shell.run_cell_magic("docker", f"@{sess}", "def inner():\n    return 1 / 0\n")
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", f"@{sess}", "x = 5\ninner()\n")
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: division by zero" in err
    assert "return 1 / 0" in err and "inner()" in err  # the cell's source lines
    assert agent._AGENT_FILE not in err and "on_sigint" not in err
    assert isinstance(info.value, session.SessionCellFailed)
    # its traceback was shown just above: the error names it without repeating it (#11)
    assert str(info.value) == f"cell failed in session {sess}: the cell raised ZeroDivisionError"
    shell.run_cell_magic("docker", f"@{sess}", "print(x)")  # the session lives on
    assert capsys.readouterr().out == "5\n"
    with pytest.raises(errors.CellFailed, match="SystemExit: 3"):
        shell.run_cell_magic("docker", f"@{sess}", "import sys; sys.exit(3)")
    shell.run_cell_magic("docker", f"@{sess} --no-raise-error", "raise ValueError('shown')")
    assert "ValueError: shown" in capsys.readouterr().err
    shell.run_cell_magic("docker", f"@{sess}", "x = input() if False else 'stdin is not ours'")


def test_interrupt_raises_inside_the_running_cell_and_the_session_lives(shell, sess, capsys):
    shell.run_cell_magic("docker", f"@{sess}", "n = 0")
    watch, thread = interrupt_when("tick")
    old, sys.stdout = sys.stdout, watch
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            shell.run_cell_magic("docker", f"@{sess}", (
                "import time\n"
                "try:\n"
                "    while True:\n"
                "        n += 1\n"
                "        print('tick', flush=True)\n"
                "        time.sleep(0.05)\n"
                "except KeyboardInterrupt:\n"
                "    caught = True\n"
                "    raise\n"))
    finally:
        sys.stdout = old
        thread.join()
    err = capsys.readouterr().err
    assert "KeyboardInterrupt" in err and "<cell" in err
    shell.run_cell_magic("docker", f"@{sess}", "print('after', caught, n > 0)")
    assert capsys.readouterr().out == "after True True\n"


def test_interrupt_a_bash_cell_in_a_session(shell, sess, capsys):
    watch, thread = interrupt_when("start")
    old, sys.stdout = sys.stdout, watch
    thread.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            shell.run_cell_magic("docker", f"@{sess} bash", "echo start; sleep 60; echo never")
    finally:
        sys.stdout = old
        thread.join()
    assert time.monotonic() - t0 < 15
    shell.run_cell_magic("docker", f"@{sess} bash", "echo still here")
    assert capsys.readouterr().out.strip().endswith("still here")


def test_bash_login_shell_in_a_session_sees_bashrc(shell, workdir, docker_client, capsys):
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    shell.run_line_magic("docker", f"session {name} --as-root -l {LABEL} {ENV_IMAGE}")
    capsys.readouterr()
    try:
        shell.run_cell_magic("docker", f"@{name} bash", 'echo "plain:$FROM_BASHRC"')
        shell.run_cell_magic("docker", f"@{name} bash -l", 'echo "login:$FROM_BASHRC"')
        shell.run_cell_magic("docker", f"@{name} bash -l", (
            "echo 'export PATH=/opt/dm-extra:$PATH' >> ~/.bashrc"))
        shell.run_cell_magic("docker", f"@{name} bash -l", 'echo "path:$PATH"')
        out = capsys.readouterr().out.split()
        assert out[:2] == ["plain:", "login:bashrc-value"]
        assert out[2].startswith("path:/opt/dm-extra:")
        with pytest.raises(errors.CellFailed) as info:
            shell.run_cell_magic("docker", f"@{name} bash", "exit 7")
        assert info.value.exit_code == 7
        with pytest.raises(errors.CellFailed) as info:
            shell.run_cell_magic("docker", f"@{name} no-such-interpreter", "x")
        assert info.value.exit_code == 127
    finally:
        session.stop(engines.default(), name)


def test_reattach_after_a_kernel_restart_keeps_the_variables(shell, workdir, docker_client,
                                                             capsys):
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    first_kernel = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'dockmagic')\n"
        f"ip.run_line_magic('docker', 'session {name} -l {LABEL} {BASE_IMAGE}')\n"
        f"ip.run_cell_magic('docker', '@{name}', 'kept = 42')\n")
    proc = subprocess.run([sys.executable, "-c", first_kernel], cwd=str(workdir),
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    try:
        assert docker_client.containers.get(name).status == "running"  # outlived its kernel
        shell.run_line_magic("docker", f"session {name} {BASE_IMAGE}")
        assert "reattached" in capsys.readouterr().out
        shell.run_cell_magic("docker", f"@{name}", "print(kept + 1)")
        assert capsys.readouterr().out == "43\n"
        session._SESSIONS.pop(name).close_socket()  # and `%%docker @NAME` alone reattaches too
        shell.run_cell_magic("docker", f"@{name}", "print(kept + 2)")
        assert capsys.readouterr().out == "44\n"
    finally:
        session.stop(engines.default(), name)


def test_sessions_with_rm_go_at_kernel_shutdown_others_stay(shell, workdir, docker_client):
    keep, gone = (f"dmtest-{uuid.uuid4().hex[:8]}" for _ in range(2))
    shell.run_line_magic("docker", f"session {keep} -l {LABEL} {BASE_IMAGE}")
    shell.run_line_magic("docker", f"session {gone} --rm -l {LABEL} {BASE_IMAGE}")
    try:
        kernel.shutdown()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = {c.name for c in docker_client.containers.list(
                all=True, filters={"label": LABEL})}
            if gone not in names:
                break
            time.sleep(0.1)
        assert gone not in names and keep in names
    finally:
        session.stop(engines.default(), keep)


def test_session_gpus_reach_the_engine_and_fail_like_a_cell_without_the_runtime(
        shell, workdir, docker_client):
    if "nvidia" in docker_client.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime")
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    with pytest.raises(errors.EngineError) as info:
        shell.run_line_magic("docker", f"session {name} --gpus all -l {LABEL} {BASE_IMAGE}")
    assert "nvidia-container-toolkit" in str(info.value)
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})


def test_the_panels_logs_of_a_session_hold_its_output_without_the_agents_markers(shell, sess):
    shell.run_cell_magic("docker", f"@{sess}", "print('step 0')\nprint('before')")
    text = lifecycle.fetch_logs(sess, tail=50)  # what the panel's logs pane reads
    assert "step 0\nbefore\n" in text and "\x1b]dm" not in text and "\x07" not in text


def test_session_usage_errors_are_one_line(shell, sess):
    for line, cell in [("@", "x"), ("@no-such-session-here", "x"), (f"@{sess} -e A=1", "x"),
                       (f"@{sess} --in", "x"), (f"@{sess} --in x bash", "echo")]:
        with pytest.raises(UsageError) as info:
            shell.run_cell_magic("docker", line, cell)
        assert "\n" not in str(info.value)
    for line in ["session bad/name IMG", f"session x --name y {BASE_IMAGE}",
                 f"session x --in a {BASE_IMAGE}", f"session x {BASE_IMAGE} bash",
                 "session --stop"]:
        with pytest.raises(UsageError):
            shell.run_line_magic("docker", line)


def test_a_warm_session_cell_makes_no_engine_call(shell, sess, monkeypatch):
    api = engines.default().api
    calls = []
    real = api.request

    def counting(*a, **kw):
        calls.append(a[:2])
        return real(*a, **kw)

    shell.run_cell_magic("docker", f"@{sess}", "pass")
    monkeypatch.setattr(api, "request", counting)
    devnull = open(os.devnull, "w")
    monkeypatch.setattr(sys, "stdout", devnull)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        shell.run_cell_magic("docker", f"@{sess}", "print(1)")
        times.append(time.perf_counter() - t0)
    assert calls == []
    times.sort()
    assert times[len(times) // 2] < 0.05  # loose here; benchmarks/bench_session.py measures it


def test_session_stop_and_listing(shell, workdir, docker_client, capsys):
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    shell.run_line_magic("docker", f"session {name} -l {LABEL} {BASE_IMAGE}")
    shell.run_line_magic("docker", "session")
    listing = capsys.readouterr().out
    assert name in listing and "attached" in listing
    shell.run_line_magic("docker", f"session --stop {name}")
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})
    with pytest.raises(UsageError, match="no session"):
        shell.run_cell_magic("docker", f"@{name}", "print(1)")


def test_a_stopped_session_says_so(shell, workdir, docker_client):
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    shell.run_line_magic("docker", f"session {name} -l {LABEL} {BASE_IMAGE}")
    try:
        docker_client.containers.get(name).kill()
        with pytest.raises(session.SessionError) as info:
            shell.run_cell_magic("docker", f"@{name}", "print(1)")
        assert name in str(info.value) and "\n" not in str(info.value)
        shell.run_line_magic("docker", f"session {name} {BASE_IMAGE}")  # starts it again
        shell.run_cell_magic("docker", f"@{name}", "x = 1")
    finally:
        session.stop(engines.default(), name)


def test_marker_split_across_frames_is_found():
    tok = "ab" * 16
    mark = agent.MARK_OPEN + tok.encode() + b";"
    demux = session._Demux()
    got, marks = [], []

    def frame(kind, data):
        return bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    stream = frame(1, b"hello \x1b[1mbold\x1b[0m") + frame(1, b"tail\x1b]d") + \
        frame(1, b"m;" + tok.encode() + b";o\x07after") + frame(2, b"err" + mark + b"00\x07")
    for i in range(0, len(stream), 3):  # split everywhere
        demux.feed(stream[i:i + 3], lambda k, d: got.append((k, d)),
                   lambda k, t, b: marks.append((k, t, b)))
    out = b"".join(d for k, d in got if k == 1)
    assert out == b"hello \x1b[1mbold\x1b[0mtailafter"
    assert b"".join(d for k, d in got if k == 2) == b"err"
    assert marks == [(1, tok, b"o"), (2, tok, b"00")]
    assert lifecycle.strip_markers(f"a\x1b]dm;{tok};o\x07b") == "ab"


def test_what_only_looks_like_a_marker_is_the_cells_own_output():
    demux = session._Demux()
    got, marks = [], []
    text = (b"\x1b]dm;nothex;o\x07 \x1b]dm;" + b"a" * 31 + b";o\x07 \x1b]dm;" + b"a" * 32
            + b";ZZ\x07 \x1b]dm;")
    data = bytes([1, 0, 0, 0]) + len(text).to_bytes(4, "big") + text
    demux.feed(data, lambda k, d: got.append(d), lambda k, t, b: marks.append(t))
    demux.feed(bytes([1, 0, 0, 0, 0, 0, 0, 3]) + b"end", lambda k, d: got.append(d),
               lambda k, t, b: marks.append(t))
    assert marks == [] and b"".join(got) == text + b"end"


# -- spares ---------------------------------------------------------------------------------------
@pytest.fixture
def spares(shell, docker_client):
    shell.run_line_magic("docker", "config --spare on")
    yield spare.SPARES
    spare.SPARES.discard()


def hostname_of_cell(shell, capsys, line):
    shell.run_cell_magic("docker", line, "import socket\nprint(socket.gethostname())")
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_second_identical_cell_runs_in_the_spare_a_fresh_container(shell, workdir, spares,
                                                                    docker_client, capsys):
    line = f"-l {LABEL} -l dmtest.case=spare {BASE_IMAGE}"
    first = hostname_of_cell(shell, capsys, line)
    assert spares.ready()
    spare_id = spares.spare_id
    spare = docker_client.containers.get(spare_id)
    assert spare.labels["dockmagic.kind"] == "spare" and spare.labels["dockmagic.managed"] == "1"
    assert spare.labels["dmtest.case"] == "spare"
    used = spares.used
    second = hostname_of_cell(shell, capsys, line)
    assert spares.used == used + 1
    assert second == spare_id[:12] and second != first
    assert spares.ready() and spares.spare_id != spare_id  # a new one for the next cell
    spares.drain()
    assert not docker_client.containers.list(all=True, filters={"id": spare_id})  # removed
    # and nothing of this test's containers but the new spare remains
    left = docker_client.containers.list(all=True, filters={"label": "dmtest.case=spare"})
    assert [c.id for c in left] == [spares.spare_id]


def test_spare_cells_match_the_cold_path(shell, workdir, spares, monkeypatch, capsys):
    line = f"-l {LABEL} -e FROM_KERNEL {BASE_IMAGE}"
    probe = ("import os, sys\n"
             "print(os.environ['FROM_KERNEL'], os.environ['PYTHONUNBUFFERED'], os.getcwd(), "
             "os.getuid(), os.getpid(), sys.argv, sys.stdin.read() == '', "
             "sorted(k for k in os.environ if k != 'HOSTNAME'))\n")
    monkeypatch.setenv("FROM_KERNEL", "at-first")
    used = spares.used
    shell.run_cell_magic("docker", line, probe)
    assert spares.used == used  # cold
    cold = capsys.readouterr().out.strip()
    assert spares.ready()
    monkeypatch.setenv("FROM_KERNEL", "when-the-cell-runs")  # read when the cell runs
    shell.run_cell_magic("docker", line, probe)
    assert spares.used == used + 1
    warm = capsys.readouterr().out.strip()
    assert warm == cold.replace("at-first", "when-the-cell-runs", 1)
    assert spares.ready()
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", line, "import sys\nprint('bad', file=sys.stderr)\n"
                                             "sys.exit(3)")
    assert info.value.exit_code == 3 and "bad" in info.value.stderr_tail
    assert spares.used == used + 2
    assert spares.ready()
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", line, "def f():\n    raise ValueError('v')\nf()")
    assert info.value.exit_code == 1 and spares.used == used + 3
    # frames named after the notebook's cell, numbered as its lines (line 1 is the magic's)
    assert re.search(r'File "<cell \[\d+\]>", line 4, in <module>\n    f\(\)',
                     info.value.stderr_tail), info.value.stderr_tail
    assert "ValueError: v" in info.value.stderr_tail


def test_oom_in_a_spare_cell_is_named_like_a_cold_one(shell, workdir, spares):
    line = f"-l {LABEL} -m 32m --memory-swap 32m {BASE_IMAGE}"
    body = "x = bytearray(400 * 1024 * 1024)\nprint(len(x))"
    seen = []
    for _ in range(2):  # cold, then in the spare
        spares.ready()
        with pytest.raises(errors.CellFailed) as info:
            shell.run_cell_magic("docker", line, body)
        # the same words but for the container each names
        said = re.sub(r"^container [0-9a-f]{12} ", "container ID ", str(info.value))
        seen.append((info.value.exit_code, info.value.oom, said))
    assert spares.used and seen[0] == seen[1] and seen[0][:2] == (137, True)
    assert seen[0][2].startswith("container ID (dockmagic-base:bookworm) exited with code 137")


def test_interrupt_in_a_spare_cell_stops_and_removes_it(shell, workdir, spares, docker_client,
                                                         capsys):
    line = f"-l {LABEL} -l dmtest.case=spare-interrupt {BASE_IMAGE}"
    shell.run_cell_magic("docker", line, "print(1)")
    assert spares.ready()
    spare_id = spares.spare_id
    watch, thread = interrupt_when("tick")
    old, sys.stdout = sys.stdout, watch
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            shell.run_cell_magic("docker", line, (
                "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)\n"))
    finally:
        sys.stdout = old
        thread.join()
    # one line says it, as the error IPython shows (errors.CellInterrupted, #11)
    assert spares.used and "stopped by SIGINT" in str(info.value)
    assert not docker_client.containers.list(all=True, filters={"id": spare_id})
    assert spares.spare_id is None  # no new spare after an interrupt


def test_spec_change_falls_back_to_a_cold_start(shell, workdir, spares, docker_client, capsys):
    first = hostname_of_cell(shell, capsys, f"-l {LABEL} {BASE_IMAGE}")
    assert spares.ready()
    old_spare = spares.spare_id
    used = spares.used
    other = hostname_of_cell(shell, capsys, f"-l {LABEL} -m 256m {BASE_IMAGE}")
    assert spares.used == used and other not in (first, old_spare[:12])
    spares.drain()
    assert not docker_client.containers.list(all=True, filters={"id": old_spare})
    spares.ready()
    # the rebuilt image under the same tag is not served by a stale spare
    tag = f"dmtest-retag:{uuid.uuid4().hex[:6]}"
    subprocess.run(["docker", "tag", BASE_IMAGE, tag], check=True)
    try:
        shell.run_cell_magic("docker", f"-l {LABEL} {tag}", "print(1)")
        assert spares.ready()
        subprocess.run(["docker", "tag", ENV_IMAGE, tag], check=True)
        used = spares.used
        shell.run_cell_magic("docker", f"-l {LABEL} {tag}",
                             "import os; print(os.environ.get('FROM_IMAGE'))")
        assert spares.used == used and capsys.readouterr().out.endswith("image-value\n")
    finally:
        spares.discard()
        subprocess.run(["docker", "rmi", tag], capture_output=True)


def test_no_spare_for_detached_named_or_session_cells_or_when_off(shell, workdir, spares,
                                                                  docker_client, capsys):
    spares.discard()
    name = f"dmtest-{uuid.uuid4().hex[:8]}"
    shell.run_cell_magic("docker", f"--name {name} -l {LABEL} {BASE_IMAGE}", "print(1)")
    cid = shell.run_cell_magic("docker", f"-d -l {LABEL} {BASE_IMAGE}", "print(1)")
    docker_client.containers.get(cid).remove(force=True)
    assert not spares.ready(5)
    shell.run_line_magic("docker", "config --spare off")
    assert "spare containers: off" in capsys.readouterr().out
    shell.run_cell_magic("docker", f"-l {LABEL} {BASE_IMAGE}", "print(1)")
    shell.run_cell_magic("docker", f"-l {LABEL} {BASE_IMAGE}", "print(1)")
    assert not spares.ready(5)
    shell.run_line_magic("docker", "config --spare on")
    shell.run_cell_magic("docker", f"-l {LABEL} {BASE_IMAGE}", "print(1)")
    assert spares.ready()
    shell.run_line_magic("docker", "config --spare off")  # removes the ready one
    assert spares.spare_id is None
    assert not docker_client.containers.list(all=True,
                                             filters={"label": ["dockmagic.kind=spare", LABEL]})
    shell.run_line_magic("docker", "config --spare on")


def test_an_unused_spare_goes_away_after_the_idle_time(shell, workdir, spares, docker_client,
                                                       monkeypatch):
    monkeypatch.setattr(spare, "SPARE_IDLE_S", 1.0)
    shell.run_cell_magic("docker", f"-l {LABEL} {BASE_IMAGE}", "print(1)")
    assert spares.ready()
    spare_id = spares.spare_id
    deadline = time.monotonic() + 15
    while spares.spare_id is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    spares.drain()
    assert spares.spare_id is None
    assert not docker_client.containers.list(all=True, filters={"id": spare_id})


def test_close_all_leaves_no_spare(shell, workdir, spares, docker_client):
    shell.run_cell_magic("docker", f"-l {LABEL} {BASE_IMAGE}", "print(1)")
    assert spares.ready()
    kernel.shutdown()
    assert not docker_client.containers.list(all=True,
                                             filters={"label": ["dockmagic.kind=spare", LABEL]})


# -- the notebook ---------------------------------------------------------------------------------
def test_sessions_notebook_runs_headless_and_leaves_nothing(base_image, docker_client, tmp_path):
    import nbformat

    path = os.path.join(ROOT, "notebooks", "sessions.ipynb")
    out = tmp_path / "sessions.executed.ipynb"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "run_notebook.py"), path, "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        nb = nbformat.read(out, as_version=4)
        def shown(o):
            return o.get("text", "") if o.get("output_type") == "stream" else str(o.get("data", ""))

        text = "\n".join("".join(shown(o) for o in c.get("outputs", []))
                         for c in nb.cells if c.cell_type == "code")
        assert "session demo started" in text
        assert "total so far 45" in text and "total so far 90" in text
        assert "result = {'a': 3.0, 'b': 5.0}" in text
        assert "numpy 1." in text and "mean 2.0" in text
        assert "bash in the session: Python 3" in text
        assert "hello from the session" in text.split("%docker logs")[-1] or \
            text.count("hello from the session") >= 2  # the cell, then its log
        assert "built dockmagic-demo:sessions" in text
        assert "built into the image - again, in a fresh container" in text
    finally:
        # The kernel's own clean-up (the last cell, then atexit at shutdown) must have left
        # nothing: no session, no spare, no one-shot container of this notebook.
        left = docker_client.containers.list(
            all=True, filters={"label": f"dockmagic.notebook={path}"})
        for c in left:
            c.remove(force=True)
        subprocess.run(["docker", "rmi", "-f", "dockmagic-demo:sessions"], capture_output=True)
    assert [(c.name, c.labels.get("dockmagic.kind")) for c in left] == []
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.startswith(".dockmagic-xfer")]
