"""Exchange folders removed off the cell's path.

Removing a cell's exchange folder frees the pages of its ``--in``/``--out`` files: about a
quarter of a second per GB on a tmpfs, which a cell would otherwise wait for after its
container is done. ``discard`` renames the folder at once into a hidden name in the exchange
root (out of every container's sight: a session's cell folder leaves the session's own folder),
has the reaper track it (removed if the kernel dies first), and leaves the removal to one
daemon thread. ``flush`` (at kernel shutdown) waits until everything discarded is gone.
"""
from __future__ import annotations

import collections
import os
import secrets
import shutil
import threading

from .engine import reaping
from .kernel import on_shutdown

_PREFIX = ".gone-"
_pending: "collections.deque[str]" = collections.deque()
_cond = threading.Condition()
_busy = 0
_worker = None


def discard(path: str, root: str):
    """Take PATH (a folder in ROOT or in a folder of ROOT, same filesystem) out of sight now;
    it is removed soon after. Where it cannot be renamed, it is removed here and now."""
    global _worker
    trash = os.path.join(root, _PREFIX + secrets.token_hex(16))
    reaping.track([trash])
    try:
        os.rename(path, trash)
    except OSError:
        reaping.untrack([trash])
        shutil.rmtree(path, ignore_errors=True)
        return
    with _cond:
        _pending.append(trash)
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_run, name="dockmagic-sweeper", daemon=True)
            _worker.start()
            on_shutdown(flush)
        _cond.notify_all()


def _run():
    while True:
        with _cond:
            _cond.wait_for(lambda: _pending)
        _remove_next()


def _remove_next() -> bool:
    global _busy
    with _cond:
        if not _pending:
            return False
        path = _pending.popleft()
        _busy += 1
    try:
        shutil.rmtree(path, ignore_errors=True)
        reaping.untrack([path])
    finally:
        with _cond:
            _busy -= 1
            _cond.notify_all()
    return True


def flush(timeout: float = 60.0) -> bool:
    """Remove every discarded folder, helping the thread; True once all are gone (at most
    TIMEOUT seconds for one the thread is still removing)."""
    while _remove_next():
        pass
    with _cond:
        return _cond.wait_for(lambda: not _pending and not _busy, timeout)
