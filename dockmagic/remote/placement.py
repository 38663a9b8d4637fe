"""A cell's `RunSpec` moved onto a remote engine's host. Pure.

Bind mounts whose source lies in the notebook folder now point into the engine-side workspace,
mounted at the *same* container path, so the cell sees the folder where it would locally.
Other bind sources stay as written: on a remote engine, as with `docker -H ssh://...`, they are
paths on that host (`-v /data:/data` mounts the server's /data).
"""
from __future__ import annotations

import dataclasses
import posixpath


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _moved(path: str, local_root: str, remote_root: str) -> str:
    rel = posixpath.relpath(path, local_root)
    return remote_root if rel == "." else posixpath.join(remote_root, rel)


def to_remote_spec(spec, local_root: str, remote_root: str):
    """SPEC with binds from LOCAL_ROOT (the notebook folder) moved to REMOTE_ROOT."""
    volumes = []
    for vol in spec.volumes:
        src, sep, rest = vol.partition(":")
        if sep and src.startswith("/") and _inside(posixpath.normpath(src), local_root):
            vol = f"{_moved(posixpath.normpath(src), local_root, remote_root)}:{rest}"
        volumes.append(vol)
    mounts = []
    for m in spec.mounts:
        if getattr(m, "type", None) == "bind" and m.source and _inside(m.source, local_root):
            m = dataclasses.replace(m, source=_moved(m.source, local_root, remote_root))
        mounts.append(m)
    return dataclasses.replace(spec, volumes=tuple(volumes), mounts=tuple(mounts))


class NotCarried(ValueError):
    """A bind a volume workspace cannot carry (one line naming the fix)."""


def to_volume_spec(spec, local_root: str, volume: str, engine: str):
    """SPEC with the notebook folder's bind (LOCAL_ROOT itself) made a mount of the named
    VOLUME at the same target: how an engine without SSH gets the folder. A bind of a folder
    inside it cannot be carried (the engine's API has no volume sub-paths before 1.45)."""
    def refuse(src):
        return NotCarried(
            f"engine {engine} is reached over tcp://, where the notebook folder travels as a "
            f"volume mounted whole: {src} (inside it) cannot be mounted on its own; mount the "
            "notebook folder (the default) and use the path inside it, or add the engine as "
            "ssh://")

    volumes = []
    for vol in spec.volumes:
        src, sep, rest = vol.partition(":")
        if sep and src.startswith("/") and _inside(posixpath.normpath(src), local_root):
            if posixpath.normpath(src) != local_root:
                raise refuse(src)
            vol = f"{volume}:{rest}"
        volumes.append(vol)
    mounts = []
    for m in spec.mounts:
        if getattr(m, "type", None) == "bind" and m.source and _inside(m.source, local_root):
            if posixpath.normpath(m.source) != local_root:
                raise refuse(m.source)
            m = dataclasses.replace(m, type="volume", source=volume, bind_propagation="",
                                    bind_nonrecursive=False, bind_readonly_nonrecursive=False,
                                    volume_nocopy=True)
        mounts.append(m)
    return dataclasses.replace(spec, volumes=tuple(volumes), mounts=tuple(mounts))


def to_tmpfs_spec(spec, local_root: str):
    """SPEC with bind mounts from LOCAL_ROOT (the kernel's --in/--out exchange root, a folder
    of this machine) made private tmpfs mounts at the same targets: an engine without SSH
    cannot see that folder, and a session or spare mounts its exchange folder whether a cell
    uses --in/--out or not."""
    mounts = []
    for m in spec.mounts:
        if getattr(m, "type", None) == "bind" and m.source and _inside(m.source, local_root):
            m = type(m)(type="tmpfs", target=m.target, tmpfs_mode=0o1777)
        mounts.append(m)
    return dataclasses.replace(spec, mounts=tuple(mounts))


def to_local_binds(engine, binds) -> list:
    """A reattached session's binds ((source there, target, rw)) with workspace sources mapped
    back to the notebook folder here (the workspace of the current folder on ENGINE)."""
    import os
    cwd = os.getcwd()
    ws = engine.workspace(cwd) if hasattr(engine, "workspace") else None
    if ws is None:
        return list(binds)
    root = ws.remote_root
    out = []
    for src, dst, rw in binds:
        if _inside(src, root):
            src = _moved(src, root, cwd)
        out.append((src, dst, rw))
    return out


def binds_from_spec(spec) -> list:
    """[(host source, container target, writable)] of a RunSpec's bind mounts."""
    from .. import translate

    out = []
    for vol in spec.volumes:
        src, tgt, opts = translate.split_volume(vol)
        if src.startswith("/"):
            out.append((src, tgt, "ro" not in opts.split(",")))
    for m in spec.mounts:
        if getattr(m, "type", None) == "bind":
            out.append((m.source, m.target, not m.read_only))
    return out
