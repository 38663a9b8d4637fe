"""How a cell reads (#11): the cell number, interrupts, failing cells, the status line and the
text commands, through a real IPython shell and real kernels, against the real engine."""
import os
import queue
import re
import time
import uuid

import nbformat
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from nbclient import NotebookClient

from dockmagic import errors
from conftest import BASE_IMAGE, interrupt_when_printed, remove_labelled

pytestmark = pytest.mark.engine
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = f"uxcell-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def labelled(docker_client):
    """A label value for this test's containers; whatever carries it is removed afterwards."""
    value = f"{TAG}-{uuid.uuid4().hex[:6]}"
    yield value
    remove_labelled(docker_client, f"test.case={value}")


def kernel_env(tmp_path):
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                JPY_SESSION_NAME=str(tmp_path / "reading.ipynb"))


def run_notebook(cells, tmp_path, allow_errors=True):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env(tmp_path))
    return nb


def texts(cell, name=None):
    """A cell's stream text (stdout and stderr, or one of them)."""
    return "".join(o.get("text", "") for o in cell.outputs
                   if o.output_type == "stream" and (name is None or o.name == name))


# -- the cell number ---------------------------------------------------------------------------
def test_cell_label_is_the_running_cells_prompt_number_in_a_shell(shell, workdir, capsys):
    for _ in range(2):
        result = shell.run_cell(f"%%docker --dry-run {BASE_IMAGE}\nprint(1)", store_history=True)
        out = capsys.readouterr().out
        assert f"dockmagic.cell={result.execution_count} " in out


def test_cell_label_equals_the_prompt_number_in_a_real_kernel(docker_client, base_image,
                                                                tmp_path, labelled):
    nb = run_notebook([
        "%load_ext dockmagic",
        "x = 1",
        f"%%docker --dry-run {BASE_IMAGE}\nprint(1)",
        f"%%docker -d -l test.case={labelled} {BASE_IMAGE}\nimport time\ntime.sleep(60)",
        f"%%docker {BASE_IMAGE}\nimport time\ntime.sleep(0.1)\nprint('ran')",
    ], tmp_path, allow_errors=False)
    dry, detached = nb.cells[2], nb.cells[3]
    assert f"dockmagic.cell={dry.execution_count} " in texts(dry)
    (c,) = docker_client.containers.list(all=True, filters={"label": f"test.case={labelled}"})
    assert c.labels["dockmagic.cell"] == str(detached.execution_count)
    # the -d message, in a notebook: no quoted 'name'
    (shown,) = detached.outputs  # one line: the message, with the cell's record on it
    assert shown["data"]["text/plain"] == (f"started {c.name} ({BASE_IMAGE}, {c.id[:12]}); "
                                           f"follow with `%docker logs -f {c.name}`")
    assert shown["metadata"]["dockmagic"]["kind"] == "detached"
    # a one-shot cell in a kernel gets the status line, updated in place into its summary
    ran = nb.cells[4]
    displays = [o for o in ran.outputs if o.output_type == "display_data"]
    assert len(displays) == 1  # updates replace it: one output in the saved notebook
    assert ran.outputs[0] is displays[0]  # above the container's own output, which follows
    summary = displays[0]["data"]["text/plain"]
    assert re.match(r"exit 0 · \d+\.\d s", summary), summary
    assert texts(ran, "stdout") == "ran\n"


