"""Missing `-v` bind sources: made by the kernel's user before the container starts.

`docker run -v ./newdir:/data` creates a missing host source itself, as root (the engine's user),
so a non-root notebook ends up with a root-owned folder it cannot write into, and the cell that
asked for it cannot write its own mount. dockmagic departs from the CLI here, on purpose: a
missing `-v` source inside a folder the kernel's user owns is created (``mkdir -p``) as that
user, before the container is made; anywhere else the cell fails with one line naming the fix.
`--mount type=bind` keeps docker's behaviour (a missing source is an error from the engine).
"""
from __future__ import annotations

import os
from typing import List

from . import errors
from . import translate


class BindSourceError(errors.DockmagicError):
    """A missing -v source dockmagic will not create; shown as one line."""


def missing_sources(spec) -> List[str]:
    """The host sources of SPEC's `-v` binds that do not exist (named volumes are not paths)."""
    out = []
    for vol in spec.volumes:
        src, _tgt, _opts = translate.split_volume(vol)
        if src.startswith("/") and not os.path.lexists(src) and src not in out:
            out.append(src)
    return out


def _owner_folder(path: str):
    """The nearest existing folder above PATH, and whether it is a folder we own."""
    parent = os.path.dirname(path.rstrip("/")) or "/"
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent) or "/"
    try:
        st = os.stat(parent)
    except OSError:
        return parent, False
    return parent, os.path.isdir(parent) and st.st_uid == os.getuid()


def ensure_bind_sources(spec) -> List[str]:
    """Create SPEC's missing `-v` sources as the kernel's user where it owns the folder above;
    returns what was made. BindSourceError (nothing made) for any other missing source."""
    todo = []
    for src in missing_sources(spec):
        parent, ours = _owner_folder(src)
        if not ours:
            raise BindSourceError(
                f"-v {src}: it does not exist, and {parent} is not a folder you own, so "
                f"dockmagic will not create it (docker would, as root); create it first "
                f"(mkdir -p {src}) or pick a source inside a folder of yours")
        todo.append(src)
    made = []
    for src in todo:
        try:
            os.makedirs(src, exist_ok=True)
        except OSError as exc:
            raise BindSourceError(f"-v {src}: cannot create it ({exc.strerror}); create it "
                                  f"first (mkdir -p {src})") from None
        made.append(src)
    return made
