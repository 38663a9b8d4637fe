"""Provenance records, history and export as pure data: provenance.py and export.py (no engine).

The engine-backed checks (records against `docker inspect`, the exported script run with bash,
pinning with a moved tag) are in test_provenance_engine.py.
"""
import json
import os
import shlex

import pytest
import yaml

from dockmagic import export, provenance, recording, translate
from dockmagic.nvml import snapshot_from_record

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_ID = "sha256:" + "a" * 64


def _record(**over):
    argv = ["docker", "run", "-i", "--rm", "-v", "/nb:/nb", "-w", "/nb", "--entrypoint",
            "python3", "img:1", "-u"]
    fields = dict(version="0.1.0", kind="oneshot", cell=3, line=None, body="print(1)\n",
                  engine={"name": "vm", "endpoint": "unix:///var/run/docker.sock", "id": "X",
                          "version": "20.10"},
                  image=provenance.to_image_facts("img:1", {"Id": IMAGE_ID, "RepoDigests": []}),
                  run_argv=argv, interpreter=["python3", "-u"], started=1_800_000_000.25,
                  ended=1_800_000_001.75, exit_code=0, status="ok",
                  container={"id": "0123456789ab"})
    fields.update(over)
    return provenance.build_record(**fields)


def test_record_holds_every_field_and_is_json():
    rec = _record()
    assert json.loads(json.dumps(rec)) == rec
    assert set(rec) >= {"schema", "dockmagic", "kind", "cell", "body_sha256", "engine", "image",
                        "run", "interpreter", "gpus", "started", "ended", "duration_s",
                        "exit_code", "status", "peak_memory", "transfers"}
    assert rec["started"] == "2027-01-15T08:00:00.250000Z"
    assert rec["ended"] == "2027-01-15T08:00:01.750000Z"
    assert rec["duration_s"] == 1.5
    assert provenance.run_argv(rec) == ["docker", "run", "-i", "--rm", "-v", "/nb:/nb", "-w",
                                        "/nb", "--entrypoint", "python3", "img:1", "-u"]
    assert rec["image"]["digest"] == IMAGE_ID  # no RepoDigest: the image ID


def test_summary_is_one_short_line():
    line = provenance.summary_line(_record())
    assert "\n" not in line and len(line) < 120
    assert line == "dockmagic: img:1@sha256:aaaaaaaaaaaa on vm, exit 0, 1.50 s"
    sess = _record(kind="session", session={"name": "work"}, exit_code=1, status="failed")
    assert provenance.summary_line(sess).startswith("dockmagic: @work img:1@sha256:aaaa")
    assert "exit 1" in provenance.summary_line(sess)


@pytest.mark.parametrize("named,digests,want", [
    ("localhost:5000/dm/x:1", ["localhost:5000/dm/x@sha256:" + "b" * 64],
     "localhost:5000/dm/x@sha256:" + "b" * 64),
    # someone else's repository's digest does not name this tag's image
    ("mine:1", ["localhost:5000/other@sha256:" + "b" * 64], IMAGE_ID),
    ("busybox:1.36", ["busybox@sha256:" + "c" * 64], "busybox@sha256:" + "c" * 64),
    ("docker.io/library/busybox", ["busybox@sha256:" + "c" * 64], "busybox@sha256:" + "c" * 64),
    ("local-build", [], IMAGE_ID),
])
def test_pin_is_the_repo_digest_of_the_named_repository_else_the_image_id(named, digests, want):
    assert provenance.to_pin(named, {"Id": IMAGE_ID, "RepoDigests": digests}) == want


def test_gpus_by_index_uuid_and_model_from_the_8_gpu_fixture():
    with open(os.path.join(HERE, "fixtures", "nvml-8gpu-mixed.json")) as f:
        snap = snapshot_from_record(json.load(f)["snapshots"][0])
    devices = recording.to_devices(snap)
    spec = translate.parse_run_args(["--gpus", "device=3,6", "img"])
    rows = provenance.to_gpus([{"request": g.to_cli(), "count": g.count,
                                "device_ids": list(g.device_ids)} for g in spec.gpus], devices)
    by_index = {g.index: g for g in snap.gpus}
    assert [r["index"] for r in rows] == [3, 6]
    assert [r["uuid"] for r in rows] == [by_index[3].uuid, by_index[6].uuid]
    assert [r["model"] for r in rows] == [by_index[3].name, by_index[6].name]
    # by UUID, and `all`
    uuid = by_index[5].uuid
    assert provenance.to_gpus([{"request": f"device={uuid}", "count": 0,
                                "device_ids": [uuid]}], devices)[0]["index"] == 5
    assert len(provenance.to_gpus([{"request": "all", "count": -1, "device_ids": []}],
                                  devices)) == len(devices)


def test_gpus_without_a_driver_keep_the_request_and_leave_the_rest_unknown():
    rows = provenance.to_gpus([{"request": "device=0,1", "count": 0, "device_ids": ["0", "1"]},
                               {"request": "2", "count": 2, "device_ids": []}], [])
    assert rows == [{"request": "device=0,1", "index": 0, "uuid": None, "model": None},
                    {"request": "device=0,1", "index": 1, "uuid": None, "model": None},
                    {"request": "2", "index": None, "uuid": None, "model": None}]