# -- interrupts ----------------------------------------------------------------------------------
def _interrupt_in_kernel(tmp_path, cells, wait_for, grace=None):
    """Run CELLS in a real kernel; interrupt the last one once WAIT_FOR streamed. Returns its
    stream text and its error output's traceback lines; its display messages (the status
    line's) are left in the list DISPLAYS given as ``_interrupt_in_kernel.displays``."""
    from jupyter_client.manager import start_new_kernel

    _interrupt_in_kernel.displays = []
    km, kc = start_new_kernel(kernel_name="python3", env=kernel_env(tmp_path), cwd=str(tmp_path))
    try:
        for cell in cells[:-1]:
            reply = kc.execute_interactive(cell, timeout=120)
            assert reply["content"]["status"] == "ok", reply
        msg_id = kc.execute(cells[-1])
        stream, error = [], None
        interrupted = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                stream.append(content["text"])
                if not interrupted and wait_for in "".join(stream):
                    time.sleep(0.3)
                    km.interrupt_kernel()
                    interrupted = True
            elif kind == "error":
                error = content["traceback"]
            elif kind in ("display_data", "update_display_data"):
                _interrupt_in_kernel.displays.append(content)
            elif kind == "status" and content["execution_state"] == "idle" and interrupted:
                break
        # the kernel still answers
        assert kc.execute_interactive("1 + 1", timeout=60)["content"]["status"] == "ok"
        return "".join(stream), error
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_interrupted_one_shot_cell_shows_one_line_and_the_containers_traceback(
        docker_client, base_image, tmp_path, labelled):
    body = ("import time\n"
            "for i in range(1000):\n"
            "    print('tick', end='', flush=True)\n"
            "    time.sleep(0.05)\n"
            "    print('', i, flush=True)\n"
            "    time.sleep(0.05)\n")
    stream, error = _interrupt_in_kernel(
        tmp_path, ["%load_ext dockmagic", f"%%docker -l test.case={labelled} {BASE_IMAGE}\n" + body],
        "tick 3")
    # dockmagic says at most 3 lines, none of them a frame of its own
    assert error is not None and 1 <= len(error) <= 3, error
    assert re.match(r"interrupted; container [0-9a-f]{12} stopped by SIGINT in \d+\.\d s and "
                    r"removed", error[0]), error
    assert "dockmagic/" not in "".join(error) + stream
    # the status line went (the record stays on it): the interrupt's line is the only one
    last = _interrupt_in_kernel.displays[-1]
    assert last["data"] == {"text/plain": ""} and "dockmagic" in last["metadata"]
    # the container's own traceback, its frames named after the cell, with source lines
    assert "KeyboardInterrupt" in stream and 'File "<cell [2]>", line' in stream
    assert "time.sleep(0.05)" in stream
    # no streamed line lost its end: every `tick` but maybe the very last has its number
    ticks = [ln for ln in stream.splitlines() if ln.startswith("tick")]
    assert all(re.fullmatch(r"tick \d+", ln) for ln in ticks[:-1]), ticks[-3:]
    assert docker_client.containers.list(all=True, filters={"label": f"test.case={labelled}"}) == []


def test_interrupt_says_sigkill_only_when_it_was_used(shell, workdir, docker_client, labelled):
    seen = []  # stdout: the container's output, then IPython's rendering of the error
    shell.run_line_magic("config", "DockerMagics.interrupt_grace = 0.5")
    try:  # bash as PID 1 ignores SIGINT: only SIGKILL ends it
        with interrupt_when_printed("tock", seen, wait=60):
            shell.run_cell(f"%%docker -l test.case={labelled} {BASE_IMAGE} bash\n"
                           "while true; do echo tock; sleep 0.1; done")
    finally:
        shell.run_line_magic("config", "DockerMagics.interrupt_grace = 2.0")
    lines = [ln for ln in "".join(seen).splitlines() if ln and ln != "tock"]
    assert len(lines) == 1 and re.fullmatch(
        r"interrupted; container [0-9a-f]{12} stopped by SIGKILL in \d+\.\d s and removed",
        lines[0]), lines


def test_interrupted_session_cell_shows_one_line(docker_client, base_image, tmp_path):
    name = f"{TAG}-sess"
    try:
        stream, error = _interrupt_in_kernel(tmp_path, [
            "%load_ext dockmagic",
            f"%docker session {name} --rm -l test.case={TAG} {BASE_IMAGE}",
            f"%%docker @{name}\nimport time\nwhile True:\n    print('tick', flush=True)\n"
            "    time.sleep(0.1)\n"], "tick")
    finally:
        remove_labelled(docker_client, f"test.case={TAG}")
    assert error is not None and 1 <= len(error) <= 3, error
    assert error[0].startswith("interrupted; the cell stopped in "), error
    shown = _interrupt_in_kernel.displays
    assert shown[0]["data"]["text/plain"].startswith("cell [3] · session ")  # while it ran
    assert shown[-1]["data"] == {"text/plain": ""} and "dockmagic" in shown[-1]["metadata"]
    assert "dockmagic/" not in "".join(error) + stream
    assert "KeyboardInterrupt" in stream and 'File "<cell [3]>", line 5' in stream


