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
from dockmagic import session, transfer
from dockmagic.transfer import TransferError, TransferUsage, parse_transfers, pick_exchange_dir


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


def test_exchange_dir_is_the_notebook_folder_where_it_is_mounted(tmp_path):
    nb = str(tmp_path / "proj" / "nb")
    binds = [("/data", "/data", False), (str(tmp_path), "/work", True),
             (str(tmp_path / "proj"), "/proj", True)]
    assert pick_exchange_dir(binds, nb) == (nb, "/proj/nb")  # the deepest mount wins
    assert pick_exchange_dir([(nb, nb, True)], nb) == (nb, nb)


def test_exchange_dir_falls_back_to_a_writable_mount_or_says_what_to_do(tmp_path):
    assert pick_exchange_dir([(str(tmp_path), "/w", True)], "/elsewhere") == (str(tmp_path), "/w")
    with pytest.raises(TransferError) as info:
        pick_exchange_dir([(str(tmp_path), "/w", False)], "/elsewhere")
    assert "--no-mount" in str(info.value) and "-v" in str(info.value)


def test_values_round_trip_through_the_file_formats(tmp_path):
    ex = transfer.Exchange([(str(tmp_path), str(tmp_path))])
    ns = {"i": 3, "d": {"k": [1, 2.5, None]}, "s": "é✓", "a": np.arange(6).reshape(2, 3),
          "f": np.asfortranarray(np.ones((3, 2), np.float32)), "nested": {"arr": np.arange(3)}}
    manifest = ex.write_inputs(tuple((k, k) for k in ns), ns)
    kinds = {dest: kind for dest, _, _, kind in manifest}
    assert kinds["a"] == kinds["f"] == "npy" and kinds["d"] == kinds["nested"] == "pkl"
    out = {}
    ex.read_outputs(manifest, out)
    assert out["i"] == 3 and out["d"] == ns["d"] and out["s"] == "é✓"
    assert np.array_equal(out["a"], ns["a"]) and out["f"].dtype == np.float32
    assert np.array_equal(out["nested"]["arr"], np.arange(3))


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
    yield tmp_path
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(transfer.XFER_PREFIX)]
    assert leftovers == [], "an exchange folder was left behind"


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
    assert "File \"<stdin>\", line 1" in info.value.stderr_tail
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
def test_no_mount_works_through_the_tmpfs_and_says_what_to_do_without_one(shell, workdir,
                                                                         monkeypatch, capsys):
    shell.user_ns["n"] = 1
    shell.run_cell_magic("docker", f"--no-mount --in n --out m {BASE_IMAGE}", "m = n + 1")
    assert shell.user_ns["m"] == 2
    monkeypatch.setattr(transfer, "fast_root", lambda: None)
    with pytest.raises(TransferError, match="--no-mount"):
        shell.run_cell_magic("docker", f"--no-mount --in n {BASE_IMAGE}", "print(n)")
    shell.run_cell_magic("docker", f"--in n --out m {BASE_IMAGE}", "m = n + 2")  # notebook folder
    assert shell.user_ns["m"] == 3


@pytest.mark.engine
def test_large_outputs_are_plain_writable_arrays(shell, workdir):
    shell.run_cell_magic("docker", f"--out big {BASE_IMAGE}",
                         "import numpy\nbig = numpy.arange(1 << 20, dtype=numpy.float64)")
    big = shell.user_ns["big"]
    assert type(big) is np.ndarray and big.flags.writeable
    big[0] = -1  # copy-on-write: changes only the notebook's array
    assert big[0] == -1 and big[1] == 1 and big.sum() == (1 << 20) * ((1 << 20) - 1) / 2 - 1
    assert not [p for p in os.listdir(transfer.fast_root() or "/nonexistent")
                if p.startswith(transfer.XFER_PREFIX)]
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
    assert not [p for p in folder.iterdir() if p.name.startswith(transfer.XFER_PREFIX)]


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
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(transfer.XFER_PREFIX)]
    if os.path.isdir("/dev/shm/dockmagic-1000"):
        leftovers += os.listdir("/dev/shm/dockmagic-1000")
    assert leftovers == []
