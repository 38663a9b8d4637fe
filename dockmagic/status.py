"""What a cell says about its container while it runs: the live status line, pull progress, and
the one summary line at the end; and the `-d` message.

In a notebook (a frontend that updates outputs in place) a one-shot cell shows one line above
its output, updated in place (`iopub.show` then `iopub.update`): container,
image, engine, elapsed time; or, while the image is pulled, layers and bytes as a progress bar.
When the cell ends the same line becomes the summary: exit code, duration, peak memory where
the engine reports it. The container's own output streams below it, untouched. A session cell
(`%%docker @NAME`) shows the same kind of line: session, image, engine, elapsed time, redrawn
once it has run a second by one thread shared by all session cells, and its summary. It goes
out just before the cell's first output, so a warm cell that prints nothing sends one message
(its summary, with the record), one that prints sends two, and none starts a thread. In a terminal (IPython's plain display
publisher prints every update), nothing is shown: the output stays the program's.
"""
from __future__ import annotations

import contextvars
import html
import threading
import time
from typing import Optional

from . import errors, iopub

#: How often pull progress may redraw (events arrive per chunk).
_PULL_REDRAW_S = 0.2


def frontend_updates_in_place(shell) -> bool:
    """Whether SHELL's display publisher is a frontend's (ipykernel, a capture), not the plain
    terminal one, which would print each update as a new line."""
    pub = getattr(shell, "display_pub", None)
    if pub is None:
        return False
    from IPython.core.displaypub import DisplayPublisher
    return type(pub) is not DisplayPublisher


def engine_words(engine) -> str:
    """The engine as the line names it: its name, or its address for docker's default."""
    name = getattr(engine, "name", "") or ""
    url = getattr(getattr(engine, "endpoint", None), "url", "") or ""
    return name if name and name != "default" else (url or name or "default")


def to_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


_COLOURS = {"run": "var(--jp-brand-color1, #1976d2)", "ok": "var(--jp-success-color1, #388e3c)",
            "fail": "var(--jp-error-color1, #d32f2f)", "stop": "var(--jp-warn-color1, #f57c00)"}
_MARKS = {"run": "●", "ok": "✓", "fail": "✗", "stop": "■", "note": "ℹ"}


class _Line:
    """One status text, plain and as HTML (JupyterLab's CSS variables: light and dark)."""

    def __init__(self, text: str, kind: str = "run", progress: Optional[tuple] = None):
        self.text, self.kind, self.progress = text, kind, progress

    def __repr__(self):
        return self.text

    def _repr_html_(self):
        bar = ""
        if self.progress is not None:
            done, total = self.progress
            bar = (f"<progress value='{done}' max='{max(total, 1)}' style='width:10em;"
                   "vertical-align:middle;margin-right:0.5em'></progress>")
        return (f"<div class='dockmagic-status' style='font-family:var(--jp-code-font-family,"
                f"monospace);font-size:var(--jp-code-font-size,12px);color:"
                f"var(--jp-ui-font-color2,#616161)'><span style='color:"
                f"{_COLOURS.get(self.kind, 'inherit')}'>{_MARKS.get(self.kind, '')}"
                f"</span> {bar}{html.escape(self.text)}</div>")

    def bundle(self) -> dict:
        if not self.text:  # nothing: JupyterLab draws an empty text output 0 px high
            return {"text/plain": ""}
        return {"text/plain": self.text, "text/html": self._repr_html_()}


def note(shell, text: str):
    """A hint from dockmagic (not the container's output): a dim line in a notebook, stderr in a
    terminal."""
    if frontend_updates_in_place(shell):
        from IPython.display import display
        display(_Line(text, "note"))
    else:
        import sys
        print(text, file=sys.stderr, flush=True)


