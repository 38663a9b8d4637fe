"""Provenance against the real engine: records checked against `docker inspect` and the docker
CLI, the exported script run with plain bash, pinning with a moved tag, history of a saved
notebook. Real kernels through nbclient (scripts/run_notebook.py), real IPython shells."""
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import nbformat
import pytest

import dockmagic
from dockmagic import export, provenance, recording, translate

from conftest import BASE_IMAGE, interrupt_when_printed, remove_labelled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = uuid.uuid4().hex[:8]

pytestmark = pytest.mark.engine


def docker(*args, check=True, **kw) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def inspect(kind, ref) -> dict:
    return json.loads(docker(kind, "inspect", ref))[0]


def when(text) -> float:
    """An ISO time (record: ...123456Z; docker: ...123456789Z) -> epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    base = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


def run_notebook(path, out):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "run_notebook.py"),
                           str(path), "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return nbformat.read(str(out), as_version=4)


def records_of(nb) -> list:
    return provenance.records_from_notebook(json.loads(nbformat.writes(nb)))


def engine_labels(container) -> dict:
    """A container's labels but the create token the engine adds (labels.TOKEN), which no
    `docker run` line holds."""
    from dockmagic import labels
    return {k: v for k, v in container["Config"]["Labels"].items() if k != labels.TOKEN}


def bind_mounts(container) -> list:
    """(source, destination) of a container's bind mounts, as the engine reports them."""
    return sorted((m["Source"], m["Destination"]) for m in container.get("Mounts", ())
                  if m.get("Type") == "bind")


def labels_of(argv) -> dict:
    spec = translate.parse_run_args(list(argv)[2:])
    return dict(spec.labels)


def check_engine_and_image(rec):
    from dockmagic import engine

    info = json.loads(docker("info", "--format", "{{json .}}"))
    endpoint = engine.resolve_endpoint()  # docker's own rules: DOCKER_HOST, then the context
    assert rec["engine"] == {"name": endpoint.name, "endpoint": endpoint.url,
                             "host": info["Name"], "id": info["ID"],
                             "version": info["ServerVersion"]}
    image = inspect("image", rec["image"]["ref"])
    assert rec["image"]["id"] == image["Id"]
    want_rd = provenance.pick_repo_digest(rec["image"]["named"], image.get("RepoDigests") or [])
    assert rec["image"]["repo_digest"] == want_rd
    assert rec["image"]["digest"] == (want_rd or image["Id"])
    assert rec["dockmagic"] == dockmagic.__version__ and rec["schema"] == provenance.SCHEMA


def check_times(rec, t0, t1):
    start, end = when(rec["started"]), when(rec["ended"])
    assert t0 - 1 <= start <= end <= t1 + 1
    assert abs((end - start) - rec["duration_s"]) < 2e-6


def check_against_cli(rec):
    """Create a container from the recorded argv with the real docker CLI: the engine must see
    the image, interpreter, mounts, user, workdir and labels the record says ran."""
    argv = provenance.run_argv(rec)
    assert argv[:2] == ["docker", "run"] and rec["run"]["line"] == shlex.join(argv)
    # kept to inspect (no --rm), created not started (no -d), named apart from the original
    create = [a for a in argv[2:] if a not in ("--rm", "-d")]
    if "--name" in create:
        create[create.index("--name") + 1] += "-cli"
    cid = docker("create", *create)
    try:
        c = inspect("container", cid)
        assert c["Image"] == rec["image"]["id"]
        assert c["Config"]["Image"] == rec["image"]["ref"]
        assert (c["Config"]["Entrypoint"] or []) + (c["Config"]["Cmd"] or []) == \
            rec["interpreter"]
        assert c["Config"]["Labels"] == labels_of(argv)
        assert c["Config"]["Labels"]["dockmagic.kind"] == rec["kind"]
        return c
    finally:
        docker("rm", "-f", cid)