# -- a failing cell ------------------------------------------------------------------------------
def test_failing_cells_show_their_traceback_once_with_source_lines(docker_client, base_image,
                                                                     tmp_path):
    name = f"{TAG}-fail"
    body = "def f():\n    return 1 / 0\nprint('before')\nf()\n"
    try:
        nb = run_notebook([
            "%load_ext dockmagic",
            f"%%docker {BASE_IMAGE}\n" + body,
            f"%docker session {name} --rm -l test.case={TAG}-fail {BASE_IMAGE}",
            "y = 2",
            f"%%docker @{name}\n" + body,
        ], tmp_path)
    finally:
        remove_labelled(docker_client, f"test.case={TAG}-fail")
    for cell in (nb.cells[1], nb.cells[4]):
        n = cell.execution_count
        stream = texts(cell)
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        shown = stream + "\n".join(error["traceback"])
        assert shown.count("ZeroDivisionError") == 1 + ("raised ZeroDivisionError" in shown), shown
        assert shown.count("Traceback (most recent call last)") == 1
        # frames named after the notebook's cell, line numbers as the notebook shows them
        assert f'File "<cell [{n}]>", line 5, in <module>\n    f()' in stream
        assert f'File "<cell [{n}]>", line 3, in f\n    return 1 / 0' in stream
        assert len(error["traceback"]) == 1 and "dockmagic/" not in shown
    assert nb.cells[4].execution_count == 5  # the notebook's number, not the session's own


def test_cell_failed_does_not_repeat_streamed_stderr(shell, workdir):
    with capture_output() as cap:
        shell.run_cell(f"%%docker {BASE_IMAGE}\nimport sys\nprint('bad news', file=sys.stderr)\n"
                       "sys.exit(3)")
    assert (cap.stdout + cap.stderr).count("bad news") == 1
    # the container named as its status line names it, from start to end: by short ID
    names = {re.findall(r"container (\S+) \(dockmagic-base:bookworm\)", o.data["text/plain"])[0]
             for o in cap.outputs if "container " in o.data["text/plain"]}
    (who,) = names
    assert re.fullmatch(r"[0-9a-f]{12}", who)
    assert f"CellFailed: container {who} (dockmagic-base:bookworm) exited with code 3" in cap.stdout


# -- the status line -------------------------------------------------------------------------------
def test_status_line_updates_in_place_and_ends_in_a_summary(shell, workdir):
    shell.run_line_magic("config", "DockerMagics.status_interval = 0.2")
    try:
        with capture_output() as cap:
            shell.run_cell(f"%%docker {BASE_IMAGE}\nimport sys, time\nprint('one', flush=True)\n"
                           "time.sleep(1.5)\nprint('two', file=sys.stderr)", store_history=True)
    finally:
        shell.run_line_magic("config", "DockerMagics.status_interval = 1.0")
    outs = cap.outputs
    assert outs and not outs[0].update and all(o.update for o in outs[1:])
    ids = {o.transient["display_id"] for o in outs}
    assert len(ids) == 1  # one line, updated in place
    plain = [o.data["text/plain"] for o in outs]
    assert plain[0].startswith("cell [") and BASE_IMAGE in plain[0] and "engine " in plain[0]
    running = [p for p in plain[1:-1] if "container " in p]
    assert running, plain
    assert re.search(r"container [0-9a-f]{12} \(dockmagic-base:bookworm\) · engine \S+ · "
                     r"\d\.\d s", running[-1]), running
    assert re.match(r"exit 0 · \d\.\d s · peak memory [\d.]+ [KMG]iB · container [0-9a-f]{12} ",
                    plain[-1]), plain[-1]
    assert "var(--jp-" in outs[-1].data["text/html"]
    # the container's own output is untouched by it
    assert cap.stdout == "one\n" and cap.stderr == "two\n"


@pytest.fixture
def warm_session(shell, workdir, docker_client):
    """A running `--rm` session in the shell; removed afterwards."""
    name = f"{TAG}-line-{uuid.uuid4().hex[:6]}"
    shell.run_line_magic("docker", f"session {name} --rm -l test.case={name} {BASE_IMAGE}")
    yield name
    shell.run_line_magic("docker", f"session --stop {name}")
    remove_labelled(docker_client, f"test.case={name}")


