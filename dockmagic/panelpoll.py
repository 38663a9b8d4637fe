"""What the live panel reads off its refresh tick: per-container reads, and the other engines.

* :class:`Fetcher` - ``inspect``, one-shot ``stats`` and logs of one engine's containers, on a
  few daemon workers; the refresher asks (:meth:`Fetcher.want`) and takes what has arrived,
  it never waits. It hands answers out keyed by :func:`~dockmagic.panelstate.row_key`.
* :class:`EnginePoller` - every engine of ``%docker engines`` (engines.toml), each read on its
  own daemon thread at the panel's interval: its container listing, and every
  :data:`GPUS_EVERY_S` its GPUs (NVML-shaped, via ``nvidia-smi -q -x`` over its SSH
  connection, as ``%gpus --engine NAME``), version and round-trip time. The refresher takes
  the last :class:`~dockmagic.panelstate.EngineReading` of each; an engine that hangs or does
  not answer costs the tick nothing, and shows as "no answer for N s" after
  :data:`ENGINE_TIMEOUT_S` (:func:`~dockmagic.panelstate.to_engine_status`).

Nothing here raises into the panel: a failed read is the reading's ``error``.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from . import errors, lifecycle
from . import panelstate as ps

__all__ = ["Fetcher", "EnginePoller", "ENGINE_TIMEOUT_S", "GPUS_EVERY_S", "LOG_LINES"]

LOG_LINES = 200
#: A read in flight longer than this (seconds) shows its engine as not answering.
ENGINE_TIMEOUT_S = 10.0
#: Seconds between two readings of an engine's GPUs, version and round trip (nvidia-smi costs
#: a process on that host; the listing is read every interval).
GPUS_EVERY_S = 10.0
#: After a failed read, the next one waits at least this long (each try of an unreachable ssh://
#: engine is an ssh process and up to its 5 s connect timeout).
RETRY_S = 5.0
#: engines.toml is looked at (its mtime) at most this often.
CONFIG_EVERY_S = 2.0


def describe(exc: BaseException) -> str:
    """One line for a failed read."""
    if isinstance(exc, errors.DockmagicError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class Fetcher:
    """``inspect`` and one-shot ``stats`` (and the open logs pane's text) of one engine's
    containers on a few daemon workers. ``engine``: a function giving that engine (None: the
    default one); ``name``: its name, for the keys."""

    def __init__(self, workers: int = 2, engine: Optional[Callable] = None,
                 name: str = ps.LOCAL):
        self.name = name
        self._engine = engine or (lambda: None)
        self._q: "queue.SimpleQueue" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending: frozenset = frozenset()
        self._inspected: Dict[str, ps.Inspected] = {}  # by container id
        self._samples: Dict[str, Tuple[float, dict, dict]] = {}  # id -> (when, merged, raw)
        self._logs: Optional[Tuple[str, str]] = None  # (row key, text): the last logs read
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"dockmagic-panel-fetch-{name}-{i}")
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def want(self, kind: str, cid: str) -> None:
        with self._lock:
            if self._closed.is_set() or (kind, cid) in self._pending:
                return
            self._pending = self._pending | {(kind, cid)}
        self._q.put((kind, cid))

    def _keyed(self, by_id: dict) -> dict:
        if self.name == ps.LOCAL:  # the key is the id
            return by_id
        return {ps.row_key(self.name, cid): v for cid, v in by_id.items()}

    def inspected(self) -> Dict[str, ps.Inspected]:
        """By row key; replaced, never changed in place: safe to read."""
        return self._keyed(self._inspected)

    def inspected_ids(self) -> Dict[str, ps.Inspected]:
        """By container id (what :func:`~dockmagic.panelstate.ids_to_inspect` takes)."""
        return self._inspected

    def stats(self) -> Dict[str, dict]:
        """By row key."""
        return self._keyed({cid: merged for cid, (_, merged, _) in self._samples.items()})

    def logs(self) -> Optional[Tuple[str, str]]:
        """The last logs read, as ``(row key, text)``."""
        return self._logs

    def sample_age(self, cid: str, now: float) -> float:
        entry = self._samples.get(cid)
        return float("inf") if entry is None else now - entry[0]

    def forget_except(self, ids) -> None:
        """Drop what is cached for containers no longer listed."""
        with self._lock:
            if any(k not in ids for k in self._inspected):
                self._inspected = {k: v for k, v in self._inspected.items() if k in ids}
            if any(k not in ids for k in self._samples):
                self._samples = {k: v for k, v in self._samples.items() if k in ids}

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None or self._closed.is_set():
                return
            kind, cid = item
            try:
                engine = self._engine()
                if kind == "inspect":
                    found = ps.parse_inspect(lifecycle.inspect_container(cid, engine=engine))
                    with self._lock:
                        self._inspected = {**self._inspected, cid: found}
                elif kind == "logs":
                    self._logs = (ps.row_key(self.name, cid),
                                  lifecycle.fetch_logs(cid, tail=LOG_LINES, engine=engine))
                else:
                    sample = lifecycle.query_stats(cid, engine=engine)
                    if sample:
                        with self._lock:
                            prev = self._samples.get(cid)
                            merged = ps.with_precpu(sample, prev[2] if prev else None)
                            self._samples = {**self._samples,
                                             cid: (time.monotonic(), merged, sample)}
            except Exception:  # gone, or the engine went away: the next tick asks again
                pass
            finally:
                with self._lock:
                    self._pending = self._pending - {item}

    def close(self) -> None:
        self._closed.set()
        for _ in self._threads:
            self._q.put(None)


class _EngineReader:
    """One engine of ``%docker engines``, read on its own daemon thread."""

    def __init__(self, poller: "EnginePoller", name: str, endpoint: str):
        self.poller, self.name = poller, name
        self.reading = ps.EngineReading(name, endpoint)  # replaced, never changed in place
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._gpus_at = float("-inf")
        self._fetcher: Optional[Fetcher] = None
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.thread is None and not self._stop.is_set():
            self.thread = threading.Thread(target=self._run, daemon=True,
                                           name=f"dockmagic-panel-engine-{self.name}")
            self.thread.start()

    def engine(self):
        from .remote.engines import get_engine
        return get_engine(self.name)

    def fetcher(self) -> Fetcher:
        if self._fetcher is None:  # one worker: a slow host never holds the local engine's
            self._fetcher = Fetcher(1, self.engine, self.name)
        return self._fetcher

    def _set(self, **changes) -> None:
        import dataclasses
        self.reading = dataclasses.replace(self.reading, **changes)

    def _run(self) -> None:
        poller = self.poller
        while not self._stop.is_set():
            poked = self._wake.is_set()
            self._wake.clear()
            failed = False
            if poked or poller.active():
                failed = not self.read()
            wait = max(poller.interval(), RETRY_S if failed else 0.0)
            self._wake.wait(wait)

    def read(self) -> bool:
        """Read the engine once (listing; GPUs, version and RTT when due). True if it answered."""
        before = self.reading
        self._set(busy_since=time.time())
        try:
            engine = self.engine()
            filters = {"label": [lifecycle.MANAGED_FILTER]} if self.poller.managed_only() \
                else None
            listing = tuple(engine.containers(all=True, filters=filters))
            now = time.time()
            changes = dict(listing=listing, listed_at=now, error=None)
            if now - self._gpus_at >= GPUS_EVERY_S:
                self._gpus_at = now
                changes.update(self._read_host(engine, now))
        except Exception as exc:  # one line on the engine's heading; the next read tries again
            changes = dict(error=describe(exc))
        if self._stop.is_set():
            return True
        self._set(busy_since=None, **changes)
        after = self.reading
        if _shown(before) != _shown(after):
            self.poller.changed()
        return after.error is None

    def _read_host(self, engine, now: float) -> dict:
        from .remote.table import query_gpu_snapshot  # never raises
        link = getattr(engine, "link", None)
        out = {}
        try:
            if link is not None:
                out["rtt_ms"] = link.ping() * 1000
            else:
                t0 = time.perf_counter()
                engine.ping()
                out["rtt_ms"] = (time.perf_counter() - t0) * 1000
            if self.reading.version is None:
                out["version"] = engine.version().get("Version")
        except Exception:  # the listing answered; the next reading tries again
            pass
        snap = query_gpu_snapshot(engine)
        out["snapshot"] = snap
        out["history"] = ps.build_history(self.reading.history, snap, now)
        return out

    def poke(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._fetcher is not None:
            self._fetcher.close()


def _shown(reading: ps.EngineReading) -> tuple:
    """What of a reading changes the panel's rows or heading at once (not its timestamps,
    not docker's "Up N seconds" words: the next tick shows those)."""
    listing = tuple((e.get("Id"), e.get("State")) for e in reading.listing or ())
    return (listing, reading.error, reading.snapshot is None)


class EnginePoller:
    """Every engine of ``%docker engines``, each on its own thread (see the module's text).

    ``interval`` / ``active`` / ``managed_only``: functions the threads ask before each read
    (the panel's interval, not paused, its scope); ``on_change``: called (on a reader thread)
    when an engine's rows or state changed, so the panel draws it without waiting a tick.
    """

    def __init__(self, interval: Callable[[], float], active: Callable[[], bool],
                 managed_only: Callable[[], bool],
                 on_change: Optional[Callable[[], None]] = None):
        self.interval, self.active, self.managed_only = interval, active, managed_only
        self._on_change = on_change
        self.threaded = False  # readers on their own threads (start_threads), else read_all
        self._readers: Dict[str, _EngineReader] = {}
        self._lock = threading.Lock()
        self._config: Optional[tuple] = None
        self._checked = float("-inf")
        self._closed = False
        self.error: Optional[str] = None  # engines.toml could not be read

    def sync(self, force: bool = False) -> None:
        """Start a reader per engine in engines.toml and stop those removed from it; the file
        is looked at at most every :data:`CONFIG_EVERY_S` (its mtime), and read only when it
        changed. Never raises (a broken file is :attr:`error`)."""
        mono = time.monotonic()
        if self._closed or (not force and mono - self._checked < CONFIG_EVERY_S):
            return
        self._checked = mono
        from .remote import store
        path = store.config_path()
        try:
            st = os.stat(path)
            stamp = (path, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (path, None, None)
        if stamp == self._config:
            return
        self._config = stamp
        try:
            wanted = {n: ep.url for n, ep in store.load_engines(path).items()} \
                if stamp[1] is not None else {}
            self.error = None
        except Exception as exc:
            wanted, self.error = None, describe(exc)
        if wanted is None:
            return  # keep reading the engines known until the file is fixed
        with self._lock:
            for name in [n for n in self._readers if self._readers[n].reading.endpoint
                         != wanted.get(n)]:
                self._readers.pop(name).close()
            for name, url in wanted.items():
                if name not in self._readers and name != ps.LOCAL:
                    self._readers[name] = reader = _EngineReader(self, name, url)
                    if self.threaded:
                        reader.start()
            # the file's order
            self._readers = {n: self._readers[n] for n in wanted if n in self._readers}
        self.changed()

    def start_threads(self) -> None:
        """From now on each engine is read on its own thread (the panel's refresher runs)."""
        self.threaded = True
        for reader in list(self._readers.values()):
            reader.start()

    def read_all(self) -> None:
        """Read every engine once now, all at once, waiting for them (no threads running: a
        panel made with ``autostart=False``, refreshed by hand)."""
        readers = list(self._readers.values())
        if len(readers) == 1:
            readers[0].read()
        elif readers:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=min(8, len(readers))) as pool:
                list(pool.map(lambda r: r.read(), readers))

    def readings(self) -> Tuple[ps.EngineReading, ...]:
        """The last reading of each engine, in the file's order; never waits."""
        return tuple(r.reading for r in list(self._readers.values()))

    def names(self) -> Tuple[str, ...]:
        return tuple(self._readers)

    def engine(self, name: str):
        """The `Engine` called NAME (None for the local one: lifecycle's default)."""
        if name == ps.LOCAL:
            return None
        from .remote.engines import get_engine
        return get_engine(name)

    def fetcher(self, name: str) -> Optional[Fetcher]:
        reader = self._readers.get(name)
        return None if reader is None else reader.fetcher()

    def fetchers(self) -> Tuple[Fetcher, ...]:
        return tuple(r._fetcher for r in list(self._readers.values()) if r._fetcher)

    def poke(self, name: Optional[str] = None) -> None:
        """Read NAME (every engine: None) now, e.g. after an action there."""
        for n, reader in list(self._readers.items()):
            if name is None or n == name:
                reader.poke()

    def changed(self) -> None:
        if self._on_change is not None and not self._closed:
            try:
                self._on_change()
            except Exception:
                pass

    def close(self) -> None:
        self._closed = True
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
        for r in readers:
            r.close()