# -- records: the quickstart notebook ----------------------------------------------------------
def test_quickstart_container_cells_carry_records_that_match_the_engine(base_image, tmp_path):
    t0 = time.time()
    nb = run_notebook(os.path.join(ROOT, "notebooks", "quickstart.ipynb"),
                      tmp_path / "quickstart.executed.ipynb")
    t1 = time.time()
    nbdir = os.path.join(ROOT, "notebooks")
    ran = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%docker")
           and "--dry-run" not in c.source.splitlines()[0]]
    assert len(ran) == 4
    found = records_of(nb)
    assert [f["source"] for f in found] == [c.source for c in ran]  # one record per cell
    shown = [o for c in ran for o in c.outputs if provenance.KEY in o.get("metadata", {})]
    for f, out, cell in zip(found, shown, ran):
        rec = f["record"]
        # the one line shown is the cell's status line, ending in its summary; the record
        # rides on it (no second line)
        shown_text = out["data"]["text/plain"]
        assert "\n" not in shown_text and shown_text.startswith(f"exit {rec['exit_code']} · ")
        assert len([o for o in cell.outputs if o.output_type == "display_data"]) == 1
        assert rec["kind"] == "oneshot" and rec["cell"] == cell.execution_count
        assert rec["body_sha256"] == provenance.body_sha256(f["body"])
        check_engine_and_image(rec)
        check_times(rec, t0, t1)
        c = check_against_cli(rec)
        assert bind_mounts(c) == [(nbdir, nbdir)]  # the notebook folder
        assert c["Config"]["WorkingDir"] == nbdir
        assert c["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
        assert c["Config"]["Labels"]["dockmagic.notebook"] == \
            os.path.join(nbdir, "quickstart.ipynb")
        assert rec["gpus"] == [] and rec["transfers"] == {"in": [], "out": []}
        # the engine's peak, where the status line sampled one before the cell ended
        assert rec["peak_memory"] is None or (rec["peak_memory"]["bytes"] > 1 << 20 and
                                              "engine stats" in rec["peak_memory"]["source"])
        assert len(rec["container"]["id"]) == 12
    recs = [f["record"] for f in found]
    assert [r["exit_code"] for r in recs] == [0, 0, 3, 0]
    assert [r["status"] for r in recs] == ["ok", "ok", "failed", "ok"]
    assert [r["raise_error"] for r in recs] == [True, True, False, True]
    assert [r["interpreter"] for r in recs] == [["python3", "-u"], ["bash"],
                                                ["python3", "-u"], ["python3", "-u"]]
    # the first cell's --shm-size 1g and the config's default flags reached the engine
    for i in (0, 3):
        argv = provenance.run_argv(recs[i])
        assert argv[argv.index("--shm-size") + 1] == str(1 << 30)


# -- records: detached and session cells, --in/--out, GPUs -------------------------------------
@pytest.fixture
def cleanup_run(docker_client):
    yield
    remove_labelled(docker_client, f"dockmagic.notebook=prov-{RUN}")


def test_detached_and_session_records_match_the_running_containers(shell, workdir, cleanup_run,
                                                                    docker_client, capsys):
    import numpy as np

    os.environ["JPY_SESSION_NAME"] = f"prov-{RUN}"
    try:
        t0 = time.time()
        name = f"prov-d-{RUN}"
        shell.run_cell_magic("docker", f"-d --name {name} {BASE_IMAGE}",
                             "import time\ntime.sleep(60)")
        rec = recording.HISTORY[-1]["record"]
        capsys.readouterr()
        shell.run_cell_magic("docker", f"--dry-run -d --name {name} {BASE_IMAGE}", "pass")
        dry = capsys.readouterr().out.strip()
        assert dry == rec["run"]["line"] + "  < cell-body   # the cell's text reaches the " \
            "container on stdin"  # the record's line is what --dry-run prints
        c = inspect("container", name)
        assert rec["kind"] == "detached" and rec["status"] == "started"
        assert rec["container"]["name"] == name and rec["exit_code"] is None
        assert c["Image"] == rec["image"]["id"] and c["Config"]["Image"] == rec["image"]["ref"]
        assert engine_labels(c) == labels_of(provenance.run_argv(rec))
        assert c["Config"]["Entrypoint"] + c["Config"]["Cmd"] == rec["interpreter"]
        assert bind_mounts(c) == [(str(workdir), str(workdir))]
        assert t0 - 1 <= when(rec["started"]) <= when(c["State"]["StartedAt"]) <= time.time()
        check_engine_and_image(rec)
        check_against_cli(rec)
        docker("rm", "-f", name)

        sname = f"prov-s-{RUN}"
        shell.run_line_magic("docker", f"session {sname} --rm {BASE_IMAGE}")
        t0 = time.time()
        shell.run_cell_magic("docker", f"@{sname}", "blob = bytearray(80_000_000)\n")
        t1 = time.time()
        rec = recording.HISTORY[-1]["record"]
        c = inspect("container", sname)
        assert rec["kind"] == "session" and rec["status"] == "ok" and rec["exit_code"] == 0
        assert rec["session"]["name"] == sname and rec["container"]["id"] == c["Id"]
        assert c["Image"] == rec["image"]["id"] and c["Config"]["Image"] == rec["image"]["ref"]
        agent = rec["session"]["agent"]  # what dockmagic changed to run its agent there
        assert engine_labels(c) == dict(labels_of(provenance.run_argv(rec)), **agent["labels"])
        assert agent["labels"] == {"dockmagic.reap": "1"}  # started with --rm
        assert c["Config"]["Entrypoint"] == agent["main_process"][:1]
        cmd = [a if len(a) < 200 else "<agent>" for a in c["Config"]["Cmd"]]
        assert cmd == [a if not a.startswith("<dockmagic agent") else "<agent>"
                       for a in agent["main_process"][1:]]
        assert c["HostConfig"]["Init"] is True and agent["init"] is True
        assert len(agent["mounts"]) == 1  # the session's private exchange folder
        spec = translate.parse_run_args(provenance.run_argv(rec)[2:])
        assert spec.name == sname and c["Config"]["User"] == spec.user
        assert c["Config"]["WorkingDir"] == spec.workdir
        check_engine_and_image(rec)
        check_times(rec, t0, t1)
        # peak memory: the session's interpreter held the 80 MB, and so did its container by
        # the engine's own peak (cgroup v1 max_usage; cgroup v2 engines report none)
        peak = rec["peak_memory"]["bytes"]
        assert 80_000_000 <= peak < 400_000_000
        stats = docker_client.api.stats(c["Id"], stream=False)
        max_usage = stats["memory_stats"].get("max_usage")
        if max_usage is not None:
            assert max_usage >= 80_000_000

        shell.user_ns["arr"] = np.arange(1000, dtype=np.float64)
        shell.run_cell_magic("docker", f"@{sname} --in arr --out back", "back = arr * 2")
        rec = recording.HISTORY[-1]["record"]
        assert [t["name"] for t in rec["transfers"]["in"]] == ["arr"]
        assert [t["name"] for t in rec["transfers"]["out"]] == ["back"]
        assert all(8000 <= t["bytes"] < 8000 + 1024
                   for t in rec["transfers"]["in"] + rec["transfers"]["out"])
        shell.run_cell_magic("docker", f"--in arr {BASE_IMAGE}", "print(arr.sum())")
        rec = recording.HISTORY[-1]["record"]
        assert rec["kind"] == "oneshot" and rec["transfers"]["in"][0]["name"] == "arr"
        assert rec["transfers"]["in"][0]["bytes"] >= 8000
        shell.run_line_magic("docker", f"session --stop {sname}")
    finally:
        os.environ.pop("JPY_SESSION_NAME", None)


def test_a_gpu_cell_records_its_request_even_when_the_engine_refuses_it(shell, workdir):
    from dockmagic import errors, nvml

    if not nvml.query_snapshot().error:
        pytest.skip("a GPU machine: this checks the no-driver record")
    with pytest.raises(errors.DockmagicError):
        shell.run_cell_magic("docker", f"--gpus device=0 {BASE_IMAGE}", "print(1)")
    rec = recording.HISTORY[-1]["record"]
    assert rec["status"] == "error" and rec["exit_code"] is None
    assert rec["gpus"] == [{"request": "device=0", "index": 0, "uuid": None, "model": None}]


# -- export: the script runs with plain bash and writes the same files --------------------------
def _cell(src):
    return nbformat.v4.new_code_cell(src)


def test_exported_script_replays_the_notebook_with_byte_identical_results(shell, tmp_path,
                                                                          docker_client):
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    sname = f"prov-replay-{RUN}"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("%load_ext dockmagic"),
        _cell(f"%%docker {BASE_IMAGE}\nimport hashlib, os\nos.makedirs('out', exist_ok=True)\n"
              "open('out/one.txt', 'w').write(hashlib.sha256(b'dockmagic').hexdigest())"),
        _cell(f"%%docker {BASE_IMAGE} bash\nseq 1 1000 > out/seq.txt\necho 'it''s $HOME' "
              "> out/quote.txt"),
        _cell(f"%docker session {sname} --rm {BASE_IMAGE}"),
        _cell(f"%%docker @{sname}\nimport numpy as np\na = np.arange(12).reshape(3, 4)\n"
              "total = int(a.sum())"),
        _cell(f"%%docker @{sname}\nwith open('out/state.txt', 'w') as f:\n"
              "    f.write(f'{total} {a.shape} {a.dtype}')\nnp.save('out/a.npy', a)"),
        _cell(f"%%docker @{sname} bash\ncat out/state.txt out/seq.txt | sha256sum "
              "> out/bash.txt"),
        _cell("v = [1, 2, 3]"),
        _cell(f"%%docker @{sname} --in v\nopen('out/in.txt', 'w').write(str(v))"),
        _cell(f"%%docker --no-raise-error {BASE_IMAGE}\nimport sys\n"
              "open('out/fail.txt', 'w').write('before the failure')\nsys.exit(3)"),
        _cell(f"%%docker -d {BASE_IMAGE}\nimport time\ntime.sleep(0.5)\n"
              "open('out/detached.txt', 'w').write('written in the background')"),
        _cell("%docker export run.sh"),
        _cell("%docker export compose.yaml"),
        _cell("%docker history"),
    ]
    path = nbdir / "replay.ipynb"
    nbformat.write(nb, str(path))
    label = f"dockmagic.notebook={path}"
    try:
        executed = run_notebook(path, nbdir / "replay.executed.ipynb")
        for c in docker_client.containers.list(all=True, filters={"label": label}):
            c.wait(timeout=60)  # the detached cell finishes its file
        out = nbdir / "out"
        first = {p.name: p.read_bytes() for p in out.iterdir()}
        assert set(first) == {"one.txt", "seq.txt", "quote.txt", "state.txt", "a.npy",
                              "bash.txt", "in.txt", "fail.txt", "detached.txt"}
        assert first["state.txt"] == b"66 (3, 4) int64"
        shutil.rmtree(out)
        remove_labelled(docker_client, label)

        script = (nbdir / "run.sh").read_text()
        assert "# skipped: --in/--out (v)" in script
        # plain bash, the docker CLI, nothing else: no Jupyter, no dockmagic on PATH
        proc = subprocess.run(["bash", str(nbdir / "run.sh")], cwd=str(tmp_path),
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                   "HOME": str(tmp_path)},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "dockmagic replay:" not in proc.stderr  # every cell ended as recorded
        second = {p.name: p.read_bytes() for p in out.iterdir()}
        replayable = set(first) - {"in.txt"}  # the --in cell is skipped, so no in.txt
        assert set(second) == replayable
        for name in sorted(replayable):
            assert second[name] == first[name], name
        # the replay's session container is gone; no replay container left running
        assert not docker_client.containers.list(filters={"name": f"dockmagic-replay-{sname}"})

        # --from-notebook: the same script from the saved notebook (header line aside)
        target = tmp_path / "from-notebook.sh"
        shell.run_line_magic("docker", f"export {target} --from-notebook "
                                       f"{nbdir / 'replay.executed.ipynb'}")

        def body(text):
            return [ln for ln in text.splitlines() if "Replays the container cells" not in ln]
        assert body(target.read_text()) == body(script)

        # history: the kernel's `%docker history` output equals the saved notebook's records
        found = records_of(executed)
        shown = executed.cells[-1].outputs[0]["data"]["text/plain"]
        table = recording_table([f["record"] for f in found])
        assert shown == repr(table)
        assert len(table) == 8
        saved = shell.run_line_magic("docker", "history --notebook "
                                     f"{nbdir / 'replay.executed.ipynb'}")
        assert saved.rows == table.rows  # `%docker history --notebook` = what the kernel showed
        cells = [c.execution_count for c in executed.cells if c.source.startswith("%%docker")
                 and any(provenance.KEY in o.get("metadata", {}) for o in c.outputs)]
        assert [r[0].split()[0] for r in saved.rows] == [str(n) for n in cells]

        # compose.yaml: the session as a service that docker-compose starts on the pinned image
        check_compose(nbdir / "compose.yaml", sname, found, docker_client)
    finally:
        remove_labelled(docker_client, label)


