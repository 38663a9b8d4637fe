"""A tcp:// engine (the rig's dockerd on its loopback TCP port, mutual TLS), in a real kernel.

No SSH: the notebook folder travels as tar through the engine API into a named volume. The rig
has its own filesystem, so the notebook folder does not exist there (asserted): what a cell
reads there came by tar, and what it wrote came back the same way."""
import os
import pwd
import time

import pytest

from kernels import Kernel
from remote_rig import rig_containers, rig_exec

pytestmark = pytest.mark.engine
IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
ENGINE = "rigtcp"


def _volumes(label="dockmagic.workspace=1"):
    out = rig_exec("docker", "volume", "ls", "-q", "--filter", f"label={label}").stdout.decode()
    return out.split()


def _own_volume(folder) -> str:
    from dockmagic.remote.volume import volume_name
    return volume_name(os.path.realpath(folder))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("tcpws")
    nb = base / "notebook"
    (nb / "data").mkdir(parents=True)
    (nb / "data" / "in.txt").write_text("hello over tcp\n")
    (nb / ".gitignore").write_text("scratch/\n")
    (nb / "scratch").mkdir()
    (nb / "scratch" / "big.bin").write_bytes(b"x" * 1000)
    (base / "marker.txt").write_text("host only, untouched\n")
    return nb


@pytest.fixture(scope="module")
def kernel(rig_tcp, folder, tmp_path_factory):
    env = {"XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg"))}
    k = Kernel(cwd=folder, env=env)
    k.env = env
    res = k.run(f"%docker engines add {ENGINE} {rig_tcp}")
    assert res.status == "ok", res
    yield k
    try:
        # the workspace volume is the one thing meant to stay; forgetting the engine removes it
        res = k.run(f"%docker engines rm {ENGINE}")
        assert res.status == "ok", res
        assert "removed workspace volume" in res.text, res
        mine = f"dockmagic.kernel={k.kernel_id}"
        deadline = time.monotonic() + 20
        while rig_containers(mine) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rig_containers(mine) == []  # no cell, session or helper container left
        assert _own_volume(folder) not in _volumes()
    finally:
        k.close()


def cell(kernel, line, body, ok=True):
    res = kernel.run(f"%%docker {line}\n{body}")
    if ok:
        assert res.status == "ok", res
    return res


def test_engine_added_over_tcp_is_reachable(kernel, rig_tcp):
    res = kernel.run("%docker engines")
    assert res.status == "ok", res
    row = [line for line in res.stdout.splitlines() if line.lstrip().startswith(ENGINE)]
    assert row and "yes" in row[0] and "tcp://127.0.0.1:" in row[0], res.stdout


def test_one_shot_cell_reads_and_writes_the_folder_by_tar(kernel, folder):
    res = cell(kernel, f"--engine {ENGINE} {IMAGE}", (
        "import os, pathlib\n"
        "print('cwd', os.getcwd())\n"
        "print('ignored there:', os.path.exists('scratch/big.bin'))\n"
        "pathlib.Path('results').mkdir(exist_ok=True)\n"
        "pathlib.Path('results/out.txt').write_text(open('data/in.txt').read().upper())\n"))
    assert f"cwd {folder}" in res.stdout.splitlines()
    assert "ignored there: False" in res.stdout  # .gitignore kept scratch/ here
    out = folder / "results" / "out.txt"
    assert out.read_text() == "HELLO OVER TCP\n"
    st = out.stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert pwd.getpwuid(st.st_uid).pw_name == pwd.getpwuid(os.getuid()).pw_name
    # the folder is not on the rig: the files travelled there and back by tar
    assert rig_exec("test", "-e", str(folder), check=False).returncode != 0
    # ... into this notebook's workspace volume, labelled as dockmagic's
    vol = _own_volume(folder)
    assert vol in _volumes()
    labels = rig_exec("docker", "volume", "inspect", "-f", "{{json .Labels}}", vol).stdout
    assert str(folder).encode() in labels and b'"dockmagic.workspace":"1"' in labels


