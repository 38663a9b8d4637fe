"""`--in` / `--out`: the pure parsing, then variables through real containers (one-shot cells and
session cells), through a real IPython shell."""
import os
import uuid

import numpy as np
import pytest

import dockmagic.engine as engines
from dockmagic import kernel
from IPython.core.error import UsageError

from conftest import BASE_IMAGE, as_kernel_user, remove_labelled
from dockmagic import agent, session, transfer
from dockmagic.transfer import TransferError, TransferUsage, parse_transfers


# -- pure -----------------------------------------------------------------------------------------
def test_parse_transfers_commas_repeats_renames_and_dots():
    assert parse_transfers(["a,b", "c=d.e", " f "], "--in") == (
        ("a", "a"), ("b", "b"), ("c", "d.e"), ("f", "f"))
    assert parse_transfers(["cfg.lr"], "--in") == (("lr", "cfg.lr"),)
    assert parse_transfers(["model.w=w"], "--out") == (("model.w", "w"),)
    assert parse_transfers([], "--out") == ()


@pytest.mark.parametrize("bad", ["a,,b", "1x", "a-b", "class", "a=", "=b", "a.b.", "x y"])
def test_parse_transfers_rejects_what_is_not_a_name_in_one_line(bad):
    with pytest.raises(TransferUsage) as info:
        parse_transfers([bad], "--in")
    assert "--in" in str(info.value) and "\n" not in str(info.value)


def test_parse_transfers_rejects_a_destination_named_twice():
    with pytest.raises(TransferUsage, match="named twice"):
        parse_transfers(["a", "b=c", "a=d"], "--in")


def _as_container(ex, outputs, ns):
    """What the agent does in the container: write OUTPUTS of NS into the cell's folder."""
    from dockmagic import agent
    agent.save_outputs(ex.host_dir, [list(o) for o in outputs], ns)


def test_values_round_trip_through_the_file_formats(tmp_path):
    ex = transfer.Exchange(str(tmp_path))
    ns = {"i": 3, "d": {"k": [1, 2.5, None]}, "s": "é✓", "a": np.arange(6).reshape(2, 3),
          "f": np.asfortranarray(np.ones((3, 2), np.float32)), "nested": {"arr": np.arange(3)},
          "c": 1 + 2j, "b": b"\x00x", "st": {1, 2}, "fs": frozenset("ab"), "t": (1, (2,)),
          "sc": np.float32(1.5), "dt": np.dtype([("x", "<f8"), ("y", "<i4")]),
          "obj": np.array([1, "two", None], dtype=object), "big": 10 ** 40}
    manifest = ex.write_inputs(tuple((k, k) for k in ns), ns)
    kinds = {dest: kind for dest, _, kind in manifest}
    assert kinds["a"] == kinds["f"] == "npy" and kinds["d"] == kinds["nested"] == "pkl"
    outputs = tuple((k, k, False) for k in ns)
    _as_container(ex, outputs, ns)
    out = {}
    ex.read_outputs(outputs, out)
    assert out["i"] == 3 and out["d"] == ns["d"] and out["s"] == "é✓"
    assert np.array_equal(out["a"], ns["a"]) and out["f"].dtype == np.float32
    assert np.array_equal(out["nested"]["arr"], np.arange(3))
    for k in ("c", "b", "st", "fs", "t", "sc", "dt", "big"):
        assert out[k] == ns[k] and type(out[k]) is type(ns[k]), k
    assert list(out["obj"]) == [1, "two", None]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /nonexistent-evil",))


def test_parse_outputs_marks_the_pickle_opt_in_and_refuses_a_name_given_twice():
    assert transfer.parse_outputs(["a,b=c"], ["m"]) == (
        ("a", "a", False), ("b", "c", False), ("m", "m", True))
    with pytest.raises(TransferUsage, match="--out-pickle"):
        transfer.parse_outputs(["a"], ["a"])


def test_the_container_side_refuses_what_is_not_plain_data_naming_out_pickle(tmp_path):
    from dockmagic import agent
    for value, what in [(Evil(), "Evil"), ({"k": [Evil()]}, "Evil"),
                        (uuid.UUID(int=1), "UUID"), (os.system, "system")]:
        with pytest.raises(agent.TransferFailed) as info:
            agent.save_outputs(str(tmp_path), [["o", "o", False]], {"o": value})
        msg = str(info.value)
        assert "--out-pickle o" in msg and what in msg and "\n" not in msg
        assert os.listdir(tmp_path) == []