def check_compose(path, sname, found, docker_client):
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing; scripts/setup.sh installs it")
    rec = [f["record"] for f in found if f["record"]["kind"] == "session"][-1]
    project = f"dmprov{RUN}"
    compose = ["docker-compose", "-f", str(path), "-p", project]
    subprocess.run(compose + ["config", "-q"], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(compose + ["up", "-d"], check=True, capture_output=True, timeout=120)
        (c,) = docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={project}"})
        info = c.attrs
        assert info["Image"] == rec["image"]["id"] and info["Config"]["Image"] == \
            rec["image"]["digest"]
        spec = translate.parse_run_args(provenance.run_argv(rec)[2:])
        assert info["Config"]["User"] == spec.user and info["Config"]["WorkingDir"] == \
            spec.workdir
        want = sorted([tuple(v.split(":")[:2]) for v in spec.volumes]
                      + [(m.source, m.target) for m in spec.mounts if m.type == "bind"])
        assert bind_mounts(info) == want
        assert info["Config"]["Entrypoint"] + info["Config"]["Cmd"] == rec["interpreter"]
        out = subprocess.run(compose + ["exec", "-T", sname, "python3", "-c",
                                        "import numpy, os; print(numpy.arange(3).sum(), "
                                        "os.getcwd())"],
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == ["3", spec.workdir], out.stderr
    finally:
        subprocess.run(compose + ["down", "-t", "1"], capture_output=True, timeout=120)


def recording_table(records):
    from dockmagic import reproduce
    return reproduce.history_table(records)


def test_history_of_a_saved_notebook_matches_its_records(shell, tmp_path):
    rec_a = provenance.build_record(
        version="0.1.0", kind="oneshot", cell=4, line=None, body="x",
        engine={"name": "vm"}, image={"named": "img:1", "digest": "sha256:" + "e" * 64},
        run_argv=["docker", "run", "img:1"], interpreter=["python3"], started=0.0, ended=2.5,
        exit_code=0, status="ok")
    rec_b = dict(rec_a, cell=9, kind="session", session={"name": "s"}, exit_code=1,
                 duration_s=0.25, gpus=[{"request": "device=1", "index": 1}])
    nb = nbformat.v4.new_notebook()
    for rec in (rec_a, rec_b):
        cell = nbformat.v4.new_code_cell("%%docker img:1\nx")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "x"},
                                               metadata={provenance.KEY: rec})]
        nb.cells.append(cell)
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, str(path))
    table = shell.run_line_magic("docker", f"history --notebook {path}")
    assert table.rows == (("4", "img:1@sha256:eeeeeeeeeeee", "vm", "-", "0", "2.50 s"),
                          ("9 @s", "img:1@sha256:eeeeeeeeeeee", "vm", "1", "1", "0.25 s"))
    from IPython.core.error import UsageError
    with pytest.raises(UsageError, match="cannot read"):
        shell.run_line_magic("docker", f"history --notebook {tmp_path / 'missing.ipynb'}")