def test_a_second_cell_sees_a_local_edit(kernel, folder):
    (folder / "data" / "in.txt").write_text("edited here\n")
    res = cell(kernel, f"--engine {ENGINE} {IMAGE}", "print(open('data/in.txt').read())")
    assert "edited here" in res.stdout
    (folder / "data" / "in.txt").unlink()  # a deletion here travels too
    res = cell(kernel, f"--engine {ENGINE} {IMAGE}",
               "import os; print('still there:', os.path.exists('data/in.txt'))")
    assert "still there: False" in res.stdout
    (folder / "data" / "in.txt").write_text("hello over tcp\n")


def test_a_file_changed_here_while_the_cell_ran_is_kept_both_ways(kernel, folder):
    shared = folder / "shared.txt"
    shared.write_text("before\n")
    msg = kernel.send(f"%%docker --engine {ENGINE} {IMAGE}\n"
                      "import time\nprint('started', flush=True)\ntime.sleep(4)\n"
                      "open('shared.txt', 'w').write('from the engine\\n')\n")
    kernel.collect(msg, until=lambda r: "started" in r.stdout)
    time.sleep(0.5)
    shared.write_text("mine, edited meanwhile\n")
    res = kernel.collect(msg)
    assert res.status == "ok", res
    assert shared.read_text() == "mine, edited meanwhile\n"
    copy = folder / f"shared.{ENGINE}-conflict.txt"
    assert copy.read_text() == "from the engine\n"
    assert "kept yours" in res.stderr


def test_sync_in_and_none(kernel, folder):
    cell(kernel, f"--engine {ENGINE} --sync in {IMAGE}", "open('made-in.txt', 'w').write('x')")
    assert not (folder / "made-in.txt").exists()
    (folder / "new-here.txt").write_text("new\n")
    res = cell(kernel, f"--engine {ENGINE} --sync none {IMAGE}",
               "import os; print('new there:', os.path.exists('new-here.txt'))\n"
               "open('made-none.txt', 'w').write('x')")
    assert "new there: False" in res.stdout and not (folder / "made-none.txt").exists()
    res = cell(kernel, f"--engine {ENGINE} --sync out {IMAGE}",
               "import os; print('new there:', os.path.exists('new-here.txt'))")
    assert "new there: False" in res.stdout
    # what --sync in left there comes back with the next cell that brings files back
    assert (folder / "made-in.txt").exists() and (folder / "made-none.txt").exists()


def test_a_rogue_cell_cannot_make_the_kernel_write_outside_the_folder(kernel, folder):
    marker = folder.parent / "marker.txt"
    before = (marker.read_bytes(), marker.stat().st_mtime_ns)
    res = cell(kernel, f"--engine {ENGINE} {IMAGE}", (
        "import os\n"
        f"MARKER = {str(marker)!r}\n"
        "os.makedirs('rogue', exist_ok=True)\n"
        "os.symlink('/etc/passwd', 'rogue/passwd')\n"
        "os.symlink(MARKER, 'rogue/marker')\n"
        "os.symlink('../../marker.txt', 'rogue/up')\n"
        "os.symlink(os.path.dirname(MARKER), 'rogue/outdir')\n"
        "os.symlink('inside.txt', 'rogue/fine')\n"
        "open('rogue/inside.txt', 'w').write('ok')\n"
        "os.chmod('rogue/inside.txt', 0o4755)\n"
        "os.remove('data/in.txt'); os.symlink(MARKER, 'data/in.txt')\n"
        "print('rogue done')\n"))
    assert "rogue done" in res.stdout
    assert (marker.read_bytes(), marker.stat().st_mtime_ns) == before
    for path in ("rogue/passwd", "rogue/marker", "rogue/up", "rogue/outdir"):
        assert not os.path.lexists(folder / path), path
    assert (folder / "data" / "in.txt").read_text() == "hello over tcp\n"  # not a link now
    assert not (folder / "data" / "in.txt").is_symlink()
    assert (folder / "rogue" / "inside.txt").read_text() == "ok"
    assert not (folder / "rogue" / "inside.txt").stat().st_mode & 0o7000  # setuid dropped
    assert os.readlink(folder / "rogue" / "fine") == "inside.txt"  # a link inside is fine
    assert "left out" in res.stderr and "rogue/passwd" in res.stderr
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                assert os.path.realpath(path).startswith(str(folder) + "/"), path
    # the next cell still works, and the link there does not reach back here
    res = cell(kernel, f"--engine {ENGINE} {IMAGE}", "print(open('rogue/inside.txt').read())")
    assert "ok" in res.stdout


