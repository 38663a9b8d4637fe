"""The kernel's side of the reaper (`reaper.py` is the process): one reaper per engine this
kernel uses, started on first use and fed what must go if the kernel dies.

`Reaper` is the handle on a local reaper process (a Popen holding the pipe). Another host's
engine gets a handle of the same shape that runs the process there over SSH
(`dockmagic.remote.reaping`); `ensure_reaper(..., start=...)` keeps either in the one registry,
so `track` / `add_globs` / `untrack` reach every reaper of the kernel.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Callable, Optional

from . import reaper as _process
from .reaper import GRACE_S, NO_ENGINE, EngineAPI, claims_dir, subdir  # noqa: F401 (NO_ENGINE)


class Reaper:
    """The kernel's handle on one reaper process (see reaper.py's docstring)."""

    def __init__(self, endpoint_url: str, kernel_id: str, proc, log_path: Optional[str] = None):
        self.endpoint_url, self.kernel_id = endpoint_url, kernel_id
        self.proc = proc
        self.log_path = log_path
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self._closed and self.proc.poll() is None

    def send(self, line: str) -> bool:
        """One request; False when the reaper is gone (it is then started anew on next use)."""
        with self._lock:
            if self._closed:
                return False
            try:
                self.proc.stdin.write(line.encode("utf-8") + b"\n")
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def track(self, path: str):
        self.send(f"track {path}")

    def untrack(self, path: str):
        self.send(f"untrack {path}")

    def add_glob(self, pattern: str):
        self.send(f"glob {pattern}")

    def remove_labelled(self, label: str):
        """For a while (LABEL_WATCH_S), remove containers labelled LABEL (`KEY=VALUE`) as they
        appear: a create interrupted in flight may finish on the engine after the kernel looked
        for it (the engine's client-side create token)."""
        self.send(f"rmlabel {label}")

    def remove_with(self, container_id: str, path: str):
        """The folder PATH (e.g. a `--rm` session's exchange folder) is removed when the reaper
        removes CONTAINER_ID (its full id), and only then: a session another kernel claimed keeps
        its folder too."""
        self.send(f"owns {container_id} {path}")

    def remove_later(self, container_id: str):
        """The kernel could not remove CONTAINER_ID (engine away): the reaper removes it as soon
        as the engine answers again, while the kernel goes on."""
        self.send(f"rm {container_id}")

    def claim(self, container_id: str):
        """This kernel holds CONTAINER_ID (a session it reattached to), in the claims folder of
        the reaper's host. A local reaper's host is the kernel's, where `claims.claim` wrote it
        already; a remote reaper's is the engine's, where the other kernels' reapers look."""

    def release(self, container_id: str):
        """This kernel no longer holds CONTAINER_ID (see `claim`)."""

    def close(self, reap: bool = False, wait: float = 0.0):
        """Clean shutdown. Not ``reap``: the reaper finishes the removals it was asked for and
        exits. ``reap``: it removes this kernel's reapable containers and folders now, as if the
        kernel had died; only for a process about to exit that made no clean-up of its own (it
        would remove containers the process makes afterwards). ``wait``: seconds to wait."""
        self.send(f"close {'reap' if reap else 'keep'}")
        with self._lock:
            self._closed = True
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if _REAPERS.get(self.endpoint_url) is self:
            _REAPERS.pop(self.endpoint_url, None)
        if wait:
            try:
                self.proc.wait(wait)
            except Exception:
                pass
        self.proc.poll()


_REAPERS: dict = {}
_TRACKED: set = set()
_GLOBS: set = set()
_start_lock = threading.RLock()  # a remote start ensures the local folders reaper inside


def ensure_reaper(endpoint_url: str, kernel_id: str, cleanup_globs=(), *,
                  grace_s: float = GRACE_S, tls=None,
                  start: Optional[Callable[[], Optional[Reaper]]] = None) -> Optional[Reaper]:
    """This kernel's reaper for the engine at ENDPOINT_URL, started on first use (a Popen, nothing
    waited on); later calls return it (one dict lookup and a waitpid). ``cleanup_globs``: absolute
    glob patterns of this kernel's exchange folders, each under a folder only we may write to.
    ``tls``: (ca, cert, key) file names for a tcp:// endpoint with TLS. ``start``: makes the
    handle instead (a reaper on the engine's own host; None when none can run there).

    None for an endpoint this host cannot reach with the stdlib (ssh://, npipe://) and no
    ``start``: such an engine needs its reaper started on its own host."""
    reaper = _REAPERS.get(endpoint_url)
    if reaper is not None and reaper.alive():
        return reaper
    if start is None:
        try:
            EngineAPI(endpoint_url, tls)
        except ValueError:
            return None
    with _start_lock:
        reaper = _REAPERS.get(endpoint_url)
        if reaper is not None and reaper.alive():
            return reaper
        try:
            reaper = start() if start is not None else start_reaper(
                endpoint_url, kernel_id, cleanup_globs, grace_s=grace_s, tls=tls)
        except OSError:
            return None  # a safety net must never fail the cell that asked for it
        if reaper is None:
            return None
        _REAPERS[endpoint_url] = reaper
    for pattern in sorted(_GLOBS):
        reaper.add_glob(pattern)
    for path in sorted(_TRACKED):
        reaper.track(path)
    try:
        from .. import kernel  # the process-wide shutdown owner
        kernel.on_shutdown(close_all)
    except ImportError:
        pass
    return reaper


def script_args(endpoint_url: str, kernel_id: str, cleanup_globs=(), *,
                grace_s: float = GRACE_S, tls=None, claims=None, log_path=None) -> list:
    """The reaper's command-line arguments (after the interpreter and the script)."""
    args = ["--endpoint", endpoint_url, "--kernel", kernel_id, "--grace", repr(grace_s)]
    if claims:
        args += ["--claims", claims]
    for g in cleanup_globs:
        args += ["--glob", g]
    if tls is not None:
        args += ["--tls", *tls]
    if log_path:
        args += ["--log", log_path]
    return args


def reaper_source() -> str:
    """reaper.py's text, to run it where dockmagic is not installed (``python3 -c SOURCE``)."""
    with open(os.path.abspath(_process.__file__), encoding="utf-8") as f:
        return f.read()


def remote_argv(endpoint_url: str, kernel_id: str, cleanup_globs=(), *, python: str = "python3",
                grace_s: float = GRACE_S, claims=None, remote: bool = False) -> list:
    """The command that runs a reaper on another host, e.g. ``ssh HOST -- shlex.join(ARGV)``
    with stdin a pipe kept open by the kernel (``Reaper(url, kernel, that_process)``).
    ``remote``: the reaper's ``--remote`` mode (its host's claims and runtime folder, a log
    there, handover to a newer reaper of the same kernel, heartbeats; see reaper.py).
    (The source travels as one argument of the remote shell: Linux takes up to 128 KiB there;
    reaper.py is about 36 KiB.)"""
    return [python, "-I", "-S", "-c", reaper_source()] + script_args(
        endpoint_url, kernel_id, cleanup_globs, grace_s=grace_s, claims=claims) + (
        ["--remote"] if remote else [])


def start_reaper(endpoint_url: str, kernel_id: str, cleanup_globs=(), *, grace_s: float = GRACE_S,
                 tls=None) -> Reaper:
    """Start a reaper process for KERNEL_ID on ENDPOINT_URL on this host (`ensure_reaper` keeps
    one per endpoint; tests start their own): a Popen, nothing waited on."""
    import subprocess

    try:
        claims, logs = claims_dir(), subdir("reapers")
        log_path = os.path.join(logs, f"{os.getpid()}-{abs(hash(endpoint_url)):x}.log")
    except OSError:
        claims, log_path = None, None
    argv = [sys.executable, "-I", "-S", os.path.abspath(_process.__file__)] + script_args(
        endpoint_url, kernel_id, cleanup_globs, grace_s=grace_s, tls=tls, claims=claims,
        log_path=log_path)
    with open(log_path or os.devnull, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd="/")
    return Reaper(endpoint_url, kernel_id, proc, log_path)


def track(paths):
    """Exchange folders this kernel made: every reaper removes them if the kernel dies."""
    for path in paths:
        _TRACKED.add(path)
        for reaper in list(_REAPERS.values()):
            reaper.track(path)


def add_globs(patterns):
    """Folders of this kernel, by pattern (absolute; e.g. its one-shot exchange folders, named
    after the kernel): every reaper removes what matches if the kernel dies. Cheap to repeat."""
    for pattern in patterns:
        if pattern not in _GLOBS:
            _GLOBS.add(pattern)
            for reaper in list(_REAPERS.values()):
                reaper.add_glob(pattern)


def untrack(paths):
    """Exchange folders this kernel removed itself."""
    for path in paths:
        _TRACKED.discard(path)
        for reaper in list(_REAPERS.values()):
            reaper.untrack(path)


def reaper_for(endpoint_url: str):
    """The running reaper for ENDPOINT_URL, or None."""
    reaper = _REAPERS.get(endpoint_url)
    return reaper if reaper is not None and reaper.alive() else None


def reapers() -> list:
    """This kernel's reapers (one per engine it used)."""
    return list(_REAPERS.values())


def close_all(reap: bool = False):
    """Close every reaper of this kernel (unload, process exit). Not ``reap``: the kernel's own
    shutdown removed what it owns, and after an unload the process may go on making containers
    with the same kernel label; the reapers finish what they were asked to remove, then exit."""
    for reaper in list(_REAPERS.values()):
        reaper.close(reap=reap)
