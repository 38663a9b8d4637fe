"""dockmagic.gpus selection: ``%gpus ARG`` -> a ``docker run --gpus`` value, checked by the CLI.

The 8-GPU fixture is synthetic (see its "synthetic" note): built so that the least-loaded rule
(most free memory, then lowest utilisation, then index) disagrees with every naive order.
"""
import json
import os
import re
import subprocess
import uuid

import pytest

from dockmagic.gpus import (GpuChoiceError, choose_gpus, chosen_indices, describe_choice,
                            format_bytes)
from dockmagic.nvml import GpuSnapshot, snapshot_from_record

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fixtures", "nvml-8gpu-mixed.json")) as f:
    MIXED = snapshot_from_record(json.load(f)["snapshots"][0])
NO_DRIVER = GpuSnapshot(time=1.0, error="no NVIDIA driver found: NVML Shared Library Not Found. "
                                        "Install the NVIDIA driver")
UUID = {g.index: g.uuid for g in MIXED.gpus}


def pinned(*indices):
    return '"device=' + ",".join(UUID[i] for i in indices) + '"'


def first_two(key):
    usable = [g for g in MIXED.gpus if not g.lost]
    return sorted(g.index for g in sorted(usable, key=key)[:2])


def test_auto_2_picks_the_two_least_loaded_gpus():
    assert choose_gpus("auto:2", MIXED) == pinned(3, 6)


def test_fixture_defeats_naive_orders():
    """auto:2 must differ from index order, utilisation-only order and memory-only order."""
    assert first_two(lambda g: g.index) == [0, 1]
    assert first_two(lambda g: (g.util_gpu, g.index)) == [1, 2]
    assert first_two(lambda g: (-(g.free_memory or 0), g.index)) == [3, 5]


@pytest.mark.parametrize("arg, indices", [
    ("auto:1", [6]), ("auto:3", [3, 5, 6]), ("auto:4", [0, 3, 5, 6]),
    ("auto:7", [0, 1, 2, 3, 4, 5, 6]),  # memory unknown (GPU 2) sorts last; lost GPU 7 never
    (" AUTO:2 ", [3, 6]),
])
def test_auto_orders_by_free_memory_then_utilisation_then_index(arg, indices):
    assert choose_gpus(arg, MIXED) == pinned(*indices)


@pytest.mark.parametrize("arg, want", [
    ("all", "all"), ("ALL", "all"),
    ("none", None), ("None", None),
    ("2", "2"), ("1", "1"),  # a bare number is a count, as in docker
    ("0,2", '"device=0,2"'), (" 0 , 2 ", '"device=0,2"'),
    ("device=0,2", '"device=0,2"'), ("device=3", '"device=3"'),
    ('"device=0,2"', '"device=0,2"'),  # docker's own value
    ("'\"device=0,2\"'", '"device=0,2"'),  # pasted from a shell command line
    (UUID[3], f'"device={UUID[3]}"'),
    (f"{UUID[3]},{UUID[6]}", pinned(3, 6)),
])
def test_argument_forms(arg, want):
    assert choose_gpus(arg, MIXED) == want


@pytest.mark.parametrize("arg, message", [
    ("", "accepted: all | none"),
    ("some", "accepted: all | none"),
    ("0", "use `%gpus none`"),
    ("9", "9 GPUs asked for, 8 here"),
    ("device=", "empty GPU id"),
    ("0,,2", "empty GPU id"),
    ("0,x", "'x' is not a GPU index or UUID"),
    ("0,0", "GPU 0 named twice"),
    ("0,9", "no GPU 9 here"),
    ("auto:", "auto:N needs a positive count"),
    ("auto:0", "auto:N needs a positive count"),
    ("auto:two", "auto:N needs a positive count"),
    ("auto:8", "only 7 are usable here"),
])
def test_bad_arguments_raise_one_line(arg, message):
    with pytest.raises(GpuChoiceError, match=message.replace("(", r"\(")) as info:
        choose_gpus(arg, MIXED)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_auto_without_a_driver_says_why():
    with pytest.raises(GpuChoiceError) as info:
        choose_gpus("auto:1", NO_DRIVER)
    assert str(info.value).startswith("auto:1 needs to see the GPUs, but no NVIDIA driver found")
    with pytest.raises(GpuChoiceError, match="no GPU snapshot"):
        choose_gpus("auto:1")


def test_explicit_choices_are_not_checked_without_a_driver():
    # the engine may be elsewhere (DOCKER_HOST); without local readings docker decides
    assert choose_gpus("0,9", NO_DRIVER) == '"device=0,9"'
    assert choose_gpus("16", NO_DRIVER) == "16"
    assert choose_gpus("all", None) == "all"


def test_all_and_none_need_no_snapshot(monkeypatch):
    from dockmagic import gpus, nvml

    def boom():
        raise AssertionError("NVML read for all/none")

    monkeypatch.setattr(nvml, "query_snapshot", boom)
    for arg in ("all", " NONE ", '"all"'):
        assert gpus.snapshot_for_choice(arg) is None
    monkeypatch.setattr(nvml, "query_snapshot", lambda: MIXED)
    assert gpus.snapshot_for_choice("auto:2") is MIXED


