"""Who holds a container: its own kernel while that runs, or a live kernel that claimed it.

A kernel that reattaches to a session (``%docker session NAME`` after a restart, or
``%%docker @NAME``) claims it: a file per container id in this user's runtime folder names the
claiming kernel (`host:pid:start`). ``prune --orphans`` and the reaper of the kernel that made the
container leave a claimed one alone; the claimer's own reaper removes it (if it is reapable) when
the claimer dies.

``classify`` is the one rule (pure); ``claim`` / ``release`` / ``claimer`` are the tiny I/O layer.
The claim file format lives with the reaper (``engine/reaper.py``), which reads it standalone.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

from . import labels as L
from .engine import reaper as _files

#: What a dockmagic container is to this host's kernels (see `classify`).
CLAIMED, HELD, SESSION, JOB, ORPHAN = "claimed", "held", "session", "job", "orphan"


def classify(labels: Mapping[str, str], claimer: Optional[str],
             alive: Callable[[str], Optional[bool]]) -> str:
    """What a dockmagic container is to this host's kernels (the first that applies):

    * ``claimed``: a running kernel claimed it (or one this host cannot judge);
    * ``held``: its own kernel runs, or this host cannot tell (a kernel on another host);
    * ``job``: a `-d` container whose kernel is gone (it runs on by design);
    * ``session``: a session started without --rm whose kernel is gone (it persists by design;
      `%docker session NAME` reattaches);
    * ``orphan``: anything else of a gone kernel (one-shot cells, spares, --rm sessions the
      reaper could not remove).
    """
    if claimer and alive(claimer) is not False:
        return CLAIMED
    if alive(labels.get(L.KERNEL, "")) is not False:
        return HELD
    kind = labels.get(L.KIND)
    if kind == "detached":
        return JOB
    if kind == "session" and labels.get(L.REAP) != "1":
        return SESSION
    return ORPHAN


def claimer(container_id: str) -> Optional[str]:
    """The kernel that claims CONTAINER_ID (its full id), or None."""
    try:
        return _files.read_claim(_files.claims_dir(), container_id)
    except OSError:
        return None


def claim(container_id: str, kernel: Optional[str] = None) -> bool:
    """This kernel (or KERNEL) holds CONTAINER_ID from now on. False if it cannot be recorded
    (no private runtime folder): the container is then held only while its own kernel runs."""
    from .kernel import kernel_id

    try:
        folder = _files.claims_dir()
        _files.prune_claims(folder)  # the files of kernels that are gone, while we are here
        _files.write_claim(folder, container_id, kernel or kernel_id())
        return True
    except OSError:
        return False


def release(container_id: str, kernel: Optional[str] = None):
    """Drop this kernel's (or KERNEL's) claim on CONTAINER_ID, if it holds one."""
    from .kernel import kernel_id

    try:
        _files.drop_claim(_files.claims_dir(), container_id, kernel or kernel_id())
    except OSError:
        pass
