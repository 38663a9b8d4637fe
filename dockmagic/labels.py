"""The `dockmagic.*` labels every container dockmagic makes carries, and the one rule for reading
them. Pure.

``dockmagic.managed=1`` marks dockmagic's containers. `=1`, not mere presence: an image committed
from a dockmagic container carries these labels blanked (the engine cannot drop a label on commit),
and containers run from it outside dockmagic are not dockmagic's.
"""
from __future__ import annotations

from typing import Mapping, Optional

MANAGED = "dockmagic.managed"
KERNEL = "dockmagic.kernel"      # `host:pid:start` of the kernel that made it (see kernel.py)
NOTEBOOK = "dockmagic.notebook"
CELL = "dockmagic.cell"          # the notebook's prompt number of the cell that made it
KIND = "dockmagic.kind"          # oneshot | detached | session | spare
REAP = "dockmagic.reap"          # "1": removed when its kernel dies (one-shot, spare, --rm session)
TOKEN = "dockmagic.token"        # set by the engine before create, to find a half-made container

#: The engine-side filter for dockmagic's own containers.
MANAGED_FILTER = f"{MANAGED}=1"


def is_managed(labels: Optional[Mapping[str, str]]) -> bool:
    """True for a container dockmagic made (``dockmagic.managed=1``)."""
    return bool(labels) and labels.get(MANAGED) == "1"


def build_labels(kernel: str, notebook: str, cell: int | str, kind: Optional[str] = None,
                 reap: bool = False) -> dict:
    """The labels of one container dockmagic makes."""
    out = {MANAGED: "1", KERNEL: kernel, NOTEBOOK: notebook, CELL: str(cell)}
    if kind:
        out[KIND] = kind
    if reap:
        out[REAP] = "1"
    return out
