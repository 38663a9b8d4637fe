"""`%docker ps|images|logs|exec|stop|start|restart|rm|rmi|prune|commit|tag|push|pull` and
`%%dockerfile`, through a real IPython shell against the real engine and a real local registry
(Debian's docker-registry on 127.0.0.1:5000, started by scripts/ensure-registry.sh)."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

import dockmagic.engine as engines
from IPython.core.error import UsageError

from dockmagic import commands, errors, lifecycle, panelstate
from conftest import BASE_IMAGE

pytestmark = pytest.mark.engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_LABEL = "dockmagic.test"
RUN = uuid.uuid4().hex[:8]  # this run's images and tags, so runs never meet in the registry
TEST_VALUE = f"lifecycle-{RUN}"  # per run: concurrent runs must not remove each other's
REGISTRY = "localhost:5000"
LOCAL_REPO = "dm-lifecycle-test"


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _cleanup(docker_client):
    """Remove this module's containers (by label) and images (by name) whatever happens."""
    yield
    mine = {"label": f"{TEST_LABEL}={TEST_VALUE}"}
    for c in docker_client.containers.list(all=True, filters=mine):
        try:
            c.remove(force=True)
        except Exception:
            pass
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith((f"{LOCAL_REPO}/", f"{REGISTRY}/dm/")) and RUN in tag:
                try:
                    docker_client.images.remove(tag, force=True)
                except Exception:
                    pass


@pytest.fixture(scope="module")
def registry():
    """A real registry on loopback; the engine treats 127.0.0.0/8 as insecure by default."""
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-registry.sh")],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"no local registry: {proc.stderr.strip() or proc.stdout.strip()}")
    return REGISTRY


def this_kernel() -> str:
    from dockmagic.kernel import kernel_id
    return kernel_id()


def make_container(client, cmd=("sleep", "300"), *, start=True, managed=True, labels=None,
                   **kwargs):
    """A container as dockmagic would label it (or an outsider with managed=False)."""
    all_labels = {TEST_LABEL: TEST_VALUE}
    if managed:
        all_labels.update({"dockmagic.managed": "1", "dockmagic.kernel": this_kernel(),
                           "dockmagic.notebook": "/work/notes/analysis.ipynb",
                           "dockmagic.cell": "7"})
    all_labels.update(labels or {})
    name = f"dm-lc-{uuid.uuid4().hex[:10]}"
    c = client.containers.create(BASE_IMAGE, list(cmd), name=name, labels=all_labels, init=True,
                                 **kwargs)
    if start:
        c.start()
    return c


