"""The live panel shows every engine: the local one and the rig (a real engine over SSH).

In a real kernel with the rig added: both engines in the engine column, a container started on
the rig listed under the rig and removed from the rig by its row's remove button, the GPU part
grouped under a heading per engine (no driver here, nvidia-smi missing on the rig). In this
process: an engine that refuses, and one that accepts and never answers, are one line each and
never hold the local engine's rows."""
import json
import os
import socket
import threading
import time

import pytest

from dockmagic.kernel import kernel_id

from conftest import remove_labelled
from kernels import Kernel
from remote_rig import rig_exec

pytestmark = pytest.mark.engine
IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
LABEL = "dockmagic.test=panelng-engines"
KERNEL = kernel_id()  # this process's: its containers are not orphans to other test runs


def rig_ids(label=LABEL):
    """The rig's own view (docker inside the rig, not over SSH): ids of LABEL's containers."""
    out = rig_exec("docker", "ps", "-a", "--no-trunc", "-q", "--filter",
                   f"label={label}").stdout.decode()
    return out.split()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


# What the kernel prints of its panel after a refresh (read back as JSON).
SHOW = r'''
def show():
    st = p.refresh()
    print(json.dumps({
        "rows": [[r.engine, r.id, r.name, r.state, r.key] for r in st.rows],
        "groups": [[g.name, g.endpoint, g.reachable, g.error,
                    g.snapshot.error if g.snapshot else None, len(g.cards)] for g in st.groups],
        "multi": "dm-multi" in p._dom_classes,
        "thead": p.thead_w.children[0].value,
        "row_html": {k: v.cells.value for k, v in p._rows.items()},
        "heads": [p.gpu_head_w.value] + [w.value for w in p.gpus_w.others.children
                                         if hasattr(w, "value")],
        "problems": p.engines_w.value,
        "notice": p.notice_w.value,
    }))
'''


@pytest.fixture
def kernel(rig, tmp_path, docker_client):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    k = Kernel(cwd=tmp_path, env={"XDG_CONFIG_HOME": str(xdg)})
    try:
        yield k
    finally:
        try:
            k.run("p.close()")
        except Exception:
            pass
        k.km.shutdown_kernel(now=True)
        k.kc.stop_channels()
        left = rig_ids()
        if left:
            rig_exec("docker", "rm", "-f", *left, check=False)
        remove_labelled(docker_client, LABEL)


def shown(k):
    res = k.run("show()", timeout=120)
    assert res.status == "ok", res
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_panel_lists_both_engines_and_removes_a_rig_container_from_the_rig(kernel, rig,
                                                                           docker_client):
    k = kernel
    k.run(f"%docker engines add rig ssh://{rig}", check=True)
    # a job on each engine, started as a person would
    here = k.run(f"%%docker -d -l {LABEL} {IMAGE}\nimport time\ntime.sleep(600)\n", check=True)
    there = k.run(f"%%docker -d --engine rig -l {LABEL} {IMAGE}\nimport time\n"
                  "print('hello from the rig', flush=True)\ntime.sleep(600)\n", check=True)
    assert "started" in here.text and "started" in there.text, (here, there)
    rig_job, = wait_for(rig_ids, what="the job on the rig")
    local_job, = [c.id for c in docker_client.containers.list(
        all=True, filters={"label": LABEL})]
    assert rig_job != local_job

    k.run("import json\nfrom dockmagic.panel import Panel\n"
          "p = Panel(scope='notebook', autostart=False)\n" + SHOW, check=True)
    state = shown(k)
    rows = {r[1]: r for r in state["rows"]}
    # the engine column: each job under its own engine
    assert rows[rig_job][0] == "rig" and rows[local_job][0] == "local", state["rows"]
    assert rows[rig_job][4] == f"rig/{rig_job}" and rows[local_job][4] == local_job
    assert {r[0] for r in state["rows"]} == {"local", "rig"}
    assert state["multi"] and ">engine</span>" in state["thead"]
    assert 'class="dm-c dm-engine" title="engine rig">rig</span>' in \
        state["row_html"][f"rig/{rig_job}"]
    assert 'class="dm-c dm-engine" title="engine local">local</span>' in \
        state["row_html"][local_job]
    # GPU cards grouped by engine: a heading per engine, in order, each with its GPU state
    groups = {g[0]: g for g in state["groups"]}
    assert [g[0] for g in state["groups"]] == ["local", "rig"]
    assert groups["rig"][1] == f"ssh://{rig}" and groups["rig"][2] is True
    assert groups["local"][2] is True
    assert "nvidia-smi not found" in groups["rig"][4] and groups["rig"][5] == 0
    assert groups["local"][4] and groups["local"][5] == 0  # no driver on this machine
    local_head, rig_head = state["heads"]
    assert 'GPUs on <b class="dm-engine-name">local</b>' in local_head
    assert "reachable" in local_head and "NVML" in local_head
    assert 'GPUs on <b class="dm-engine-name">rig</b>' in rig_head
    assert f"ssh://{rig}" in rig_head and "reachable" in rig_head and "no GPUs" in rig_head
    assert "no NVIDIA driver there" in rig_head and "1 running" in rig_head
    assert state["problems"] == ""

    # its logs button reads the rig's container (there is no such container here)
    k.run(f"p._rows['rig/{rig_job}'].buttons['logs'].click()", check=True)
    wait_for(lambda: "hello from the rig" in k.run("print(p.logs_body.value)").stdout,
             what="the rig job's logs in the pane")
    assert "logs of " in k.run("print(p.logs_title.value)").stdout

    # its remove button (a running job: the panel asks first) removes it from the rig
    k.run(f"p._rows['rig/{rig_job}'].buttons['remove'].click()\n"
          "print(p.prompt_msg.value)\np.prompt_ok.click()", check=True)
    wait_for(lambda: rig_job not in rig_ids(), what="the rig job's removal, seen in the rig")
    assert docker_client.containers.get(local_job).status == "running"  # the other untouched

    def gone():  # (the action's thread says so just after the engine answered)
        now = shown(k)
        return now if rig_job not in {r[1] for r in now["rows"]} and "removed " in \
            now["notice"] else None

    state = wait_for(gone, what="the row to go")
    assert local_job in {r[1] for r in state["rows"]}
    assert "removed " in state["notice"] and " on rig" in state["notice"], state["notice"]


