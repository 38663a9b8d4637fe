"""`%%docker` through a real IPython shell against the real engine."""
import os
import subprocess
import sys
import time

import pytest

import dockmagic.engine as engines
from IPython.core.error import UsageError

from dockmagic import errors
from conftest import BASE_IMAGE, ENTRYPOINT_IMAGE, ENV_IMAGE, as_kernel_user, interrupt_when_printed

pytestmark = pytest.mark.engine


def managed(client, **labels):
    """dockmagic's containers with these labels, in one listing call (no per-container get)."""
    filters = ["dockmagic.managed"] + [f"{k}={v}" for k, v in labels.items()]
    return client.api.containers(all=True, filters={"label": filters})


class Recorder:
    """A stdout/stderr stand-in that stamps each write, to see streaming as it happens."""

    def __init__(self, log, name):
        self.log, self.name = log, name

    def write(self, text):
        self.log.append((time.monotonic(), self.name, text))
        return len(text)

    def flush(self):
        pass


def test_streams_stdout_and_stderr_live_and_in_order(shell, workdir, monkeypatch):
    log = []
    monkeypatch.setattr(sys, "stdout", Recorder(log, "out"))
    monkeypatch.setattr(sys, "stderr", Recorder(log, "err"))
    shell.run_cell_magic("docker", BASE_IMAGE, (
        "import sys, time\n"
        "print('one')\n"
        "time.sleep(0.8)\n"
        "print('two', file=sys.stderr)\n"
        "time.sleep(0.8)\n"
        "print('three é✓')\n"))
    end = time.monotonic()
    pieces = [(name, text) for _, name, text in log if text]
    # (dockmagic's own one-time notes, e.g. about containers of kernels that are gone, aside)
    joined = [(n, t.strip()) for n, t in pieces
              if t.strip() and not t.startswith("dockmagic: ")]
    assert joined == [("out", "one"), ("err", "two"), ("out", "three é✓")]
    first = next(t for t, _, text in log if "one" in text)
    assert end - first > 1.2, "output arrived only at the end: not streamed"


def test_nonzero_exit_raises_with_code_and_stderr_tail(shell, workdir):
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", BASE_IMAGE,
                             "import sys\nprint('bad news', file=sys.stderr)\nsys.exit(3)")
    assert info.value.exit_code == 3
    assert "bad news" in info.value.stderr_tail
    assert "exited with code 3" in str(info.value)
    # The tail was streamed into the cell already: the error does not show it again (#11).
    rendered = "\n".join(info.value._render_traceback_())
    assert "bad news" not in rendered and "Traceback" not in rendered


def test_no_raise_error_lets_the_cell_pass(shell, workdir, capsys):
    shell.run_cell_magic("docker", f"--no-raise-error {BASE_IMAGE}", "raise SystemExit(4)")


@pytest.mark.parametrize("body,code,words", [
    ("kill -SEGV $$", 139, "segmentation fault"),
    ("exit 126", 126, "cannot be executed"),
    ("exit 127", 127, "command not found"),
    ("kill -KILL $$", 137, "SIGKILL"),
])
def test_exit_codes_are_explained(shell, workdir, body, code, words):
    with pytest.raises(errors.CellFailed) as info:
        # --init: PID 1 is docker-init, so bash is an ordinary process that signals can kill.
        shell.run_cell_magic("docker", f"--init {BASE_IMAGE} bash", body)
    assert info.value.exit_code == code
    assert words in str(info.value)


def test_a_real_segfault_is_named(shell, workdir):
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", BASE_IMAGE, "import ctypes\nctypes.string_at(0)")
    assert info.value.exit_code == 139 and "segmentation fault" in str(info.value)


def test_oom_kill_is_named(shell, workdir):
    with pytest.raises(errors.CellFailed) as info:
        shell.run_cell_magic("docker", f"-m 32m --memory-swap 32m {BASE_IMAGE}",
                             "x = bytearray(400 * 1024 * 1024)\nprint(len(x))")
    assert info.value.exit_code == 137
    assert info.value.oom
    assert "OOMKilled" in str(info.value) and "--memory" in str(info.value)