def test_a_session_cell_has_a_status_line_that_ticks_and_ends_in_a_summary(shell, warm_session):
    name = warm_session
    shell.run_line_magic("config", "DockerMagics.status_interval = 0.2")
    try:
        with capture_output() as cap:
            result = shell.run_cell(f"%%docker @{name}\nimport time\nprint('one', flush=True)\n"
                                    "time.sleep(1.6)\nprint('two')", store_history=True)
    finally:
        shell.run_line_magic("config", "DockerMagics.status_interval = 1.0")
    result.raise_error()
    outs = cap.outputs
    assert outs and not outs[0].update and all(o.update for o in outs[1:])
    assert len({o.transient["display_id"] for o in outs}) == 1  # one line, updated in place
    plain = [o.data["text/plain"] for o in outs]
    who = f"session {name} ({BASE_IMAGE})"
    assert plain[0] == f"cell [{result.execution_count}] · {who} · engine {_engine_words()} · 0.0 s"
    running = [p for p in plain[1:] if p.startswith("cell [")]
    # redrawn from the shared thread once the cell ran a second, every 0.2 s after that
    assert running and all(re.search(r" · 1\.\d s$", p) for p in running), plain
    assert re.fullmatch(rf"exit 0 · 1\.\d s · peak memory [\d.]+ [KMG]iB · {re.escape(who)}",
                        plain[-1]), plain[-1]
    assert outs[-1].metadata["dockmagic"]["kind"] == "session"  # the record rides on the line
    assert cap.stdout == "one\ntwo\n"


def test_a_quick_session_cell_goes_straight_to_its_summary(shell, warm_session):
    with capture_output() as cap:
        shell.run_cell(f"%%docker @{warm_session}\nprint(1)")
    plain = [o.data["text/plain"] for o in cap.outputs]
    # shown, then its summary with the record on it, in one update: never redrawn while running
    assert len(plain) == 2 and plain[0].startswith("cell [") and plain[1].startswith("exit 0 · 0.")
    assert "dockmagic" in cap.outputs[1].metadata
    assert cap.stdout == "1\n"
    # a quick cell that prints nothing: its line goes out once, as its summary with the record
    with capture_output() as cap:
        shell.run_cell(f"%%docker @{warm_session}\nx = 1")
    (only,) = cap.outputs
    assert not only.update and only.data["text/plain"].startswith("exit 0 · 0.")
    assert "dockmagic" in only.metadata
    with capture_output() as cap:
        shell.run_cell(f"%%docker @{warm_session}\nraise SystemExit(3)")
    assert cap.outputs[-1].data["text/plain"].startswith("exit 3 · ")
    assert "var(--jp-error-color1" in cap.outputs[-1].data["text/html"]
    # an exception is not an exit: the session lives on
    with capture_output() as cap:
        shell.run_cell(f"%%docker @{warm_session}\nraise ValueError('no')")
    assert re.match(rf"raised ValueError · 0\.\d s · peak memory [\d.]+ [KMG]iB · session "
                    rf"{warm_session} ", cap.outputs[-1].data["text/plain"])
    # an error of dockmagic's own is named on the line, its message shown once, below it
    with capture_output() as cap:
        shell.run_cell(f"%%docker @{warm_session} --in no_such_variable\nprint(1)")
    assert re.fullmatch(rf"TransferError after 0\.\d s · session {warm_session} "
                        rf"\({re.escape(BASE_IMAGE)}\)", cap.outputs[-1].data["text/plain"])
    assert cap.stdout.count("no variable no_such_variable") == 1


def test_a_session_cell_in_a_terminal_prints_only_its_output(shell, warm_session, capsys):
    shell.run_cell(f"%%docker @{warm_session}\nprint('only this')")
    assert capsys.readouterr().out == "only this\n"


def _engine_words():
    from dockmagic import engine, status
    return status.engine_words(engine.default())


def test_no_status_line_in_a_terminal(shell, workdir, capsys):
    shell.run_cell(f"%%docker {BASE_IMAGE}\nprint('only this')")
    assert capsys.readouterr().out == "only this\n"


def test_a_failing_cell_ends_its_status_line_with_the_exit_code(shell, workdir):
    with capture_output() as cap:
        shell.run_cell(f"%%docker {BASE_IMAGE}\nraise SystemExit(4)")
    assert cap.outputs[-1].data["text/plain"].startswith("exit 4 · ")


def test_a_cell_that_cannot_run_names_its_error_on_the_line_and_shows_it_once(shell, workdir):
    with capture_output() as cap:
        shell.run_cell("%%docker dockmagic-no-such-image:v0\nprint(1)")
    line = cap.outputs[-1].data["text/plain"]
    assert re.fullmatch(r"ImageUnavailable after \d+\.\d s · dockmagic-no-such-image:v0", line)
    assert cap.stdout.count("neither local nor pullable") == 1


