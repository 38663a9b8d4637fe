"""`--dry-run` prints exactly what runs: the line it prints, created through the real `docker` CLI,
gives the same container configuration as the cell's own container (plain cells, `--in`/`--out`
cells with their exchange mount, and cells that ran in a spare), by the comparison rules of the
CLI differential test (docs/docker-run-semantics.md section 6).

The cell's own container is observed on the real engine: the test wraps the notebook's `Engine`
so that each container it creates is inspected right after create (nothing is faked).
"""
import shlex
import subprocess
import uuid

import pytest

from conftest import BASE_IMAGE
from test_translate_cli_diff import _differences, _fields

pytestmark = pytest.mark.engine

LABEL = f"dockmagic.test=dryrun-{uuid.uuid4().hex[:8]}"
#: Fields that differ on purpose, with the reason:
#: AutoRemove, with a memory limit only: the engine removes a one-shot container on exit as `--rm`
#: asks, except where dockmagic must read its OOM state first (the limit's OOM message), and then
#: removes it itself; the effect is `--rm`'s.
MEMORY_LIMITED = {"HostConfig.AutoRemove"}
#: A spare is made before its cell, running dockmagic's agent, which execs the cell's interpreter
#: with the cell's environment: entrypoint, command and env are applied at exec, and it is
#: labelled a spare.
#: (A spare is removed by dockmagic after its cell, not by the engine: AutoRemove too.)
SPARE_ONLY = {"HostConfig.AutoRemove", "Config.Entrypoint", "Config.Cmd", "Config.Env", "Config.Labels"}


def engine_of(shell):
    return shell.magics_manager.registry["DockerMagics"].engine


@pytest.fixture
def observed(shell, monkeypatch):
    """The inspect of every container the notebook's engine creates during the test."""
    engine = engine_of(shell)
    seen = []
    real = engine.create

    def create(spec, **kw):
        cid = real(spec, **kw)
        seen.append(engine.inspect(cid))
        return cid

    monkeypatch.setattr(engine, "create", create)
    return seen


def dry_run(shell, capsys, line, notes=None):
    capsys.readouterr()
    shell.run_cell_magic("docker", f"--dry-run {line}", "print(1)")
    lines = capsys.readouterr().out.strip().splitlines()
    printed = [ln for ln in lines if ln.startswith("docker run ")][-1]
    if notes is not None:
        notes.extend(ln for ln in lines if ln.startswith("#"))
    command = printed.split("  < cell-body")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["docker", "run"], printed
    return argv[2:]


def cli_inspect(argv):
    """`docker create ARGV` through the real CLI, inspected, removed."""
    cid = subprocess.run(["docker", "create", *argv], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    try:
        import json
        return json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True,
                                          text=True, timeout=60, check=True).stdout)[0]
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)


def baselines(engine, image):
    """A no-flags container made each way (the CLI sends defaults docker-py does not)."""
    from dockmagic import translate
    cid = engine.create(translate.parse_run_args(["-l", LABEL, image]))
    try:
        sdk = engine.inspect(cid)
    finally:
        engine.remove(cid)
    return cli_inspect(["-l", LABEL, image]), sdk


def without_exchange(inspect):
    """The inspect without the cell's private exchange mount (a fresh folder per cell, so the
    printed line names it by its target and a placeholder; see the --in/--out test)."""
    from dockmagic.transfer import XFER_TARGET
    out = dict(inspect, HostConfig=dict(inspect["HostConfig"]))
    out["HostConfig"]["Mounts"] = [m for m in inspect["HostConfig"].get("Mounts") or []
                                   if m.get("Target") != XFER_TARGET] or None
    return out


def compare(engine, cell_inspect, cli, allowed):
    cli_base, sdk_base = baselines(engine, BASE_IMAGE)
    a, b = _fields(without_exchange(cli)), _fields(without_exchange(cell_inspect))
    for f in (a, b):
        labels = dict(f.get("Config.Labels") or {})
        labels.pop("dockmagic.token", None)  # set by the engine at create (interrupt safety)
        f["Config.Labels"] = labels
    diffs = [d for d in _differences(a, b, _fields(cli_base), _fields(sdk_base))
             if d.split(":", 1)[0] not in allowed]
    return diffs