def test_interrupt_stops_and_removes_the_container(shell, workdir, docker_client, capsys):
    with interrupt_when_printed("tick"):
        with pytest.raises(KeyboardInterrupt) as info:
            shell.run_cell_magic("docker", f"-l test.case=interrupt {BASE_IMAGE}", (
                "import time\n"
                "while True:\n"
                "    print('tick', flush=True)\n"
                "    time.sleep(0.1)\n"))
        interrupted_at = time.monotonic()
    deadline = interrupted_at + 5
    while managed(docker_client, **{"test.case": "interrupt"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert managed(docker_client, **{"test.case": "interrupt"}) == []
    # One line says it, as the error IPython shows (errors.CellInterrupted, #11).
    assert isinstance(info.value, errors.CellInterrupted)
    assert "stopped by SIGINT" in str(info.value) and "removed" in str(info.value)


def test_notebook_folder_is_mounted_and_is_the_workdir(shell, workdir):
    (workdir / "input.txt").write_text("from host")
    shell.run_cell_magic("docker", BASE_IMAGE, (
        "import os, pathlib\n"
        "assert os.getcwd() == %r, os.getcwd()\n"
        "pathlib.Path('results').mkdir()\n"
        "pathlib.Path('results/out.txt').write_text(open('input.txt').read() + ' and back')\n"
        % str(workdir)))
    out = workdir / "results" / "out.txt"
    assert out.read_text() == "from host and back"
    assert out.stat().st_uid == os.getuid()


def test_no_mount_and_explicit_workdir(shell, workdir, capsys):
    shell.run_cell_magic("docker", f"--no-mount {BASE_IMAGE}", (
        "import os\nprint('cwd', os.getcwd(), os.path.exists(%r))" % str(workdir)))
    assert capsys.readouterr().out.split() == ["cwd", "/", "False"]
    shell.run_cell_magic("docker", f"-w /tmp {BASE_IMAGE}", "import os\nprint(os.getcwd())")
    assert capsys.readouterr().out.strip() == "/tmp"


def test_files_are_owned_by_a_non_root_kernel_user(docker_client, base_image, tmp_path):
    """The kernel runs as uid 1000 (not root): what the cell writes is owned by 1000."""
    if os.getuid() != 0:
        pytest.skip("needs root to start a kernel as another user")
    os.chown(tmp_path, 1000, 1000)
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'dockmagic')\n"
        f"ip.run_cell_magic('docker', '{BASE_IMAGE}', "
        "'import os, pathlib\\n"
        "pathlib.Path(\"out.txt\").write_text(str(os.getuid()) + \" \" + os.environ[\"HOME\"])\\n"
        "pathlib.Path(os.environ[\"HOME\"], \"probe\").write_text(\"home is writable\")')\n"
    )
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run(
        as_kernel_user(1000, [sys.executable, "-c", script]),
        cwd=tmp_path, env=env, check=True, timeout=120, capture_output=True)
    out = tmp_path / "out.txt"
    assert out.stat().st_uid == 1000 and out.stat().st_gid == 1000
    uid, home = out.read_text().split()
    assert uid == "1000" and home == "/tmp"


def test_detach_returns_the_name_at_once(shell, workdir, docker_client):
    t0 = time.monotonic()
    name = shell.run_cell_magic("docker", f"-d -l test.case=detach {BASE_IMAGE}",
                                "import time\nprint('bg', flush=True)\ntime.sleep(120)")
    try:
        assert time.monotonic() - t0 < 60  # far less than the cell runs: it did not wait
        c = docker_client.containers.get(name)
        assert c.status == "running"
        assert c.labels["dockmagic.managed"] == "1" and c.labels["dockmagic.kind"] == "detached"
        for _ in range(50):
            if b"bg" in c.logs():
                break
            time.sleep(0.1)
        assert b"bg" in c.logs()
    finally:
        docker_client.containers.get(name).remove(force=True)