def _rogue_pickle(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)


@pytest.mark.parametrize("payload", [
    pytest.param(lambda: __import__("pickle").dumps(Evil()), id="reduce-os-system"),
    pytest.param(lambda: b"cos\nsystem\n(S'touch /nonexistent-evil'\ntR.", id="protocol-0"),
    pytest.param(lambda: b"\x80\x04cbuiltins\neval\n(S'1'\ntR.", id="builtins-eval"),
    pytest.param(lambda: b"\x80\x04cnumpy\nload\n(S'x'\ntR.", id="numpy-other-name"),
    pytest.param(lambda: b"\x80\x04P0\n.", id="persistent-id"),
    pytest.param(lambda: __import__("pickle").dumps(uuid.UUID(int=1)), id="stdlib-class"),
])
def test_the_kernel_loads_plain_data_only_without_the_opt_in(tmp_path, payload):
    ex = transfer.Exchange(str(tmp_path))
    _rogue_pickle(tmp_path, "out-0.pkl", payload())
    ns = {"keep": 1}
    with pytest.raises(TransferError) as info:
        ex.read_outputs((("x", "x", False),), ns)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("--out x:")
    assert ns == {"keep": 1}
    assert not os.path.exists("/nonexistent-evil")


def test_the_kernel_never_follows_what_the_container_links_or_reads_another_path(tmp_path):
    secret = tmp_path / "host-secret.npy"
    np.save(secret, np.arange(3))
    cell = tmp_path / "cell"
    cell.mkdir()
    ex = transfer.Exchange(str(cell))
    os.symlink(secret, cell / "out-0.npy")
    os.mkfifo(cell / "out-1.pkl")  # a reader that blocked here would hang the kernel
    (cell / "result.json").write_text('{"s": "ok", "out": [["keep", 0, "../host-secret.npy", '
                                      '"pkl"]]}')
    ns = {"keep": "mine"}
    for outputs in [(("x", "x", False),), (("a", "a", False), ("y", "y", False))]:
        with pytest.raises(TransferError, match="cannot be opened|not a file"):
            ex.read_outputs(outputs, ns)
    assert ns == {"keep": "mine"}


