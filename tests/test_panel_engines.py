"""The panel's per-engine state, pure: rows of every engine with their engine, each engine's
heading and GPU cards (the recorded H200 `nvidia-smi -q -x` for a remote GPU host), and the
line for an engine that does not answer. Plain data in, no engine, no mocks."""
import os

from dockmagic import panelstate as ps
from dockmagic.nvml import GpuSnapshot, snapshot_from_record
from dockmagic.panelgpus import card_html, heading_html
from dockmagic.remote import nvsmi

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fixtures", "nvidia-smi-q-h200.xml")) as f:
    H200_XML = f.read()
NO_DRIVER = GpuSnapshot(time=1.0, error="no NVIDIA driver found: NVML Shared Library Not Found. "
                                        "Install the driver")
KERNEL = "host:1:1"


def entry(cid, name, state="running", created=100, kernel=KERNEL, **labels):
    """One entry of the engine's low-level listing (the keys the panel reads)."""
    return {"Id": cid, "Names": [f"/{name}"], "Image": "img", "State": state,
            "Status": "Up 3 minutes" if state == "running" else "Exited (0) 1 minute ago",
            "Created": created, "Labels": {"dockmagic.managed": "1", "dockmagic.kernel": kernel,
                                           **labels}}


def h200_on_the_rig(now=1000.0):
    snap = snapshot_from_record(nvsmi.record_from_xml(H200_XML, now))
    return snap, ps.build_history(None, snap, now)


def test_row_keys_are_the_id_locally_and_engine_slash_id_elsewhere():
    assert ps.row_key("local", "abc") == "abc"
    assert ps.row_key("rig", "abc") == "rig/abc"
    row = ps.ContainerRow(id="abc", name="n", image="i", state="running", status="", engine="rig")
    assert row.key == "rig/abc"
    assert ps.ContainerRow(id="abc", name="n", image="i", state="running", status="").key == "abc"


def test_rows_of_every_engine_carry_their_engine_and_their_own_reads():
    same = "f" * 64  # one id on two engines: two rows, kept apart
    local = [entry(same, "here", created=200)]
    rig = ps.EngineReading("rig", "ssh://rig", listing=(entry(same, "there", created=300),
                                                       entry("e" * 64, "other", kernel="x:2:2")),
                           listed_at=1000.0)
    inspected = {same: ps.Inspected(started_at=900.0, state="running"),
                 f"rig/{same}": ps.Inspected(started_at=990.0, state="running")}
    state = ps.build_state(local, NO_DRIVER, scope="notebook", kernel=KERNEL, now=1000.0,
                           inspected=inspected, engines=[rig], local_endpoint="unix:///d.sock")
    assert [(r.engine, r.name) for r in state.rows] == [("rig", "there"), ("local", "here")]
    assert [r.key for r in state.rows] == [f"rig/{same}", same]
    assert [r.uptime for r in state.rows] == [10.0, 100.0]  # each engine's own inspect
    assert state.multi_engine and [g.name for g in state.groups] == ["local", "rig"]
    assert [g.running for g in state.groups] == [1, 1]  # the other kernel's is out of scope
    assert state.groups[0].endpoint == "unix:///d.sock" and state.groups[0].reachable


def test_alone_the_local_engine_looks_as_before():
    state = ps.build_state([entry("a" * 64, "job")], NO_DRIVER, now=5.0)
    assert not state.multi_engine and len(state.groups) == 1
    assert state.cards == state.groups[0].cards == ()
    head = heading_html(state.groups[0], multi=False)
    assert head.startswith('<div class="dm-section">GPUs ')
    assert "no NVIDIA driver found: NVML Shared Library Not Found<" in head  # the reason
    assert "ENGINE" not in ps.to_text(state)


