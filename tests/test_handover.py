"""Session --out arrays handed over as sealed memory files (dockmagic/handover.py and the
agent's hand_over), on this machine's kernel: no engine needed. The kernel must map only what
nobody can change any more, and refuse every other descriptor a container could send."""
import array
import fcntl
import mmap
import os
import socket

import numpy as np
import pytest

from dockmagic import agent, handover, transfer
from dockmagic.transfer import TransferError

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


@pytest.fixture
def folder(tmp_path):
    """A short path: tests connect to the socket by its path, as a container does."""
    import tempfile
    path = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def send(folder, message, fds):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(os.path.join(folder, agent.HANDOVER_SOCKET))
        s.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                  if fds else [])
    finally:
        s.close()


def npy_memfd(value, seals=SEALS):
    fd = os.memfd_create("t", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(os.dup(fd), "wb") as f:
        np.lib.format.write_array(f, value, allow_pickle=True)  # object arrays: a forgery
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def read_back(folder, hand, n=1):
    ex = transfer.Exchange(folder, mapped=True)
    ns = {}
    ex.read_outputs(tuple((f"v{i}", f"v{i}", False) for i in range(n)), ns, handed=hand.collect())
    return ns


@pytest.mark.parametrize("make", [
    pytest.param(lambda: np.arange(1 << 18, dtype=np.float64).reshape(512, 512), id="large"),
    pytest.param(lambda: np.asfortranarray(np.arange(1 << 18, dtype=">i4").reshape(256, 1024)),
                 id="large-fortran-big-endian"),
    pytest.param(lambda: np.zeros(1 << 16, dtype=[("a", "<f8"), ("b", "S4")]), id="structured"),
    pytest.param(lambda: np.arange(10), id="small"),
    pytest.param(lambda: np.zeros((0, 3)), id="empty"),
])
def test_a_handed_over_array_comes_back_equal_and_private(folder, make):
    value = make()
    hand = handover.Handover(folder, 1)
    try:
        assert agent.hand_over(os.path.join(folder, agent.HANDOVER_SOCKET), 0, value)
        got = read_back(folder, hand)["v0"]
    finally:
        hand.close()
    assert type(got) is np.ndarray and got.dtype == value.dtype and got.shape == value.shape
    assert got.tobytes(order="A") == value.tobytes(order="A")
    assert got.flags.f_contiguous == value.flags.f_contiguous and got.flags.writeable
    if got.size:
        got.reshape(-1, order="A")[:1] = got.reshape(-1, order="A")[-1:]  # copy-on-write
    if value.nbytes >= agent.MAP_MIN_BYTES:
        assert isinstance(got.base, mmap.mmap)  # mapped, not copied


def test_a_sealed_memory_file_cannot_be_changed_by_the_sender(folder):
    """What the kernel relies on: after F_SEAL_WRITE/SHRINK/GROW, the sender's own descriptor
    can neither write, truncate, grow, punch holes nor map it writable."""
    value = np.arange(1 << 18, dtype=np.float64)
    fd = npy_memfd(value)
    try:
        hand = handover.Handover(folder, 1)
        send(folder, b"0", [fd])
        got = read_back(folder, hand)["v0"]
        hand.close()
        for attempt in (lambda: os.pwrite(fd, b"x" * 8, 200),
                        lambda: os.write(fd, b"x"),
                        lambda: os.ftruncate(fd, 10),
                        lambda: os.ftruncate(fd, 1 << 30),
                        lambda: mmap.mmap(fd, 4096, flags=mmap.MAP_SHARED,
                                          prot=mmap.PROT_READ | mmap.PROT_WRITE),
                        lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0)):
            with pytest.raises(PermissionError):
                attempt()
        again = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)  # reopened: the seals are the file's
        try:
            with pytest.raises(PermissionError):
                os.pwrite(again, b"x" * 8, 200)
        finally:
            os.close(again)
    finally:
        os.close(fd)
    assert (got == value).all()


def _regular_file_fd(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(1 << 18, dtype=np.float64))
    return os.open(path, os.O_RDONLY)


def _read_end():
    r, w = os.pipe()
    os.close(w)
    return r