def test_entrypoint_image_runs_the_cell_and_keep_entrypoint_opts_out(shell, workdir, capsys):
    shell.run_cell_magic("docker", ENTRYPOINT_IMAGE, "print('python ran the cell')")
    assert capsys.readouterr().out.strip() == "python ran the cell"
    shell.run_cell_magic("docker", f"--dry-run {ENTRYPOINT_IMAGE}", "x")
    assert "--entrypoint python3" in capsys.readouterr().out
    shell.run_cell_magic("docker", f"--keep-entrypoint {ENTRYPOINT_IMAGE} hello", "ignored")
    assert capsys.readouterr().out.strip() == "entrypoint-said hello"


def test_env_from_image_flags_and_kernel(shell, workdir, capsys, monkeypatch):
    monkeypatch.setenv("FROM_KERNEL", "kernel-value")
    shell.run_cell_magic("docker", f"-e FROM_FLAG=flag-value -e FROM_KERNEL {ENV_IMAGE}", (
        "import os\n"
        "for k in ('FROM_IMAGE', 'FROM_FLAG', 'FROM_KERNEL', 'PYTHONUNBUFFERED', "
        "'CUDA_DEVICE_ORDER'):\n"
        "    print(k, os.environ.get(k))\n"))
    assert capsys.readouterr().out.splitlines() == [
        "FROM_IMAGE image-value", "FROM_FLAG flag-value", "FROM_KERNEL kernel-value",
        "PYTHONUNBUFFERED 1", "CUDA_DEVICE_ORDER PCI_BUS_ID"]


def test_bash_login_shell_sees_bashrc_env(shell, workdir, capsys):
    shell.run_cell_magic("docker", f"--as-root {ENV_IMAGE} bash", 'echo "plain:$FROM_BASHRC"')
    shell.run_cell_magic("docker", f"--as-root {ENV_IMAGE} bash -l", 'echo "login:$FROM_BASHRC"')
    assert capsys.readouterr().out.split() == ["plain:", "login:bashrc-value"]


def test_environment_variables_expand_in_the_line(shell, workdir, capsys, monkeypatch):
    data = workdir / "data"
    data.mkdir()
    (data / "f.txt").write_text("expanded")
    monkeypatch.setenv("DM_DATA", str(data))
    shell.run_cell_magic("docker", f"-v $DM_DATA:/data:ro {BASE_IMAGE}",
                         "print(open('/data/f.txt').read())")
    assert capsys.readouterr().out.strip() == "expanded"


def test_dry_run_prints_the_equivalent_command_and_runs_nothing(shell, workdir, capsys,
                                                                docker_client):
    shell.run_cell_magic("docker", f"--dry-run --gpus device=0,1 --shm-size 8g -l test.case=dry "
                                   f"{BASE_IMAGE}", "x")
    out = capsys.readouterr().out
    assert out.startswith("docker run ")
    assert "'\"device=0,1\"'" in out or '"device=0,1"' in out
    assert f"--mount type=bind,source={workdir},target={workdir}" in out
    assert "dockmagic.managed=1" in out
    assert managed(docker_client, **{"test.case": "dry"}) == []


def test_bad_flags_are_one_line_usage_errors(shell, workdir):
    for line in ["--shm-size 8gigs " + BASE_IMAGE, "--no-such-flag " + BASE_IMAGE, "",
                 "-t " + BASE_IMAGE, "-v 'unclosed " + BASE_IMAGE]:
        with pytest.raises(UsageError) as info:
            shell.run_cell_magic("docker", line, "print(1)")
        assert "\n" not in str(info.value)


def test_missing_image_says_neither_local_nor_pullable(shell, workdir):
    with pytest.raises(errors.ImageUnavailable) as info:
        shell.run_cell_magic("docker", "dockmagic-no-such-image:v0", "print(1)")
    assert "neither local nor pullable" in str(info.value)
    assert "Docker Hub" in str(info.value)


