"""Spares: fresh containers at warm speed for one-shot cells.

A **spare** is a fresh container made in the background after a one-shot cell, with the same
spec, running the agent (``agent.py``) in ``spare`` mode: the next identical one-shot cell sends
it its interpreter argv and the cell's environment, the agent exec()s the interpreter, which
reads the cell body from stdin as in a cold `docker run -i --rm`. So the cell runs in a
brand-new container without paying for create + start. At most one spare is kept; it is removed
when unused for a while, when the spec changes, and at kernel shutdown
(``session.close_all``).
"""
from __future__ import annotations

import collections
import json
import select
import threading
import time
from typing import Optional

from . import agent, errors, runner
from .session import _agent_source, _register_atexit

#: An unused spare is removed after this long.
SPARE_IDLE_S = 600.0


# -- the pool -------------------------------------------------------------------------------------
class _Spare:
    __slots__ = ("key", "id", "sock", "image", "image_id", "client", "made")

    def __init__(self, key, cid, sock, image, image_id, client):
        self.key, self.id, self.sock, self.client = key, cid, sock, client
        self.image, self.image_id = image, image_id
        self.made = time.monotonic()


def spare_key(kwargs: dict) -> Optional[str]:
    """What must match for a spare to stand in for a cold start: everything fixed at create
    time. The environment is not (the agent applies the cell's own when it runs), nor the
    per-cell label. None: this cell never gets a spare."""
    if (kwargs.get("name") or kwargs.get("detach") or kwargs.get("ports")
            or kwargs.get("publish_all_ports") or not kwargs.get("entrypoint")
            or kwargs.get("tty") or "_host_config_extra" in kwargs):
        return None
    kw = {k: v for k, v in kwargs.items() if k not in ("environment", "auto_remove")}
    labels = dict(kw.get("labels") or {})
    labels.pop("dockmagic.cell", None)
    kw["labels"] = labels
    return json.dumps(kw, sort_keys=True, default=repr) + f"@{id(runner.get_client())}"


class SparePool:
    """At most one spare container, made and removed by one background worker."""

    def __init__(self):
        self._cond = threading.Condition()
        self._spare: Optional[_Spare] = None
        self._making: Optional[str] = None  # the key the worker is making a spare for
        self._wanted = None                 # (key, kwargs) to make next
        self._removals = collections.deque()
        self._busy = 0                      # removals taken by the worker, not yet done
        self._generation = 0                # bumped by discard/close: a make in flight is void
        self._never = set()                 # keys whose spare could not start (no python3)
        self._worker = None
        self._closed = False
        self.used = 0                       # cells that ran in a spare (for tests and %docker)

    # cell side
    def run_oneshot(self, kwargs: dict, body: bytes, **kw) -> runner.CellResult:
        """`runner.run_oneshot`, in a spare when one with the same spec is ready."""
        key = spare_key(kwargs)
        if key is None or key in self._never:
            return runner.run_oneshot(kwargs, body, **kw)
        spare = self._take(key)
        result = None
        if spare is not None:
            result = self._run_in(spare, kwargs, body, **kw)
        if result is None:
            result = runner.run_oneshot(kwargs, body, **kw)
        self._want(key, kwargs)  # only after a cell that ran (not interrupted, not refused)
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
        raw = runner.raw_socket(spare.sock)
        try:
            readable, _, _ = select.select([raw], [], [], 0)
        except (OSError, ValueError):
            return False
        if readable:
            return False
        try:
            return runner.get_client().api.inspect_image(spare.image)["Id"] == spare.image_id
        except Exception:
            return False

    def _run_in(self, spare: _Spare, kwargs, body, *, stdout=None, stderr=None,
                wants_gpus=False, on_pull=None, on_interrupt=None, remove=True,
                on_started=None):
        """The cold path's stream/wait/remove, minus create/attach/start."""
        api = runner.get_client().api
        argv = list(kwargs.get("entrypoint") or []) + list(kwargs.get("command") or [])
        req = json.dumps({"argv": argv, "env": list(kwargs.get("environment") or [])}).encode()
        raw = runner.raw_socket(spare.sock)
        try:
            raw.sendall(agent.HEADER.pack(agent.MAGIC, agent.SPAWN, 0, len(req)) + req)
        except OSError:
            self._discard(spare)
            return None  # it died: the cold path it is
        self.used += 1
        cid, removed = spare.id, False
        try:
            failed = []

            def claim_exec_failure(kind, data):
                if kind == 2 and not failed and data.startswith(agent.SPARE_EXEC_FAILED.encode()):
                    failed.append(data.decode("utf-8", "replace"))
                    return True
                return False

            result = runner.finish_cell(api, cid, spare.sock, body, stdout=stdout, stderr=stderr,
                                        on_interrupt=on_interrupt, intercept=claim_exec_failure,
                                        on_started=on_started)
            if failed:
                text = failed[0][len(agent.SPARE_EXEC_FAILED):].strip()
                raise errors.EngineError(errors.describe_api_error(
                    f"OCI runtime create failed: {text}", kwargs.get("image", ""), wants_gpus))
            if remove:  # the cell is over; the engine's clean-up need not hold the kernel
                self._discard(spare)
                removed = True
            return result
        finally:
            if not removed:
                try:
                    spare.sock.close()
                except Exception:
                    pass
                if remove:
                    runner.remove_quietly(api, cid)

    # worker side
    def _want(self, key, kwargs):
        with self._cond:
            if self._closed or key in self._never:
                return
            if self._spare is not None and self._spare.key == key:
                return
            self._wanted = (key, dict(kwargs))
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
            _register_atexit()

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
                    (key, kwargs), self._wanted = self._wanted, None
                    self._making = key
                    job = ("make", key, kwargs, self._generation)
                else:
                    job = ("remove", self._removals.popleft())
                    self._busy += 1
            if job[0] == "make":
                spare = self._make(job[1], job[2])
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

    def _make(self, key, kwargs) -> Optional[_Spare]:
        import docker

        client = runner.get_client()
        api = client.api
        labels = dict(kwargs.get("labels") or {})
        labels.pop("dockmagic.cell", None)
        labels["dockmagic.kind"] = "spare"
        kw = {k: v for k, v in kwargs.items() if k != "environment"}
        kw.update(labels=labels, stdin_open=True, detach=False, tty=False, auto_remove=False,
                  entrypoint=["python3", "-I", "-c", _agent_source()], command=["spare"])
        cid = None
        try:
            cid = runner.create_container(client, kw)
            sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                  "stream": 1})
            try:
                api.start(cid)
                image_id = api.inspect_container(cid)["Image"]
            except Exception:
                sock.close()
                raise
            spare, cid = _Spare(key, cid, sock, kwargs["image"], image_id, client), None
            return spare
        except docker.errors.APIError:
            self._never.add(key)  # no python3 in the image, or a spec only a cold start takes
            return None
        except Exception:
            return None
        finally:
            if cid is not None:
                runner.remove_quietly(api, cid)

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
    try:
        spare.sock.close()
    except Exception:
        pass
    try:
        spare.client.api.remove_container(spare.id, force=True)
    except Exception:
        runner.remove_quietly(runner.get_client().api, spare.id)


SPARES = SparePool()


def runner_for(spec, enabled: bool = True):
    """The one-shot runner for SPEC: through the spare pool where spares apply."""
    if (not enabled or spec.detach or spec.name or spec.ports or spec.publish_all_ports):
        return runner.run_oneshot
    return SPARES.run_oneshot