def state(client, name):
    return client.api.inspect_container(name)["State"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def one_line(exc) -> str:
    rendered = exc._render_traceback_() if hasattr(exc, "_render_traceback_") else [str(exc)]
    assert "Traceback" not in "\n".join(rendered)
    return rendered[0]


# -- pure rows -----------------------------------------------------------------------------------
def _inspect_answer(state="running", device_requests=None):
    return {"HostConfig": {"DeviceRequests": device_requests},
            "State": {"Status": state, "StartedAt": "2023-11-14T22:13:20.5Z"}}


def test_ps_rows_are_the_panels_rows_built_from_the_listing():
    entry = {
        "Id": "a" * 64, "Names": ["/work-1"], "Image": "img:1", "State": "running",
        "Status": "Up 2 minutes", "Created": 1700000000,
        "Labels": {"dockmagic.managed": "1", "dockmagic.notebook": "/n/a.ipynb",
                   "dockmagic.cell": "4", "dockmagic.kernel": "h:12:34"},
    }
    outsider = {"Id": "b" * 64, "Names": ["/other"], "Image": "x", "State": "exited",
                "Status": "Exited (0)", "Created": 1, "Labels": {"dockmagic.managed": ""}}
    gpus = [{"Driver": "", "Count": 0, "DeviceIDs": ["0", "2"], "Capabilities": [["gpu"]]}]
    inspected = {"a" * 64: panelstate.parse_inspect(_inspect_answer("running", gpus)),
                 "b" * 64: panelstate.parse_inspect(_inspect_answer("exited"))}
    rows = panelstate.build_state([entry, outsider], None, scope="all", now=1700000150.5,
                                  inspected=inspected).rows
    assert rows[0] == panelstate.ContainerRow(
        id="a" * 64, name="work-1", image="img:1", state="running", status="Up 2 minutes",
        created=1700000000, uptime=150.0, managed=True, notebook="/n/a.ipynb", cell="4",
        kernel="h:12:34", gpus="0,2")
    # a blanked label (an image committed from one of dockmagic's containers) is not dockmagic's
    assert rows[1].managed is False and rows[1].gpus == "" and rows[1].name == "other"
    assert rows[1].notebook is None and rows[1].kernel is None
    table = commands.to_container_table(rows, all_states=True, everyone=True)
    assert table.columns == ("NAME", "IMAGE", "STATUS", "NOTEBOOK", "CELL", "GPUS", "ID")
    assert table.rows == (("work-1", "img:1", "Up 2 minutes", "a.ipynb", "4", "0,2", "a" * 12),
                          ("other", "x", "Exited (0)", "", "", "-", "b" * 12))
    assert "title='h:12:34'" in table._repr_html_()
    assert "title='/n/a.ipynb, cell [4]'" in table._repr_html_()
    # only dockmagic's (label `=1`) without --all-containers
    mine = panelstate.build_state([entry, outsider], None, scope="dockmagic").rows
    assert [r.name for r in mine] == ["work-1"]


@pytest.mark.parametrize("requests, text", [
    (None, "-"),
    ([], "-"),
    ([{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}], "all"),
    ([{"Driver": "nvidia", "Count": 2, "Capabilities": None}], "any 2"),
    ([{"Driver": "", "Count": 0, "DeviceIDs": ["GPU-1a", "GPU-2b"], "Capabilities": [["gpu"]]}],
     "GPU-1a,GPU-2b"),
    ([{"Driver": "other", "Count": 1, "Capabilities": [["fpga"]]}], "-"),
])
def test_ps_gpu_text_is_the_panels_for_each_kind_of_device_request(requests, text):
    entry = {"Id": "c" * 64, "Names": ["/g"], "State": "created",
             "Labels": {"dockmagic.managed": "1"}}
    inspected = {"c" * 64: panelstate.parse_inspect(_inspect_answer("created", requests))}
    rows = panelstate.build_state([entry], None, inspected=inspected).rows
    assert commands.to_container_table(rows).rows[0][5] == panelstate.to_gpus_text(rows[0]) == text


def test_image_rows_one_per_tag_and_untagged_ones():
    rows = lifecycle.build_image_rows([
        {"Id": "sha256:" + "c" * 64, "RepoTags": ["localhost:5000/dm/x:1", "x:latest"],
         "Created": 5, "Size": 216_000_000},
        {"Id": "sha256:" + "d" * 64, "RepoTags": None, "RepoDigests": ["repo@sha256:1"],
         "Created": 6, "Size": 1},
    ])
    assert [(r.repository, r.tag, r.id) for r in rows] == [
        ("localhost:5000/dm/x", "1", "c" * 12), ("x", "latest", "c" * 12),
        ("repo", "<none>", "d" * 12)]
    assert commands.to_human_size(216_000_000) == "216MB"


@pytest.mark.parametrize("ref, parts", [
    ("localhost:5000/dm/test:1", ("localhost:5000/dm/test", "1")),
    ("localhost:5000/dm/test", ("localhost:5000/dm/test", None)),
    ("python:3.12", ("python", "3.12")),
    ("repo@sha256:abc", ("repo", None)),
])
def test_split_reference_keeps_registry_ports(ref, parts):
    assert lifecycle.split_reference(ref) == parts


def test_kernel_label_liveness():
    host = socket.gethostname()
    assert lifecycle.parse_kernel_label("my-host:12:34") == ("my-host", 12, 34)
    assert lifecycle.parse_kernel_label("garbage") is None
    assert lifecycle.kernel_alive(this_kernel()) is True
    assert lifecycle.kernel_alive(f"{host}:{dead_pid()}:{int(time.time())}") is False
    assert lifecycle.kernel_alive(f"elsewhere-{RUN}:1:1") is None  # another host: cannot tell
    # A live pid that started after the label says the kernel did: the pid was reused.
    assert lifecycle.kernel_alive(f"{host}:{os.getpid()}:{int(time.time()) - 10 ** 6}") is False


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- ps / images ---------------------------------------------------------------------------------
def test_ps_shows_dockmagic_containers_with_notebook_cell_and_gpus(shell, docker_client):
    import docker

    running = make_container(docker_client)
    outsider = make_container(docker_client, managed=False)
    stopped = make_container(docker_client, start=False, device_requests=[
        docker.types.DeviceRequest(device_ids=["0", "2"], capabilities=[["gpu"]])])
    table = shell.run_line_magic("docker", "ps")
    names = [row[0] for row in table.rows]
    assert running.name in names
    assert outsider.name not in names and stopped.name not in names
    row = table.rows[names.index(running.name)]
    assert row[table.columns.index("NOTEBOOK")] == "analysis.ipynb"
    assert row[table.columns.index("CELL")] == "7"
    html = table._repr_html_()
    assert running.name in html and "/work/notes/analysis.ipynb" in html  # full path on hover
    assert running.name in repr(table) and "NOTEBOOK" in repr(table)

    everything = shell.run_line_magic("docker", "ps -a")
    by_name = {r[0]: r for r in everything.rows}
    assert stopped.name in by_name and outsider.name not in by_name
    assert by_name[stopped.name][everything.columns.index("GPUS")] == "0,2"

    every = shell.run_line_magic("docker", "ps -a --all-containers")
    assert {running.name, outsider.name, stopped.name} <= {r[0] for r in every.rows}


def test_ps_and_the_panel_show_the_same_rows(shell, docker_client):
    """One row builder: `%docker ps -a` and a live panel agree on the same containers."""
    import docker

    from dockmagic.nvml import GpuSnapshot
    from dockmagic.panel import Panel

    case = {"dockmagic.case": f"agree-{RUN}"}
    made = [make_container(docker_client, labels={**case, "dockmagic.cell": "3"}),
            make_container(docker_client, start=False, labels=case, device_requests=[
                docker.types.DeviceRequest(device_ids=["0", "2"], capabilities=[["gpu"]])]),
            make_container(docker_client, start=False, labels=case, device_requests=[
                docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])])]
    ids = {c.id for c in made}
    panel = Panel(scope="dockmagic", autostart=False,
                  query_gpus=lambda: GpuSnapshot(error="no NVIDIA driver found (test)"))
    try:
        def inspected():  # the panel inspects off its refresh path: wait for the answers
            rows = [r for r in panel.refresh().rows if r.id in ids]
            return rows if len(rows) == 3 and all(r.gpus is not None for r in rows) else None
        assert wait_for(inspected)
        shown = inspected()
    finally:
        panel.close()
    table = shell.run_line_magic("docker", "ps -a")
    listed = [r for r in table.rows if r[-1] in {i[:12] for i in ids}]
    # both newest first; the same names, notebook, cell, GPUs and ids
    assert [(r[0], r[3], r[4], r[5], r[6]) for r in listed] == [
        (r.name, panelstate.to_notebook_text(r), r.cell, panelstate.to_gpus_text(r), r.id[:12])
        for r in shown]
    assert sorted(r[5] for r in listed) == ["-", "0,2", "all"]
    assert {r[3] for r in listed} == {"analysis.ipynb"}