def test_an_engine_that_refuses_is_one_line_and_the_local_rows_stay(tmp_path, monkeypatch,
                                                                    docker_client, base_image):
    pytest.importorskip("ipywidgets")
    from dockmagic.panel import Panel
    from dockmagic.remote import engines, store, urls

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    store.add_engine(urls.parse_endpoint("gone", "ssh://root@127.0.0.1:1"))
    job = docker_client.containers.run(
        base_image, ["sleep", "300"], detach=True,
        labels={"dockmagic.managed": "1", "dockmagic.kernel": KERNEL, "dockmagic.test":
                "panelng-engines"})
    panel = Panel(scope="notebook", autostart=False, notebook="nb", kernel=KERNEL)
    try:
        t0 = time.monotonic()
        state = panel.refresh()  # by hand, every engine is read once, at once
        took = time.monotonic() - t0
        assert took < 15, took
        assert [r.id for r in state.rows] == [job.id] and state.rows[0].engine == "local"
        gone = state.groups[1]
        assert gone.name == "gone" and gone.reachable is False
        line = panel.engines_w.value
        assert panel.engines_w.layout.display is None
        assert line.count('class="dm-engine-down"') == 1
        assert "engine gone (ssh://root@127.0.0.1:1) does not answer" in line
        assert "unreachable within 5 s" in line  # the reason
        assert "not reachable" in panel.gpus_w.others.children[0].value
    finally:
        panel.close()
        engines.close_all()
        job.remove(force=True)


@pytest.fixture
def silent_engine():
    """A tcp:// address that accepts connections and never answers: a hung engine (real
    sockets, nothing faked above them)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()

    def hang_up():
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        server.close()

    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}", hang_up
    finally:
        hang_up()


def test_an_engine_that_never_answers_does_not_hold_the_refresh(tmp_path, monkeypatch,
                                                                docker_client, base_image,
                                                                silent_engine):
    pytest.importorskip("ipywidgets")
    from dockmagic.panel import Panel
    from dockmagic.remote import engines, store, urls

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    url, hang_up = silent_engine
    store.add_engine(urls.parse_endpoint("hung", url))
    job = docker_client.containers.run(
        base_image, ["sleep", "300"], detach=True,
        labels={"dockmagic.managed": "1", "dockmagic.kernel": KERNEL, "dockmagic.test":
                "panelng-engines"})
    panel = Panel(scope="notebook", interval=0.3, notebook="nb", kernel=KERNEL)
    panel.engine_timeout = 2.0
    try:
        first = wait_for(lambda: panel.state.rows and panel.state.time, what="a first tick")
        assert panel.state.rows[0].id == job.id
        hung = wait_for(lambda: next((g for g in panel.state.groups[1:]
                                      if g.reachable is False), None), timeout=20,
                        what="the hung engine's line")
        assert hung.name == "hung" and hung.error.startswith("no answer for ")
        assert "engine hung (tcp://127.0.0.1:" in panel.engines_w.value
        # meanwhile the local engine's ticks went on at the panel's interval
        ticks = panel.state.time - first
        assert ticks >= 1.5, ticks
        t = panel.state.time
        wait_for(lambda: panel.state.time > t + 0.5, timeout=5, what="more ticks")
    finally:
        panel.close()
        hang_up()  # the engine's client is made under its lock: free it before closing
        engines.close_all()
        job.remove(force=True)
