"""docker's multiplexed attach/logs stream: the one frame reader (cells, spares, sessions, logs).

Pure parsing (`FrameSplitter`) plus `read_frames`, which reads an attached socket to EOF.
"""
from __future__ import annotations

import struct
from typing import Callable

STDOUT, STDERR = 1, 2
READ_SIZE = 1 << 18
_HEADER = struct.Struct(">BxxxL")
HEADER_SIZE = _HEADER.size


class FrameSplitter:
    """docker's multiplexed stream (8-byte header: stream, 0, 0, 0, size), fed in pieces as
    they arrive. Consecutive frames of one stream within a piece are handed over as one chunk,
    so a chatty program costs one decode and one write per read, not per line."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes, on_frame: Callable[[int, bytes], None]):
        if self.buf:  # a frame was cut off by the last piece
            self.buf += data
            data = self.buf
        n, pos = len(data), 0
        run_kind, run = None, []
        with memoryview(data) as view:
            while n - pos >= 8:
                kind, size = _HEADER.unpack_from(data, pos)
                if n - pos - 8 < size:
                    break
                if kind != run_kind and run:
                    on_frame(run_kind, b"".join(run))
                    run = []
                run_kind = kind
                run.append(view[pos + 8:pos + 8 + size].tobytes())
                pos += 8 + size
        if run:
            on_frame(run_kind, b"".join(run))
        if data is self.buf:
            del self.buf[:pos]
        elif pos < n:
            self.buf = bytearray(data[pos:])


def parse_header(header: bytes):
    """(stream, size) of one 8-byte frame header."""
    return _HEADER.unpack(header)


def read_frames(raw, on_frame: Callable[[int, bytes], None], frames=None):
    """Read docker's multiplexed stream from the OS socket RAW to EOF (see FrameSplitter).
    FRAMES: the caller's splitter, to go on reading after an interrupt without losing a frame
    cut in two."""
    frames = frames if frames is not None else FrameSplitter()
    recv = raw.recv
    while True:
        chunk = recv(READ_SIZE)
        if not chunk:
            break
        frames.feed(chunk, on_frame)


def read_frames_until(raw, on_frame: Callable[[int, bytes], None], frames: FrameSplitter,
                      deadline: float) -> bool:
    """Go on reading RAW through FRAMES until EOF (True) or the monotonic DEADLINE (False): a
    container's last output while it stops after an interrupt."""
    import socket
    import time

    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            raw.settimeout(left)
            try:
                chunk = raw.recv(READ_SIZE)
            except socket.timeout:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            frames.feed(chunk, on_frame)
    finally:
        try:
            raw.settimeout(None)
        except OSError:
            pass