def test_images_lists_local_images_as_a_table(shell):
    table = shell.run_line_magic("docker", "images dockmagic-base")
    assert [(r[0], r[1]) for r in table.rows] == [("dockmagic-base", "bookworm")]
    assert "<table" in table._repr_html_() and "bookworm" in repr(table)
    empty = shell.run_line_magic("docker", f"images nothing-here-{RUN}")
    assert len(empty) == 0 and "no images" in repr(empty)


# -- logs ----------------------------------------------------------------------------------------
def test_logs_keep_stdout_and_stderr_apart_and_tail(shell, docker_client, capsys):
    c = make_container(docker_client, ["bash", "-c", "for i in 1 2 3; do echo out$i; "
                                                     "echo err$i >&2; done"])
    assert wait_for(lambda: state(docker_client, c.name)["Status"] == "exited")
    shell.run_line_magic("docker", f"logs {c.name}")
    got = capsys.readouterr()
    assert got.out.split() == ["out1", "out2", "out3"]
    assert got.err.split() == ["err1", "err2", "err3"]
    shell.run_line_magic("docker", f"logs --tail 1 {c.name}")
    got = capsys.readouterr()
    assert (got.out + got.err).split() in (["out3"], ["err3"])


class Recorder:
    def __init__(self, log):
        self.log = log

    def write(self, text):
        self.log.append((time.monotonic(), text))
        return len(text)

    def flush(self):
        pass


