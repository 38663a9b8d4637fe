"""Cells on remote engines: the notebook folder travels around the cell (rsync over SSH, or
tar through the engine API into a named volume for tcp:// engines; see `workspace`, `volume`).

One-shot cells: push before (unless `--sync out|none`), pull after whatever happens (unless
`--sync in|none`). Session cells: change-only both ways (the agent reports what the cell changed
in the workspace). Only when the cell's container mounts the notebook folder: with `--no-mount`
or your own `-v`/`--mount` elsewhere nothing travels.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional

from .engines import is_remote


def _say(text: str):
    print(text, file=sys.stderr, flush=True)


def mounts_folder(binds, cwd: str) -> bool:
    """Whether one of BINDS ((host source, target, rw)) is the notebook folder or inside it."""
    root = cwd.rstrip("/") or "/"
    return any(src == root or src.startswith(root + "/") or root.startswith(src.rstrip("/") + "/")
               for src, _dst, _rw in binds)


def workspace_for(engine, binds, mode: str = "both", image: Optional[str] = None):
    """The workspace to sync for a cell on ENGINE, or None (local engine, nothing mounted, or
    `--sync none`). IMAGE: the cell's (an engine without SSH copies files with it)."""
    if not is_remote(engine) or mode == "none":
        return None
    cwd = os.getcwd()
    if not mounts_folder(binds, cwd):
        return None
    ws = engine.workspace(cwd)
    if ws is not None and image and hasattr(ws, "image"):
        ws.image = image
    return ws


def no_exchange_over_tcp(engine):
    from .errors import RemoteEngineError
    return RemoteEngineError(
        f"engine {engine.name} is reached over tcp:// without SSH: --in/--out do not travel "
        "there yet (the notebook folder does); save to a file in the notebook folder instead, "
        "or add the engine as ssh://")


def run_oneshot(engine, binds, mode: str, run: Callable[[], object],
                xroot: Optional[str] = None, image: Optional[str] = None):
    """RUN a one-shot cell on ENGINE with the notebook folder synced around it; XROOT: the
    cell's --in/--out folder (copied there when its container is made), brought back after."""
    link = getattr(engine, "link", None)
    if link is None and xroot:
        raise no_exchange_over_tcp(engine)
    ws = workspace_for(engine, binds, mode, image)
    if link is None:  # tcp://: the folder travels as tar through the engine API
        return run() if ws is None else ws.sync_cell(mode, run)
    generation = link.generation
    mirror = engine.mirror(xroot) if xroot else None
    try:
        if ws is None:
            return run()
        return ws.sync_cell(mode, run)
    finally:
        if mirror is not None:
            try:
                mirror.pull()
            finally:
                mirror.remove()
        if link.generation != generation:
            _say(f"dockmagic: the SSH connection to engine {engine.name} dropped during the cell "
                 "and was re-established; output written meanwhile may be missing "
                 "(`%docker logs` shows it while the container exists)")


def session_exchange(engine, binds, exchange: Callable[[Optional[str]], dict],
                     mode: str = "both", xroot: Optional[str] = None,
                     image: Optional[str] = None) -> dict:
    """A session cell on ENGINE: push what changed here, run (the agent watching the workspace
    at the notebook folder's path), pull what it reports changed there. MODE: the session's
    `--sync` (both, in, out, none). XROOT: the session's --in/--out folder, when this cell
    uses it (copied there before, back after)."""
    if xroot and getattr(engine, "link", None) is None:
        raise no_exchange_over_tcp(engine)
    if xroot:
        mirror = engine.mirror(xroot)
        mirror.push()
        try:
            return session_exchange(engine, binds, exchange, mode, image=image)
        finally:
            mirror.pull()
    ws = workspace_for(engine, binds, mode, image)
    if ws is None:
        return exchange(None)
    if mode in ("both", "in"):
        ws.push(changed_only=ws.snapshot is not None)
    elif ws.snapshot is None:
        ws.ensure_remote()
    reply = None
    try:
        reply = exchange(os.getcwd() if mode in ("both", "out") else None)
        return reply
    finally:
        if mode in ("both", "out"):
            reported = reply.get("ws") if isinstance(reply, dict) else None
            ws.pull(reported=tuple(reported) if reported else None)
