"""Which engine runs session NAME, when this kernel is not attached to it (after a restart):
`%%docker @NAME` follows a session to whatever engine it runs on, not only the default one.

The caller has looked on the notebook's engine already (one inspect). The others, the local one
and those in engines.toml, are asked at once, each on its own thread (an unreachable one costs
at most its connect timeout, and says so), one inspect each.
"""
from __future__ import annotations

import threading
from typing import List, Tuple

from .. import errors
from .. import labels as L
from . import errors as rerrors
from . import store, urls

#: Seconds the other engines get to answer together.
LOOKUP_TIMEOUT_S = 15.0


def _engine_names(first) -> List[str]:
    names = [urls.LOCAL] + list(store.load_engines())
    return [n for n in dict.fromkeys(names) if n != getattr(first, "name", None)]


def find_session(first, name: str) -> Tuple[list, list, list]:
    """Session NAME on the engines other than FIRST: ([(engine, inspect info)] that run a
    dockmagic session called NAME, [(engine name, why unreachable)], [engine names asked])."""
    from .engines import get_engine

    found, unreachable, asked = [], [], []
    lock = threading.Lock()

    def ask(ename: str):
        try:
            eng = get_engine(ename)
            if eng is first:
                return
            with lock:
                asked.append(ename)
            info = eng.inspect(name)
        except errors.NotFound:
            return
        except (errors.DockmagicError, rerrors.RemoteEngineError, urls.EndpointError) as exc:
            with lock:
                unreachable.append((ename, str(exc).splitlines()[0] if str(exc) else
                                    type(exc).__name__))
            return
        labels = (info.get("Config") or {}).get("Labels") or {}
        if L.is_managed(labels) and labels.get(L.KIND) == "session":
            with lock:
                found.append((eng, info))

    threads = [threading.Thread(target=ask, args=(n,), daemon=True,
                                name=f"dockmagic-find-{n}") for n in _engine_names(first)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOOKUP_TIMEOUT_S)
    with lock:
        late = [t.name.rpartition("dockmagic-find-")[2] for t in threads if t.is_alive()]
        unreachable += [(n, f"no answer within {LOOKUP_TIMEOUT_S:g} s") for n in late]
        return sorted(found, key=lambda f: f[0].name), sorted(unreachable), sorted(asked)


def engine_word(names) -> str:
    names = list(names)
    if len(names) <= 1:
        return "engine " + "".join(names)
    return "engines " + ", ".join(names[:-1]) + " and " + names[-1]