def test_logs_follow_streams_live_until_the_container_stops(shell, docker_client, monkeypatch):
    c = make_container(docker_client, ["bash", "-c", "echo first; sleep 1.5; echo second"])
    log = []
    monkeypatch.setattr(sys, "stdout", Recorder(log))
    shell.run_line_magic("docker", f"logs -f {c.name}")
    ended = time.monotonic()
    text = "".join(t for _, t in log)
    assert text.split() == ["first", "second"]
    first_at = next(t for t, text in log if "first" in text)
    assert ended - first_at > 1.0, "the first line arrived only at the end: not followed live"
    assert state(docker_client, c.name)["Status"] == "exited"


def test_logs_follow_ends_cleanly_on_interrupt(shell, docker_client, capsys):
    c = make_container(docker_client, ["bash", "-c", "while true; do echo tick; sleep 0.2; done"])
    following = threading.Event()

    class Watch:  # interrupt once the logs are really streaming, however loaded the machine is
        seen = ""

        def write(self, text):
            self.seen += text
            if self.seen.count("tick") >= 3:
                following.set()
            return len(text)

        def flush(self):
            pass

    def interrupt():
        if following.wait(60):
            os.kill(os.getpid(), signal.SIGINT)
        else:  # never streamed: end the follow so the test fails instead of hanging
            c.kill()

    watch, old = Watch(), sys.stdout
    timer = threading.Thread(target=interrupt)
    sys.stdout = watch
    timer.start()
    try:
        result = shell.run_line_magic("docker", f"logs -f {c.name}")  # returns, no traceback
    finally:
        sys.stdout = old
        timer.join()
    got = capsys.readouterr()
    assert result is None
    assert "tick" in watch.seen
    assert f"stopped following the logs of {c.name}" in got.err
    assert state(docker_client, c.name)["Running"], "following must not stop the container"


# -- exec ----------------------------------------------------------------------------------------
def test_exec_streams_output_and_raises_on_nonzero_exit(shell, docker_client, capsys):
    c = make_container(docker_client)
    shell.run_line_magic("docker", f"exec -e GREETING=hi {c.name} bash -c 'echo $GREETING; pwd'")
    assert capsys.readouterr().out.split() == ["hi", "/"]
    shell.run_line_magic("docker", f"exec -w /tmp {c.name} pwd")
    assert capsys.readouterr().out.strip() == "/tmp"

    with pytest.raises(errors.ExecFailed) as info:
        shell.run_line_magic("docker", f"exec {c.name} bash -c 'echo bad news >&2; exit 3'")
    assert isinstance(info.value, errors.CellFailed)
    assert info.value.exit_code == 3 and "bad news" in info.value.stderr_tail
    assert one_line(info.value).startswith("ExecFailed: `bash -c echo bad news >&2; exit 3` in "
                                           f"container {c.name} exited with code 3")

    with pytest.raises(errors.ExecFailed) as info:
        shell.run_line_magic("docker", f"exec {c.name} no-such-command")
    assert "not on the container's PATH" in str(info.value)


def test_exec_in_a_stopped_container_says_to_start_it(shell, docker_client):
    c = make_container(docker_client, start=False)
    with pytest.raises(errors.EngineError) as info:
        shell.run_line_magic("docker", f"exec {c.name} true")
    assert "%docker start" in one_line(info.value)