@pytest.mark.parametrize("forge,why", [
    (lambda tmp: npy_memfd(np.arange(1 << 18, dtype=np.float64), seals=0), "not sealed"),
    (lambda tmp: npy_memfd(np.arange(1 << 18, dtype=np.float64),
                           seals=fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW), "not sealed"),
    (lambda tmp: npy_memfd(np.arange(1 << 18, dtype=np.float64),
                           seals=getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x10)
                           | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW), "not sealed"),
    (_regular_file_fd, "not a sealed memory file"),
    (lambda tmp: _read_end(), "not a file"),
    (lambda tmp: os.open(str(tmp), os.O_RDONLY | os.O_DIRECTORY), "not a file"),
    (lambda tmp: npy_memfd(np.array([object()], dtype=object)), "allow_pickle"),
], ids=["unsealed", "no-write-seal", "future-write-only", "regular-file", "pipe", "directory",
        "object-array"])
def test_a_descriptor_that_is_not_a_sealed_npy_is_refused(folder, tmp_path, forge, why):
    fd = forge(tmp_path)
    hand = handover.Handover(folder, 1)
    ns = {"keep": 1}
    try:
        send(folder, b"0", [fd])
        with pytest.raises(TransferError, match=why) as info:
            transfer.Exchange(folder, mapped=True).read_outputs((("v0", "v0", False),), ns,
                                                                handed=hand.collect())
    finally:
        hand.close()
        os.close(fd)
    assert "\n" not in str(info.value) and str(info.value).startswith("--out v0:")
    assert ns == {"keep": 1}


def memfds_held():
    held = []
    for name in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass
    return len([t for t in held if t.startswith("/memfd:")])


def test_only_one_descriptor_per_asked_position_is_taken(folder, tmp_path):
    """Positions out of range, text that is no position, a second descriptor in a message and a
    second message for a position are dropped (and closed): a container cannot make the kernel
    hold descriptors it did not ask for, nor choose between two answers."""
    before = memfds_held()
    first = npy_memfd(np.arange(1 << 18, dtype=np.float64))
    other = npy_memfd(np.zeros(1 << 18))
    hand = handover.Handover(folder, 2)
    try:
        send(folder, b"5", [other])
        send(folder, b"../x", [other])
        send(folder, b"-1", [other])
        send(folder, b"1", [first, other])  # the extra descriptor is closed
        send(folder, b"1", [other])  # the first answer for 1 stands
        send(folder, b"0", [])
        got = hand.collect()
        assert sorted(got) == [1]
        assert os.fstat(got[1]).st_ino == os.fstat(first).st_ino
    finally:
        hand.close()
        os.close(first)
        os.close(other)
    assert memfds_held() == before  # nothing the container sent is held once closed


def test_the_agent_hands_nothing_over_where_it_cannot(folder, monkeypatch):
    """No kernel listening, or a memory-limited container: the agent writes a file instead."""
    value = np.arange(1 << 18, dtype=np.float64)
    assert not agent.hand_over(os.path.join(folder, agent.HANDOVER_SOCKET), 0, value)
    hand = handover.Handover(folder, 1)
    try:
        monkeypatch.setattr(agent, "_memory_limited", lambda: True)
        agent.save_outputs(folder, [["v0", "v", False]], {"v": value}, handover=True)
        assert hand.collect() == {} and os.path.exists(os.path.join(folder, "out-0.npy"))
        monkeypatch.setattr(agent, "_memory_limited", lambda: False)
        os.unlink(os.path.join(folder, "out-0.npy"))
        agent.save_outputs(folder, [["v0", "v", False]], {"v": value}, handover=True)
        assert not os.path.exists(os.path.join(folder, "out-0.npy"))
        assert (read_back(folder, hand)["v0"] == value).all()
    finally:
        hand.close()


def test_a_handed_over_output_is_measured_for_the_record(folder):
    value = np.arange(1 << 18, dtype=np.float64)
    hand = handover.Handover(folder, 2)
    try:
        assert agent.hand_over(os.path.join(folder, agent.HANDOVER_SOCKET), 1, value)
        np.save(os.path.join(folder, "out-0.npy"), np.arange(3))
        moved = transfer.measure(transfer.Exchange(folder), [],
                                 (("a", "a", False), ("b", "b", False)), hand.collect())
    finally:
        hand.close()
    assert [o["name"] for o in moved["out"]] == ["a", "b"]
    assert moved["out"][0]["bytes"] == os.path.getsize(os.path.join(folder, "out-0.npy"))
    assert value.nbytes < moved["out"][1]["bytes"] <= value.nbytes + 4096  # header + data
