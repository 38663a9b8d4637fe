"""The engine boundary: the only package that talks to Docker (imports docker, requests,
urllib3, or calls docker-py's low-level API).

* ``endpoint``  where an engine is (`DOCKER_HOST`, then the docker context), pure
* ``core``      `Engine`: containers, attach, exec, logs, images, pull/push/build; one per endpoint
* ``frames``    docker's multiplexed stream: the one frame reader
* ``sdkerrors`` the one mapping from SDK/transport errors to dockmagic's error tree
* ``sdk``       docker-py's import and every private name of it dockmagic touches
* ``volumes``   named volumes, and tar in and out of them through helper containers

`default()` is the engine docker's own rules point at; code above the engine receives an
`Engine` and never makes one itself.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Dict, Optional

from .core import Attached, Engine, split_reference
from .endpoint import Endpoint, EndpointError, resolve_endpoint
from .frames import STDERR, STDOUT, FrameSplitter

__all__ = ["Engine", "Endpoint", "EndpointError", "Attached", "FrameSplitter", "STDOUT",
           "STDERR", "default", "get", "register", "reset", "resolve_endpoint",
           "split_reference"]

_engines: Dict[str, Engine] = {}
_lock = threading.Lock()


_using: "contextvars.ContextVar[Optional[Engine]]" = contextvars.ContextVar(
    "dockmagic_engine", default=None)


@contextlib.contextmanager
def using(engine: Optional[Engine]):
    """Within the block, `default()` is ENGINE (None: unchanged): `%docker ps --engine rig`,
    `%docker config --engine rig`, `%%dockerfile --engine rig` run their calls there."""
    token = _using.set(engine) if engine is not None else None
    try:
        yield engine
    finally:
        if token is not None:
            _using.reset(token)


def default() -> Engine:
    """The engine `docker` would talk to now (DOCKER_HOST, then the current context), one
    `Engine` per endpoint for the process; inside `using(engine)`, that engine."""
    chosen = _using.get()
    if chosen is not None:
        return chosen
    try:
        endpoint = resolve_endpoint()
    except EndpointError as exc:
        from ..errors import EngineUnavailable
        raise EngineUnavailable(str(exc)) from None
    key = f"{endpoint.name}|{endpoint.url}"
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = Engine(endpoint)
    return engine


def register(engine: Engine) -> Engine:
    """Make ENGINE known by its name (`get(name)`), e.g. a remote one."""
    with _lock:
        _engines[f"{engine.name}|{engine.endpoint.url}"] = engine
    return engine


def get(name: Optional[str] = None) -> Engine:
    """The engine called NAME (None: `default()`)."""
    if not name:
        return default()
    for engine in list(_engines.values()):
        if engine.name == name:
            return engine
    from ..errors import EngineUnavailable
    raise EngineUnavailable(f"no engine called {name!r} is known; see `%docker engines`")


def reset():
    """Close and forget every engine (after DOCKER_HOST changed, or in tests)."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()
