"""The live panel's widgets and refresher, through a real IPython shell and a real kernel
(nbclient), against the real engine. Buttons are clicked with ``Button.click()``."""
import json
import os
import time
import uuid

import nbformat
import pytest

import dockmagic.engine as engines
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient

import dockmagic
from dockmagic import panel as panel_mod
from dockmagic import runner
from dockmagic.nvml import GpuSnapshot, snapshot_from_record
from dockmagic.panel import Panel, close_all, show_panel
from conftest import BASE_IMAGE, FIXTURES, remove_labelled

pytestmark = pytest.mark.engine

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KERNEL = f"test-panel:{os.getpid()}:{uuid.uuid4().hex[:8]}"
TEST_LABEL = "dockmagic.test=panel-widget"
# Exits within a second of SIGTERM (a plain `sleep` as PID 1 would wait out docker's 10 s).
JOB = ["sh", "-c", "echo hello-from-job; trap 'exit 0' TERM; while :; do sleep 0.2; done"]

with open(os.path.join(FIXTURES, "nvml-8gpu-mixed.json")) as f:
    MIXED = snapshot_from_record(json.load(f)["snapshots"][0])


@pytest.fixture
def jobs(docker_client, shell):
    """Start test containers: ``jobs(managed=True, **labels)``; all removed afterwards."""
    made = []

    def start(managed=True, command=JOB, **labels):
        base = {"dockmagic.test": "panel-widget"}
        if managed:
            base.update({"dockmagic.managed": "1", "dockmagic.kernel": KERNEL,
                         "dockmagic.notebook": "/tmp/panel-test.ipynb", "dockmagic.cell": "5",
                         "dockmagic.kind": "detached"})
        c = docker_client.containers.run(BASE_IMAGE, command, detach=True,
                                         labels={**base, **labels})
        made.append(c)
        return c

    yield start
    remove_labelled(docker_client, TEST_LABEL)


