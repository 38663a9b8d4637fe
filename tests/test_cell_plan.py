"""Planning a `%%docker` cell (pure): dockmagic's defaults, and the user's flags winning."""
import pytest

from dockmagic import cell, translate

ME = cell.Identity(uid=1000, gid=1000, user="ada")
ROOT = cell.Identity(uid=0, gid=0, user="root")
LABELS = {"dockmagic.managed": "1", "dockmagic.cell": "7"}


def plan(line, who=ME, **kw):
    kw.setdefault("labels", LABELS)
    return cell.plan_cell(line, cwd="/home/ada/proj", identity=who, environ={"TOKEN": "s3"}, **kw)


def env(spec):
    return dict(e.split("=", 1) for e in spec.env if "=" in e)


def test_defaults_mount_workdir_user_env_labels_entrypoint():
    s = plan("python:3.12").spec
    assert s.image == "python:3.12"
    assert [(m.type, m.source, m.target) for m in s.mounts] == [
        ("bind", "/home/ada/proj", "/home/ada/proj")] and s.workdir == "/home/ada/proj"
    assert s.volumes == ()
    assert s.user == "1000:1000"
    e = env(s)
    assert e["HOME"] == "/tmp" and e["USER"] == "ada" and e["PYTHONUNBUFFERED"] == "1"
    assert e["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert dict(s.labels)["dockmagic.managed"] == "1"
    assert dict(s.labels)["dockmagic.kind"] == "oneshot"
    assert s.entrypoint == ("python3",) and s.command == ("-u",)
    assert s.auto_remove and s.interactive and not s.detach


def test_interpreter_after_the_image():
    s = plan("img bash -l").spec
    assert s.entrypoint == ("bash",) and s.command == ("-l",)


def test_users_flags_win():
    s = plan("-w /work -u 0 -e HOME=/root -e CUDA_DEVICE_ORDER=FASTEST_FIRST img").spec
    assert s.workdir == "/work" and s.user == "0"
    assert s.mounts == () and s.volumes == ()  # -w: no auto mount
    assert env(s)["HOME"] == "/root" and env(s)["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_explicit_volume_or_no_mount_turns_the_mount_off():
    s = plan("-v /data:/data img").spec
    assert s.volumes == ("/data:/data",) and s.mounts == ()
    s = plan("--no-mount img").spec
    assert s.volumes == () and s.mounts == () and s.workdir is None


def test_a_user_named_with_u_keeps_the_images_home():
    e = env(plan("-u jovyan img").spec)
    assert "HOME" not in e and "USER" not in e and e["PYTHONUNBUFFERED"] == "1"


def test_as_root_and_root_kernel():
    assert plan("--as-root img").spec.user == "0:0"
    assert "HOME" not in env(plan("--as-root img").spec)
    s = plan("img", who=ROOT).spec
    assert s.user == "0:0" and "HOME" not in env(s) and env(s)["USER"] == "root"


def test_keep_entrypoint_and_user_entrypoint():
    s = plan("--keep-entrypoint img").spec
    assert s.entrypoint is None and s.command is None
    s = plan("--entrypoint /bin/sh img -e").spec
    assert s.entrypoint == ("/bin/sh",) and s.command == ("-e",)


def test_dockmagic_flags_are_taken_out_before_the_image_only():
    p = plan("--dry-run --no-raise-error img bash --dry-run")
    assert p.dry_run and not p.raise_error
    assert p.spec.command == ("--dry-run",)


def test_gpu_default_applies_unless_the_cell_says_gpus():
    assert plan("img", default_gpus=translate.parse_gpus("all")).spec.gpus[0].count == -1
    s = plan("--gpus device=2 img", default_gpus=translate.parse_gpus("all")).spec
    assert [g.device_ids for g in s.gpus] == [("2",)]
    s = plan("--gpus device=0,1 img").spec
    assert s.gpus[0].device_ids == ("0", "1")


def test_defaults_from_config():
    p = plan("", default_image="base:1", default_flags=["--shm-size", "1g"])
    assert p.spec.image == "base:1" and p.spec.shm_size == 1 << 30
    p = plan("-e A=1", default_image="base:1")
    assert p.spec.image == "base:1" and env(p.spec)["A"] == "1"
    p = plan("other:2", default_image="base:1", default_flags=["--shm-size", "1g"])
    assert p.spec.image == "other:2"


def test_bare_env_key_comes_from_the_kernel_environment():
    assert env(plan("-e TOKEN img").spec)["TOKEN"] == "s3"


def test_detach_keeps_no_rm_and_is_labelled():
    s = plan("-d img").spec
    assert s.detach and not s.auto_remove and dict(s.labels)["dockmagic.kind"] == "detached"


@pytest.mark.parametrize("line,words", [
    ("", "needs an IMAGE"),
    ("-t img", "drop -t"),
    ("--shm-size 8gigs img", "--shm-size"),
    ("-v 'open img", "quotes"),
    ("--bogus img", "--bogus"),
])
def test_mistakes_are_one_line_usage_errors(line, words):
    with pytest.raises(cell.CellUsageError) as info:
        plan(line)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_plan_round_trips_through_the_cli_form():
    s = plan("--gpus all --shm-size 8g -v /data:/data:ro -e X=1 img").spec
    assert translate.parse_run_args(s.to_cli(), cwd="/home/ada/proj") == s
    assert cell.describe_plan(plan("img")).startswith("docker run ")


@pytest.mark.parametrize("folder", ["/home/ada/a:b", "/home/ada/a,b", '/home/ada/a"b', "/home/ada/a b"])
def test_the_notebook_folder_is_one_bind_mount_whatever_its_path_holds(folder):
    """`-v CWD:CWD` broke on `:`; the default mount is a CSV-quoted --mount, and --dry-run
    prints a line that parses back to the same spec."""
    from dockmagic.cell import describe_plan
    import shlex

    p = cell.plan_cell("img", cwd=folder, identity=ME, labels={})
    assert [(m.type, m.source, m.target) for m in p.spec.mounts] == [("bind", folder, folder)]
    assert p.spec.workdir == folder
    argv = shlex.split(describe_plan(p).split("  < cell-body")[0])
    assert argv[:2] == ["docker", "run"]
    assert translate.parse_run_args(argv[2:], cwd=folder) == p.spec