@pytest.mark.parametrize("line", [
    f"-l {LABEL} {BASE_IMAGE}",
    f"-l {LABEL} -e FOO=bar --shm-size 256m --cap-add SYS_PTRACE -w /tmp {BASE_IMAGE} bash",
    f"-l {LABEL} --init --read-only --tmpfs /scratch -m 512m {BASE_IMAGE} python3 -u",
])
def test_dry_run_line_makes_the_cells_container(shell, workdir, capsys, observed, line):
    from dockmagic import spare
    spare.SPARES.discard()
    shell.run_line_magic("docker", "config --spare off")
    try:
        argv = dry_run(shell, capsys, line)
        shell.run_cell_magic("docker", line, "print(1)" if "bash" not in line else "echo 1")
    finally:
        shell.run_line_magic("docker", "config --spare on")
    assert len(observed) == 1
    allowed = MEMORY_LIMITED if " -m " in line else set()
    assert observed[0]["HostConfig"]["AutoRemove"] == (" -m " not in line)
    diffs = compare(engine_of(shell), observed[0], cli_inspect(argv), allowed)
    assert not diffs, "\n".join([shlex.join(argv)] + diffs)


def test_dry_run_of_an_in_out_cell_shows_the_exchange_mount(shell, workdir, capsys, observed):
    from dockmagic import spare
    from dockmagic.transfer import XFER_TARGET
    spare.SPARES.discard()
    shell.run_line_magic("docker", "config --spare off")
    shell.user_ns["x_in"] = 41
    line = f"-l {LABEL} --in x_in --out y_out {BASE_IMAGE}"
    notes = []
    try:
        argv = dry_run(shell, capsys, line, notes)
        shell.run_cell_magic("docker", line, "y_out = x_in + 1")
    finally:
        shell.run_line_magic("docker", "config --spare on")
    assert shell.user_ns["y_out"] == 42
    cell = observed[0]
    exchange = [m for m in cell["HostConfig"]["Mounts"] if m.get("Target") == XFER_TARGET]
    assert len(exchange) == 1, cell["HostConfig"]["Mounts"]
    # the printed note names that mount: its type and target, with the fresh folder as a
    # placeholder (it is made for the cell, with a random name, when the cell runs)
    assert any("--mount type=bind,source=FOLDER" in n and f"target={XFER_TARGET}" in n
               for n in notes), notes
    # and the line, with that mount added (its folder is gone with the cell: a stand-in), is
    # the cell's container
    stand_in = workdir / "exchange-stand-in"
    stand_in.mkdir()
    with_mount = argv[:-2] + ["--mount", f"type=bind,source={stand_in},"
                                         f"target={XFER_TARGET}"] + argv[-2:]
    cli = cli_inspect(with_mount)
    assert [m["Target"] for m in cli["HostConfig"]["Mounts"]].count(XFER_TARGET) == 1
    diffs = compare(engine_of(shell), cell, cli, set())
    assert not diffs, "\n".join([shlex.join(with_mount)] + diffs)


def test_dry_run_matches_a_spares_container_but_what_is_applied_at_exec(
        shell, workdir, capsys, observed):
    from dockmagic import spare
    line = f"-l {LABEL} -e FOO=from-the-line {BASE_IMAGE}"
    try:
        argv = dry_run(shell, capsys, line)
        shell.run_cell_magic("docker", line, "print(1)")   # cold; a spare is made after it
        assert spare.SPARES.ready(60)
        used = spare.SPARES.used
        capsys.readouterr()
        shell.run_cell_magic("docker", line, "import os; print('FOO=' + os.environ['FOO'])")
        assert spare.SPARES.used == used + 1, "the second cell did not run in the spare"
        assert "FOO=from-the-line" in capsys.readouterr().out   # the env applied at exec
        spare_inspect = [o for o in observed
                         if o["Config"]["Labels"].get("dockmagic.kind") == "spare"][0]
        # (a spare also mounts its own private exchange folder, for a cell with --in/--out)
        diffs = compare(engine_of(shell), spare_inspect, cli_inspect(argv), SPARE_ONLY)
        assert not diffs, "\n".join([shlex.join(argv)] + diffs)
    finally:
        spare.SPARES.discard()