def test_missing_interpreter_is_explained(shell, workdir):
    with pytest.raises(errors.EngineError) as info:
        shell.run_cell_magic("docker", f"{BASE_IMAGE} no-such-interpreter", "x")
    assert "interpreter" in str(info.value)


def test_gpus_without_nvidia_runtime_names_the_toolkit(shell, workdir, docker_client):
    if "nvidia" in docker_client.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime")
    with pytest.raises(errors.EngineError) as info:
        shell.run_cell_magic("docker", f"--gpus all -l test.case=gpu {BASE_IMAGE}", "print(1)")
    assert "nvidia-container-toolkit" in str(info.value)
    assert managed(docker_client, **{"test.case": "gpu"}) == []


def test_no_engine_names_the_address_tried(shell, workdir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/dockmagic-no-engine.sock")
    engines.reset()
    try:
        with pytest.raises(errors.EngineUnavailable) as info:
            shell.run_cell_magic("docker", BASE_IMAGE, "print(1)")
        msg = str(info.value)
        assert "unix:///tmp/dockmagic-no-engine.sock" in msg and "dockerd" in msg
        assert "\n" not in msg and "Error while fetching" not in msg
    finally:
        monkeypatch.undo()
        engines.reset()


def test_config_sets_default_image_and_flags(shell, workdir, capsys):
    shell.run_line_magic("docker", f"config --image {BASE_IMAGE} --flags '--shm-size 256m'")
    try:
        shell.run_cell_magic("docker", "", "import os\nprint(os.statvfs('/dev/shm').f_blocks * "
                                           "os.statvfs('/dev/shm').f_frsize)")
        out = capsys.readouterr().out
        assert out.strip().splitlines()[-1] == str(256 * 1024 * 1024)
        shell.run_line_magic("docker", "config")
        assert "--shm-size 256m" in capsys.readouterr().out
    finally:
        shell.run_line_magic("docker", "config --reset")


def test_every_container_carries_dockmagic_labels(shell, workdir, docker_client):
    name = shell.run_cell_magic("docker", f"-d {BASE_IMAGE}", "import time; time.sleep(20)")
    try:
        labels = docker_client.containers.get(name).labels
        assert labels["dockmagic.managed"] == "1"
        assert {"dockmagic.kernel", "dockmagic.cell", "dockmagic.notebook"} <= set(labels)
    finally:
        docker_client.containers.get(name).remove(force=True)


def test_flags_docker_py_cannot_say_still_reach_the_engine(shell, workdir, docker_client):
    """--security-opt systempaths=unconfined has no docker-py kwarg: it must not be dropped."""
    name = shell.run_cell_magic(
        "docker", f"-d --security-opt systempaths=unconfined -v ./data:/data:z {BASE_IMAGE}",
        "import time; time.sleep(20)")
    try:
        hc = docker_client.api.inspect_container(name)["HostConfig"]
        assert hc["MaskedPaths"] == [] and hc["ReadonlyPaths"] == []
        assert f"{workdir}/data:/data:z" in hc["Binds"]
    finally:
        docker_client.containers.get(name).remove(force=True)


def test_missing_image_is_pulled_with_progress(shell, workdir, docker_client, capsys):
    """A real pull from a real registry on loopback (scripts/ensure-registry.sh)."""
    import uuid

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["bash", os.path.join(root, "scripts", "ensure-registry.sh")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    repo, tag = "localhost:5000/dm/pull-test", uuid.uuid4().hex[:8]
    ref = f"{repo}:{tag}"
    docker_client.images.get(BASE_IMAGE).tag(repo, tag)
    try:
        for event in docker_client.api.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
        docker_client.images.remove(ref)
        shell.run_cell_magic("docker", ref, "print('pulled and ran')")
        out = capsys.readouterr()
        assert out.out.strip() == "pulled and ran"
        assert f"{ref} is not local; pulling it from localhost:5000" in out.err
        assert "Status: Downloaded newer image" in out.err
    finally:
        try:
            docker_client.images.remove(ref)
        except Exception:
            pass
