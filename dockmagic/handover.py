"""Session `--out` arrays handed over as sealed memory files, without a copy.

A session's container lives on after its cell, so a file it wrote is never mapped into the
kernel: it could rewrite or truncate it under the mapping. A copy is what that costs (a second
write of every byte). Instead, for each large plain array, the agent writes the ``.npy`` into a
``memfd``, seals it (``F_SEAL_WRITE``, ``F_SEAL_SHRINK``, ``F_SEAL_GROW``: from then on nobody,
the container included, can change a byte or the size, through any descriptor or mapping), and
passes the descriptor over a unix socket the kernel listens on in that cell's own exchange
folder (``Handover``). The kernel maps what it receives copy-on-write only after checking the
seals itself: a descriptor that is not a sealed memory file is refused, whoever sent it.

Nothing the container sends picks a path, a decoder or a name: the message says which output
(by position) the descriptor is; the kernel still decides that position's name, reads only
``.npy`` (no pickle), and ignores anything it did not ask for. Without a handover (an agent that
cannot seal, a remote engine, a folder that is not a tmpfs), ``transfer`` copies the file.

The pages stay charged to the container's memory cgroup while the array lives; the agent hands
nothing over when its container has a memory limit (``agent.hand_over``).
"""
from __future__ import annotations

import array
import fcntl
import io
import math
import mmap
import os
import socket
import stat
from typing import Dict

from . import agent, npyfile

#: Seals a handed-over file must carry: after these, no write, truncate or growth succeeds.
REQUIRED_SEALS = (getattr(fcntl, "F_SEAL_WRITE", 0x8) | getattr(fcntl, "F_SEAL_SHRINK", 0x2)
                  | getattr(fcntl, "F_SEAL_GROW", 0x4))
_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
#: .npy headers are short (numpy reads at most 10000 bytes of one by default).
_HEAD_MAX = 1 << 16


class Handover:
    """The kernel's end: a listening unix socket ``agent.HANDOVER_SOCKET`` in FOLDER (a cell's
    private exchange folder, so only that cell's container can connect). ``collect()`` after
    the cell: {output position: descriptor}; ``close()`` closes what was not taken."""

    def __init__(self, folder: str, outputs: int):
        self.path = os.path.join(folder, agent.HANDOVER_SOCKET)
        self.outputs = outputs
        self.fds: Dict[int, int] = {}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound through the folder's descriptor: a socket path has at most 107 bytes, and a
        # session cell's folder alone can be longer than that.
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            self.sock.bind(f"/proc/self/fd/{dir_fd}/{agent.HANDOVER_SOCKET}")
            os.chmod(agent.HANDOVER_SOCKET, 0o666, dir_fd=dir_fd, follow_symlinks=False)
            self.sock.listen(outputs + 4)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        finally:
            os.close(dir_fd)

    def collect(self) -> Dict[int, int]:
        """The descriptors the container handed over (sent before its reply, so all are
        queued by now); never waits. Extra, malformed or duplicate messages are dropped."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            with conn:
                conn.setblocking(False)
                try:
                    msg, ancdata, _flags, _ = conn.recvmsg(16, socket.CMSG_SPACE(4))
                except OSError:
                    continue
                fds = []
                for level, kind, data in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.extend(array.array("i", data[:len(data) - len(data) % 4]))
                index = int(msg) if msg.isdigit() and len(msg) < 6 else -1
                for i, fd in enumerate(fds):
                    if i == 0 and 0 <= index < self.outputs and index not in self.fds:
                        self.fds[index] = fd
                    else:
                        os.close(fd)
        return dict(self.fds)

    def close(self):
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        self.sock.close()


def sealed_size(fd: int) -> int:
    """FD's size if it is a regular memory file with ``REQUIRED_SEALS``; else ValueError."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("what the container handed over is not a file")
    try:
        seals = fcntl.fcntl(fd, _F_GET_SEALS)
    except OSError:
        raise ValueError("what the container handed over is not a sealed memory file") from None
    if seals & REQUIRED_SEALS != REQUIRED_SEALS:
        raise ValueError("what the container handed over is not sealed against writes")
    return st.st_size


def load_sealed(fd: int):
    """The array in a sealed .npy memory file: mapped copy-on-write when large (its bytes can
    never change), else read; never unpickled. Reads by offset only (the container may share
    the descriptor's file position)."""
    import numpy as np

    size = sealed_size(fd)
    head = io.BytesIO(os.pread(fd, min(size, _HEAD_MAX), 0))
    shape, _, dtype, offset, end = layout = npyfile.read_layout(head)
    if size < end:
        raise ValueError("the file is shorter than its header says")
    order = layout.order
    if end - offset < agent.MAP_MIN_BYTES or not dtype.itemsize:
        data = os.pread(fd, end - offset, offset)
        flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape)).copy()
        return flat.reshape(shape, order=order)
    mapped = mmap.mmap(fd, end, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return np.ndarray(shape, dtype=dtype, buffer=mapped, offset=offset, order=order)