def test_a_remote_gpu_host_gets_its_heading_and_cards_from_nvidia_smi_xml():
    snap, history = h200_on_the_rig()
    rig = ps.EngineReading("rig", "ssh://me@gpu1", listing=(), listed_at=1000.0, snapshot=snap,
                           history=history, rtt_ms=0.63, version="26.1.5")
    state = ps.build_state([], NO_DRIVER, now=1000.0, engines=[rig], default_engine="rig")
    local, there = state.groups
    assert local.cards == () and local.gpus_total is None and not local.default
    assert there.default and (there.gpus_free, there.gpus_total) == (1, 1)
    assert len(there.cards) == 1 and there.cards[0].info.name == "NVIDIA H200"
    assert len(there.cards[0].history) == 1
    head = heading_html(there, multi=True)
    assert 'GPUs on <b class="dm-engine-name">rig</b>' in head and "*" in head
    assert "ssh://me@gpu1" in head and "reachable" in head and "GPUs 1/1 free" in head
    assert "NVIDIA driver 580.159.04" in head and "0.6 ms" in head and "0 running" in head
    card = card_html(there.cards[0], 1000.0)
    assert "NVIDIA H200" in card and "<svg" in card
    # the local one, with no driver, says so in its own heading
    local_head = heading_html(local, multi=True)
    assert 'GPUs on <b class="dm-engine-name">local</b>' in local_head
    assert "no GPUs" in local_head and "NVML Shared Library Not Found" in local_head
    assert ps.to_engine_heading(there) == (
        "rig *", "ssh://me@gpu1", "reachable", "GPUs 1/1 free", "0 running", "0.6 ms")


def test_a_gpu_process_makes_the_gpu_busy():
    snap, _ = h200_on_the_rig()
    proc_xml = H200_XML.replace(
        "<processes>\n\t\t</processes>",
        "<processes><process_info><pid>4242</pid><type>C</type><process_name>python"
        "</process_name><used_memory>1024 MiB</used_memory></process_info></processes>")
    busy = snapshot_from_record(nvsmi.record_from_xml(proc_xml, 1.0))
    assert proc_xml != H200_XML and ps.to_gpu_counts(busy) == (0, 1)
    assert ps.to_gpu_counts(snap) == (1, 1)
    assert ps.to_gpu_counts(None) == (None, None) and ps.to_gpu_counts(NO_DRIVER) == (None, None)


def test_engine_status_not_read_failed_and_hung():
    fresh = ps.EngineReading("rig", "ssh://rig")
    assert ps.to_engine_status(fresh, 10.0) == (None, None)
    failed = ps.EngineReading("rig", "ssh://rig", error="engine rig: unreachable within 5 s")
    assert ps.to_engine_status(failed, 10.0) == (False, "engine rig: unreachable within 5 s")
    answered = ps.EngineReading("rig", "ssh://rig", listing=(), listed_at=9.0)
    assert ps.to_engine_status(answered, 10.0) == (True, None)
    # a read in flight: fine within the timeout, "no answer" after it
    busy = ps.EngineReading("rig", "ssh://rig", listing=(), busy_since=5.0)
    assert ps.to_engine_status(busy, 10.0, timeout=10.0) == (True, None)
    assert ps.to_engine_status(busy, 17.0, timeout=10.0) == (False, "no answer for 12 s")
    busy_failed = ps.EngineReading("rig", "", error="refused", busy_since=5.0)
    assert ps.to_engine_status(busy_failed, 17.0) == (False, "no answer for 12 s (before: "
                                                            "refused)")


def test_an_engine_that_does_not_answer_is_one_line_and_keeps_its_last_rows():
    rig = ps.EngineReading("rig", "ssh://rig", listing=(entry("b" * 64, "seen"),),
                           listed_at=50.0, error="engine rig: unreachable within 5 s")
    state = ps.build_state([entry("a" * 64, "here")], NO_DRIVER, now=100.0, engines=[rig])
    assert [(r.engine, r.name) for r in state.rows] == [("local", "here"), ("rig", "seen")]
    problem, = state.engine_problems
    assert problem.name == "rig" and problem.seen_at == 50.0 and problem.cards == ()
    assert ps.to_engine_problem(problem) == (
        "engine rig (ssh://rig) does not answer: engine rig: unreachable within 5 s")
    head = heading_html(problem, multi=True)
    assert "not reachable: engine rig: unreachable within 5 s" in head
    assert ps.to_engine_heading(problem) == ("rig", "ssh://rig", "not reachable")
    text = ps.to_text(state)
    assert text.splitlines()[0] == ps.to_engine_problem(problem)


