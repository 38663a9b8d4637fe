"""Spares: fresh containers at warm speed for one-shot cells.

A **spare** is a fresh container made in the background after a one-shot cell, with the same
spec, running the agent (``agent.py``) in ``spare`` mode: the next identical one-shot cell sends
it its interpreter argv and the cell's environment, the agent exec()s the interpreter, which
reads the cell body from stdin as in a cold `docker run -i --rm`. So the cell runs in a
brand-new container without paying for create + start. At most one spare is kept; it is removed
when unused for a while, when the spec changes, and at kernel shutdown
(``kernel.on_shutdown``).

Each spare is made with its own private exchange folder (``transfer``), mounted at
``agent.XFER_TARGET``: a cell with ``--in``/``--out`` that runs in it moves its inputs there,
and the agent reports an interpreter it cannot start there too (``agent.SPAWN_FAILED_FILE``),
never on the cell's stderr, which is the cell's own.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import select
import threading
import time
from typing import Optional

from . import agent, errors, runner, transfer
from . import labels as L
from .agentsrc import agent_source
from .kernel import on_shutdown

#: An unused spare is removed after this long.
SPARE_IDLE_S = 600.0


# -- the pool -------------------------------------------------------------------------------------
class _Spare:
    __slots__ = ("key", "id", "att", "image", "image_id", "engine", "made", "xdir")

    def __init__(self, key, cid, att, image, image_id, engine, xdir=None):
        self.key, self.id, self.att, self.engine = key, cid, att, engine
        self.image, self.image_id = image, image_id
        self.xdir = xdir  # its private exchange folder (host path); a cell may take it over
        self.made = time.monotonic()


def spare_key(engine, spec) -> Optional[tuple]:
    """What must match for a spare to stand in for a cold start: the engine, and the spec with
    what is not fixed at create time left out: the environment (the agent applies the cell's
    own when it runs), the per-cell label and the cell's exchange folder (a spare has its own).
    None: this cell never gets a spare."""
    if (spec.name or spec.detach or spec.ports or spec.publish_all_ports or not spec.entrypoint
            or spec.tty):
        return None
    labels = tuple((k, v) for k, v in spec.labels if k != L.CELL)
    return (id(engine), dataclasses.replace(transfer.without_exchange(spec), env=(),
                                            labels=labels, auto_remove=False))


def for_spare(spec, xdir: str):
    """The spare's own spec: the cell's, running the agent in spare mode, with its own private
    exchange folder XDIR mounted, labelled a spare that dies with its kernel."""
    labels = {k: v for k, v in spec.labels if k != L.CELL}
    labels.update({L.KIND: "spare", L.REAP: "1"})
    return dataclasses.replace(
        transfer.exchange_spec(spec, xdir), env=(), labels=tuple(sorted(labels.items())),
        interactive=True, detach=False,
        tty=False, auto_remove=False, entrypoint=("python3",),
        command=("-I", "-c", agent_source(), "spare"))


class SparePool:
    """At most one spare container, made and removed by one background worker."""

    def __init__(self):
        self._cond = threading.Condition()
        self._spare: Optional[_Spare] = None
        self._making: Optional[str] = None  # the key the worker is making a spare for
        self._wanted = None                 # (key, engine, spec) to make next
        self._removals = collections.deque()
        self._busy = 0                      # removals taken by the worker, not yet done
        self._generation = 0                # bumped by discard/close: a make in flight is void
        self._never = set()                 # keys whose spare could not start (no python3)
        self._worker = None
        self._closed = False
        self.used = 0                       # cells that ran in a spare (for tests and %docker)

    # cell side
    def run_oneshot(self, engine, spec, body: bytes, *, exchange=None,
                    **kw) -> runner.CellResult:
        """`runner.run_oneshot`, in a spare when one with the same spec is ready. EXCHANGE (a
        ``transfer.OneshotTransfer``): the cell's inputs, moved into the spare's own folder."""
        key = spare_key(engine, spec)
        if key is None or key in self._never:
            return run_cold(engine, spec, body, exchange=exchange, **kw)
        spare = self._take(key)
        result = None
        if spare is not None:
            xdir = spare.xdir
            if exchange is not None:
                try:
                    exchange.move_to(xdir)
                    spare.xdir = None  # the cell's now: it removes it when it is done
                except (OSError, TypeError):
                    self._discard(spare)
                    spare = None
            if spare is not None:
                result = self._run_in(spare, spec, body, xdir=xdir, **kw)
        if result is None:
            result = run_cold(engine, spec, body, exchange=exchange, **kw)
        self._want(key, engine, spec)  # only after a cell that ran (not interrupted, not refused)
        return result

    def _take(self, key) -> Optional[_Spare]:
        with self._cond:
            deadline = time.monotonic() + 30
            while self._making == key and self._spare is None and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            spare, self._spare = self._spare, None
            if spare is not None and spare.key != key:
                self._removals.append(spare)
                self._cond.notify_all()
                spare = None
            if self._wanted is not None and self._wanted[0] != key:
                self._wanted = None
        if spare is None:
            return None
        if not self._fresh(spare):
            self._discard(spare)
            return None
        return spare

    def _fresh(self, spare: _Spare) -> bool:
        """Alive and not stale: nothing arrived on its stream (an agent that died says so on
        stdout/stderr, then EOF) and IMAGE still names the image it was made from."""
        try:
            readable, _, _ = select.select([spare.att.raw], [], [], 0)
        except (OSError, ValueError):
            return False
        if readable:
            return False
        try:
            return spare.engine.inspect_image(spare.image)["Id"] == spare.image_id
        except errors.DockmagicError:
            return False

    def _run_in(self, spare: _Spare, spec, body, *, xdir=None, stdout=None, stderr=None,
                on_pull=None, on_pull_event=None, on_interrupt=None, remove=True,
                on_started=None):
        """The cold path's stream/wait/remove, minus create/attach/start."""
        engine = spare.engine
        argv = list(spec.entrypoint or ()) + list(spec.command or ())
        req = json.dumps({"argv": argv, "env": list(spec.env)}).encode()
        try:
            spare.att.send(agent.HEADER.pack(agent.MAGIC, agent.SPAWN, 0, len(req)) + req)
        except OSError:
            self._discard(spare)
            return None  # it died: the cold path it is
        self.used += 1
        cid, removed = spare.id, False
        try:
            result = runner.finish_cell(engine, cid, spare.att, body, stdout=stdout,
                                        stderr=stderr, on_interrupt=on_interrupt,
                                        on_started=on_started)
            if result.exit_code in (126, 127) and xdir:
                # Out of band: only the agent writes this, before the interpreter exists.
                text = transfer.Exchange(xdir).read_small(agent.SPAWN_FAILED_FILE, 4096)
                if text is not None:
                    raise errors.EngineError(errors.describe_api_error(
                        "OCI runtime create failed: "
                        + transfer.clean_text(text.decode("utf-8", "replace")),
                        spec.image, bool(spec.gpus)))
            if remove:  # the cell is over; the engine's clean-up need not hold the kernel
                self._discard(spare)
                removed = True
            return result
        finally:
            if not removed:
                spare.att.close()
                if remove:
                    engine.remove(cid)
                    xdir_left, spare.xdir = spare.xdir, None  # (unless a cell took it over)
                    transfer.remove_dir(xdir_left)

    # worker side
    def _want(self, key, engine, spec):
        with self._cond:
            if self._closed or key in self._never:
                return
            if self._spare is not None and self._spare.key == key:
                return
            self._wanted = (key, engine, spec)
            self._ensure_worker()
            self._cond.notify_all()

    def _discard(self, spare: _Spare):
        with self._cond:
            self._removals.append(spare)
            self._ensure_worker()
            self._cond.notify_all()

    def _ensure_worker(self):
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="dockmagic-spares",
                                            daemon=True)
            self._worker.start()
            on_shutdown(self.close)

    def _work(self):
        while True:
            with self._cond:
                while not (self._wanted or self._removals or self._closed):
                    if self._spare is not None:
                        idle = SPARE_IDLE_S - (time.monotonic() - self._spare.made)
                        if idle <= 0:
                            self._removals.append(self._spare)
                            self._spare = None
                            continue
                        self._cond.wait(idle)
                    else:
                        self._cond.wait()
                if self._closed and not self._removals:
                    return
                if self._wanted is not None and not self._closed:
                    (key, engine, spec), self._wanted = self._wanted, None
                    self._making = key
                    job = ("make", key, (engine, spec), self._generation)
                else:
                    job = ("remove", self._removals.popleft())
                    self._busy += 1
            if job[0] == "make":
                spare = self._make(job[1], *job[2])
                with self._cond:
                    self._making = None
                    if spare is not None:
                        if (self._closed or job[3] != self._generation
                                or (self._wanted and self._wanted[0] != job[1])):
                            self._removals.append(spare)
                        else:
                            if self._spare is not None:
                                self._removals.append(self._spare)
                            self._spare = spare
                    self._cond.notify_all()
            else:
                try:
                    _remove_spare(job[1])
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()

    def _make(self, key, engine, spec) -> Optional[_Spare]:
        try:
            xdir = transfer.make_private_dir(transfer.exchange_root()[0],
                                             transfer.cell_dir_prefix(), spec.user)
        except (OSError, errors.DockmagicError):
            return None
        cid = None
        try:
            cid = engine.create(for_spare(spec, xdir))
            att = engine.attach(cid)
            try:
                engine.start(cid, image=spec.image)
                image_id = engine.inspect(cid)["Image"]
            except BaseException:
                att.close()
                raise
            spare = _Spare(key, cid, att, spec.image, image_id, engine, xdir)
            cid = xdir = None
            return spare
        except errors.EngineUnavailable:
            return None
        except errors.EngineError:
            self._never.add(key)  # no python3 in the image, or a spec only a cold start takes
            return None
        except Exception:
            return None
        finally:
            if cid is not None:
                engine.remove(cid)
            transfer.remove_dir(xdir)

    # lifecycle
    def ready(self, timeout: float = 30.0) -> bool:
        """Wait until no spare is being made; True if one is ready (benchmarks, tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._making is not None or self._wanted is not None) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            return self._spare is not None

    @property
    def spare_id(self) -> Optional[str]:
        spare = self._spare
        return spare.id if spare is not None else None

    def discard(self):
        """Remove the spare (`%docker config --spare off`) and wait for the removals."""
        with self._cond:
            self._wanted = None
            self._generation += 1
            if self._spare is not None:
                self._removals.append(self._spare)
                self._spare = None
            self._ensure_worker()
            self._cond.notify_all()
        self.drain()

    def drain(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while ((self._removals or self._making or self._busy)
                   and time.monotonic() < deadline):
                self._cond.wait(0.05)

    def close(self):
        with self._cond:
            self._closed = True
            self._generation += 1
            self._wanted = None
            if self._spare is not None:
                self._removals.append(self._spare)
                self._spare = None
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(60)
        while self._removals:  # worker gone or stuck: do it here
            _remove_spare(self._removals.popleft())
        with self._cond:
            self._closed = False  # a later cell may make spares again
            self._worker = None


def _remove_spare(spare: _Spare):
    spare.att.close()
    spare.engine.remove(spare.id)
    xdir, spare.xdir = spare.xdir, None
    transfer.remove_dir(xdir)


def run_cold(engine, spec, body: bytes, *, exchange=None, **kw) -> runner.CellResult:
    """`runner.run_oneshot` in a new container; EXCHANGE's private folder mounted in it."""
    if exchange is not None:
        spec = exchange.amend(spec)
    return runner.run_oneshot(engine, spec, body, **kw)


SPARES = SparePool()


def runner_for(spec, enabled: bool = True):
    """The one-shot runner for SPEC, ``(engine, spec, body, **kw) -> CellResult``: through the
    spare pool where spares apply."""
    if (not enabled or spec.detach or spec.name or spec.ports or spec.publish_all_ports):
        return run_cold
    return SPARES.run_oneshot