def test_object_npy_is_refused_and_the_opt_in_unpickles_in_full(tmp_path):
    import pickle
    ex = transfer.Exchange(str(tmp_path))
    with open(tmp_path / "out-0.npy", "wb") as f:
        np.lib.format.write_array(f, np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(TransferError, match="allow_pickle"):
        ex.read_outputs((("x", "x", True),), {})
    os.unlink(tmp_path / "out-0.npy")
    (tmp_path / "out-0.pkl").write_bytes(pickle.dumps(uuid.UUID(int=7)))
    ns = {}
    ex.read_outputs((("u", "u", True),), ns)  # --out-pickle u: the user trusts this image
    assert ns["u"] == uuid.UUID(int=7)


@pytest.mark.parametrize("writer_gone", [False, True])
def test_large_arrays_are_mapped_only_from_files_nobody_can_change_any_more(tmp_path,
                                                                           writer_gone):
    """A session lives on after its cell and could rewrite or truncate its output file under
    a mapping: its arrays are first copied into a private memfd. A one-shot cell's container
    has exited, so its files are mapped as they are."""
    ex = transfer.Exchange(str(tmp_path), mapped=True)
    big = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: above agent.MAP_MIN_BYTES
    path = tmp_path / "out-0.npy"
    np.save(path, big)
    out = {}
    ex.read_outputs((("y", "y", False),), out, writer_gone=writer_gone)
    assert type(out["y"]) is np.ndarray and out["y"].flags.writeable
    with open(path, "r+b") as f:  # what a live container could still do
        f.seek(-8, 2)
        f.write(np.float64(-1).tobytes())
    assert out["y"][-1] == (-1 if writer_gone else big[-1])
    with open(path, "r+b") as f:
        f.truncate(1 << 20)
    with pytest.raises(TransferError, match="shorter than its header"):
        ex.read_outputs((("z", "z", False),), out, writer_gone=writer_gone)
    assert "z" not in out


@pytest.mark.parametrize("how", ["copy", "map", "read"])
@pytest.mark.parametrize("make", [
    pytest.param(lambda: np.arange(1 << 18, dtype=np.float64).reshape(512, 512), id="c-order"),
    pytest.param(lambda: np.asfortranarray(np.arange(1 << 18, dtype=np.int32).reshape(256, 1024)),
                 id="fortran-order"),
    pytest.param(lambda: np.zeros(1 << 16, dtype=[("a", "<f8"), ("b", ">i4", (3,)), ("c", "S4")]),
                 id="structured"),
    pytest.param(lambda: np.zeros((), dtype="V2000000"), id="0-d-void"),
    pytest.param(lambda: np.arange(1 << 17, dtype=">u8"), id="big-endian"),
])
def test_large_arrays_come_back_equal_whichever_way_they_are_read(tmp_path, how, make):
    """Each way of reading a large .npy gives what np.load gives: values, dtype, shape and
    memory order; a copy is the kernel's own, never a view of the file."""
    value = make()
    assert value.nbytes >= 1 << 20  # large enough to be mapped or copied, not read
    ex = transfer.Exchange(str(tmp_path), mapped=how != "read")
    np.save(tmp_path / "out-0.npy", value)
    out = {}
    ex.read_outputs((("y", "y", False),), out, writer_gone=how == "map")
    got = out["y"]
    assert type(got) is np.ndarray and got.dtype == value.dtype and got.shape == value.shape
    assert got.tobytes(order="A") == value.tobytes(order="A")
    assert got.flags.f_contiguous == value.flags.f_contiguous and got.flags.writeable
    if how == "copy":  # a live writer rewriting the file changes nothing the kernel holds
        size = os.path.getsize(tmp_path / "out-0.npy")
        with open(tmp_path / "out-0.npy", "r+b") as f:
            f.seek(size - value.nbytes)
            f.write(b"\xa5" * value.nbytes)
        assert got.tobytes(order="A") == value.tobytes(order="A")


def test_exchange_folders_are_private_fresh_and_found_by_kernel_id(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKMAGIC_XFER_ROOT", str(tmp_path))
    kid = "host.example:123:456"
    a = transfer.Exchange.create(f"k-{transfer.kernel_tag(kid)}-", f"{os.getuid()}:{os.getgid()}")
    b = transfer.Exchange.create(f"k-{transfer.kernel_tag(kid)}-", None)
    other = transfer.Exchange.create(f"k-{transfer.kernel_tag('host.example:12:456')}-", None)
    root = os.path.dirname(a.host_dir)
    assert root == str(tmp_path / f"dockmagic-{os.getuid()}")
    assert os.stat(root).st_mode & 0o777 == 0o711
    assert os.stat(a.host_dir).st_mode & 0o777 == 0o700
    assert a.host_dir != b.host_dir and a.container_dir == transfer.XFER_TARGET
    assert transfer.exchange_dirs_of(kid) == sorted([a.host_dir, b.host_dir])
    assert transfer.exchange_dirs_of("host.example:12:456") == [other.host_dir]
    for ex in (a, b, other):
        ex.close()
        assert not os.path.exists(ex.host_dir)  # out of sight at once; freed off the cell's path
    assert transfer.exchange_dirs_of(kid) == []
    from dockmagic import sweeper
    assert sweeper.flush(30) and os.listdir(root) == []


# -- through containers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shell(shell, docker_client):
    """conftest's shell, plus this module's containers removed by label afterwards."""
    yield shell
    kernel.shutdown()
    remove_labelled(docker_client, "dockmagic.test=transfer")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # (folders from before the test, e.g. a session another module left running, are theirs)
    before = set(transfer.exchange_dirs_of(kernel.kernel_id()))
    yield tmp_path
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".dockmagic")]
    assert leftovers == [], "an exchange folder was left behind"
    assert not [p for p in transfer.exchange_dirs_of(kernel.kernel_id())
                if os.path.basename(p) not in _spare_dirs() and p not in before]


def _spare_dirs():
    from dockmagic import spare
    spare.SPARES.ready()  # a spare being made has its folder already
    s = spare.SPARES._spare
    return {os.path.basename(s.xdir)} if s is not None and s.xdir else set()