def test_text_table_has_an_engine_column_and_gpus_per_engine():
    snap, history = h200_on_the_rig()
    rig = ps.EngineReading("rig", "ssh://rig", listing=(entry("b" * 64, "there"),),
                           listed_at=1.0, snapshot=snap, history=history)
    state = ps.build_state([entry("a" * 64, "here", created=50)], NO_DRIVER, now=1000.0,
                           engines=[rig], local_endpoint="unix:///d.sock")
    lines = ps.to_text(state).splitlines()
    assert lines[0].split()[:2] == ["ENGINE", "NAME"]
    assert lines[1].split()[:2] == ["rig", "there"] and lines[2].split()[:2] == ["local", "here"]
    heads = [ln for ln in lines if ln.startswith("engine ")]
    # the notebook's default engine (none set: the local one) is marked *
    assert heads[0].startswith("engine local * · unix:///d.sock · reachable · no GPUs: no "
                               "NVIDIA driver found")
    assert heads[1] == "engine rig · ssh://rig · reachable · GPUs 1/1 free · 1 running"
    assert "NVIDIA H200" in "\n".join(lines)


def test_the_scope_applies_to_every_engine():
    rig = ps.EngineReading("rig", "", listing=(entry("b" * 64, "mine"),
                                               entry("c" * 64, "theirs", kernel="x:1:1")),
                           listed_at=1.0)
    rows = ps.build_state([], NO_DRIVER, scope="notebook", kernel=KERNEL, engines=[rig]).rows
    assert [r.name for r in rows] == ["mine"]
    rows = ps.build_state([], NO_DRIVER, scope="dockmagic", kernel=KERNEL, engines=[rig]).rows
    assert {r.name for r in rows} == {"mine", "theirs"}


def test_gpu_widgets_group_cards_under_each_engine_and_drop_a_removed_engine():
    """The GPU part's widgets (no kernel needed): the local heading and cards stay the panel's
    first two; each other engine gets its heading and cards box, in order; an engine removed
    from engines.toml takes its widgets with it."""
    import ipywidgets as W
    from ipywidgets.widgets.widget_string import HTMLStyle

    from dockmagic.panelgpus import GpuGroups

    snap, history = h200_on_the_rig()
    rig = ps.EngineReading("rig", "ssh://rig", listing=(), listed_at=1.0, snapshot=snap,
                           history=history)
    down = ps.EngineReading("lab", "ssh://lab", error="engine lab: unreachable within 5 s")
    groups = GpuGroups(HTMLStyle(), W.Layout())
    try:
        groups.apply(ps.build_state([], NO_DRIVER, now=1000.0, engines=[rig, down]))
        assert "GPUs on <b" in groups.head.value and "NVML" in groups.head.value
        assert groups.cards.children == ()  # no driver here: no cards
        rig_head, rig_cards, lab_head, lab_cards = groups.others.children
        assert 'data-engine="rig"' in rig_head.value and "GPUs 1/1 free" in rig_head.value
        assert len(rig_cards.children) == 1 and "NVIDIA H200" in rig_cards.children[0].value
        assert "not reachable: engine lab: unreachable within 5 s" in lab_head.value
        assert lab_cards.children == ()
        card = rig_cards.children[0]
        groups.apply(ps.build_state([], NO_DRIVER, now=1002.0, engines=[rig]))
        assert len(groups.others.children) == 2 and groups.others.children[1] is rig_cards
        assert rig_cards.children[0] is card  # the same card widget, updated in place
        groups.apply(ps.build_state([], NO_DRIVER, now=1004.0))  # back to local only
        assert groups.others.children == ()
        assert groups.head.value.startswith('<div class="dm-section">GPUs ')
    finally:
        for w in groups.widgets():
            w.close()
