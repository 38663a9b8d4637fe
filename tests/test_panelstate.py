"""dockmagic.panelstate: the panel's pure state builder.

Fed listings, inspect answers and stats captured from the real engine in this module (a few
containers made for it), and the recorded NVML fixtures; no mocks.
"""
import dataclasses
import json
import os
import time
import xml.etree.ElementTree as ET

import docker
import pytest

from dockmagic import panelstate as ps
from dockmagic.gpus import to_text as gpus_to_text
from dockmagic.nvml import ContainerRef, GpuSnapshot, snapshot_from_record
from dockmagic.panel import card_html, row_html, sparkline_svg
from conftest import BASE_IMAGE, FIXTURES, remove_labelled

LABEL = "dockmagic.test=panelstate"
KERNEL = "testhost:4242:1700000000"
NOTEBOOK = "/home/ada/exp/train.ipynb"

with open(os.path.join(FIXTURES, "nvml-h200.json")) as f:
    H200 = {s["label"]: s for s in json.load(f)["snapshots"]}
with open(os.path.join(FIXTURES, "nvml-8gpu-mixed.json")) as f:
    MIXED = json.load(f)["snapshots"][0]
UNDER_LOAD = snapshot_from_record(H200["under_load"])
H200_UUID = UNDER_LOAD.gpus[0].uuid


@pytest.fixture(scope="module")
def captured(docker_client, base_image):
    """A real engine's answers for: this notebook's running job, a dockmagic container created
    with GPUs pinned by UUID and index (never started: no NVIDIA runtime here), another
    notebook's exited one (code 3), and a container dockmagic did not make."""
    api = docker_client.api
    base = {"dockmagic.test": "panelstate"}
    made = {}

    def create(key, labels, command=("sleep", "300"), host_config=None, start=False):
        cid = api.create_container(BASE_IMAGE, list(command), labels={**base, **labels},
                                   host_config=host_config)["Id"]
        made[key] = cid
        if start:
            api.start(cid)
        time.sleep(1.1)  # distinct Created seconds: rows sort newest first
        return cid

    try:
        create("foreign", {}, start=True)
        create("other", {"dockmagic.managed": "1", "dockmagic.notebook": "/other.ipynb",
                         "dockmagic.kernel": "elsewhere:1:1", "dockmagic.cell": "9"},
               command=("sh", "-c", "exit 3"), start=True)
        api.wait(made["other"], timeout=30)
        gpus = api.create_host_config(device_requests=[docker.types.DeviceRequest(
            device_ids=[H200_UUID, "3"], capabilities=[["gpu"]])])
        create("gpus", {"dockmagic.managed": "1", "dockmagic.kernel": KERNEL,
                        "dockmagic.notebook": NOTEBOOK, "dockmagic.cell": "4"}, host_config=gpus)
        create("job", {"dockmagic.managed": "1", "dockmagic.kernel": KERNEL,
                       "dockmagic.notebook": NOTEBOOK, "dockmagic.cell": "7",
                       "dockmagic.kind": "detached"},
               command=("sh", "-c", "while :; do :; done"), start=True)
        first = api.stats(made["job"], stream=False, one_shot=True)
        time.sleep(1.0)
        second = api.stats(made["job"], stream=False, one_shot=True)
        listing = [e for e in api.containers(all=True)
                   if e.get("Labels", {}).get("dockmagic.test") == "panelstate"]
        inspected = {cid: api.inspect_container(cid) for cid in made.values()}
        yield {"ids": made, "listing": listing, "inspected": inspected,
               "stats": (first, second), "now": time.time()}
    finally:
        remove_labelled(docker_client, LABEL)


def state_of(captured, scope="dockmagic", snapshot=UNDER_LOAD, **kw):
    first, second = captured["stats"]
    inspected = {cid: ps.parse_inspect(i) for cid, i in captured["inspected"].items()}
    stats = {captured["ids"]["job"]: ps.with_precpu(second, first)}
    return ps.build_state(captured["listing"], snapshot, stats, scope, NOTEBOOK,
                          captured["now"], kernel=KERNEL, inspected=inspected, **kw)


def names(state):
    return [r.name for r in state.rows]


