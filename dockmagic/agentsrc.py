"""The agent's source text (``agent.py``), read once: containers get it on their command line
(sessions, spares) or ahead of a one-shot cell's body (``--in``/``--out``)."""
from __future__ import annotations

from . import agent

_SOURCE = None


def agent_source() -> str:
    global _SOURCE
    if _SOURCE is None:
        with open(agent.__file__, encoding="utf-8") as f:
            _SOURCE = f.read()
    return _SOURCE