def test_session_cells_sync_changed_files(kernel, folder):
    res = kernel.run(f"%docker session tcpsess --engine {ENGINE} --rm {IMAGE}")
    assert res.status == "ok", res
    try:
        cell(kernel, "@tcpsess", "x = 41\nopen('from_session.txt', 'w')"
                                 ".write(open('data/in.txt').read())")
        assert (folder / "from_session.txt").read_text() == "hello over tcp\n"
        (folder / "data" / "in.txt").write_text("changed for the session\n")
        res = cell(kernel, "@tcpsess", "print(x + 1, open('data/in.txt').read())")
        assert "42 changed for the session" in res.stdout
        cell(kernel, "@tcpsess", "open('from_session.txt', 'w').write('second')")
        assert (folder / "from_session.txt").read_text() == "second"
        running = rig_exec("docker", "ps", "-q", "--filter", "name=^tcpsess$").stdout.split()
        assert len(running) == 1  # on the rig
    finally:
        res = kernel.run("%docker session --stop tcpsess")
        assert res.status == "ok", res
    assert rig_exec("docker", "ps", "-aq", "--filter", "name=^tcpsess$").stdout.split() == []


def test_a_bind_of_a_folder_inside_the_notebook_folder_is_refused_in_one_line(kernel, folder):
    res = kernel.run(f"%%docker --engine {ENGINE} -v {folder}/data:/data {IMAGE}\nprint(1)")
    assert res.status == "error"
    text = res.error["evalue"]
    assert "\n" not in text and "tcp://" in text and "ssh://" in text


def test_in_out_on_a_tcp_engine_is_refused_in_one_line(kernel):
    kernel.run("q = 2", check=True)
    res = kernel.run(f"%%docker --engine {ENGINE} --in q --out r {IMAGE}\nr = q + 1")
    assert res.status == "error"
    text = res.error["evalue"]
    assert "\n" not in text and "--in/--out" in text and "ssh://" in text