def test_pull_progress_is_one_updating_line_with_layers_and_bytes(shell, workdir, docker_client):
    import subprocess

    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-registry.sh")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    import io

    repo, tag = "localhost:5000/dm/uxcell-pull", uuid.uuid4().hex[:8]
    ref = f"{repo}:{tag}"
    # A layer of its own (3 MB of noise), so that the pull downloads bytes.
    dockerfile = f"FROM {BASE_IMAGE}\nRUN head -c 3000000 /dev/urandom > /blob-{tag}\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
    try:
        for event in docker_client.api.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
        docker_client.images.remove(ref)
        with capture_output() as cap:
            shell.run_cell(f"%%docker {ref}\nprint('pulled and ran')")
        assert cap.stdout == "pulled and ran\n" and cap.stderr == ""  # no progress on stderr
        pulls = [o.data["text/plain"] for o in cap.outputs if "layers " in o.data["text/plain"]]
        assert pulls and pulls[0].startswith(f"{ref} is not local; pulling it from localhost:5000")
        assert re.search(r"layers (\d+)/\1 · [\d.]+ [KMG]iB of [\d.]+ [KMG]iB", pulls[-1]), pulls
        assert any("<progress" in o.data.get("text/html", "") for o in cap.outputs)
        assert len({o.transient["display_id"] for o in cap.outputs}) == 1
    finally:
        try:
            docker_client.images.remove(ref)
        except Exception:
            pass


# -- text commands ---------------------------------------------------------------------------------
def test_detach_prints_started_name_image_id_and_how_to_follow(shell, workdir, docker_client,
                                                                labelled):
    with capture_output() as cap:
        result = shell.run_cell(f"%%docker -d -l test.case={labelled} {BASE_IMAGE}\n"
                                "import time\ntime.sleep(60)", store_history=True)
    name = result.result
    c = docker_client.containers.get(name)
    line = f"started {name} ({BASE_IMAGE}, {c.id[:12]}); follow with `%docker logs -f {name}`"
    assert cap.stdout.strip().endswith(line) and f"'{name}'" not in cap.stdout


def test_logs_default_to_the_last_200_lines_with_a_hint(shell, workdir, docker_client, labelled,
                                                          capsys):
    c = docker_client.containers.run(
        BASE_IMAGE, ["python3", "-c", "for i in range(300): print('line', i)"],
        labels={"test.case": labelled, "dockmagic.managed": "1"}, detach=True)
    c.wait(timeout=60)
    shell.run_line_magic("docker", f"logs {c.name}")
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 200 and lines[0] == "line 100" and lines[-1] == "line 299"
    assert f"`%docker logs --tail all {c.name}`" in out.err and "-f" in out.err
    shell.run_line_magic("docker", f"logs --tail 5 {c.name}")
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"line {i}" for i in range(295, 300)] and out.err == ""
    shell.run_line_magic("docker", f"logs --tail all {c.name}")
    assert len(capsys.readouterr().out.splitlines()) == 300
    with capture_output() as cap:  # a notebook: the hint is a dim line of its own, not stderr
        shell.run_line_magic("docker", f"logs {c.name}")
    assert len(cap.stdout.splitlines()) == 200 and cap.stderr == ""
    assert f"`%docker logs --tail all {c.name}`" in cap.outputs[-1].data["text/plain"]


def test_logs_of_a_short_log_give_no_hint(shell, workdir, docker_client, labelled, capsys):
    c = docker_client.containers.run(BASE_IMAGE, ["echo", "hi"], detach=True,
                                     labels={"test.case": labelled})
    c.wait(timeout=60)
    shell.run_line_magic("docker", f"logs {c.name}")
    out = capsys.readouterr()
    assert out.out == "hi\n" and out.err == ""