def row(state, captured, key):
    cid = captured["ids"][key]
    return next(r for r in state.rows if r.id == cid)


# -- scope -------------------------------------------------------------------------------------

def test_scopes_filter_rows_newest_first(captured):
    by_id = {e["Id"]: e["Names"][0][1:] for e in captured["listing"]}
    ids = captured["ids"]
    expect = {
        "notebook": ["job", "gpus"],
        "dockmagic": ["job", "gpus", "other"],
        "all": ["job", "gpus", "other", "foreign"],
    }
    for scope, keys in expect.items():
        assert names(state_of(captured, scope)) == [by_id[ids[k]] for k in keys], scope


def test_notebook_scope_matches_kernel_or_notebook_path(captured):
    listing = captured["listing"]
    by_path = ps.build_state(listing, UNDER_LOAD, scope="notebook", notebook=NOTEBOOK,
                             kernel="not-this-kernel")
    by_kernel = ps.build_state(listing, UNDER_LOAD, scope="notebook", notebook="",
                               kernel=KERNEL)
    neither = ps.build_state(listing, UNDER_LOAD, scope="notebook", notebook="", kernel=None)
    assert len(by_path.rows) == len(by_kernel.rows) == 2
    assert neither.rows == ()


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="notebook, dockmagic, all"):
        ps.build_state([], None, scope="mine")


# -- rows --------------------------------------------------------------------------------------

def test_running_job_row(captured):
    state = state_of(captured)
    job = row(state, captured, "job")
    assert (job.state, job.managed, job.notebook, job.cell, job.kind) == (
        "running", True, NOTEBOOK, "7", "detached")
    assert job.image == BASE_IMAGE and job.gpus == ""
    assert job.kernel == KERNEL and job.status.startswith("Up ")  # `%docker ps` shows these
    assert 0 < job.uptime < 120
    assert job.cpu is not None and job.cpu > 20  # a busy loop for a second between samples
    assert job.mem_used and job.mem_limit and job.mem_used < job.mem_limit
    cells = dict(zip(ps.COLUMNS, ps.to_cells(job)))
    assert cells["NOTEBOOK"] == "train.ipynb" and cells["CELL"] == "7"
    assert cells["GPUS"] == "-" and cells["STATE"] == "running"


def test_gpu_assignment_comes_from_inspect_with_uuids_as_indices(captured):
    state = state_of(captured)
    gpus = row(state, captured, "gpus")
    assert gpus.state == "created" and gpus.uptime is None and gpus.cpu is None
    assert gpus.gpus == "0,3"  # UUID of GPU 0 in the snapshot, then index 3 as given
    no_driver = state_of(captured, snapshot=GpuSnapshot(error="no NVIDIA driver"))
    assert row(no_driver, captured, "gpus").gpus == f"{H200_UUID[:12]},3"


def test_rows_without_inspect_say_gpus_unknown(captured):
    state = ps.build_state(captured["listing"], UNDER_LOAD, scope="all")
    assert all(r.gpus is None and r.uptime is None for r in state.rows)
    assert {ps.to_gpus_text(r) for r in state.rows} == {"…"}


def test_exited_row_keeps_its_exit_code(captured):
    other = row(state_of(captured), captured, "other")
    assert other.state == "exited" and other.exit_code == 3 and other.stopped
    assert ps.to_state_text(other) == "exited (3)"
    assert 'dm-s-failed' in row_html(other)


def test_foreign_container_shows_no_notebook(captured):
    foreign = row(state_of(captured, "all"), captured, "foreign")
    assert not foreign.managed and foreign.notebook is None and foreign.cell is None
    assert foreign.kernel is None
    assert ps.to_cells(foreign)[7:] == ("", "")


def test_prunable_is_dockmagic_stopped_only(captured):
    state = state_of(captured, "all")
    by_id = {r.id: r for r in state.prunable}
    assert set(by_id) == {captured["ids"]["other"], captured["ids"]["gpus"]}


def test_text_table_agrees_with_rows(captured):
    state = state_of(captured, "all")
    text = ps.to_text(state)
    lines = text.splitlines()
    assert lines[0].split() == list(ps.COLUMNS)
    for r, line in zip(state.rows, lines[1:]):
        assert line.startswith(r.name)
        assert ps.to_state_text(r).split()[0] in line
    assert gpus_to_text(UNDER_LOAD) in text  # the GPU part is %gpus's own table


