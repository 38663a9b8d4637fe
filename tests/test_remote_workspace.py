"""The notebook folder synced to a workspace on the rig and back, over the engine's connection."""
import os
import shlex
import time

import pytest

from dockmagic.remote import errors as rerrors
from dockmagic.remote.sshlink import SSHLink
from dockmagic.remote.urls import parse_endpoint
from dockmagic.remote.workspace import Workspace

from remote_rig import rig_exec

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def link(rig):
    link = SSHLink(parse_endpoint("rig", f"ssh://{rig}")).ensure()
    yield link
    link.close()


@pytest.fixture
def ws(link, tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    ws = Workspace(link, str(folder), say=lambda text: ws.said.append(text))
    ws.said = []
    yield ws
    rig_exec("rm", "-rf", ws.remote_root, check=False)


def put(folder, rel, text="x"):
    p = os.path.join(folder, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text)


def remote_files(ws):
    out = rig_exec("sh", "-c", f"cd {shlex.quote(ws.remote_root)} && find . -type f | sort")
    return [line[2:] for line in out.stdout.decode().split()]


def there(ws, cmd):
    rig_exec("sh", "-c", f"cd {shlex.quote(ws.remote_root)} && {cmd}")


def test_push_sends_what_the_ignore_rules_keep_and_never_dot_git(ws):
    root = ws.local_root
    put(root, "data/in.txt", "hello\n")
    put(root, ".git/HEAD")
    put(root, ".gitignore", "*.log\n")
    put(root, ".dockerignore", "raw\n")
    put(root, "run.log")
    put(root, "raw/huge.bin")
    ws.push()
    assert remote_files(ws) == [".dockerignore", ".gitignore", "data/in.txt"]
    # the workspace is its own copy on the rig: the local folder does not exist there
    assert rig_exec("test", "-e", root, check=False).returncode != 0


def test_what_the_cell_changed_comes_back_owned_by_the_local_user(ws):
    root = ws.local_root
    put(root, "data/in.txt", "hello\n")
    put(root, "old.txt")
    ws.push()
    there(ws, "mkdir -p results && tr a-z A-Z < data/in.txt > results/out.txt && rm old.txt "
              "&& chown 4242:4242 results/out.txt")
    rep = ws.pull()
    assert open(os.path.join(root, "results/out.txt")).read() == "HELLO\n"
    st = os.stat(os.path.join(root, "results/out.txt"))
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert not os.path.exists(os.path.join(root, "old.txt"))  # the cell deleted it
    assert rep.received == 1 and rep.deleted == 1 and not rep.conflicts


def test_a_file_changed_here_during_the_cell_is_never_overwritten(ws):
    root = ws.local_root
    put(root, "notes.txt", "before\n")
    put(root, "mine.txt", "before\n")
    ws.push()

    def cell():
        there(ws, "echo engine > notes.txt && echo new > made.txt")
        time.sleep(1.1)  # a different second than the push (what rsync's listing resolves)
        put(root, "notes.txt", "edited here\n")
        put(root, "mine.txt", "edited here too\n")

    ws.sync_cell("both", cell)
    assert open(os.path.join(root, "notes.txt")).read() == "edited here\n"
    assert open(os.path.join(root, "notes.rig-conflict.txt")).read() == "engine\n"
    assert open(os.path.join(root, "mine.txt")).read() == "edited here too\n"
    assert open(os.path.join(root, "made.txt")).read() == "new\n"
    assert any("notes.txt changed here while the cell ran" in s for s in ws.said)
    # the next push sends ours: the engine now has the local edits
    ws.push(changed_only=True)
    there(ws, "grep -q 'edited here' notes.txt && grep -q 'edited here too' mine.txt")


def test_pull_also_runs_when_the_cell_fails(ws):
    put(ws.local_root, "a.txt")

    def cell():
        there(ws, "echo partial > partial.txt")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ws.sync_cell("both", cell)
    assert open(os.path.join(ws.local_root, "partial.txt")).read() == "partial\n"


def test_sync_directions(ws):
    root = ws.local_root
    put(root, "a.txt", "1\n")
    ws.sync_cell("in", lambda: there(ws, "echo x > from-in.txt"))
    assert remote_files(ws) == ["a.txt", "from-in.txt"]
    assert not os.path.exists(os.path.join(root, "from-in.txt"))
    put(root, "b.txt")
    ws.sync_cell("out", lambda: None)
    assert "b.txt" not in remote_files(ws)
    assert os.path.exists(os.path.join(root, "from-in.txt"))
    ws.sync_cell("none", lambda: there(ws, "echo y > from-none.txt"))
    assert not os.path.exists(os.path.join(root, "from-none.txt"))


def test_change_only_sync_runs_no_rsync_when_nothing_changed(ws):
    root = ws.local_root
    put(root, "a.txt")
    ws.push()
    rep = ws.push(changed_only=True)
    assert rep.rsyncs == 0 and not rep.changed
    # a reported change equal to what was pushed is not a change either
    st = os.lstat(os.path.join(root, "a.txt"))
    rep = ws.pull(([["a.txt", st.st_mtime_ns, st.st_size]], []))
    assert rep.rsyncs == 0
    put(root, "a.txt", "changed")
    rep = ws.push(changed_only=True)
    assert rep.rsyncs == 1 and rep.sent == 1
    there(ws, "test \"$(cat a.txt)\" = changed")


def test_stale_workspace_files_from_an_earlier_kernel_are_removed(ws, link):
    put(ws.local_root, "keep.txt")
    ws.push()
    there(ws, "echo stale > stale.txt")
    fresh = Workspace(link, ws.local_root)  # a new kernel, same folder
    fresh.push()
    assert remote_files(ws) == ["keep.txt"]


def test_size_threshold_warns_once(ws, monkeypatch):
    from dockmagic.remote import workspace
    monkeypatch.setattr(workspace, "WARN_BYTES", 1000)
    put(ws.local_root, "big.bin", "x" * 5000)
    ws.push()
    put(ws.local_root, "big.bin", "y" * 5000)
    ws.push()
    warned = [s for s in ws.said if "syncing 5.0 KB" in s]
    assert len(warned) == 1 and ".dockerignore" in warned[0]


def test_no_rsync_on_the_remote_host_is_one_line(rig, tmp_path):
    rig_exec("mv", "/usr/bin/rsync", "/usr/bin/rsync.hidden")
    link = SSHLink(parse_endpoint("rig2", f"ssh://{rig}")).ensure()
    try:
        with pytest.raises(rerrors.NoRsync) as info:
            Workspace(link, str(tmp_path)).push()
        assert "no rsync on the remote host" in str(info.value)
        assert "--sync none" in str(info.value)
    finally:
        rig_exec("mv", "/usr/bin/rsync.hidden", "/usr/bin/rsync")
        link.close()


def test_what_the_container_reports_picks_no_path_outside_the_folder(ws, tmp_path):
    put(ws.local_root, "a.txt")
    ws.push()
    outside = tmp_path / "outside.txt"
    there(ws, "echo inside > b.txt && ln -s /etc/passwd evil-link")
    rep = ws.pull(([["../outside.txt", 1, 1], ["/etc/x", 1, 1], ["b.txt", 0, 7], "junk"],
                   ["../../nope"]))
    assert not outside.exists() and rep.received == 1
    assert open(os.path.join(ws.local_root, "b.txt")).read() == "inside\n"
    ws.pull()  # a full listing: the link to a path outside the tree is not brought back
    assert not os.path.lexists(os.path.join(ws.local_root, "evil-link"))


def test_safe_rel():
    from dockmagic.remote.workspace import safe_rel
    assert safe_rel("a/b.txt") and safe_rel(".hidden/x")
    for bad in ("", "/abs", "../x", "a/../b", "a//b", "./a", None, 3):
        assert not safe_rel(bad), bad


def test_mirror_copies_a_private_folder_there_and_back(link, tmp_path):
    from dockmagic.remote.workspace import Mirror
    local = tmp_path / "x-exchange"
    local.mkdir(mode=0o700)
    (local / "in-0.npy").write_bytes(b"\x93NUMPY data")
    remote = f"/root/.cache/dockmagic/xfer-test-{os.getpid()}/x-exchange"
    m = Mirror(link, str(local), remote)
    try:
        m.push()
        assert rig_exec("cat", f"{remote}/in-0.npy").stdout == b"\x93NUMPY data"
        rig_exec("sh", "-c", f"echo out > {remote}/out-0.pkl && ln -s /etc/shadow {remote}/evil")
        m.pull()
        assert (local / "out-0.pkl").read_text() == "out\n"
        assert not os.path.lexists(local / "evil")
    finally:
        m.remove()
    assert rig_exec("test", "-e", remote, check=False).returncode != 0
