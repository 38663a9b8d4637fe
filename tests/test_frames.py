"""docker's multiplexed attach/log stream, split however the socket cuts it (pure)."""
import struct

from dockmagic.engine import FrameSplitter


def frame(kind, data):
    return struct.pack(">BxxxL", kind, len(data)) + data


STREAM = (frame(1, b"one ") + frame(1, b"two\n") + frame(2, b"err\n") + frame(1, b"")
          + frame(1, "é✓\n".encode()) + frame(2, b"x" * 70000))


def collect(pieces):
    got, frames = [], FrameSplitter()
    for piece in pieces:
        frames.feed(piece, lambda kind, data: got.append((kind, data)))
    return got, frames


def per_stream(got):
    return {k: b"".join(d for kind, d in got if kind == k) for k in (1, 2)}


def test_whole_stream_coalesces_runs_of_one_stream():
    got, frames = collect([STREAM])
    assert [k for k, _ in got] == [1, 2, 1, 2]
    assert got[0] == (1, b"one two\n")
    assert per_stream(got) == {1: "one two\né✓\n".encode(), 2: b"err\n" + b"x" * 70000}
    assert frames.buf == b""


def test_any_cut_gives_the_same_bytes_in_the_same_order():
    want = per_stream(collect([STREAM])[0])
    for size in (1, 3, 7, 8, 9, 1000, 65536):
        got, frames = collect([STREAM[i:i + size] for i in range(0, len(STREAM), size)])
        assert per_stream(got) == want, size
        assert frames.buf == b""


def test_a_cut_frame_waits_for_the_rest():
    got, frames = collect([STREAM[:5], b""])
    assert got == [] and bytes(frames.buf) == STREAM[:5]