@pytest.mark.parametrize("line,words", [
    (f"--gpu all {BASE_IMAGE}", "unknown flag: '--gpu'; did you mean --gpus?"),
    (f"--dry-rn {BASE_IMAGE}", "did you mean --dry-run?"),
    (f"--shm-sise 1g {BASE_IMAGE}", "did you mean --shm-size?"),
])
def test_unknown_flags_get_did_you_mean(shell, workdir, line, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        shell.run_cell_magic("docker", line, "print(1)")


def test_unknown_subcommands_and_their_flags_get_did_you_mean(shell):
    with pytest.raises(UsageError, match=r"no subcommand 'sesion' \(did you mean session\?\)"):
        shell.run_line_magic("docker", "sesion")
    with pytest.raises(UsageError, match=r"unrecognized arguments: --al \(did you mean --all\?\)"):
        shell.run_line_magic("docker", "ps --al")


def test_a_tag_close_to_a_local_one_is_named_before_any_pull(shell, workdir, capsys):
    with pytest.raises(errors.ImageUnavailable) as info:
        shell.run_cell_magic("docker", "dockmagic-base:bookwrom", "print(1)")
    said = capsys.readouterr().err
    hint = "did you mean dockmagic-base:bookworm, which is local?"
    first = said.splitlines()[0]
    assert first.startswith("dockmagic-base:bookwrom is not local") and hint in first
    # the failure leads with the local tag, not with the registry's error
    assert str(info.value).startswith(f"image 'dockmagic-base:bookwrom' is not local; {hint} "
                                      "Pulling it from Docker Hub (docker.io) failed: ")


@pytest.mark.parametrize("said,cause", [
    ('Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
     '10.255.255.53:53: no such host', "the engine cannot resolve registry-1.docker.io (no such "
     "host): check the engine's DNS and network, or the registry's name"),
    ('Get "http://localhost:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused',
     "localhost refused the connection: is the registry running?"),
    ('Get "https://example.org/v2/": net/http: request canceled (Client.Timeout exceeded)',
     "example.org did not answer in time: is it reachable from the engine?"),
])
def test_registry_errors_read_as_their_cause(said, cause):
    assert errors.registry_cause(said, "Docker Hub (docker.io)") == cause
    assert errors.describe_pull_failure("x:1", said) == (
        f"image 'x:1' is neither local nor pullable from Docker Hub (docker.io): {cause}. Build "
        "it (`docker build -t ...`), load it (`docker load`), or check the name and tag")
    assert errors.describe_registry_error("push", "x:1", said) == f"push x:1 failed: {cause}"
    assert errors.registry_cause("manifest unknown", "r") == ""  # the raw reason stays then


def test_oom_message_states_the_limit(shell, workdir):
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", f"-m 32m --memory-swap 32m {BASE_IMAGE}",
                             "x = bytearray(400 * 1024 * 1024)")
    assert info.value.oom and "at its limit of 32 MiB (-m/--memory)" in str(info.value)


# -- help -------------------------------------------------------------------------------------------
def test_help_is_generated_from_the_registry_and_shown_as_pre_text(shell):
    from dockmagic import cli

    with capture_output() as cap:
        shell.run_line_magic("docker", "--help")
    (out,) = cap.outputs
    text, page = out.data["text/plain"], out.data["text/html"]
    for name in cli.load():
        assert re.search(rf"^  {name} ", text, re.M), name
    assert "panel" in cli.REGISTRY and "session" in cli.REGISTRY
    # HTML text (Lab links nothing), a path kept whole on its line
    assert "dockmagic-help" in page and "<a " not in page and "<pre" not in page
    assert '<span class="dmh-w">-v</span> <span class="dmh-w">/data:/data:ro</span>' in page
    assert max(len(line) for line in text.splitlines()) <= cli.HELP_WIDTH
    with capture_output() as cap:
        assert shell.run_line_magic("docker", "logs --help") is None
    assert "--tail N" in cap.outputs[0].data["text/plain"]


def test_settings_are_traitlets(shell):
    from dockmagic import runner

    shell.run_line_magic("config", "DockerMagics.interrupt_grace = 4.5")
    try:
        shell.run_line_magic("docker", "config")
        assert runner.INTERRUPT_GRACE_S == 4.5
    finally:
        shell.run_line_magic("config", "DockerMagics.interrupt_grace = 2.0")
        shell.run_line_magic("docker", "config")
    assert runner.INTERRUPT_GRACE_S == 2.0


def test_docker_pull_in_a_notebook_is_one_progress_line(shell, docker_client):
    import subprocess

    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-registry.sh")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    repo, tag = "localhost:5000/dm/uxcell-p", uuid.uuid4().hex[:8]
    ref = f"{repo}:{tag}"
    docker_client.images.get(BASE_IMAGE).tag(repo, tag)
    try:
        for event in docker_client.api.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
        docker_client.images.remove(ref)
        with capture_output() as cap:
            shell.run_line_magic("docker", f"pull {ref}")
        assert cap.stdout == "" and cap.stderr == ""
        assert len({o.transient["display_id"] for o in cap.outputs}) == 1
        last = cap.outputs[-1].data["text/plain"]
        image_id = docker_client.images.get(ref).id
        # its layers are local already (the base image's): every one done, or nothing fetched
        assert re.fullmatch(rf"pulled {re.escape(ref)} \({image_id}\) · "
                            r"(layers ([1-9]\d*)/\2|up to date)", last), last
    finally:
        try:
            docker_client.images.remove(ref)
        except Exception:
            pass