# -- pinning: a tag moved between two cells does not change what runs ---------------------------
@pytest.fixture
def two_images(base_image):
    made = []

    def build(which):
        tag = f"dockmagic-prov-{which.lower()}:{RUN}"
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], check=True,
                       input=f"FROM {BASE_IMAGE}\nENV WHICH={which}\n", text=True,
                       capture_output=True)
        made.append(tag)
        return tag, inspect("image", tag)["Id"]

    a, b = build("A"), build("B")
    yield a, b, made
    recording.PINS.on = False
    recording.PINS.refresh()
    from dockmagic import spare
    spare.SPARES.discard()  # a spare made from a pinned image would keep that image in use
    spare.SPARES.drain()
    for ref in made + [a[1], b[1]]:  # the tags, then the images (a pushed one keeps a digest)
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def _which(shell, capsys, line):
    capsys.readouterr()
    shell.run_cell_magic("docker", line, "import os; print('WHICH', os.environ['WHICH'])")
    out = capsys.readouterr().out
    return [w for w in out.split() if w in ("A", "B")][0], recording.HISTORY[-1]["record"]


def test_a_pinned_notebook_keeps_running_the_image_its_tag_first_named(shell, workdir, capsys,
                                                                       two_images):
    (tag_a, id_a), (tag_b, id_b), made = two_images
    tag = f"dockmagic-prov-pin:{RUN}"
    docker("tag", tag_a, tag)
    made.append(tag)
    shell.run_line_magic("docker", "config --pin on")
    which, rec = _which(shell, capsys, tag)
    assert which == "A" and rec["image"]["id"] == id_a
    assert rec["image"] == {"named": tag, "ref": id_a, "id": id_a, "repo_digest": None,
                            "digest": id_a, "pinned": True}
    docker("tag", tag_b, tag)  # the tag moves
    assert inspect("image", tag)["Id"] == id_b
    which, rec = _which(shell, capsys, tag)
    assert which == "A" and rec["image"]["id"] == id_a and rec["image"]["named"] == tag
    shell.run_line_magic("docker", "pin")
    assert f"{tag} -> {id_a}" in capsys.readouterr().out
    # a session started from the tag runs the pinned image too
    sname = f"prov-pin-{RUN}"
    shell.run_line_magic("docker", f"session {sname} --rm {tag}")
    try:
        which, rec = _which(shell, capsys, f"@{sname}")
        assert which == "A" and rec["image"]["id"] == id_a and rec["image"]["pinned"]
    finally:
        shell.run_line_magic("docker", f"session --stop {sname}")
    # the control: unpinned, the moved tag runs B
    shell.run_line_magic("docker", "config --pin off")
    which, rec = _which(shell, capsys, tag)
    assert which == "B" and rec["image"]["id"] == id_b and not rec["image"]["pinned"]
    # pinning on again keeps the pin; --refresh resolves the tag anew
    shell.run_line_magic("docker", "config --pin on")
    assert _which(shell, capsys, tag)[0] == "A"
    shell.run_line_magic("docker", "pin --refresh")
    which, rec = _which(shell, capsys, tag)
    assert which == "B" and rec["image"]["ref"] == id_b