def test_blanked_managed_label_is_not_dockmagics(captured):
    """An image committed from a dockmagic container carries ``dockmagic.managed=""``: a
    container run from it is someone else's, in the panel as in `%docker ps` (`=1` filter)."""
    entry = dict(next(e for e in captured["listing"] if e["Id"] == captured["ids"]["gpus"]))
    entry["Labels"] = {**entry["Labels"], "dockmagic.managed": ""}
    assert ps.build_state([entry], UNDER_LOAD, scope="dockmagic").rows == ()
    (r,) = ps.build_state([entry], UNDER_LOAD, scope="all").rows
    assert not r.managed and r.notebook is None and r.cell is None and r.kernel is None


def test_another_kernels_cell_without_its_notebook_is_not_a_bare_number(captured):
    """A dockmagic container of another kernel that named no notebook: its cell number would
    read as this notebook's cell, so the notebook column says "other kernel" and the cell
    column is empty (the kernel and its cell are on hover); this kernel's own keeps [N]."""
    entry = dict(next(e for e in captured["listing"] if e["Id"] == captured["ids"]["other"]))
    entry["Labels"] = {k: v for k, v in entry["Labels"].items() if k != "dockmagic.notebook"}
    (r,) = ps.build_state([entry], UNDER_LOAD, scope="dockmagic", kernel=KERNEL).rows
    assert r.cell == "9" and not r.this_kernel and not r.cell_known
    cells = dict(zip(ps.COLUMNS, ps.to_cells(r)))
    assert (cells["NOTEBOOK"], cells["CELL"]) == ("other kernel", "")
    page = row_html(r)
    assert "[9]" not in page.replace("cell [9]", "")  # only inside the hover text
    assert 'title="made by another kernel (elsewhere:1:1) in its cell [9]; that kernel did ' \
           'not name its notebook"' in page
    # the same container made by this kernel: its cell number is this notebook's
    (mine,) = ps.build_state([entry], UNDER_LOAD, scope="dockmagic",
                             kernel="elsewhere:1:1").rows
    assert mine.this_kernel and ps.to_cells(mine)[7:] == ("", "9")
    assert '<span class="dm-c dm-cell" title="this kernel (its notebook is not known), ' \
           'cell [9]">[9]</span>' in row_html(mine)
    # with its notebook named, another kernel's cell is shown with it
    named = row(state_of(captured), captured, "other")
    assert ps.to_cells(named)[7:] == ("other.ipynb", "9")


def test_row_html_escapes_what_the_engine_says():
    r = ps.ContainerRow(id="x" * 64, name="<b>x</b>", image='img"><script>', state="running",
                        status="Up 1 second", managed=True, notebook="<nb>", cell="1")
    out = row_html(r)
    assert "<script>" not in out and "&lt;b&gt;x&lt;/b&gt;" in out
    ET.fromstring(out)  # well-formed
    assert "stopping…" in row_html(r, note="stopping…")


# -- what inspect adds -------------------------------------------------------------------------

def test_parse_inspect_of_real_answers(captured):
    got = {k: ps.parse_inspect(captured["inspected"][cid]) for k, cid in captured["ids"].items()}
    assert got["gpus"].gpu_requests == ((0, (H200_UUID, "3")),)
    assert got["gpus"].started_at is None and got["gpus"].state == "created"
    assert got["job"].gpu_requests == () and got["job"].state == "running"
    assert abs(got["job"].started_at - captured["now"]) < 120


@pytest.mark.parametrize("text, want", [
    ("2024-05-01T10:00:00Z", 1714557600.0),
    ("2024-05-01T10:00:00.123456789Z", 1714557600.123456),
    ("2024-05-01T12:00:00.5+02:00", 1714557600.5),
    ("0001-01-01T00:00:00Z", None),
    ("", None), (None, None), ("yesterday", None),
])
def test_parse_docker_time(text, want):
    got = ps.parse_docker_time(text)
    assert got == pytest.approx(want) if want is not None else got is None