def test_failed_and_interrupted_cells_bring_their_files_back_and_leave_no_container(kernel,
                                                                                   folder):
    res = cell(kernel, f"--engine {ENGINE} {IMAGE}",
               "open('before-exit.txt', 'w').write('written')\nimport sys; sys.exit(3)", ok=False)
    assert res.status == "error" and (folder / "before-exit.txt").read_text() == "written"
    msg = kernel.send(f"%%docker --engine {ENGINE} {IMAGE}\n"
                      "open('before-interrupt.txt', 'w').write('written')\n"
                      "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    kernel.collect(msg, until=lambda r: "started" in r.stdout)
    t0 = time.monotonic()
    kernel.km.interrupt_kernel()
    res = kernel.collect(msg)
    assert res.status == "error" and time.monotonic() - t0 < 30, res
    assert (folder / "before-interrupt.txt").read_text() == "written"
    mine = f"dockmagic.kernel={kernel.kernel_id}"
    running = [c for c in rig_containers(mine)
               if rig_exec("docker", "inspect", "-f", '{{index .Config.Labels "dockmagic.kind"}}',
                           c).stdout.decode().strip() != "spare"]
    assert running == []  # neither the cell's container nor a helper


def test_an_image_without_python3_still_syncs_both_ways(kernel, folder):
    tag = "dockmagic-tcpsync-nopython:test"
    rig_exec("docker", "build", "-q", "-t", tag, "-", input=(
        f"FROM {IMAGE}\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3*\n").encode())
    try:
        (folder / "data" / "in.txt").write_text("read by bash\n")
        res = cell(kernel, f"--engine {ENGINE} {tag} bash",
                   "command -v python3 || echo 'no python3'\ncat data/in.txt\n"
                   "echo 'from bash' > results/bash.txt")
        assert "no python3" in res.stdout and "read by bash" in res.stdout
        assert (folder / "results" / "bash.txt").read_text() == "from bash\n"
        assert "has no python3" in res.stderr
        (folder / "results" / "bash.txt").write_text("edited here\n")
        res = cell(kernel, f"--engine {ENGINE} {tag} bash", "cat results/bash.txt")
        assert "edited here" in res.stdout
        assert (folder / "results" / "bash.txt").read_text() == "edited here\n"
    finally:
        rig_exec("docker", "rmi", "-f", tag, check=False)


def test_a_new_kernel_sends_only_what_the_volume_lacks(rig_tcp, tmp_path):
    """The volume outlives kernels: a new kernel's first push lists it and sends only what
    differs, and deletes there what this folder no longer has."""
    from dockmagic.engine import volumes
    from dockmagic.remote.engines import RemoteEngine
    from dockmagic.remote.urls import parse_endpoint
    from dockmagic.remote.volume import VolumeWorkspace

    url, *opts = rig_tcp.split()
    tls = {o.lstrip("-"): v for o, v in zip(opts[1::2], opts[2::2])}
    engine = RemoteEngine(parse_endpoint("rigtcp2", url, dict(tls, tlsverify="1")))
    nb = tmp_path / "nb2"
    nb.mkdir()
    for i in range(5):
        (nb / f"f{i}.txt").write_text(f"file {i}\n")
    said = []
    first = VolumeWorkspace(engine, str(nb), say=said.append)
    first.image = IMAGE
    try:
        assert first.push().sent == 5
        assert sorted(first.list_remote()) == [f"f{i}.txt" for i in range(5)]
        (nb / "f0.txt").write_text("changed since\n")
        (nb / "f4.txt").unlink()
        second = VolumeWorkspace(engine, str(nb), say=said.append)  # a new kernel's
        second.image = IMAGE
        send, gone = second._first_push_plan(second_scan(nb))
        assert (send, gone) == (["f0.txt"], ["f4.txt"])
        second.push()
        there = second.list_remote()
        assert sorted(there) == [f"f{i}.txt" for i in range(4)]
        assert there["f0.txt"] == (os.lstat(nb / "f0.txt").st_mtime_ns, 14)
    finally:
        volumes.remove_volume(engine, first.volume)
        engine.close()
    mine = [c for c in rig_containers("dockmagic.kind=workspace")]
    assert mine == []


def second_scan(nb):
    from dockmagic.remote.workspace import scan
    return scan(str(nb))[0]


def test_a_session_reattached_by_another_kernel_syncs_through_the_same_volume(kernel, folder):
    res = kernel.run(f"%docker session tcpkeep --engine {ENGINE} {IMAGE}")
    assert res.status == "ok", res
    other = None
    try:
        cell(kernel, "@tcpkeep", "x = 5")
        other = Kernel(cwd=folder, env=kernel.env)  # same engines file, same folder
        res = other.run(f"%docker session tcpkeep --engine {ENGINE} {IMAGE}")
        assert res.status == "ok" and "reattached" in res.text, res
        (folder / "data" / "in.txt").write_text("seen by the reattached kernel\n")
        res = cell(other, "@tcpkeep", "print(x, open('data/in.txt').read())\n"
                                      "open('reattached.txt', 'w').write(str(x * 2))")
        assert "5 seen by the reattached kernel" in res.stdout
        assert (folder / "reattached.txt").read_text() == "10"
    finally:
        stopper = other if other is not None else kernel
        res = stopper.run("%docker session --stop tcpkeep")
        if other is not None:
            other.close()
    assert res.status == "ok", res
    assert rig_exec("docker", "ps", "-aq", "--filter", "name=^tcpkeep$").stdout.split() == []
