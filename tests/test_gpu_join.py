"""dockmagic.gpus join: GPU process -> Docker container, from /proc/PID/cgroup.

Parsing is checked on literal cgroup text of both versions; the join itself against a real
container of the real engine (this machine: cgroup v1, cgroupfs driver -> ``/docker/<id>``).
"""
import copy
import dataclasses
import json
import os
import uuid

import pytest

from dockmagic.gpus import to_html, to_text

from dockmagic import nvml
from dockmagic.gpus import (attach_containers, attach_process_info, container_for_pid, container_ref,
                            parse_cgroup_container_id, query_with_containers)
from dockmagic.nvml import GpuProcess, snapshot_from_record

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "fixtures", "nvml-h200.json")) as f:
    UNDER_LOAD = next(s for s in json.load(f)["snapshots"] if s["label"] == "under_load")

CID = "fdc9e35b5a285d444f1055f24fc94bc5d82a3590261238dc0796c47bfd06ac4c"
OUTER = "0123456789abcdef" * 4

V1 = "\n".join(f"{n}:{c}:/docker/{CID}" for n, c in [
    (12, "name=systemd"), (9, "pids"), (4, "memory"), (1, "cpu,cpuacct")]) + f"\n0::/docker/{CID}\n"
V2_SYSTEMD = f"0::/system.slice/docker-{CID}.scope\n"
V2_CGROUPFS = f"0::/docker/{CID}\n"


@pytest.mark.parametrize("text", [
    V1,                                                   # v1, cgroupfs driver (this machine)
    f"11:memory:/system.slice/docker-{CID}.scope\n",      # v1, systemd driver
    V2_SYSTEMD,                                           # v2, systemd driver
    V2_CGROUPFS,                                          # v2, cgroupfs driver
    f"0::/docker/{OUTER}/docker/{CID}\n",                 # docker in docker: the inner one
    f"0::/system.slice/docker-{OUTER}.scope/docker/{CID}\n",
    f"0::/docker/{CID}/init.scope\n",                     # systemd inside the container
    f"0::/kubepods/burstable/pod1/docker-{CID}.scope\n",  # nested under a pod
])
def test_parse_cgroup_container_id(text):
    assert parse_cgroup_container_id(text) == CID


@pytest.mark.parametrize("text", [
    "", "0::/\n", "0::/init.scope\n", "0::/user.slice/user-1000.slice/session-2.scope\n",
    "4:memory:/process_api/a08f565224293196d518f2b473e9600d\n",
    f"0::/system.slice/containerd.service/cri-containerd-{CID}.scope\n",  # not docker's
    f"0::/docker/{CID[:12]}\n",                                          # short id: not a path
    f"0::/docker-{CID}x.scope\n",
])
def test_parse_cgroup_without_docker_container(text):
    assert parse_cgroup_container_id(text) is None


def entry(cid, name, image="dockmagic-base:bookworm", labels=None):
    """One entry as ``client.api.containers(all=True)`` lists it."""
    return {"Id": cid, "Names": [f"/{name}"], "Image": image, "Labels": labels or {},
            "State": "running", "Status": "Up 3 seconds"}


def fake_proc(tmp_path, pids):
    for pid, text in pids.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    return str(tmp_path)


def test_container_for_pid_from_a_proc_tree(tmp_path):
    root = fake_proc(tmp_path, {495: V2_SYSTEMD, 7: "0::/init.scope\n", 8: f"0::/docker/{OUTER}\n"})
    listed = [entry(OUTER[::-1], "other"), entry(CID, "trainer", labels={"a": "b"})]
    ref = container_for_pid(495, listed, proc_root=root)
    assert (ref.id, ref.name, ref.image, ref.state, ref.labels) == (
        CID, "trainer", "dockmagic-base:bookworm", "running", (("a", "b"),))
    assert not ref.managed
    assert container_for_pid(7, listed, proc_root=root) is None      # a host process
    assert container_for_pid(8, listed, proc_root=root) is None      # container not listed
    assert container_for_pid(9, listed, proc_root=root) is None      # process gone


def test_attach_containers_fills_each_process_and_renders_it(tmp_path):
    record = copy.deepcopy(UNDER_LOAD)
    record["devices"][0]["compute_processes"].append({"pid": 7, "usedGpuMemory": 1 << 20})
    root = fake_proc(tmp_path, {495: V1, 7: "0::/init.scope\n"})
    labels = {"dockmagic.managed": "1", "dockmagic.notebook": "/work/a&b/x<y>.ipynb",
              "dockmagic.cell": "3"}
    snap = snapshot_from_record(record)
    joined = attach_containers(snap, [entry(CID, "trainer", labels=labels)], proc_root=root)
    p495, p7 = joined.gpus[0].processes
    assert p495.container.notebook == "/work/a&b/x<y>.ipynb" and p495.container.cell == "3"
    assert p7.container is None
    assert snap.gpus[0].processes[0].container is None  # the input is left alone
    rows = {line.split()[1]: line for line in to_text(joined).split("\n\n")[1].splitlines()[1:]}
    assert rows["495"].split()[:5] == ["0", "495", "N/A", "N/A", "6.4"]
    assert rows["495"].endswith("6.4 GiB  trainer (dockmagic-base:bookworm) · x<y>.ipynb [3]")
    assert rows["7"].endswith("1 MiB")  # a host process: no container
    page = to_html(joined)
    assert "trainer (dockmagic-base:bookworm) · x&lt;y&gt;.ipynb [3]" in page
    assert "<y>" not in page