@pytest.mark.parametrize("value, line", [
    (None, "next %%docker cells get: no GPUs"),
    ("all", "next %%docker cells get: all GPUs"),
    ("2", "next %%docker cells get: 2 GPUs (any)"),
    ("1", "next %%docker cells get: 1 GPU (any)"),
    ('"device=0,2"', "next %%docker cells get: GPUs 0 and 2"),
    ('"device=0,2,5"', "next %%docker cells get: GPUs 0, 2 and 5"),
    ('"device=3"', "next %%docker cells get: GPU 3"),
])
def test_describe_choice(value, line):
    assert describe_choice(value) == line


def test_describe_choice_shows_pinned_uuids_as_indices():
    assert describe_choice(pinned(3, 6), MIXED) == (
        "next %%docker cells get: GPUs 3 and 6 (pinned by UUID)")
    assert describe_choice(pinned(3, 6)).startswith(
        f"next %%docker cells get: GPUs {UUID[3]} and {UUID[6]}")


def test_auto_choice_says_which_gpus_and_why():
    """auto:2 names GPUs 3 and 6, the rule, each one's free memory and utilisation, and the
    best GPU it left out (GPU 5: more free memory than 6? no: as much, but busier)."""
    value = choose_gpus("auto:2", MIXED)
    lines = describe_choice(value, MIXED, "auto:2").splitlines()
    assert lines[0] == "next %%docker cells get: GPUs 3 and 6 (pinned by UUID)"
    assert lines[1] == "  why: auto:2 ranks by free memory, then utilisation:"
    g = {x.index: x for x in MIXED.gpus}
    runner_up = sorted((x for x in MIXED.gpus if not x.lost), key=lambda x: (
        -(x.free_memory or -1), x.util_gpu, x.index))[2]
    # one GPU a line, its columns aligned; the best left out last, and said so
    want = [(3, ""), (6, ""), (runner_up.index, "  (next best)")]
    for line, (i, note) in zip(lines[2:], want):
        assert re.fullmatch(rf"    GPU {i}  {re.escape(format_bytes(g[i].free_memory))} free"
                            rf" +{g[i].util_gpu}% util{re.escape(note)}", line), line
    assert len({line.index("free") for line in lines[2:]}) == 1
    assert len(lines) == 5


def test_auto_choice_lines_are_short_enough_not_to_wrap():
    """A narrow notebook (1024 px with the file browser open) fits ~60 columns of plain text,
    which JupyterLab breaks anywhere, inside words too: every line of the choice stays under
    it (one long `why:` line was cut as `139.8 GiB f|ree`)."""
    for n in (1, 2, 3):
        said = describe_choice(choose_gpus(f"auto:{n}", MIXED), MIXED, f"auto:{n}")
        assert max(len(line) for line in said.splitlines()) <= 58, said
    # the plain describe (no argument typed) does not invent a reason
    assert "\n" not in describe_choice(choose_gpus("auto:2", MIXED), MIXED)


@pytest.mark.parametrize("value, want", [
    (None, ()), ("2", ()), ("all", (0, 1, 2, 3, 4, 5, 6)),
    ('"device=0,2"', (0, 2)), ('"device=9"', ()),
])
def test_chosen_indices(value, want):
    assert chosen_indices(value, MIXED) == want


def test_chosen_indices_of_a_pinned_choice():
    assert chosen_indices(pinned(3, 6), MIXED) == (3, 6)
    assert chosen_indices(pinned(3, 6), NO_DRIVER) == ()


# ---------------------------------------------------------------------------- the CLI as oracle


@pytest.mark.engine
@pytest.mark.parametrize("arg, count, ids", [
    ("all", -1, None),
    ("2", 2, None),
    ("0,2", 0, ["0", "2"]),
    ("device=1", 0, ["1"]),
    ("auto:2", 0, [UUID[3], UUID[6]]),
])
def test_docker_cli_reads_the_value_as_meant(docker_client, base_image, arg, count, ids):
    """``docker create --gpus VALUE`` records the device request we meant (no GPU needed)."""
    value = choose_gpus(arg, MIXED)
    name = f"dockmagic-test-gpus-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(
            ["docker", "create", "--name", name, "--label", "dockmagic.managed=1",
             "--gpus", value, base_image, "true"],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        request, = docker_client.api.inspect_container(name)["HostConfig"]["DeviceRequests"]
        assert (request["Count"], request["DeviceIDs"]) == (count, ids)
        assert request["Capabilities"] == [["gpu"]]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.mark.engine