@pytest.fixture(scope="module")
def sess(shell, docker_client, tmp_path_factory):
    folder = tmp_path_factory.mktemp("session-folder")
    old = os.getcwd()
    os.chdir(folder)
    name = f"dmtest-xfer-{uuid.uuid4().hex[:8]}"
    try:
        shell.run_line_magic("docker", f"session {name} -l dockmagic.test=transfer {BASE_IMAGE}")
    finally:
        os.chdir(old)
    yield name, folder
    session.stop(engines.default(), name)


@pytest.mark.engine
def test_oneshot_in_and_out_round_trip_plain_values(shell, workdir):
    ns = shell.user_ns
    ns.update(n=41, cfg={"lr": 0.1, "layers": [3, 4]}, text="héllo ✓")

    class Box:
        pass

    ns["box"] = Box()
    ns["box"].lr = 0.5
    shell.run_cell_magic("docker", f"--in n,cfg,text --in lr=box.lr --out m,cfg2,upper "
                                   f"--out box.scaled=scaled {BASE_IMAGE}", (
        "m = n + 1\n"
        "cfg2 = dict(cfg, layers=cfg['layers'] + [5])\n"
        "upper = text.upper()\n"
        "scaled = lr * 4\n"))
    assert ns["m"] == 42
    assert ns["cfg2"] == {"lr": 0.1, "layers": [3, 4, 5]}
    assert ns["upper"] == "HÉLLO ✓"
    assert ns["box"].scaled == 2.0