def test_pinning_uses_the_repo_digest_where_the_image_has_one(shell, workdir, capsys,
                                                             two_images):
    (tag_a, id_a), (tag_b, id_b), made = two_images
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-registry.sh")],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"no local registry: {proc.stderr.strip() or proc.stdout.strip()}")
    tag = f"localhost:5000/dm/prov-pin:{RUN}"
    docker("tag", tag_a, tag)
    made.append(tag)
    docker("push", tag)
    repo_digest = [d for d in inspect("image", tag)["RepoDigests"]
                   if d.startswith("localhost:5000/dm/prov-pin@")][0]
    shell.run_line_magic("docker", "config --pin on")
    which, rec = _which(shell, capsys, tag)
    assert which == "A" and rec["image"]["ref"] == repo_digest
    assert rec["image"]["repo_digest"] == rec["image"]["digest"] == repo_digest
    docker("tag", tag_b, tag)
    which, rec = _which(shell, capsys, tag)
    assert which == "A" and rec["image"]["id"] == id_a and rec["image"]["ref"] == repo_digest
    # the exported script names the image by that digest
    text = export.build_script([{"record": rec, "body": "print(1)"}])
    assert f" {repo_digest} " in text


def test_an_interrupted_cell_is_recorded_as_interrupted_and_not_replayed(shell, workdir,
                                                                         capsys):
    with interrupt_when_printed("tick"):
        with pytest.raises(KeyboardInterrupt):
            shell.run_cell_magic("docker", f"--no-raise-error {BASE_IMAGE}",
                                 "import time\nwhile True:\n    print('tick', flush=True)\n"
                                 "    time.sleep(0.1)")
    rec = recording.HISTORY[-1]["record"]
    assert rec["status"] == "interrupted" and rec["exit_code"] is None
    assert 0.3 <= rec["duration_s"] < 30
    text = export.build_script([recording.HISTORY[-1]])
    assert "# skipped: it was interrupted when recorded" in text
    assert "docker run" not in text.split("# --- ")[-1]