class PullProgress:
    """docker's pull events -> one line: layers done of all, bytes downloaded of all."""

    def __init__(self):
        self.layers = {}  # id -> (current, total, done)

    def feed(self, event: dict):
        layer = event.get("id")
        status = event.get("status", "")
        if not layer or status.startswith(("Pulling from", "Digest", "Status")):
            return
        current, total, done = self.layers.get(layer, (0, 0, False))
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            current, total = detail.get("current", 0), detail["total"]
        elif status in ("Download complete", "Verifying Checksum"):
            current = total
        elif status in ("Pull complete", "Already exists"):
            current, done = total, True
        self.layers[layer] = (current, total, done)

    def words(self) -> str:
        """`layers 1/3 · 12 MiB of 95 MiB`; ` · 95 MiB downloaded, extracting` once every byte
        is in but not every layer; "" before the engine named any layer."""
        n = len(self.layers)
        if not n:
            return ""
        done = sum(1 for _, _, d in self.layers.values() if d)
        got = sum(c for c, _, _ in self.layers.values())
        total = sum(t for _, t, _ in self.layers.values())
        fetched = all(d or (t and c >= t) for c, t, d in self.layers.values())
        if fetched and done < n:  # every layer's bytes in (a waiting one has no size yet)
            size = f" · {errors.to_bytes_text(total)} downloaded, extracting"
        elif total:
            size = f" · {errors.to_bytes_text(got)} of {errors.to_bytes_text(total)}"
        else:
            size = ""
        return f"layers {done}/{n}{size}"

    def tail(self) -> str:
        """` · ` and the words, or nothing."""
        words = self.words()
        return f" · {words}" if words else ""

    def fraction(self) -> tuple:
        got = sum(c for c, _, _ in self.layers.values())
        total = sum(t for _, t, _ in self.layers.values())
        return (got, total) if total else (sum(1 for *_, d in self.layers.values() if d),
                                           max(len(self.layers), 1))


class PullView:
    """`%docker pull` in a notebook: one line with layers and bytes, updated in place."""

    def __init__(self, ref: str):
        self.ref = ref
        self.pull = PullProgress()
        self._drawn = 0.0
        self.display_id = iopub.show(_Line(f"pulling {ref}", "run", (0, 1)).bundle())

    def __call__(self, line: str):  # the engine's lines (none when it hands over events)
        pass

    def pull_event(self, event: dict):
        self.pull.feed(event)
        now = time.monotonic()
        if now - self._drawn >= _PULL_REDRAW_S:
            self._drawn = now
            iopub.update(_Line(f"pulling {self.ref}{self.pull.tail()}", "run",
                               self.pull.fraction()).bundle(), self.display_id)

    def done(self, image_id: str):
        got = self.pull.tail() or " · up to date"
        iopub.update(_Line(f"pulled {self.ref} ({image_id}){got}", "ok").bundle(),
                     self.display_id)

    def failed(self, exc: BaseException):
        iopub.update(_Line(f"pulling {self.ref} failed{self.pull.tail()}",
                           "fail").bundle(), self.display_id)


class _StatusLine:
    """One cell's line: shown when made, redrawn in place, and ended by ``finish``; the
    cell's provenance record rides on it as display metadata (``attach``)."""

    def __init__(self, engine, image: str, cell: Optional[int], shown: bool = True):
        """SHOWN: the line goes out now; else at its first redraw (``show``), at the latest
        with its summary."""
        self.engine = engine
        self.image = image
        self.cell = cell
        self.t0 = time.monotonic()
        self.peak = None       # bytes
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.metadata = None   # the cell's provenance record, once known (``attach``)
        self.last = _Line(self._running_words())
        self.display_id = iopub.show(self.last.bundle()) if shown else None

    def _who(self) -> str:
        raise NotImplementedError

    def _running_words(self) -> str:
        where = f"cell [{self.cell}] · " if self.cell is not None else ""
        return (f"{where}{self._who()} · engine {engine_words(self.engine)} · "
                f"{to_duration(time.monotonic() - self.t0)}")

    def finish(self, exit_code: Optional[int] = None, interrupted: bool = False,
               failed: Optional[str] = None, raised: Optional[str] = None):
        """The summary: EXIT_CODE; or FAILED, the name of the error shown below the line (its
        message is not repeated here); or RAISED, the exception a session cell's code raised
        (the session lives on: nothing exited). INTERRUPTED: the line goes (its record stays
        on it), as the interrupt's own one line says what happened."""
        self._stop.set()
        took = to_duration(time.monotonic() - self.t0)
        who = self._who()
        peak = f" · peak memory {errors.to_bytes_text(self.peak)}" if self.peak else ""
        if interrupted:
            line = _Line("", "stop")
        elif failed is not None:
            line = _Line(f"{failed} after {took} · {who}", "fail")
        elif raised is not None:
            line = _Line(f"raised {raised} · {took}{peak} · {who}", "fail")
        else:
            kind = "ok" if exit_code == 0 else "fail"
            line = _Line(f"exit {exit_code} · {took}{peak} · {who}", kind)
        with self._lock:
            self._show(line)

    def attach(self, key: str, value):
        """Carry VALUE as display metadata under KEY on this line (the cell's provenance
        record), so it is saved with the notebook: one line shows, the record rides on it. It
        goes out with the summary, or at once if the cell has ended already."""
        with self._lock:
            self.metadata = {key: value}
            if self._stop.is_set():
                self._show(self.last)

    def _show(self, line, ahead: bool = False):
        self.last = line
        if self.display_id is None:  # its first draw: a new line
            self.display_id = iopub.show(line.bundle(), self.metadata, flush=not ahead)
        else:
            iopub.update(line.bundle(), self.display_id, self.metadata)

    def show(self):
        """Put the line out now if it is not yet, ahead of the output being written."""
        with self._lock:
            if self.display_id is None and not self._stop.is_set():
                self._show(_Line(self._running_words()), ahead=True)

    def _redraw(self, line):
        with self._lock:
            if not self._stop.is_set():
                self._show(line)


