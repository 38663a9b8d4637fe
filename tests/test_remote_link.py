"""One persistent SSH connection per engine, against the rig (its own sshd and dockerd)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dockmagic.remote import errors as rerrors
from dockmagic.remote.sshlink import SSHLink
from dockmagic.remote.urls import parse_endpoint

from remote_rig import RIG, ROOT

pytestmark = pytest.mark.engine


@pytest.fixture
def link(rig):
    link = SSHLink(parse_endpoint("rig", f"ssh://{rig}"))
    yield link.ensure()
    link.close()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_forwarded_socket_reaches_the_rigs_own_engine(link):
    info = subprocess.run(["docker", "-H", link.base_url, "info", "-f", "{{.Name}}"],
                          capture_output=True, text=True, timeout=30)
    assert info.stdout.strip() == RIG  # its hostname is its name
    assert link.ping() > 0
    assert os.stat(link.socket_path).st_mode & 0o077 == 0  # private to this user
    me = link.remote_info()
    assert me["uid"] == 0 and me["home"] == "/root" and me["rsync"] is True


def test_remote_commands_reuse_the_one_connection(link):
    pid = link.pid
    for _ in range(3):
        assert link.run("hostname", check=True).stdout.decode().strip() == RIG
    assert link.pid == pid and link.generation == 1
    # one TCP connection from the master; the commands ran as channels inside it
    ssh_procs = subprocess.run(["pgrep", "-f", f"ControlPath={link.control_path}"],
                               capture_output=True, text=True).stdout.split()
    assert ssh_procs == [str(pid)]


def test_a_captured_caller_does_not_hang(rig):
    """A ControlMaster started from a command whose output is captured must not hold the pipe."""
    code = textwrap.dedent(f"""
        from dockmagic.remote.sshlink import SSHLink
        from dockmagic.remote.urls import parse_endpoint
        link = SSHLink(parse_endpoint("rig", "ssh://{rig}")).ensure()
        print("pid", link.pid, flush=True)
        link._closed = True  # exit without closing: the master outlives nothing but us
    """)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 60
    pid = int(res.stdout.split()[1])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the master outlived the process that started it"


def test_master_dies_with_a_sigkilled_kernel(rig):
    code = textwrap.dedent(f"""
        import threading, time
        from dockmagic.remote.sshlink import SSHLink
        from dockmagic.remote.urls import parse_endpoint
        box = {{}}
        # started from a short-lived thread, as a panel refresh would
        t = threading.Thread(target=lambda: box.update(
            link=SSHLink(parse_endpoint("rig", "ssh://{rig}")).ensure()))
        t.start(); t.join()
        print(box["link"].pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    pid = int(proc.stdout.readline())
    assert _alive(pid), "the master ended with the thread that started it"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_reconnects_after_the_connection_is_killed(link):
    old = link.pid
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (link.pid == old or not link.alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link.pid != old and link.generation == 2
    assert link.ping() > 0


def test_unreachable_engine_is_one_line_within_the_timeout(tmp_path):
    link = SSHLink(parse_endpoint("nowhere", "ssh://root@127.0.0.1:1"))
    t0 = time.monotonic()
    with pytest.raises(rerrors.EngineUnreachable) as info:
        link.ensure()
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert msg.startswith("engine nowhere:") and "\n" not in msg
    assert "ssh -p 1 root@127.0.0.1 true" in msg
    link.close()


def test_refused_authentication_names_the_fix(rig):
    link = SSHLink(parse_endpoint("rig-nobody", f"ssh://nobody@{rig}"))
    with pytest.raises(rerrors.AuthRefused) as info:
        link.ensure()
    msg = str(info.value)
    assert "SSH authentication refused" in msg and "ssh-copy-id" in msg and "\n" not in msg
    link.close()


def test_no_docker_socket_there_says_so(rig):
    ep = parse_endpoint("rig-nosock", f"ssh://{rig}/var/run/nothing.sock")
    link = SSHLink(ep).ensure()
    try:
        with pytest.raises(rerrors.NoDockerThere, match="no Docker engine answers at "
                           "/var/run/nothing.sock"):
            link.ping()
    finally:
        link.close()