@pytest.mark.parametrize("status, bounds", [
    ("Up Less than a second", (0, 1)),
    ("Up 1 second", (1, 2)), ("Up 42 seconds", (42, 43)),
    ("Up About a minute", (60, 120)), ("Up 5 minutes", (300, 360)),
    ("Up About an hour", (1800, 5400)), ("Up 3 hours (healthy)", (9000, 12600)),
    ("Up 2 days", None), ("Exited (0) 3 minutes ago", None), ("Created", None),
])
def test_status_age_bounds(status, bounds):
    assert ps.status_age_bounds(status) == (None if bounds is None else tuple(map(float, bounds)))


def test_ids_to_inspect_new_changed_and_restarted():
    now = 10_000.0
    listing = [
        {"Id": "new", "State": "running", "Status": "Up 2 seconds"},
        {"Id": "same", "State": "running", "Status": "Up 5 minutes"},
        {"Id": "changed", "State": "exited", "Status": "Exited (0) 1 second ago"},
        {"Id": "restarted", "State": "running", "Status": "Up 3 seconds"},
    ]
    cache = {
        "same": ps.Inspected(started_at=now - 320, state="running"),
        "changed": ps.Inspected(started_at=now - 50, state="running"),
        "restarted": ps.Inspected(started_at=now - 600, state="running"),
    }
    assert ps.ids_to_inspect(listing, cache, now) == ("new", "changed", "restarted")


@pytest.mark.parametrize("requests, want", [
    ((), ""),
    (((-1, ()),), "all"),
    (((2, ()),), "any 2"),
    (((0, ("1", "2")),), "1,2"),
    (((0, (H200_UUID,)),), "0"),
    (((0, ("GPU-ffffffff-0000-0000-0000-000000000000",)),), "GPU-ffffffff"),
])
def test_to_gpu_assignment(requests, want):
    assert ps.to_gpu_assignment(requests, UNDER_LOAD) == want


def test_with_precpu_makes_cpu_percent_between_two_samples(captured):
    first, second = captured["stats"]
    assert first["precpu_stats"]["cpu_usage"]["total_usage"] == 0  # one-shot: no precpu
    from dockmagic.lifecycle import cpu_percent
    assert cpu_percent(ps.with_precpu(second, None)) is None
    assert 20 < cpu_percent(ps.with_precpu(second, first)) < 110 * os.cpu_count()


# -- GPUs --------------------------------------------------------------------------------------

def test_history_keeps_the_last_minute_per_gpu():
    snap = snapshot_from_record(MIXED)
    hist = {}
    for t in range(0, 80, 2):
        hist = ps.build_history(hist, snap, 1000.0 + t)
    assert len(hist) == 8
    samples = hist[snap.gpus[0].uuid]
    assert samples[0][0] > 1078 - ps.HISTORY_S and samples[-1][0] == 1078
    assert len(samples) == 30
    assert samples[-1][1] == 100.0 and samples[-1][2] == pytest.approx(
        100 * 7572684800 / 150754820096)
    lost = hist[f"#{snap.gpus[7].index}"] if snap.gpus[7].uuid is None else hist[snap.gpus[7].uuid]
    assert lost[-1][1:] == (None, None)
    two = next(g for g in snap.gpus if g.index == 2)  # memory Not Supported
    assert hist[two.uuid][-1][2] is None
    assert ps.build_history(hist, GpuSnapshot(error="gone"), 2000.0) == {}


def test_cards_for_the_8gpu_fixture(captured):
    snap = snapshot_from_record(MIXED)
    hist = ps.build_history({}, snap, captured["now"] - 2)
    hist = ps.build_history(hist, snap, captured["now"])
    state = state_of(captured, snapshot=snap, history=hist)
    assert [c.info.index for c in state.cards] == list(range(8))
    assert all(len(c.history) == 2 for c in state.cards)
    html7 = card_html(state.cards[7], state.time)
    assert "lost or unreadable" in html7
    html0 = card_html(state.cards[0], state.time)
    ET.fromstring(html0)
    assert "GPU 0" in html0 and "NVIDIA H200" in html0 and "<svg" in html0
    assert "100%" in html0 and "57°C" in html0 and "694 / 700 W" in html0
    # the card and %gpus print the same words for the same GPU
    from dockmagic.gpus import to_text
    text = to_text(snapshot_from_record(MIXED))
    for words in ("694 / 700 W", "7.1 / 140.4 GiB"):
        assert words in html0 and words in text
    html2 = card_html(state.cards[2], state.time)
    assert "N/A" in html2  # memory and power Not Supported on GPU 2


