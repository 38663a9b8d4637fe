"""One-shot cells over an `Engine`: create, stream, wait, interrupt, clean up.

A one-shot cell is the `docker run -i --rm` dance done with as few engine round trips as the CLI
makes: create -> attach (stdin, stdout, stderr on one hijacked socket) -> start -> send the cell
body on stdin and half-close -> read multiplexed frames until EOF -> wait -> remove. The body
never becomes part of a shell command line, and a read-only root filesystem or an image without
/tmp does not matter.
"""
from __future__ import annotations

import codecs
import dataclasses
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from . import errors
from .engine.frames import FrameSplitter

#: How long an interrupted container gets after SIGINT before it is killed.
INTERRUPT_GRACE_S = 2.0
_STDERR_TAIL_BYTES = 4096
#: Exit statuses of a container killed from outside (SIGKILL, SIGTERM): a stopping engine does it.
_KILLED = (137, 143)


@dataclass(frozen=True)
class CellResult:
    exit_code: int
    name: str
    oom: bool = False
    stderr_tail: str = ""


class OutputSink:
    """Incremental UTF-8 decoding per stream, one write and flush per chunk."""

    def __init__(self, stream, keep_tail: bool = False, text_filter=None):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tail = deque() if keep_tail else None
        self.tail_len = 0
        self.text_filter = text_filter
        self.open_line = False  # the last text written did not end its line

    def end_line(self):
        """End a line the program left open, so that what dockmagic says next starts on its
        own line (after an interrupt, `tick` then the message, not `tickinterrupted`)."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False

    def write(self, data: bytes, final: bool = False):
        text = self.decoder.decode(data, final)
        if self.tail is not None and data:
            self.tail.append(data)
            self.tail_len += len(data)
            while self.tail_len - len(self.tail[0]) >= _STDERR_TAIL_BYTES:
                self.tail_len -= len(self.tail.popleft())
        if text and self.text_filter is not None:
            text = self.text_filter(text)
        if text:
            self.stream.write(text)
            self.stream.flush()
            self.open_line = not text.endswith("\n")

    def tail_text(self) -> str:
        if not self.tail:
            return ""
        return b"".join(self.tail)[-_STDERR_TAIL_BYTES:].decode("utf-8", "replace")


def for_oneshot(spec):
    """The one-shot container as created: stdin attached, in the foreground, and removed by the
    engine when it exits (`--rm`), as `docker run --rm -i` makes it. With a memory limit the
    engine does not remove it: dockmagic reads its OOM state after it exits (which an engine-side
    removal would race; only the limit's OOM message needs it) and removes it itself."""
    return dataclasses.replace(spec, interactive=True, detach=False, tty=False,
                               auto_remove=not _needs_oom_state(spec))


def _needs_oom_state(spec) -> bool:
    return spec.mem_limit is not None or spec.memswap_limit is not None


def run_oneshot(engine, spec, body: bytes, *, stdout=None, stderr=None, on_pull=None,
                on_pull_event=None, on_interrupt=None,
                on_started: Optional[Callable[[str], None]] = None) -> CellResult:
    """Run one cell: the container gets BODY on stdin and is removed afterwards, whatever happens.

    Output is streamed to ``stdout``/``stderr`` as it arrives. KeyboardInterrupt stops the
    container (SIGINT, a short grace, then SIGKILL), removes it and is re-raised.

    Round trips are the CLI's: create, attach, wait (begun before start, so that a container the
    engine removes on exit cannot take its exit status with it), start. The exit status is read
    when the output ends; the engine removes the container meanwhile, off the cell's time.
    """
    run_spec = for_oneshot(spec)
    cid = att = waiting = None
    removed_by_engine = False
    try:
        cid = engine.create(run_spec, on_pull=on_pull, on_pull_event=on_pull_event)
        att = engine.attach(cid)
        if run_spec.auto_remove:
            waiting = engine.begin_wait(cid)
        engine.start(cid, image=spec.image, wants_gpus=bool(spec.gpus))
        result = finish_cell(engine, cid, att, body, stdout=stdout, stderr=stderr,
                             on_interrupt=on_interrupt, on_started=on_started, waiting=waiting)
        removed_by_engine = waiting is not None
        return result
    finally:
        if att is not None:
            att.close()
        if waiting is not None:
            waiting.close()
        if cid is not None and not removed_by_engine:  # interrupted, or failed to start
            engine.remove(cid, until_gone=run_spec.auto_remove)


def finish_cell(engine, cid: str, att, body: bytes, *, stdout=None, stderr=None,
                on_interrupt=None, intercept: Optional[Callable[[int, bytes], bool]] = None,
                on_started: Optional[Callable[[str], None]] = None,
                waiting=None) -> CellResult:
    """A one-shot cell once its container runs with ATT attached: BODY on stdin, half-close,
    stdout/stderr streamed until EOF, wait (WAITING's answer where a wait was begun before start:
    the engine removes that container itself, so there is no OOM state to read). ``intercept(kind, data)`` may claim a chunk before
    it is shown. KeyboardInterrupt stops the container (SIGINT, grace, SIGKILL) while its output
    keeps streaming (the rest of its last line, its own traceback), calls
    ``on_interrupt(cid, signal, seconds)`` and raises `errors.CellInterrupted`: one line."""
    if on_started is not None:
        on_started(cid)
    try:
        if body:
            att.send(body)
        att.close_stdin()
    except BrokenPipeError:
        pass  # the interpreter exited without reading all of stdin: its exit status says why
    out = OutputSink(stdout or sys.stdout)
    err = OutputSink(stderr or sys.stderr, keep_tail=True)

    def on_frame(kind, data):
        if intercept is None or not intercept(kind, data):
            (err if kind == 2 else out).write(data)

    frames = FrameSplitter()  # kept across the interrupt: a frame may be cut in two
    try:
        try:
            att.read_frames(on_frame, frames)
        except KeyboardInterrupt:
            how, took = stop_after_interrupt(engine, cid, att, frames, on_frame)
            out.write(b"", final=True)
            err.write(b"", final=True)
            out.end_line()
            err.end_line()
            if on_interrupt:
                on_interrupt(cid, how, took)
            raise errors.CellInterrupted(
                errors.describe_interrupt(cid[:12], how, took)) from None
        finally:
            out.write(b"", final=True)
            err.write(b"", final=True)
    except OSError as exc:  # the connection broke: the engine went away mid-cell
        raise engine_lost(engine, exc) from None
    if waiting is not None:
        code = waiting.result()
        if code in _KILLED:  # by a user, or by an engine shutting down: ask it, and say which
            engine.ping()
        return CellResult(code, cid[:12], False, err.tail_text())
    code = engine.wait(cid)
    oom = code == 137 and bool(engine.inspect(cid)["State"].get("OOMKilled"))
    return CellResult(code, cid[:12], oom, err.tail_text())


def stop_after_interrupt(engine, cid: str, att, frames: FrameSplitter, on_frame,
                         grace: Optional[float] = None) -> tuple:
    """Ctrl-C as `docker run` does it: SIGINT, then SIGKILL if the container has not ended
    within GRACE seconds (or at a second interrupt). Its output keeps streaming through
    ON_FRAME until it ends. Returns (the signal that ended it, seconds it took)."""
    grace = INTERRUPT_GRACE_S if grace is None else grace
    t0 = time.monotonic()
    how = "SIGINT"
    try:
        try:
            engine.kill(cid, signal="SIGINT")
        except errors.DockmagicError:
            pass  # it ended on its own meanwhile; the stream says so
        if not att.read_frames_until(on_frame, frames, t0 + grace):
            how = "SIGKILL"
            _kill_quietly(engine, cid)
            att.read_frames_until(on_frame, frames, time.monotonic() + 5.0)
    except KeyboardInterrupt:  # a second interrupt: no more waiting
        how = "SIGKILL"
        _kill_quietly(engine, cid)
    return how, time.monotonic() - t0


def _kill_quietly(engine, cid: str):
    try:
        engine.kill(cid)
    except errors.DockmagicError:
        pass


def engine_lost(engine, exc) -> errors.EngineUnavailable:
    from .engine.sdkerrors import unavailable
    return unavailable(exc, engine.where, "reading the cell's output")


def run_detached(engine, spec, body: bytes, *, on_pull=None) -> str:
    """Start a background container that reads BODY on stdin; returns its name at once."""
    run_spec = dataclasses.replace(spec, interactive=True, detach=False, tty=False)
    cid = None
    try:
        cid = engine.create(run_spec, on_pull=on_pull)
        att = engine.attach(cid, stdout=False, stderr=False)
        try:
            engine.start(cid, image=spec.image, wants_gpus=bool(spec.gpus))
            att.send(body)
            att.close_stdin()
        finally:
            att.close()
        name = engine.inspect(cid)["Name"].lstrip("/")
        cid = None  # started: it is the user's now
        return name
    finally:
        if cid is not None:
            engine.remove(cid)