class CellStatus(_StatusLine):
    """The status line of one one-shot cell (see the module's docstring). Used as the
    runner's ``on_pull`` (lines, and raw events through ``pull_event``) and ``on_started``."""

    def __init__(self, engine, image: str, cell: Optional[int], interval: float = 1.0):
        self.interval = interval
        self.cid = None
        self.pull = None       # PullProgress while pulling
        self.pull_note = ""
        self._drawn_pull = 0.0
        self._thread = None
        super().__init__(engine, image, cell)

    # what the runner calls
    def __call__(self, line: str):
        """A pull progress line (the runner's ``on_pull``): the first one says what is pulled
        from where (and a close local tag); the per-layer ones come as events instead."""
        if self.pull is None:
            self.pull = PullProgress()
            self.pull_note = line.rstrip(" .")
            self._draw(force=True)

    def pull_event(self, event: dict):
        if self.pull is None:
            self.pull = PullProgress()
        self.pull.feed(event)
        self._draw()

    def started(self, cid: str):
        """The container runs: show its name, and tick the elapsed time from a thread."""
        self.cid = cid
        if self.pull is not None:  # the pull's last state, before the line moves on
            self._draw(force=True)
            self.pull = None
        self._draw(force=True)
        ctx = contextvars.copy_context()  # the cell's parent header, in ipykernel
        self._thread = threading.Thread(target=ctx.run, args=(self._tick,),
                                        name="dockmagic-status", daemon=True)
        self._thread.start()

    def finish(self, exit_code: Optional[int] = None, interrupted: bool = False,
               failed: Optional[str] = None):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        super().finish(exit_code, interrupted, failed)

    # drawing
    def _who(self) -> str:
        if self.cid is None:
            return self.image
        # by short ID, as the interrupt's and the failure's lines name it: a one-shot
        # container is gone when its cell ends, so its name would serve nothing later
        return f"container {self.cid[:12]} ({self.image})"

    def _draw(self, force: bool = False):
        now = time.monotonic()
        if self.pull is not None:
            if not force and now - self._drawn_pull < _PULL_REDRAW_S:
                return
            self._drawn_pull = now
            line = _Line(f"{self.pull_note or 'pulling ' + self.image}{self.pull.tail()}",
                         "run", self.pull.fraction())
        else:
            mem = f" · memory {errors.to_bytes_text(self.peak)} peak" if self.peak else ""
            line = _Line(self._running_words() + mem)
        self._redraw(line)

    def _tick(self):
        while not self._stop.wait(self.interval):
            try:
                usage = _peak_of(self.engine.stats(self.cid))
                if usage:
                    self.peak = max(self.peak or 0, usage)
            except Exception:
                pass  # gone already, or the engine is busy: the line keeps what it had
            self._draw(force=True)


