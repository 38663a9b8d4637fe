"""Named volumes, and files in and out of them through the engine's own API (tar over the
archive endpoints): how the notebook folder reaches an engine that has no SSH (`tcp://`).

A volume is filled and read through a *helper*: a container that mounts it and, for copying,
is never started (the engine mounts its volumes for `PUT/GET /containers/ID/archive` all the
same), so nothing of the image runs while files move. A helper that must run (to list the
volume, or delete files in it) runs with no network, no capabilities but reading, and the volume
read-only where it only lists. Every helper carries the caller's labels (a kernel's, with
``dockmagic.reap=1``) and is removed by the caller (`Helper` is a context manager).
"""
from __future__ import annotations

import secrets
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .. import errors
from .. import labels as L
from . import sdk
from .sdkerrors import map_error, mapped

CHUNK = 1 << 20


def ensure_volume(engine, name: str, labels: Dict[str, str]) -> None:
    """The named volume NAME exists (made with LABELS when it does not)."""
    with mapped(engine.where, f"volume inspect {name}"):
        try:
            engine.api.inspect_volume(name)
            return
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) != 404:
                raise
    with mapped(engine.where, f"volume create {name}"):
        engine.api.create_volume(name, labels=labels)


def list_volumes(engine, label_filters: Sequence[str]) -> List[dict]:
    """The volumes that carry every label filter (`key=value` or `key`)."""
    with mapped(engine.where, "listing volumes"):
        found = engine.api.volumes(filters={"label": list(label_filters)}) or {}
    return list(found.get("Volumes") or [])


def remove_volume(engine, name: str) -> bool:
    """Remove volume NAME; False when it is gone already. In use: one line naming the fix."""
    try:
        engine.api.remove_volume(name)
        return True
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            return False
        if status == 409:
            raise errors.EngineError(
                f"{engine.where}: volume {name} is in use by a container; stop it (or its "
                "session) first") from None
        raise map_error(exc, engine.where, f"volume rm {name}") from None


class Helper:
    """One helper container on ENGINE from IMAGE (pulled there when missing) with VOLUME
    mounted at TARGET. ``argv``: what it runs if started (never started unless `run()`)."""

    def __init__(self, engine, image: str, volume: str, target: str, labels: Dict[str, str],
                 argv: Sequence[str] = ("true",), *, read_only: bool = False,
                 caps: Sequence[str] = (), on_pull: Optional[Callable[[str], None]] = None):
        self.engine = engine
        self.image = image
        self.volume = volume
        self.target = target
        self.labels = dict(labels)
        self.argv = list(argv)
        self.read_only = read_only
        self.caps = list(caps)
        self.on_pull = on_pull
        self.id: Optional[str] = None

    def __enter__(self) -> "Helper":
        self.create()
        return self

    def __exit__(self, *exc):
        self.remove()

    def create(self) -> str:
        docker = sdk.import_docker()
        api = self.engine.api
        self.engine.reaper()  # labelled reap=1: removed with the kernel should it die meanwhile
        token = secrets.token_hex(8)
        host_config = api.create_host_config(
            mounts=[docker.types.Mount(self.target, self.volume, type="volume",
                                       read_only=self.read_only, no_copy=True)],
            network_mode="none", cap_drop=["ALL"], cap_add=self.caps or None,
            security_opt=["no-new-privileges"])
        args = dict(image=self.image, entrypoint=self.argv[:1], command=self.argv[1:],
                    user="0:0", working_dir="/", network_disabled=True,
                    host_config=host_config, labels=dict(self.labels, **{L.TOKEN: token}))
        try:
            try:
                self.id = api.create_container(**args)["Id"]
            except Exception as exc:
                if not isinstance(exc, docker.errors.ImageNotFound):
                    raise map_error(exc, self.engine.where, f"create {self.image}") from None
                self.engine.pull(self.image, on_progress=self.on_pull, implicit=True)
                with mapped(self.engine.where, f"create {self.image}"):
                    self.id = api.create_container(**args)["Id"]
        except BaseException:
            self._remove_token(token)  # made by the engine after the client gave up
            raise
        return self.id

    def _remove_token(self, token: str):
        try:
            found = self.engine.api.containers(all=True,
                                               filters={"label": f"{L.TOKEN}={token}"})
        except BaseException:
            return
        for c in found:
            self.engine.remove(c["Id"])

    def put(self, path: str, data) -> None:
        """Unpack a tar (bytes, or an iterable of byte chunks: sent chunked) at PATH."""
        with mapped(self.engine.where, f"copy into volume {self.volume}"):
            if not self.engine.api.put_archive(self.id, path, data):
                raise errors.EngineError(f"{self.engine.where}: copying into volume "
                                         f"{self.volume} was refused")

    def get(self, path: str) -> Tuple[Iterator[bytes], dict]:
        """PATH as a tar stream (byte chunks) and the engine's stat of it; a missing PATH:
        `errors.NotFound`."""
        try:
            stream, stat = self.engine.api.get_archive(self.id, path, chunk_size=CHUNK)
        except Exception as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                raise errors.NotFound(f"{path}: not in volume {self.volume}") from None
            raise map_error(exc, self.engine.where, f"copy from volume {self.volume}") from None
        return _mapped_chunks(self.engine.where, self.volume, stream), stat

    def run(self, timeout: float = 600) -> int:
        """Start it and wait: its exit code (127/126 or a start refusal: the command is not
        in the image -> -1)."""
        try:
            self.engine.api.start(self.id)
        except Exception as exc:
            text = str(getattr(exc, "explanation", None) or exc)
            if "executable file not found" in text or "no such file" in text.lower():
                return -1
            raise map_error(exc, self.engine.where, f"start {self.image}") from None
        with mapped(self.engine.where, f"wait {self.id[:12]}"):
            return int(self.engine.api.wait(self.id, timeout=timeout)["StatusCode"])

    def remove(self):
        if self.id is not None:
            self.engine.remove(self.id)
            self.id = None


def _mapped_chunks(where: str, volume: str, stream: Iterable[bytes]) -> Iterator[bytes]:
    with mapped(where, f"copy from volume {volume}"):
        yield from stream