@pytest.mark.engine
def test_100mb_array_travels_between_numpy_2_and_debian_numpy_1(shell, workdir, capsys):
    assert np.__version__.startswith("2.")
    rng = np.random.default_rng(0)
    ns = shell.user_ns
    ns["big"] = rng.standard_normal(100 * 1024 * 1024 // 8)  # 100 MB of float64
    ns["small"] = np.arange(12, dtype=np.int16).reshape(3, 4)
    shell.run_cell_magic("docker", f"--in big,small --out back,total,meta {BASE_IMAGE}", (
        "import numpy\n"
        "print('container numpy', numpy.__version__)\n"
        "back = big * 2\n"
        "total = small.sum(axis=0)\n"
        "meta = {'arr': small.T.copy(), 'n': small.size}\n"))
    assert "container numpy 1." in capsys.readouterr().out
    assert ns["back"].dtype == np.float64 and ns["back"].shape == ns["big"].shape
    assert np.array_equal(ns["back"], ns["big"] * 2)
    assert np.array_equal(ns["total"], ns["small"].sum(axis=0))
    assert np.array_equal(ns["meta"]["arr"], ns["small"].T) and ns["meta"]["n"] == 12
    del ns["big"], ns["back"]


@pytest.mark.engine
def test_unpicklable_input_fails_in_one_line_before_any_container(shell, workdir, docker_client):
    ns = shell.user_ns
    ns["gen"] = (i for i in range(3))
    ns["ok"] = 1
    before = {c.id for c in docker_client.containers.list(
        all=True, filters={"label": "dockmagic.test=transfer-unpicklable"})}
    with pytest.raises(TransferError) as info:
        shell.run_cell_magic("docker", f"-l dockmagic.test=transfer-unpicklable --in ok,gen "
                                       f"{BASE_IMAGE}", "print('never runs')")
    msg = str(info.value)
    assert "gen" in msg and "generator" in msg and "\n" not in msg
    assert info.value._render_traceback_() == [f"TransferError: {msg}"]
    after = {c.id for c in docker_client.containers.list(
        all=True, filters={"label": "dockmagic.test=transfer-unpicklable"})}
    assert after == before


@pytest.mark.engine
def test_output_that_cannot_travel_assigns_nothing(shell, workdir):
    ns = shell.user_ns
    ns.pop("good", None)
    with pytest.raises(TransferError) as info:
        shell.run_cell_magic("docker", f"--out good,lock {BASE_IMAGE}", (
            "import threading\ngood = 1\nlock = threading.Lock()\n"))
    assert "lock" in str(info.value) and "\n" not in str(info.value)
    assert "good" not in ns  # all or nothing
    with pytest.raises(TransferError) as info:
        shell.run_cell_magic("docker", f"--out missing {BASE_IMAGE}", "x = 1")
    assert "missing" in str(info.value)


@pytest.mark.engine
def test_notebook_class_instances_fail_with_a_hint(shell, workdir):
    shell.run_cell("class Local:\n    pass\nlocal_obj = Local()\n")
    with pytest.raises(TransferError) as info:
        shell.run_cell_magic("docker", f"--in local_obj {BASE_IMAGE}", "print(local_obj)")
    assert "local_obj" in str(info.value) and "defined in the notebook" in str(info.value)


@pytest.mark.engine
def test_cell_errors_still_raise_cellfailed_with_transfers(shell, workdir):
    from dockmagic import errors
    shell.user_ns["n"] = 1
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", f"--in n --out m {BASE_IMAGE}", "m = n / 0")
    assert info.value.exit_code == 1 and "ZeroDivisionError" in info.value.stderr_tail
    assert "File \"<cell [" in info.value.stderr_tail and "line 2, in <module>\n    m = n / 0" \
        in info.value.stderr_tail
    assert "<dockmagic>" not in info.value.stderr_tail


@pytest.mark.engine
def test_transfer_usage_errors(shell, workdir):
    shell.user_ns["n"] = 1
    for line in [f"--in 'n,' {BASE_IMAGE}", f"--in n {BASE_IMAGE} bash",
                 f"-d --in n {BASE_IMAGE}"]:
        with pytest.raises(UsageError):
            shell.run_cell_magic("docker", line, "echo hi")
    with pytest.raises(TransferError, match="no variable nope"):
        shell.run_cell_magic("docker", f"--in nope {BASE_IMAGE}", "print(1)")


@pytest.mark.engine
def test_no_mount_works_and_without_a_tmpfs_the_exchange_is_a_private_folder_in_tmp(
        shell, workdir, monkeypatch, tmp_path_factory):
    shell.user_ns["n"] = 1
    shell.run_cell_magic("docker", f"--no-mount --in n --out m {BASE_IMAGE}", "m = n + 1")
    assert shell.user_ns["m"] == 2
    monkeypatch.setattr(transfer, "_is_tmpfs", lambda path: False)
    tmp = str(tmp_path_factory.mktemp("no-tmpfs"))
    monkeypatch.setattr(transfer.tempfile, "gettempdir", lambda: tmp)
    shell.run_cell_magic("docker", f"--no-mount --in n --out m {BASE_IMAGE}",
                         "import os\nm = (n + 2, os.listdir('/.dockmagic-xfer'))")
    assert shell.user_ns["m"] == (3, ["in-0.pkl"])
    root = transfer.exchange_root()[0]
    assert root == os.path.join(tmp, f"dockmagic-{os.getuid()}")
    shell.run_line_magic("docker", "config --spare off")  # spares and their folders go
    shell.run_line_magic("docker", "config --spare on")
    # gone from every container's sight at once (renamed); removed by the sweeper's thread
    from dockmagic import sweeper
    assert not [n for n in os.listdir(root) if not n.startswith(".gone-")]
    assert sweeper.flush(30) and os.listdir(root) == []


@pytest.mark.engine
def test_large_outputs_are_plain_writable_arrays(shell, workdir):
    before = set(transfer.exchange_dirs_of(kernel.kernel_id()))
    shell.run_cell_magic("docker", f"--out big {BASE_IMAGE}",
                         "import numpy\nbig = numpy.arange(1 << 20, dtype=numpy.float64)")
    big = shell.user_ns["big"]
    assert type(big) is np.ndarray and big.flags.writeable
    big[0] = -1  # copy-on-write: changes only the notebook's array
    assert big[0] == -1 and big[1] == 1 and big.sum() == (1 << 20) * ((1 << 20) - 1) / 2 - 1
    assert not [p for p in transfer.exchange_dirs_of(kernel.kernel_id())
                if os.path.basename(p) not in _spare_dirs() and p not in before]
    del shell.user_ns["big"]


@pytest.mark.engine
def test_session_in_and_out_keep_state(shell, sess, monkeypatch):
    name, folder = sess
    monkeypatch.chdir(folder)
    ns = shell.user_ns
    ns.update(start=10, arr=np.arange(5.0))
    shell.run_cell_magic("docker", f"@{name} --in start,arr", "acc = start\nkeep = arr * 3")
    shell.run_cell_magic("docker", f"@{name} --out acc2=acc,keep", "acc += 5")
    assert ns["acc2"] == 15 and np.array_equal(ns["keep"], np.arange(5.0) * 3)
    ns["gen"] = (i for i in range(3))
    with pytest.raises(TransferError, match="gen"):
        shell.run_cell_magic("docker", f"@{name} --in gen", "print(gen)")
    with pytest.raises(TransferError, match="nothere"):
        shell.run_cell_magic("docker", f"@{name} --out nothere", "pass")
    shell.run_cell_magic("docker", f"@{name}", "assert acc == 15, acc")  # still alive, state intact
    assert not [p for p in folder.iterdir() if p.name.startswith(".dockmagic")]
    (sdir,) = [d for d in transfer.session_dirs() if os.path.basename(d).startswith(f"s-{name}-")]
    assert os.listdir(sdir) == []  # each cell's own folder is gone


@pytest.mark.engine
def test_session_100mb_array_round_trip(shell, sess, monkeypatch):
    name, folder = sess
    monkeypatch.chdir(folder)
    ns = shell.user_ns
    ns["big"] = np.arange(100 * 1024 * 1024 // 4, dtype=np.float32)
    shell.run_cell_magic("docker", f"@{name} --in big --out big2", "big2 = big[::-1].copy()")
    assert ns["big2"].dtype == np.float32 and ns["big2"][0] == ns["big"][-1]
    assert np.array_equal(ns["big2"], ns["big"][::-1])
    del ns["big"], ns["big2"]


@pytest.mark.engine
def test_a_non_root_kernel_exchanges_with_any_container_user(docker_client, base_image, tmp_path):
    """Kernel uid 1000; the container as 1000 (default), as root, and as another user: the
    values travel every way and the exchange folders are gone afterwards."""
    if os.getuid() != 0:
        pytest.skip("needs root to start a kernel as another user")
    import subprocess
    import sys

    os.chown(tmp_path, 1000, 1000)
    name = f"dmtest-xfer-{uuid.uuid4().hex[:8]}"
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "from dockmagic import session, kernel\nimport dockmagic.engine as engines\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'dockmagic')\n"
        "ip.user_ns['a'] = {'k': 1}\n"
        "import numpy\n"
        "ip.user_ns['arr'] = numpy.arange(1 << 18, dtype=numpy.float64)\n"
        f"for flags in ['', '--as-root', '-u 1234:1234']:\n"
        f"    ip.run_cell_magic('docker', flags + ' -l dockmagic.test=transfer --in a,arr "
        f"--out b,arr2 {BASE_IMAGE}', 'import os\\nb = dict(a, uid=os.getuid())\\narr2 = arr + 1')\n"
        "    print(ip.user_ns['b']['uid'], float(ip.user_ns['arr2'][-1]))\n"
        f"ip.run_line_magic('docker', 'session {name} -l dockmagic.test=transfer {BASE_IMAGE}')\n"
        f"ip.run_cell_magic('docker', '@{name} --in a --out c', 'c = dict(a, s=1)')\n"
        "print(ip.user_ns['c'])\n"
        f"session.stop(engines.default(), '{name}')\n"
        "kernel.shutdown()\n"
    )
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        as_kernel_user(1000, [sys.executable, "-c", script]), cwd=tmp_path, env=env, timeout=180, capture_output=True, text=True)
    remove_labelled(docker_client, "dockmagic.test=transfer")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split("\n")
    assert [ln for ln in lines if ln.endswith(str(float(1 << 18)))] == [
        f"1000 {float(1 << 18)}", f"0 {float(1 << 18)}", f"1234 {float(1 << 18)}"]
    assert "{'k': 1, 's': 1}" in proc.stdout
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".dockmagic")]
    if os.path.isdir("/dev/shm/dockmagic-1000"):
        leftovers += os.listdir("/dev/shm/dockmagic-1000")
    assert leftovers == []