# -- stop / start / restart / rm -------------------------------------------------------------------
def test_stop_start_restart_rm_as_docker_means_them(shell, docker_client, capsys):
    c = make_container(docker_client)
    first_start = state(docker_client, c.name)["StartedAt"]

    shell.run_line_magic("docker", f"start {c.name}")  # already running: left as it is
    assert state(docker_client, c.name)["StartedAt"] == first_start

    shell.run_line_magic("docker", f"restart -t 1 {c.name}")  # running: stopped and started
    st = state(docker_client, c.name)
    assert st["Running"] and st["StartedAt"] != first_start

    shell.run_line_magic("docker", f"stop -t 1 {c.name}")
    assert not state(docker_client, c.name)["Running"]
    shell.run_line_magic("docker", f"start {c.name}")
    assert state(docker_client, c.name)["Running"]

    with pytest.raises(errors.EngineError) as info:
        shell.run_line_magic("docker", f"rm {c.name}")
    assert "rm -f" in one_line(info.value)
    shell.run_line_magic("docker", f"rm -f {c.name}")
    assert not docker_client.containers.list(all=True, filters={"name": c.name})
    assert c.name in capsys.readouterr().out


def test_several_names_go_on_past_a_missing_one(shell, docker_client, capsys):
    a, b = make_container(docker_client), make_container(docker_client)
    with pytest.raises(errors.EngineError) as info:
        shell.run_line_magic("docker", f"stop -t 1 {a.name} no-such-{RUN} {b.name}")
    assert "no such container" in str(info.value)
    assert not state(docker_client, a.name)["Running"]
    assert not state(docker_client, b.name)["Running"]