def test_unquoted_device_list_is_misread_by_docker(docker_client, base_image):
    """Why choose_gpus quotes: docker reads ``--gpus device=0,2`` as device 0 plus count 2."""
    name = f"dockmagic-test-gpus-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["docker", "create", "--name", name, "--label", "dockmagic.managed=1",
                        "--gpus", "device=0,2", base_image, "true"],
                       capture_output=True, text=True, timeout=60, check=True)
        request, = docker_client.api.inspect_container(name)["HostConfig"]["DeviceRequests"]
        assert (request["Count"], request["DeviceIDs"]) == (2, ["0"])
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.mark.gpu
def test_auto_1_on_this_machine_picks_a_real_gpu():
    from dockmagic import nvml

    snap = nvml.query_snapshot()
    if snap.error:
        pytest.skip(f"needs an NVIDIA driver: {snap.error}")
    value = choose_gpus("auto:1", snap)
    assert value.strip('"')[len("device="):] in {g.uuid for g in snap.gpus}


# ---------------------------------------------------------------------------- how it reads


def test_text_columns_line_up_with_their_headers():
    from dockmagic.gpus import to_text
    lines = to_text(MIXED, chosen_indices(pinned(3, 6), MIXED)).splitlines()
    head = lines[1]
    rows = [ln for ln in lines[2:9] if "lost" not in ln]
    for word in ("mem util", "temp"):  # right-aligned columns end where their heading ends
        end = head.index(word) + len(word)
        assert {ln[end - 1] for ln in rows} <= {"%", "C"}, word
    assert {ln.index("GiB") for ln in rows if "GiB" in ln} == {
        head.index("memory used / total") + len("memory used / total") - 3}
    assert [ln.split()[1] for ln in rows if ln.startswith("●")] == ["3", "6"]


def test_readings_are_named_apart_and_coloured_by_nvitop_thresholds():
    import re
    from dockmagic.gpus import MEM_UTIL_NAME, MEMORY_NAME, UTIL_NAME, level, to_html
    page = to_html(MIXED)
    heads = [re.sub(r'<span class="dmg-short">.*?</span>|<[^>]+>', "", h)
             for h in re.findall(r"<th[^>]*>(.*?)</th>", page)]
    assert {UTIL_NAME, MEM_UTIL_NAME, MEMORY_NAME + " used / total"} <= set(heads)
    assert "mem" not in heads and "Util GPU / mem" not in heads
    assert [level(v, (10, 75)) for v in (None, 0, 9, 10, 74, 75, 100)] == [
        "na", "light", "light", "moderate", "moderate", "heavy", "heavy"]
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(
        r'<tr class="dmg-gpu[^"]*"><td class="dmg-mark"[^>]*>[^<]*</td>'
        r'<td class="dmg-r dmg-idx"[^>]*>(\d+)</td>.*?</tr>', page)}
    assert 'dmg-bar dmg-heavy"><span style="width:100.0%' in rows[0]   # GPU util 100%
    assert rows[1].count("dmg-bar dmg-heavy") == 1                      # memory 84% used
    assert 'dmg-bar dmg-moderate"><span style="width:12.0%' in rows[3]  # GPU util 12%
    # numbers never wrap; long process text is cut with its whole on hover
    assert "white-space:nowrap" in page and "text-overflow:ellipsis" in page


def test_an_unreadable_value_draws_no_bar():
    """GPU 2's memory is Not Supported: N/A with no bar (an empty grey track read as 0 %),
    in %gpus and on the panel's card; a reading of 0 % still draws its (empty) track."""
    from dockmagic.gpus import to_html
    from dockmagic.panelgpus import card_html
    from dockmagic.panelstate import GpuCard

    page = to_html(MIXED)
    row = re.search(r'<tr class="dmg-gpu"><td class="dmg-mark"></td>'
                    r'<td class="dmg-r dmg-idx"[^>]*>2</td>.*?</tr>', page).group(0)
    memory = re.findall(r"<td[^>]*>(.*?)</td>", row)[5]
    assert "N/A" in memory and "dmg-nobar" in memory and "style=" not in memory
    assert ".dmg-nobar{visibility:hidden}" in page
    util = re.findall(r"<td[^>]*>(.*?)</td>", row)[3]     # GPU 2's util is a real 0 %
    assert 'dmg-bar dmg-light"><span style="width:0.0%' in util
    gpu2 = next(g for g in MIXED.gpus if g.index == 2)
    card = card_html(GpuCard(gpu2), 0.0)
    assert card.count('class="dm-bar dm-nobar"') == 1 and card.count('class="dm-bar"') == 1


def test_no_driver_and_chosen_marks_in_html():
    from dockmagic.gpus import GpuTable
    view = GpuTable(MIXED, pinned(3, 6))
    assert view.chosen == (3, 6) and view.gpus == MIXED.gpus  # the snapshot's fields
    assert view._repr_html_().count('class="dmg-gpu dmg-chosen"') == 2
    assert "chosen for the next %%docker cells" in view._repr_html_()
    assert 'class="dmg-gpu dmg-chosen"' not in GpuTable(MIXED)._repr_html_()
    assert repr(GpuTable(NO_DRIVER, "all")) == NO_DRIVER.error