# -- inputs written while the container starts ---------------------------------------------------
def _agent_load(xdir, manifest, result):
    ns = {}
    try:
        agent.load_inputs(xdir, manifest, ns, mapped=True, wait=True)
        result["ns"] = ns
    except agent.TransferFailed as exc:
        result["error"] = str(exc)


def test_inputs_written_in_the_background_reach_a_waiting_agent_even_after_a_move(tmp_path,
                                                                                monkeypatch):
    """A one-shot cell's large arrays are written by a thread while its container starts; the
    agent waits for each ``in-I.npy`` to appear complete. Moved into a spare's folder midway,
    they land there."""
    import threading
    monkeypatch.setenv("DOCKMAGIC_XFER_ROOT", str(tmp_path))
    big = np.arange(1 << 22, dtype=np.float64)  # 32 MiB: the thread is still busy at the move
    ns = {"big": big, "f": np.asfortranarray(np.arange(1 << 18, dtype=np.int32).reshape(512, 512))}
    ex = transfer.Exchange.create("k-test-", None, tmpfs=True)
    spare_dir = transfer.Exchange.create("k-test-", None, tmpfs=True)
    try:
        manifest = ex.write_inputs((("big", "big"), ("g", "f")), ns, background=True)
        assert ex.writing and manifest == [["big", "in-0.npy", "npy"], ["g", "in-1.npy", "npy"]]
        ex.move_to(spare_dir.host_dir)
        result = {}
        reader = threading.Thread(target=_agent_load, args=(spare_dir.host_dir, manifest, result))
        reader.start()
        ex.wait_written()
        reader.join(30)
        assert "error" not in result and np.array_equal(result["ns"]["big"], big)
        assert np.array_equal(result["ns"]["g"], ns["f"]) and result["ns"]["g"].flags.f_contiguous
        assert sorted(os.listdir(spare_dir.host_dir)) == ["in-0.npy", "in-1.npy"]
    finally:
        ex.close()
        spare_dir.close()