def test_process_user_and_command_come_from_proc(tmp_path):
    """NVML gives PIDs only: the user (from the real uid in /proc/PID/status) and the command
    line (/proc/PID/cmdline, NUL-separated) are read where visible, N/A elsewhere."""
    import pwd
    record = copy.deepcopy(UNDER_LOAD)
    record["devices"][0]["compute_processes"].append({"pid": 7, "usedGpuMemory": 1 << 20})
    root = fake_proc(tmp_path, {495: V1})
    (tmp_path / "495" / "status").write_text("Name:\tpython\nUid:\t0\t0\t0\t0\nGid:\t0\n")
    (tmp_path / "495" / "cmdline").write_bytes(b"python3\0train.py\0--lr\0" + b"x" * 80 + b"\0")
    snap = attach_process_info(snapshot_from_record(record), proc_root=str(tmp_path))
    p495, p7 = snap.gpus[0].processes
    assert p495.user == pwd.getpwuid(0).pw_name
    assert p495.command == "python3 train.py --lr " + "x" * 80
    assert (p7.user, p7.command) == (None, None)  # not visible from here
    text, page = to_text(snap), to_html(snap)
    assert "python3 train.py --lr " + "x" * 17 + "…" in text  # cut at 40, numbers stay in line
    assert f'title="{p495.command}"' in page and "dmg-cmd" in page  # whole on hover
    # this very process, through the real /proc
    me = attach_process_info(dataclasses.replace(snapshot_from_record(UNDER_LOAD), gpus=(
        dataclasses.replace(snap.gpus[0], processes=(GpuProcess(pid=os.getpid()),)),)))
    mine = me.gpus[0].processes[0]
    assert mine.user == pwd.getpwuid(os.getuid()).pw_name and "pytest" in mine.command


def test_attach_containers_without_containers_or_driver_is_identity():
    snap = snapshot_from_record(UNDER_LOAD)
    assert attach_containers(snap, []) is snap
    assert attach_containers(snap, None) is snap
    broken = snapshot_from_record({"error": "no NVIDIA driver found: x"})
    assert attach_containers(broken, [entry(CID, "x")]) is broken


def test_container_ref_of_an_unnamed_entry():
    ref = container_ref({"Id": CID, "Image": "img"})
    assert (ref.name, ref.labels, ref.state) == (CID[:12], (), None)


def test_query_with_containers_never_raises_without_a_driver():
    snap = query_with_containers()
    if snap.error is None:
        pytest.skip("this machine has an NVIDIA driver")
    assert snap.gpus == () and "\n" not in snap.error


@pytest.mark.engine
def test_join_finds_a_real_container(docker_client, base_image, monkeypatch):
    """A real container's host PID, placed in the under_load snapshot, joins to that container."""
    name = f"dockmagic-test-gpujoin-{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.run(
        base_image, ["sleep", "60"], name=name, detach=True,
        labels={"dockmagic.managed": "1", "dockmagic.notebook": "test.ipynb",
                "dockmagic.cell": "3"})
    try:
        pid = docker_client.api.inspect_container(container.id)["State"]["Pid"]
        assert pid > 0
        with open(f"/proc/{pid}/cgroup") as f:
            cgroup = f.read()
        assert parse_cgroup_container_id(cgroup) == container.id, cgroup

        record = copy.deepcopy(UNDER_LOAD)
        record["devices"][0]["compute_processes"][0]["pid"] = pid
        joined = attach_containers(snapshot_from_record(record),
                                   docker_client.api.containers(all=True))
        ref = joined.gpus[0].processes[0].container
        assert (ref.id, ref.name, ref.image) == (container.id, name, base_image)
        assert ref.managed and (ref.notebook, ref.cell) == ("test.ipynb", "3")
        text, page = to_text(joined), to_html(joined)
        row = next(line for line in text.splitlines() if f" {pid} " in line)
        assert row.endswith(f"6.4 GiB  {name} ({base_image}) · test.ipynb [3]"), row
        assert f"{name} ({base_image}) · test.ipynb [3]" in page

        # the magic's entry point: NVML reading (here the fixture) + the engine's running list
        monkeypatch.setattr(nvml, "query_snapshot", lambda: snapshot_from_record(record))
        ref = query_with_containers().gpus[0].processes[0].container
        assert (ref.name, ref.notebook, ref.cell) == (name, "test.ipynb", "3")
    finally:
        container.remove(force=True)