def _notebook(records_and_sources):
    cells = []
    for source, rec in records_and_sources:
        outputs = [] if rec is None else [{
            "output_type": "display_data", "data": {"text/plain": "x"},
            "metadata": {provenance.KEY: rec}}]
        cells.append({"cell_type": "code", "source": source, "outputs": outputs,
                      "metadata": {}, "execution_count": 1})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_records_from_a_notebook_in_notebook_order_with_their_bodies():
    a, b = _record(cell=7), _record(cell=2, exit_code=3, status="failed")
    nb = _notebook([("%%docker img:1\nprint(1)\n", a), ("x = 1", None),
                    (["%%docker img:1\n", "import sys\n", "sys.exit(3)"], b)])
    found = provenance.records_from_notebook(json.loads(json.dumps(nb)))
    assert [f["index"] for f in found] == [0, 2]
    assert [f["record"] for f in found] == [a, b]
    assert found[1]["body"] == "import sys\nsys.exit(3)"
    rows = provenance.to_history_rows([a, b])
    assert rows == [("7", "img:1@sha256:aaaaaaaaaaaa", "vm", "-", "0", "1.50 s"),
                    ("2", "img:1@sha256:aaaaaaaaaaaa", "vm", "-", "3", "1.50 s")]
    entries = export.pair_bodies(found)
    assert entries[0]["edited"] is False  # "print(1)\n" is what the record hashed


def test_script_pins_the_image_and_feeds_the_body_as_a_quoted_here_document():
    body = "print('$HOME `x`')\nDOCKMAGIC_CELL_1\n"
    rec = _record(body=body)
    text = export.build_script([{"record": rec, "body": body}], version="0.1.0")
    assert text.startswith("#!/usr/bin/env bash\n")
    line = next(ln for ln in text.splitlines() if ln.startswith("docker run "))
    argv = shlex.split(line.split(" <<")[0])
    assert argv[argv.index("--entrypoint") + 2] == IMAGE_ID  # pinned by the image ID
    assert "img:1" not in argv
    # the body contains the first delimiter tried: another one is used, quoted (no expansion)
    assert "<<'DOCKMAGIC_CELL_1_1'" in line
    assert "\n" + body + "DOCKMAGIC_CELL_1_1\n" in text


def test_in_out_cells_are_skipped_with_the_reason():
    rec = _record(transfers={"in": [{"name": "x", "bytes": 10}], "out": []})
    text = export.build_script([{"record": rec, "body": "y = x"}])
    assert "# skipped: --in/--out (x)" in text
    assert "docker run -i --rm" not in text


def test_nothing_to_export_says_what_to_do():
    with pytest.raises(export.ExportError, match="no container cells"):
        export.build_script([])
    with pytest.raises(export.ExportError, match="no session containers"):
        export.build_compose([{"record": _record(), "body": ""}])


def test_compose_writes_the_session_as_a_service_that_parses_back():
    argv = ["docker", "run", "-i", "--name", "work", "--shm-size", "1g", "-v", "/nb:/nb",
            "-w", "/nb", "-u", "1000:1000", "-e", "A=1", "-l", "k=v", "--gpus", "device=0",
            "--entrypoint", "python3", "img:1", "-u"]
    spec = translate.parse_run_args(argv[2:])
    argv = ["docker", "run"] + spec.to_cli()
    rec = _record(kind="session", run_argv=argv,
                  session={"name": "work", "container": "c1", "cell_interpreter": []})
    doc = yaml.safe_load(export.build_compose([{"record": rec, "body": ""}]))
    svc = doc["services"]["work"]
    assert svc["image"] == IMAGE_ID
    assert svc["entrypoint"] == ["python3"] and svc["command"] == ["-u"]
    assert svc["shm_size"] == 1 << 30 and svc["user"] == "1000:1000"
    assert svc["working_dir"] == "/nb" and svc["volumes"] == ["/nb:/nb"]
    assert "A=1" in svc["environment"] and svc["labels"]["k"] == "v"
    assert svc["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ["0"]}]
    assert svc["stdin_open"] is True


def test_transfer_sizes_never_follow_a_link_the_container_left(tmp_path):
    from dockmagic import transfer

    xdir = tmp_path / "x"
    xdir.mkdir()
    (xdir / "in-0.npy").write_bytes(b"i" * 500)
    (xdir / "out-0.npy").write_bytes(b"n" * 1000)
    (xdir / "out-2.pkl").write_bytes(b"p" * 30)
    (tmp_path / "secret").write_bytes(b"s" * 77)
    os.symlink(tmp_path / "secret", xdir / "out-1.pkl")  # a link the container made
    ex = transfer.Exchange(str(xdir))
    got = transfer.measure(ex, [["x", "in-0.npy", "npy"], ["z", "../secret", "pickle"]],
                           [("a", "a", False), ("b", "b", False), ("c", "c", True),
                            ("d", "d", False)])
    assert got == {"in": [{"name": "x", "bytes": 500}, {"name": "z", "bytes": None}],
                   "out": [{"name": "a", "bytes": 1000}, {"name": "b", "bytes": None},
                           {"name": "c", "bytes": 30}, {"name": "d", "bytes": None}]}