def test_inputs_that_cannot_be_written_end_the_agents_wait_and_fail_in_one_line(tmp_path,
                                                                              monkeypatch):
    import threading
    monkeypatch.setenv("DOCKMAGIC_XFER_ROOT", str(tmp_path))

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", full)
    ex = transfer.Exchange.create("k-test-", None, tmpfs=True)
    try:
        manifest = ex.write_inputs((("x", "big"),), {"big": np.zeros(1 << 18)}, background=True)
        result = {}
        reader = threading.Thread(target=_agent_load, args=(ex.host_dir, manifest, result))
        reader.start()
        reader.join(30)
        assert result == {"error": "--in x: the kernel could not write it"}
        with pytest.raises(TransferError, match=r"^--in big: cannot be written for the container "
                                                r"\(OSError: \[Errno 28\] No space left"):
            ex.wait_written()
    finally:
        ex.close()


def test_small_or_pickled_inputs_are_written_before_the_container_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKMAGIC_XFER_ROOT", str(tmp_path))
    for ns in ({"a": np.arange(10)}, {"a": np.zeros(1 << 18), "b": {"k": 1}},
               {"a": np.zeros((1 << 10, 1 << 9))[:, ::2]}):  # (not contiguous)
        ex = transfer.Exchange.create("k-test-", None, tmpfs=True)
        try:
            ex.write_inputs(tuple((k, k) for k in ns), ns, background=True)
            assert not ex.writing and not [n for n in os.listdir(ex.host_dir) if ".part" in n]
        finally:
            ex.close()


@pytest.mark.engine
def test_large_inputs_written_while_the_container_starts_arrive_whole_cold_and_in_a_spare(
        shell, workdir, capsys):
    """The same --in cell cold (the first; it leaves a spare), then in its spare: each time
    the container starts while the kernel still writes the array, and reads it whole."""
    import hashlib

    from dockmagic import spare

    shell.run_line_magic("docker", "config --spare on")
    capsys.readouterr()
    ns = shell.user_ns
    ns["big"] = np.random.default_rng(1).standard_normal(64 * 1024 * 1024 // 8)
    line = f"--in big -l dockmagic.test=transfer {BASE_IMAGE}"
    body = "import hashlib\nprint('sha', hashlib.sha256(big.tobytes()).hexdigest(), big.shape)"
    want = f"sha {hashlib.sha256(ns['big'].tobytes()).hexdigest()} ({ns['big'].size},)"
    used = spare.SPARES.used
    for _ in range(2):
        spare.SPARES.ready()
        shell.run_cell_magic("docker", line, body)
        assert want in capsys.readouterr().out
    assert spare.SPARES.used == used + 1, "the second cell did not run in the spare"
    del ns["big"]
