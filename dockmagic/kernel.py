"""This kernel's identity on the engines, and process-wide shutdown: one owner for both.

``kernel_id()`` is `host:pid:start` (the ``dockmagic.kernel`` label), so containers of kernels that
are gone can be told from live ones. ``on_shutdown(fn)`` registers what must be closed when the
extension unloads or the process exits (sessions, spares, panels, NVML, reapers); ``shutdown()``
runs them, newest first, each at most once per registration, never raising.
"""
from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from typing import Callable, List

_PROCESS_START = time.time()
_hooks: List[Callable[[], None]] = []
_lock = threading.Lock()
_atexit_done = False


def kernel_id() -> str:
    """`host:pid:start`: names this kernel on the engine, so dead kernels' containers are found."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(_PROCESS_START)}"


def notebook_path(shell=None) -> str:
    """The notebook this kernel runs (the ``dockmagic.notebook`` label): Jupyter's session name,
    IPython's ``__session__``, or VS Code's notebook file; "" when none says."""
    ns = getattr(shell, "user_ns", None) or {}
    return (os.environ.get("JPY_SESSION_NAME") or ns.get("__session__")
            or ns.get("__vsc_ipynb_file__") or "")


def on_shutdown(fn: Callable[[], None]) -> Callable[[], None]:
    """Run FN at `shutdown()` (unload, or process exit). Registering twice runs it once."""
    global _atexit_done
    with _lock:
        if fn not in _hooks:
            _hooks.append(fn)
        if not _atexit_done:
            _atexit_done = True
            atexit.register(shutdown)
    return fn


def shutdown():
    """Close everything registered, newest first; a failing hook does not stop the others."""
    with _lock:
        hooks = list(reversed(_hooks))
        _hooks.clear()
    for fn in hooks:
        try:
            fn()
        except Exception as exc:  # shutdown must finish; say what failed, in one line
            print(f"dockmagic: shutting down {getattr(fn, '__qualname__', fn)} failed: {exc}",
                  file=sys.stderr)