@pytest.fixture
def panels():
    made = []

    def make(**kw):
        kw.setdefault("kernel", KERNEL)
        kw.setdefault("notebook", "")
        kw.setdefault("scope", "notebook")
        kw.setdefault("query_gpus", lambda: GpuSnapshot(error="no NVIDIA driver found (test)"))
        p = Panel(**kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def wait_for(cond, timeout=15.0, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status(client, c):
    try:
        return client.api.inspect_container(c.id)["State"]["Status"]
    except Exception:
        return "gone"


def row_of(p, c):
    return next((r for r in p.state.rows if r.id == c.id), None)


def view_of(p, c):
    return p._rows.get(c.id)


# -- listing -----------------------------------------------------------------------------------

def test_next_refresh_lists_a_started_container(panels, jobs):
    p = panels(autostart=False)
    before = p.refresh()
    assert before.engine_error is None
    job = jobs()
    assert row_of(p, job) is None
    p.refresh()
    row = row_of(p, job)
    assert row is not None and row.state == "running" and row.name == job.name
    view = view_of(p, job)
    assert view.box in p.rows_w.children
    assert job.name in view.cells.value and "dm-s-running" in view.cells.value
    assert not view.buttons["stop"].disabled


def test_refresher_thread_lists_it_and_the_stop_button_stops_it(panels, jobs, docker_client):
    p = panels(interval=0.3)
    assert p._thread.is_alive() and p._thread.daemon
    job = jobs()
    view = wait_for(lambda: view_of(p, job), what="the row to appear")
    # inspect and stats arrive from the workers: GPUs and uptime fill in on a later tick
    wait_for(lambda: row_of(p, job).gpus == "" and row_of(p, job).uptime is not None,
             what="inspect results")
    view.buttons["stop"].click()          # the handler returns at once; the stop runs aside
    assert "stopping…" in view.cells.value and view.buttons["stop"].disabled
    wait_for(lambda: status(docker_client, job) == "exited", what="the engine to stop it")
    wait_for(lambda: (row_of(p, job) or job).state == "exited"
             and "dm-s-exited" in view_of(p, job).cells.value, what="the row to update")
    assert view_of(p, job).buttons["stop"].disabled
    assert f"stopped {job.name}" in p.notice_w.value
    thread, workers = p._thread, p._fetcher._threads
    p.close()
    assert not thread.is_alive()
    wait_for(lambda: not any(w.is_alive() for w in workers), what="the workers to end")


def test_stats_show_cpu_and_memory(panels, jobs):
    busy = jobs(command=["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"])
    p = panels(interval=0.25)
    row = wait_for(lambda: (r := row_of(p, busy)) and r.cpu is not None and r.cpu > 5 and r,
                   what="CPU % from two stats samples")
    assert row.mem_used and row.mem_limit


def test_a_container_dockmagic_did_not_start_asks_first(panels, jobs, docker_client):
    foreign = jobs(managed=False)
    p = panels(autostart=False, scope="all")
    p.refresh()
    view_of(p, foreign).buttons["stop"].click()
    assert p.prompt_w.layout.display is None  # the prompt shows
    assert foreign.name in p.prompt_msg.value and "not started by dockmagic" in p.prompt_msg.value
    time.sleep(0.5)
    assert status(docker_client, foreign) == "running"
    p.prompt_cancel.click()
    assert p.prompt_w.layout.display == "none"
    time.sleep(0.3)
    assert status(docker_client, foreign) == "running"
    view_of(p, foreign).buttons["stop"].click()
    p.prompt_ok.click()
    wait_for(lambda: status(docker_client, foreign) == "exited", what="the stop")


def test_remove_running_asks_and_prune_removes_stopped(panels, jobs, docker_client):
    running = jobs()
    done = [jobs(command=["true"]) for _ in range(2)]
    for c in done:
        c.wait(timeout=30)
    p = panels(autostart=False)
    p.refresh()
    assert p.prune_w.description == "prune stopped (2)" and not p.prune_w.disabled
    view_of(p, running).buttons["remove"].click()           # running: force-remove asks
    assert "force-remove running" in p.prompt_msg.value
    p.prompt_ok.click()
    wait_for(lambda: status(docker_client, running) == "gone", what="the removal")
    p.prune_w.click()
    assert "remove 2 stopped dockmagic containers" in p.prompt_msg.value
    p.prompt_ok.click()
    wait_for(lambda: all(status(docker_client, c) == "gone" for c in done), what="the prune")
    p.refresh()
    assert p.state.rows == () and p.prune_w.disabled
    assert "no containers (this notebook)" in p.more_w.value


def test_logs_button_shows_the_last_lines(panels, jobs):
    job = jobs()
    p = panels(autostart=False)
    wait_for(lambda: b"hello-from-job" in job.logs(), what="the job's output")
    p.refresh()
    view_of(p, job).buttons["logs"].click()
    wait_for(lambda: "hello-from-job" in p.logs_body.value, what="the logs")
    assert p.logs_w.layout.display is None and job.name in p.logs_title.value
    p.logs_close.click()
    assert p.logs_w.layout.display == "none"


def test_logs_pane_opens_under_its_row_and_follows_until_closed(panels, jobs):
    """The pane sits right under the row it belongs to, shows the newest lines, keeps
    following what the container prints on later refreshes, and is gone once closed."""
    ticker = ["sh", "-c", "i=0; trap 'exit 0' TERM; "
                          "while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
    first, job, last = jobs(), jobs(command=ticker), jobs()
    p = panels(autostart=False)
    p.refresh()
    wait_for(lambda: b"tick 2" in job.logs(), what="the job's first ticks")
    view_of(p, job).buttons["logs"].click()
    wait_for(lambda: "tick 2" in p.logs_body.value, what="the logs")
    children = p.rows_w.children
    assert children.index(p.logs_w) == children.index(view_of(p, job).box) + 1
    assert "dm-logs-open" in view_of(p, job).box._dom_classes
    shown = p.logs_body.value

    def newest(value):
        return max(int(n) for n in __import__("re").findall(r"tick (\d+)", value))

    # later ticks: the refresher reads the logs again on a worker; the pane follows
    def followed():
        p.refresh()
        return newest(p.logs_body.value) > newest(shown) + 5
    wait_for(followed, timeout=20, step=0.3, what="the pane to follow new output")
    assert p.logs_body.value.index("tick 3") < p.logs_body.value.rindex("tick")  # oldest first
    assert "dm-logscroll" in p.logs_body.value  # the scroll box that keeps the end in view
    assert p.logs_close.description == "close" and "stops following" in p.logs_close.tooltip
    p.logs_close.click()
    assert p.logs_w not in p.rows_w.children and p.logs_w.layout.display == "none"
    assert "dm-logs-open" not in view_of(p, job).box._dom_classes
    value = p.logs_body.value
    time.sleep(0.5)
    p.refresh()
    time.sleep(0.5)
    assert p.logs_body.value == value  # closed: no longer followed
    assert {first.id, last.id} <= set(p._rows)


def test_spare_is_marked_and_not_counted_as_running(panels, jobs):
    job, spare = jobs(), jobs(**{"dockmagic.kind": "spare"})
    p = panels(autostart=False)
    p.refresh()
    rows = {r.id: r for r in p.state.rows}
    assert rows[spare.id].spare and not rows[job.id].spare
    assert p.state.running == 1 and p.state.spares == 1
    assert "1 running" in p.status_w.value and "1 spare" in p.status_w.value
    assert "dm-s-spare" in view_of(p, spare).cells.value
    assert "dm-spare" in view_of(p, spare).box._dom_classes


def test_row_actions_are_labelled_and_restart_is_not_refresh(panels, jobs):
    job = jobs()
    p = panels(autostart=False)
    p.refresh()
    buttons = view_of(p, job).buttons
    assert all(b.tooltip for b in buttons.values())
    assert buttons["restart"].icon != p.refresh_w.icon
    assert "restart" in buttons["restart"].tooltip and "refresh" in p.refresh_w.tooltip


def test_row_shows_short_id_with_copy_and_memory_against_the_limit(panels, jobs):
    job = jobs()
    p = panels(autostart=False, interval=0.2)
    p.refresh()
    wait_for(lambda: (p.refresh(), (row_of(p, job) or None) and row_of(p, job).mem_limit)[1],
             timeout=20, step=0.3, what="a stats sample")
    cells = view_of(p, job).cells.value
    assert f">{job.id[:12]} ❐<" in cells and f"writeText('{job.id}')" in cells
    row = row_of(p, job)
    assert panel_mod.fmt_bytes(row.mem_limit) in cells and "limit" in cells


def test_gpu_history_survives_showing_the_panel_again(panels):
    """Re-running `%docker panel` makes a new Panel; the sparklines keep the last minute."""
    first = panels(autostart=False, query_gpus=lambda: MIXED)
    for _ in range(3):
        first.refresh()
    had = len(first.state.cards[0].history)
    first.close()
    again = panels(autostart=False, query_gpus=lambda: MIXED)
    again.refresh()
    assert had >= 3 and len(again.state.cards[0].history) == had + 1


def test_commit_asks_for_repo_tag_and_makes_the_image(panels, jobs, docker_client):
    job = jobs()
    tag = f"dockmagic-test:panel-commit-{uuid.uuid4().hex[:6]}"
    p = panels(autostart=False)
    p.refresh()
    view_of(p, job).buttons["commit"].click()
    assert p.prompt_text.layout.display is None and p.prompt_ok.description == "commit"
    p.prompt_ok.click()                                  # no REPO:TAG given: says so
    wait_for(lambda: "commit needs REPO:TAG" in p.notice_w.value, what="the notice")
    view_of(p, job).buttons["commit"].click()
    p.prompt_text.value = tag
    p.prompt_ok.click()
    try:
        wait_for(lambda: f"as {tag}" in p.notice_w.value, what="the commit")
        image = docker_client.images.get(tag)
        assert "dockmagic panel" in image.attrs["Comment"]
    finally:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:
            pass


def test_engine_down_shows_a_banner_keeps_the_rows_and_recovers(panels, jobs, monkeypatch):
    job = jobs()
    p = panels(interval=0.2)
    wait_for(lambda: row_of(p, job), what="the row")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    engines.reset()
    try:
        wait_for(lambda: p.state.engine_error, what="the banner")
        assert p.banner_w.layout.display is None
        assert "no Docker engine answers at unix:///nonexistent/docker.sock" in p.banner_w.value
        assert "retrying every 0.2 s" in p.banner_w.value
        assert row_of(p, job) is not None  # the last rows seen stay
        time.sleep(0.5)
        assert p._thread.is_alive()        # failing ticks do not end the refresher
    finally:
        monkeypatch.delenv("DOCKER_HOST")
        engines.reset()
    wait_for(lambda: p.state.engine_error is None and p.banner_w.layout.display == "none",
             what="recovery")


def test_a_failing_gpu_reader_never_raises_into_the_notebook(panels, jobs):
    def broken():
        raise RuntimeError("reader bug")

    p = panels(autostart=False, query_gpus=broken)
    state = p.refresh()
    assert "panel refresh failed: RuntimeError: reader bug" in state.engine_error
    assert "reader bug" in p.banner_w.value


def test_gpu_cards_and_history_from_a_recorded_snapshot(panels, jobs):
    p = panels(autostart=False, query_gpus=lambda: MIXED)
    p.refresh()
    # the history is the kernel's (earlier panels in this process may have added to it)
    start = len(p.state.cards[0].history)
    for _ in range(2):
        p.refresh()
    cards = p.cards_w.children
    assert len(cards) == 8
    assert all("<svg" in c.value for c in cards[:7]) and "lost or unreadable" in cards[7].value
    assert [len(c.history) for c in p.state.cards[:7]] == [start + 2] * 7
    assert "NVIDIA driver 580.159.04" in p.gpu_head_w.value


def test_without_a_driver_the_gpu_part_is_one_line(panels, jobs):
    from dockmagic.nvml import query_snapshot
    if not query_snapshot().error:
        pytest.skip("this machine has an NVIDIA driver")
    job = jobs()
    p = panels(autostart=False, query_gpus=query_snapshot)
    p.refresh()
    first = p.gpu_head_w.value
    p.refresh()
    assert p.gpu_head_w.value == first and p.cards_w.children == ()
    assert first.count("NVML") == 2  # the reason, and the whole message with its fix on hover
    assert "nvidia-smi" in first
    assert row_of(p, job) is not None  # the containers part as usual


def test_controls_scope_interval_pause(panels, jobs):
    foreign = jobs(managed=False)
    p = panels(interval=0.2)
    wait_for(lambda: p.state.time, what="a first tick")
    assert row_of(p, foreign) is None
    p.scope_w.value = "all"
    wait_for(lambda: row_of(p, foreign), what="scope all")
    p.pause_w.value = True
    wait_for(lambda: "paused" in p.status_w.value, what="the paused status")
    # the tick that was running when pause was pressed, and the one pause asks for, may
    # still land; after them, nothing
    time.sleep(1.0)
    t = p.state.time
    time.sleep(0.7)
    assert p.state.time == t            # paused: no ticks
    p.pause_w.value = False
    wait_for(lambda: p.state.time > t, what="ticks again")
    p.interval_w.value = 5.0
    assert p.interval == 5.0


def test_max_rows_caps_the_widgets(panels, jobs):
    for _ in range(3):
        jobs(command=["true"])
    p = panels(autostart=False, max_rows=2)
    p.refresh()
    assert len(p.rows_w.children) == 2 and len(p.state.rows) == 3
    assert "1 more not shown" in p.more_w.value


def test_show_panel_replaces_the_previous_and_close_all_stops_them(shell, jobs):
    magics = dockmagic._magics
    first = show_panel(magics, ["--scope", "notebook", "--interval", "0.5"])
    try:
        assert first.scope == "notebook" and first.interval == 0.5 and first._thread.is_alive()
        second = show_panel(magics, ["--scope=all"])
        assert not first._thread.is_alive() and first._closed
        assert second._thread.is_alive() and second.scope == "all"
        close_all()
        assert not second._thread.is_alive() and not list(panel_mod._live)
    finally:
        close_all()
    from IPython.core.error import UsageError
    with pytest.raises(UsageError, match="--scope"):
        show_panel(None, ["--scope", "mine"])
    with pytest.raises(UsageError, match="--interval"):
        show_panel(None, ["--interval", "0"])


def test_panel_shown_again_leaves_a_note_where_it_went_and_one_refresher(shell, jobs):
    """`%docker panel` in a later cell: the earlier output is not left blank but says, in one
    line, which cell has the live panel now; the earlier refresher has stopped."""
    import threading

    try:
        shell.run_cell("first_panel = %docker panel --scope notebook --interval 0.5",
                       store_history=True)
        first = shell.user_ns["first_panel"]
        wait_for(lambda: first._thread is not None and first._thread.is_alive(),
                 what="the first refresher")
        again = shell.run_cell("second_panel = %docker panel --scope notebook",
                               store_history=True)
        second = shell.user_ns["second_panel"]
        (note,) = first.children
        assert note.value.endswith(f"this panel moved to cell [{again.execution_count}]</div>")
        assert "dm-panel" not in first._dom_classes and "dm-panel" in second._dom_classes
        assert first._closed and not first._thread.is_alive() and second._thread.is_alive()
        assert [t for t in threading.enumerate() if t.name == "dockmagic-panel"] == \
            [second._thread]
        assert note.comm is not None and first.comm is not None  # still shown, not closed
    finally:
        close_all()
    assert first.comm is None and note.comm is None  # closed with the rest at unload


def test_docker_ps_gives_no_bare_cell_number_of_another_kernel(shell, jobs):
    """`%docker ps`: a dockmagic container of another kernel that named no notebook shows
    "other kernel" and no cell number (which would read as this notebook's); this kernel's
    own keeps its cell."""
    from dockmagic.kernel import kernel_id

    other = jobs(**{"dockmagic.notebook": "", "dockmagic.kernel": "elsewhere:1:1",
                    "dockmagic.cell": "5"})
    mine = jobs(**{"dockmagic.notebook": "", "dockmagic.kernel": kernel_id(),
                   "dockmagic.cell": "6"})
    table = shell.run_line_magic("docker", "ps")
    rows = {r[0]: dict(zip(table.columns, r)) for r in table.rows}
    assert (rows[other.name]["NOTEBOOK"], rows[other.name]["CELL"]) == ("other kernel", "")
    assert (rows[mine.name]["NOTEBOOK"], rows[mine.name]["CELL"]) == ("", "6")
    assert "made by another kernel (elsewhere:1:1) in its cell [5]" in table._repr_html_()


def test_panel_starts_without_waiting_for_the_engine(shell, jobs):
    t0 = time.monotonic()
    p = Panel()
    try:
        assert time.monotonic() - t0 < 0.5       # the first tick runs on the thread
        assert p.kernel.split(":")[1] == str(os.getpid())
    finally:
        p.close()


# -- a real kernel -----------------------------------------------------------------------------

def test_notebook_runs_headless_and_leaves_no_container(docker_client, base_image, tmp_path):
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "panel.ipynb"), as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JPY_SESSION_NAME=str(tmp_path / "panel.ipynb"))
    try:
        client.execute(env=env)
        demo = docker_client.containers.list(all=True, filters={"label": "dockmagic.demo=panel"})
        assert len(demo) == 1 and demo[0].status == "running"
        assert demo[0].labels["dockmagic.notebook"] == str(tmp_path / "panel.ipynb")
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", ())]
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for o in outputs)
        assert any(demo[0].name in o.get("data", {}).get("text/plain", "") for o in outputs)
    finally:
        remove_labelled(docker_client, "dockmagic.demo=panel")
    assert docker_client.containers.list(all=True, filters={"label": "dockmagic.demo=panel"}) == []


def test_docker_panel_magic_and_unload_stop_the_refresher(docker_client, base_image):
    """`%docker panel` through the magic; unloading the extension stops its thread."""
    import threading

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    try:
        p = ip.run_line_magic("docker", "panel --scope notebook --interval 0.5")
        assert isinstance(p, Panel)
        import dockmagic
        assert dockmagic.Panel is Panel
        wait_for(lambda: p._thread is not None and p._thread.is_alive(), what="the refresher")
        thread = p._thread
    finally:
        ip.run_line_magic("unload_ext", "dockmagic")
    thread.join(5)
    assert not thread.is_alive()
    assert not any(t is thread for t in threading.enumerate())