class SessionStatus(_StatusLine):
    """The status line of one session cell: session, image, engine and elapsed time, then
    its summary (the peak is the session's largest process so far, as its agent reports).

    It goes out before the cell's first output (``streams``), or at its first redraw, or
    with the summary: a warm cell that prints nothing sends one message, as without it."""

    def __init__(self, engine, session: str, image: str, cell: Optional[int],
                 interval: float = 1.0):
        self.session = session
        super().__init__(engine, image, cell, shown=False)
        _TICKER.add(self, interval)

    def streams(self, stdout, stderr):
        """STDOUT and STDERR, each putting the line out before its first write."""
        return _ShowFirst(stdout, self), _ShowFirst(stderr, self)

    def _who(self) -> str:
        return f"session {self.session} ({self.image})"

    def finish(self, exit_code: Optional[int] = None, interrupted: bool = False,
               failed: Optional[str] = None, raised: Optional[str] = None,
               peak: Optional[int] = None):
        _TICKER.discard(self)
        self.peak = peak
        super().finish(exit_code, interrupted, failed, raised)

    def tick(self):
        self._redraw(_Line(self._running_words()))


class _ShowFirst:
    """A stream that puts LINE out before its first write (so the line stays above the
    output); everything else goes to STREAM."""

    def __init__(self, stream, line):
        self._stream, self._line, self._first = stream, line, True

    def write(self, text):
        if self._first:
            self._first = False
            self._line.show()
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _Ticker:
    """One daemon thread for every running session line: it redraws a line's elapsed time
    each INTERVAL once the cell has run a second, in the cell's own context (its parent
    header, in ipykernel). Adding a line never wakes it (a warm cell pays no thread switch):
    it looks for new lines every FIRST_S while cells came in the last IDLE_S, and sleeps
    until woken after that."""

    #: A cell over sooner never redraws: its line goes straight to the summary.
    FIRST_S = 1.0
    IDLE_S = 60.0

    def __init__(self):
        self._cond = threading.Condition()
        self._lines = {}  # line -> [next redraw (monotonic), interval, context]
        self._thread = None
        self._asleep = False
        self._last_added = 0.0

    def add(self, line, interval: float):
        with self._cond:
            self._lines[line] = [line.t0 + self.FIRST_S, max(interval, 0.1),
                                 contextvars.copy_context()]
            self._last_added = line.t0
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dockmagic-status-ticker",
                                                daemon=True)
                self._thread.start()
            elif self._asleep:
                self._asleep = False
                self._cond.notify()

    def discard(self, line):
        with self._cond:
            self._lines.pop(line, None)

    def _due(self):
        """Under the lock: the lines to redraw now (their next time set), and how long to wait
        otherwise (None: until woken)."""
        now = time.monotonic()
        due = []
        for line, entry in self._lines.items():
            if entry[0] <= now:
                due.append((line, entry[2]))
                entry[0] = now + entry[1]
        if due:
            return due, 0
        if self._lines:
            return due, max(min(e[0] for e in self._lines.values()) - now, 0.01)
        if now - self._last_added < self.IDLE_S:
            return due, self.FIRST_S / 2  # a line added now is seen within half a second
        self._asleep = True
        return due, None

    def _run(self):
        while True:
            with self._cond:
                due, wait = self._due()
                if not due:
                    self._cond.wait(wait)
                    continue
            for line, ctx in due:
                try:
                    ctx.run(line.tick)
                except Exception:
                    pass  # a line that cannot draw keeps what it had


_TICKER = _Ticker()


def _peak_of(stats: Optional[dict]) -> Optional[int]:
    """The most memory the container has used: cgroup v1 reports its own peak (max_usage);
    v2 only the current usage, which the samples' maximum stands in for."""
    mem = (stats or {}).get("memory_stats") or {}
    return mem.get("max_usage") or mem.get("usage") or None


class Started(str):
    """What `%%docker -d` returns: the container's name (usable as a string), shown as
    `started NAME (image, id); follow with `%docker logs -f NAME``. The cell's provenance
    record rides on it (``attach``): one line shows."""

    def __new__(cls, name: str, image: str, cid: str):
        self = super().__new__(cls, name)
        self.image, self.id = image, cid
        self.metadata = {}
        return self

    def message(self) -> str:
        return (f"started {str(self)} ({self.image}, {self.id[:12]}); follow with "
                f"`%docker logs -f {str(self)}`")

    def attach(self, key: str, value):
        self.metadata = {key: value}

    def __repr__(self):
        return self.message()

    def _repr_mimebundle_(self, include=None, exclude=None):
        line = _Line(self.message(), "ok")
        return line.bundle(), dict(self.metadata)