def test_card_names_the_container_of_a_process(captured):
    ref = ContainerRef(id="c" * 64, name="trainer", image=BASE_IMAGE,
                       labels=(("dockmagic.cell", "7"), ("dockmagic.managed", "1"),
                               ("dockmagic.notebook", NOTEBOOK)))
    gpu = UNDER_LOAD.gpus[0]
    procs = tuple(dataclasses.replace(p, container=ref) for p in gpu.processes)
    card = ps.GpuCard(dataclasses.replace(gpu, processes=procs))
    out = card_html(card, UNDER_LOAD.time)
    assert "<b>trainer</b>" in out and "train.ipynb [7]" in out


def test_no_driver_is_one_line_and_no_cards(captured):
    snap = GpuSnapshot(time=1.0, error="no NVIDIA driver found: NVML Shared Library Not Found")
    state = state_of(captured, snapshot=snap)
    assert state.cards == () and state.gpu_error == snap.error
    assert ps.to_gpu_header(snap) == snap.error
    assert ps.to_text(state).endswith(snap.error)
    assert len(state.rows) == 3  # the containers part as usual


def test_sparkline_is_svg_with_gaps_for_missing_readings():
    now = 500.0
    samples = [(now - 70, 10.0, 10.0)]                       # older than the window: dropped
    samples += [(now - 58 + 2 * i, float(i * 3), None if 10 <= i < 14 else 40.0)
                for i in range(30)]
    svg = sparkline_svg(samples, now, width=250)
    root = ET.fromstring(svg)
    lines = [el for el in root if el.tag.endswith("polyline")]
    assert len(lines) == 3  # utilisation in one piece, memory broken by the gap in two
    util = lines[-1].get("points").split()
    assert len(util) == 30 and float(util[-1].split(",")[0]) == pytest.approx(250 - 0.0)
    assert float(util[0].split(",")[0]) == pytest.approx(250 * (1 - 58 / 60), abs=0.05)
    ET.fromstring(sparkline_svg([], now))  # nothing yet: still a valid (empty) picture


@pytest.mark.parametrize("seconds, text", [
    (None, ""), (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h 0m"),
    (3 * 3600 + 12 * 60, "3h 12m"), (2 * 86400 + 4 * 3600 + 5, "2d 4h"),
])
def test_to_duration(seconds, text):
    assert ps.to_duration(seconds) == text


def test_spare_is_marked_and_not_a_running_job(captured):
    """spare.py labels its warm containers dockmagic.kind=spare: not the user's jobs."""
    job = next(e for e in captured["listing"] if e["Id"] == captured["ids"]["job"])
    spare = dict(job, Id="s" * 64, Names=["/warm"],
                 Labels={**job["Labels"], "dockmagic.kind": "spare"})
    spare["Labels"].pop("dockmagic.cell")  # spare.py drops it: no cell made it
    state = ps.build_state([job, spare], UNDER_LOAD, scope="dockmagic", now=captured["now"])
    rows = {r.id: r for r in state.rows}
    assert rows[spare["Id"]].spare and not rows[job["Id"]].spare
    assert (state.running, state.spares) == (1, 1)
    assert ps.to_state_text(rows[spare["Id"]]) == "spare"
    assert "dm-s-spare" in row_html(rows[spare["Id"]])


def test_memory_is_shown_against_the_limit(captured):
    job = row(state_of(captured), captured, "job")
    text = ps.to_mem_text(job)
    used, limit = text.split(" / ")
    assert used.endswith("iB") and limit.endswith("GiB") and job.mem_percent < 100
    out = row_html(job)
    assert f'<span class="dm-memlim"> / {limit}</span>' in out
    assert f"of the {limit} limit" in out and f"{job.id[:12]} ❐" in out
    ET.fromstring(out)