# -- prune -----------------------------------------------------------------------------------------
def test_prune_asks_then_removes_only_stopped_dockmagic_containers(shell, docker_client,
                                                                   monkeypatch, capsys):
    case = {"dockmagic.case": f"prune-{RUN}"}
    stopped = make_container(docker_client, start=False, labels=case)
    running = make_container(docker_client, labels=case)
    outsider = make_container(docker_client, start=False, managed=False, labels=case)
    scope = f"--filter label=dockmagic.case=prune-{RUN}"

    answers = iter(["n"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    shell.run_line_magic("docker", f"prune {scope}")
    out = capsys.readouterr().out
    assert stopped.name in out and running.name not in out and "nothing removed" in out
    assert docker_client.containers.list(all=True, filters={"name": stopped.name})

    answers = iter(["y"])
    shell.run_line_magic("docker", f"prune {scope}")
    assert not docker_client.containers.list(all=True, filters={"name": stopped.name})
    assert state(docker_client, running.name)["Running"]
    assert docker_client.containers.list(all=True, filters={"name": outsider.name})


def test_prune_without_a_frontend_to_answer_says_use_f(shell, docker_client, monkeypatch):
    make_container(docker_client, start=False, labels={"dockmagic.case": f"noask-{RUN}"})

    def no_stdin(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_stdin)
    with pytest.raises(UsageError, match=r"prune -f"):
        shell.run_line_magic("docker", f"prune --filter label=dockmagic.case=noask-{RUN}")
    shell.run_line_magic("docker", f"prune -f --filter label=dockmagic.case=noask-{RUN}")
    assert not docker_client.containers.list(
        all=True, filters={"label": f"dockmagic.case=noask-{RUN}"})


def test_orphans_are_reported_at_load_and_pruned_only_on_request(shell, docker_client, capsys):
    case = {"dockmagic.case": f"orphans-{RUN}"}
    host = socket.gethostname()
    dead = f"{host}:{dead_pid()}:{int(time.time())}"
    orphan = make_container(docker_client, labels={**case, "dockmagic.kernel": dead})
    mine = make_container(docker_client, labels=case)  # this (live) kernel's
    foreign = make_container(docker_client, labels={**case, "dockmagic.kernel": f"far-{RUN}:1:1"})

    message = lifecycle.report_orphans()
    assert message is not None and "prune --orphans" in message and "\n" not in message
    orphans = {e["Id"] for e in lifecycle.query_orphans()}
    assert orphan.id in orphans and mine.id not in orphans and foreign.id not in orphans
    assert state(docker_client, orphan.name)["Running"], "reporting must never remove"

    scope = f"--filter label=dockmagic.case=orphans-{RUN}"
    shell.run_line_magic("docker", f"prune -f {scope}")  # running orphans are not "stopped"
    assert state(docker_client, orphan.name)["Running"]
    shell.run_line_magic("docker", f"prune -f --orphans {scope}")
    assert not docker_client.containers.list(all=True, filters={"name": orphan.name})
    assert state(docker_client, mine.name)["Running"]
    assert state(docker_client, foreign.name)["Running"]


# -- commit / tag / push / pull --------------------------------------------------------------------
def test_commit_tag_push_pull_round_trip(shell, docker_client, registry, capsys, tmp_path,
                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"dm-lc-commit-{RUN}"
    shell.run_cell_magic("docker", f"-d --name {name} -l {TEST_LABEL}={TEST_VALUE} "
                                   "-l user.note=kept --as-root "
                                   f"{BASE_IMAGE} bash", f"echo {RUN} > /marker\n")
    assert wait_for(lambda: state(docker_client, name)["Status"] == "exited")
    assert state(docker_client, name)["ExitCode"] == 0

    local = f"{LOCAL_REPO}/committed:{RUN}"
    remote = f"{registry}/dm/test:{RUN}"
    shell.run_line_magic("docker", f"commit -m 'with a marker' -a 'Ada <ada@example.org>' "
                                   f"{name} {local}")
    image = docker_client.api.inspect_image(local)
    assert image["Comment"] == "with a marker" and image["Author"] == "Ada <ada@example.org>"
    config = image["Config"]
    base = docker_client.api.inspect_image(BASE_IMAGE)["Config"]
    # dockmagic's plumbing is not baked in: the source image's command, and blank labels.
    assert (config["Entrypoint"] or None) == (base["Entrypoint"] or None)
    assert config["Cmd"] == base["Cmd"]
    assert config["Labels"]["dockmagic.managed"] == ""
    assert config["Labels"]["dockmagic.kernel"] == ""
    assert config["Labels"]["user.note"] == "kept"  # the user's own label stays

    shell.run_line_magic("docker", f"tag {local} {remote}")
    capsys.readouterr()
    shell.run_line_magic("docker", f"push {remote}")
    out = capsys.readouterr().out
    assert "Pushed" in out and f"pushed {remote} (sha256:" in out

    shell.run_line_magic("docker", f"rmi {remote} {local}")
    assert not docker_client.images.list(name=f"{registry}/dm/test")
    shell.run_line_magic("docker", f"pull {remote}")
    out = capsys.readouterr().out
    assert "Pull complete" in out or "Already exists" in out
    assert f"pulled {remote}" in out

    shell.run_cell_magic("docker", f"-l {TEST_LABEL}={TEST_VALUE} {remote} bash", "cat /marker\n")
    assert capsys.readouterr().out.strip() == RUN


def test_push_and_pull_failures_are_one_line_with_the_fix(shell, registry):
    cases = [
        ("push", f"{registry}/dm/not-local:{RUN}", "tag one first"),
        ("pull", f"{registry}/dm/not-there:{RUN}", "check the name and tag"),
        ("pull", "127.0.0.1:1/dm/x:1",
         "127.0.0.1 refused the connection: is the registry running?"),
    ]
    for action, ref, fix in cases:
        with pytest.raises(errors.EngineError) as info:
            shell.run_line_magic("docker", f"{action} {ref}")
        line = one_line(info.value)
        assert line.startswith(f"EngineError: {action} {ref} failed: ") and fix in line
        assert "\n" not in str(info.value)


# -- %%dockerfile ----------------------------------------------------------------------------------
def test_dockerfile_builds_an_image_that_a_docker_cell_runs(shell, docker_client, capsys,
                                                            tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tag = f"{LOCAL_REPO}/built:{RUN}"
    shell.run_cell_magic("dockerfile", f"-t {tag} --build-arg WORD={RUN}",
                         f"FROM {BASE_IMAGE}\nARG WORD\nRUN echo built-$WORD > /built.txt\n"
                         "ENV FROM_BUILD=yes\n")
    out = capsys.readouterr().out
    assert "Step 1/4 : FROM" in out and "Step 3/4 : RUN" in out  # the build log, streamed
    assert f"built {tag} (sha256:" in out
    shell.run_cell_magic("docker", f"-l {TEST_LABEL}={TEST_VALUE} {tag} bash",
                         "cat /built.txt; echo $FROM_BUILD\n")
    assert capsys.readouterr().out.split() == [f"built-{RUN}", "yes"]


def test_dockerfile_failure_names_the_step_and_leaves_no_container(shell, docker_client):
    before = {c["Id"] for c in docker_client.api.containers(all=True)}
    with pytest.raises(errors.BuildFailed) as info:
        shell.run_cell_magic("dockerfile", f"-t {LOCAL_REPO}/broken:{RUN}",
                             f"FROM {BASE_IMAGE}\nRUN echo fine\nRUN exit 7\n")
    line = one_line(info.value)
    assert "failed at step 3/3 (RUN exit 7)" in line and "returned a non-zero code: 7" in line
    leftovers = [c for c in docker_client.api.containers(all=True)
                 if c["Id"] not in before and c["Image"].startswith("sha256:")]
    assert leftovers == [], "an intermediate build container was left (want --force-rm)"

    with pytest.raises(errors.BuildFailed, match="fix the Dockerfile"):
        shell.run_cell_magic("dockerfile", f"-t {LOCAL_REPO}/broken:{RUN}",
                             f"FROM {BASE_IMAGE}\nNOT-AN-INSTRUCTION x\n")


def test_dockerfile_context_is_empty_unless_named(shell, docker_client, tmp_path, capsys):
    (tmp_path / "payload.txt").write_text(f"payload {RUN}\n")
    (tmp_path / "secret.txt").write_text("keep out\n")
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")  # replaced by the cell body
    body = f"FROM {BASE_IMAGE}\nCOPY . /ctx/\n"
    tag = f"{LOCAL_REPO}/context:{RUN}"
    with pytest.raises(errors.BuildFailed) as info:
        shell.run_cell_magic("dockerfile", f"-t {tag}", f"FROM {BASE_IMAGE}\nCOPY payload.txt /\n")
    assert "%%dockerfile -t NAME:TAG ." in str(info.value)

    shell.run_cell_magic("dockerfile", f"-t {tag} -f Dockerfile.cell {tmp_path}", body)
    out = docker_client.containers.run(tag, ["bash", "-c", "ls -A /ctx; cat /ctx/payload.txt"],
                                       remove=True, labels={TEST_LABEL: TEST_VALUE})
    listing = out.decode().split()
    assert "payload.txt" in listing and "secret.txt" not in listing
    assert "Dockerfile.cell" in listing and RUN in listing


# -- usage errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("line, fix", [
    ("ps --bogus", "unrecognized arguments: --bogus"),
    ("logs", "required: NAME"),
    ("logs --tail many x", "'many' is not a whole number"),
    ("exec", "required: NAME"),
    ("exec some-container", "name the command to run"),
    ("exec -e NOEQUALS c true", "KEY=VALUE"),
    ("stop", "required: NAME"),
    ("stop -t soon c", "not a whole number"),
    ("commit", "required: NAME"),
    ("tag only-one", "required: TARGET"),
    ("push", "required: REPO[:TAG]"),
    ("prune --filter name=x", "only label=KEY"),
])
def test_mistakes_are_one_line_usage_errors(shell, line, fix):
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("docker", line)
    assert fix in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("line, body, fix", [
    ("", "FROM x\n", "required: -t/--tag"),
    ("-t x:1", "   \n", "the cell is empty"),
    ("-t x:1 /no/such/folder", "FROM x\n", "is not a folder"),
    ("-t x:1 -f sub/Dockerfile", "FROM x\n", "plain file name"),
    ("-t x:1 --build-arg NOVALUE", "FROM x\n", "is not KEY=VALUE"),
])
def test_dockerfile_mistakes_are_usage_errors(shell, line, body, fix):
    with pytest.raises(UsageError, match=fix):
        shell.run_cell_magic("dockerfile", line, body)


def test_help_prints_and_does_nothing_else(shell, capsys):
    assert shell.run_line_magic("docker", "prune --help") is None
    out = capsys.readouterr().out
    assert "usage: %docker prune" in out and "--orphans" in out


def test_no_engine_is_one_line_naming_the_address(shell, monkeypatch):
    from dockmagic import runner

    monkeypatch.setenv("DOCKER_HOST", f"unix:///tmp/no-engine-{RUN}.sock")
    engines.reset()
    try:
        for line in ("ps", "logs x", "pull localhost:5000/x:1"):
            with pytest.raises(errors.EngineUnavailable) as info:
                shell.run_line_magic("docker", line)
            assert f"no-engine-{RUN}.sock" in one_line(info.value)
    finally:
        monkeypatch.undo()
        engines.reset()
