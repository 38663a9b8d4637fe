"""Named engines as `Engine`s: the local one, and the ones added with `%docker engines add`.

An ssh:// engine is an `Engine` on the local socket its `SSHLink` forwards, plus what only a
remote engine has: the workspace its cells' notebook folder is synced to, the SSH user cells
run as, and the GPUs read with nvidia-smi over the same connection. A tcp:// engine is an
`Engine` on that address (TLS files as given) whose workspace is a named volume filled with tar
through the engine API (`volume`). Everything above (cells, sessions, spares,
lifecycle magics, the panel) takes the `Engine` and need not know where it is; the few places
that must (the tmpfs exchange folder is local only; files must travel) ask `is_remote(engine)`.
"""
from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import threading
from typing import Dict, Optional

from .. import errors
from ..engine import Endpoint as EngineEndpoint
from ..engine import Engine
from . import errors as rerrors
from . import store, urls
from .sshlink import SSHLink, link_for
from .workspace import Mirror, Workspace


class RemoteEngine(Engine):
    """An engine on another host, over one SSH connection (``link``)."""

    remote = True

    def __init__(self, endpoint: urls.Endpoint, link: Optional[SSHLink] = None):
        self.remote_endpoint = endpoint
        self.link = link
        if link is not None:
            url, source = link.base_url, f"{endpoint.url} over SSH"
        else:
            url, source = endpoint.url, f"{endpoint.url}"
        tls = dict(endpoint.tls)
        super().__init__(EngineEndpoint(
            url=url, name=endpoint.name, source=source,
            tls_verify=tls.get("tlsverify", "") not in ("", "0", "false"),
            cert_path=_cert_folder(endpoint) if tls else None))
        self._api_generation = 0
        self._workspaces: Dict[str, Workspace] = {}
        self._ws_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.remote_endpoint.url  # ssh://... or tcp://..., not the forwarded socket

    @property
    def where(self) -> str:
        return f"engine {self.name} ({self.remote_endpoint.url})"

    @property
    def api(self):
        if self.link is None:
            return super().api
        if not self.link.alive():
            self.link.ensure()  # (re)connects, or one line naming the engine and the fix
        generation = self.link.generation
        if self._api is not None and self._api_generation != generation:
            # pooled connections of the old link are dead: start a fresh client
            with self._lock:
                old, self._api = self._api, None
            try:
                old.close()
            except Exception:
                pass
        api = super().api
        if self._api_generation != generation:
            self._api_generation = generation
            if self.pending_removals and generation > 1:
                # removals that failed while the link was down: now that it is back
                threading.Thread(target=self._flush_pending, daemon=True,
                                 name=f"dockmagic-flush-{self.name}").start()
        return _Reconnecting(self, api)

    def create(self, spec, **kw) -> str:
        """Binds from the notebook folder point into its workspace on that host, at the same
        container path (see `placement`); everything else is the engine's own create."""
        if self.link is not None:
            from .placement import binds_from_spec, to_remote_spec
            cwd = os.getcwd()
            ws = self.workspace(cwd)
            if any(src == cwd or src.startswith(cwd.rstrip("/") + "/")
                   for src, _t, _rw in binds_from_spec(spec)):
                ws.ensure_dir()
            spec = to_remote_spec(spec, cwd, ws.remote_root)
            # --in/--out folders (the kernel's exchange root) go to their own place there,
            # copied now with what they hold (a cell's inputs; a session's or spare's empty one)
            local_x, remote_x = self.exchange_roots()
            for src, _tgt, _rw in binds_from_spec(spec):
                if src.startswith(local_x.rstrip("/") + "/"):
                    self.mirror(src).push()
            spec = to_remote_spec(spec, local_x, remote_x)
        elif self.remote_endpoint.kind == "tcp":
            spec = self._with_volume(spec)
        try:
            return super().create(spec, **kw)
        except errors.ImageUnavailable as exc:
            raise errors.ImageUnavailable(
                f"{rerrors.image_missing(self.name, spec.image)} ({_reason(exc)})") from None
        except errors.EngineError as exc:
            raise self._named(exc, bool(spec.gpus)) from None

    def _with_volume(self, spec):
        """No SSH: the notebook folder's bind becomes its workspace volume (see `volume`); the
        --in/--out exchange folder, a private tmpfs (`cells` refuses --in/--out here)."""
        from .. import transfer
        from .placement import NotCarried, binds_from_spec, to_tmpfs_spec, to_volume_spec
        spec = to_tmpfs_spec(spec, transfer.exchange_root()[0])
        cwd = os.getcwd()
        if not any(src == cwd or src.startswith(cwd.rstrip("/") + "/")
                   for src, _t, _rw in binds_from_spec(spec)):
            return spec
        ws = self.workspace(cwd)
        try:
            spec = to_volume_spec(spec, cwd, ws.volume, self.name)
        except NotCarried as exc:
            raise errors.EngineError(str(exc)) from None
        ws.ensure_dir()
        return spec

    def start(self, cid: str, *, image: str = "", wants_gpus: bool = False):
        try:
            return super().start(cid, image=image, wants_gpus=wants_gpus)
        except errors.EngineError as exc:
            raise self._named(exc, wants_gpus) from None

    def _named(self, exc, wants_gpus: bool):
        """The engine's refusal, naming this engine (and, for --gpus, the fix there)."""
        text = str(exc)
        if wants_gpus and ("NVIDIA runtime" in text or "device driver" in text):
            return errors.EngineError(rerrors.no_gpu_runtime(self.name)
                                      + f" (engine said: {text.rpartition('engine said: ')[2]}")
        if f"engine {self.name}" in text:
            return exc
        return type(exc)(f"engine {self.name}: {text}")

    def exchange_roots(self):
        """(the kernel's --in/--out exchange root here, its counterpart there)."""
        from .. import transfer
        return transfer.exchange_root()[0], posixpath.join(
            self.link.remote_info()["home"], ".cache", "dockmagic", "xfer")

    def mirror(self, local_dir: str) -> Mirror:
        """LOCAL_DIR (inside the exchange root) and its copy on the engine's host."""
        local_x, remote_x = self.exchange_roots()
        rel = posixpath.relpath(local_dir, local_x)
        return Mirror(self.link, local_dir, posixpath.join(remote_x, rel))

    def _ensure_reaper(self):
        """Over SSH the reaper runs on the engine's host (`hostreaper`): a local one, talking to
        the forwarded socket, would die with this host or its connection."""
        if self.link is None:
            return super()._ensure_reaper()
        if self._reaper is not None and self._reaper.alive():
            return
        from ..engine import reaping
        from ..kernel import kernel_id
        from . import hostreaper
        self._reaper = reaping.ensure_reaper(self.endpoint.url, kernel_id(),
                                             start=lambda: hostreaper.start(self, kernel_id()))

    def reap_own(self):
        """Remove this kernel's containers there that die with it (one-shot, spare, --rm
        session): what a removal that failed while the link was down, or a spare made during
        shutdown, would leave on the host."""
        from .. import labels as L
        from ..kernel import kernel_id
        try:
            found = self.containers(all=True, filters={
                "label": [f"{L.KERNEL}={kernel_id()}", f"{L.REAP}=1"]})
        except errors.DockmagicError:
            return
        for c in found:
            self.remove(c["Id"])
        try:  # and this kernel's --in/--out folders there (spares', cells')
            from .. import transfer
            _local_x, remote_x = self.exchange_roots()
            self.link.run(f"rm -rf {shlex.quote(remote_x)}/{transfer.cell_dir_prefix()}*",
                          timeout=20)
        except Exception:
            pass

    def identity(self):
        """(uid, gid, user) cells run as there: the SSH user, who owns the workspace."""
        if self.link is None:
            return None
        info = self.link.remote_info()
        return info["uid"], info["gid"], info.get("user") or str(info["uid"])

    def workspace(self, local_root: str) -> Optional[Workspace]:
        """The notebook folder's workspace there: a folder synced with rsync over SSH, or,
        for a tcp:// engine, a named volume filled with tar through the engine API."""
        key = os.path.realpath(local_root)
        with self._ws_lock:
            ws = self._workspaces.get(key)
            if ws is None:
                if self.link is not None:
                    ws = Workspace(self.link, key)
                else:
                    from .volume import VolumeWorkspace
                    ws = VolumeWorkspace(self, key)
                self._workspaces[key] = ws
            return ws

    def close(self):
        if self.link is not None and not self.link.closed and self.link.alive():
            self.reap_own()
            if self._reaper is not None:  # `close keep` reaches it before the link goes
                self._reaper.close(reap=False, wait=5.0)
        super().close()
        if self.link is not None:
            from .sshlink import drop_link
            drop_link(self.name)
            self.link.close()


#: Engine calls that may be sent again after the SSH connection dropped under them: reads, and
#: actions whose repeat changes nothing (never create, start or exec: a repeat could run twice).
_IDEMPOTENT = frozenset({
    "ping", "version", "info", "wait", "inspect_container", "containers", "remove_container",
    "kill", "stop", "images", "inspect_image", "logs", "stats", "top", "df"})


class _Reconnecting:
    """docker-py's client for a remote engine: a call that fails because the SSH connection
    dropped waits for the link to come back and is sent once more (idempotent calls only)."""

    __slots__ = ("_engine", "_api")

    def __init__(self, engine: "RemoteEngine", api):
        self._engine = engine
        self._api = api

    def __getattr__(self, name):
        attr = getattr(self._api, name)
        if name not in _IDEMPOTENT or not callable(attr):
            return attr
        engine = self._engine

        def call(*args, **kwargs):
            generation = engine.link.generation
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                from .. import errors
                from ..engine.sdkerrors import map_error
                if not isinstance(map_error(exc, engine.where, name), errors.EngineUnavailable):
                    raise
                if not engine.link.wait_up() or engine.link.generation == generation and \
                        engine.link.alive() and not _dead_link(exc):
                    raise
                return getattr(engine.api, name)(*args, **kwargs)  # a fresh client

        return call


def _dead_link(exc) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(w in text for w in ("Connection aborted", "Connection reset", "RemoteDisconnected",
                                   "Connection refused", "BrokenPipe", "FileNotFoundError",
                                   "ProtocolError"))


def _cert_folder(endpoint: urls.Endpoint) -> Optional[str]:
    """`--tlscacert/--tlscert/--tlskey` files -> the one folder (ca.pem, cert.pem, key.pem) the
    engine's client reads: their own folder when the names already fit, else a private folder
    of links under the config folder."""
    tls = dict(endpoint.tls)
    files = {"ca.pem": tls.get("tlscacert"), "cert.pem": tls.get("tlscert"),
             "key.pem": tls.get("tlskey")}
    given = {k: v for k, v in files.items() if v}
    if not given:
        return None
    folders = {os.path.dirname(os.path.abspath(v)) for v in given.values()}
    if len(folders) == 1 and all(os.path.basename(v) == k for k, v in given.items()):
        return folders.pop()
    folder = os.path.join(os.path.dirname(store.config_path()), "tls", endpoint.name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, mode=0o700)
    for k, v in given.items():
        os.symlink(os.path.abspath(os.path.expanduser(v)), os.path.join(folder, k))
    return folder


def _reason(exc) -> str:
    """What the registry or engine said, out of an image error's message."""
    text = str(exc)
    head, sep, rest = text.partition(": ")
    return (rest.rsplit(". ", 1)[0] if sep else text).strip()


def is_remote(engine) -> bool:
    return bool(getattr(engine, "remote", False))


_ENGINES: Dict[str, Engine] = {}
_LOCK = threading.Lock()


def get_engine(name: Optional[str]) -> Engine:
    """The engine called NAME: `local` (or None) is docker's own default; others come from the
    engines file (`%docker engines add`). One `Engine` per name for the process."""
    from .. import engine as engine_pkg

    if not name or name == urls.LOCAL:
        return engine_pkg.default()
    ep = store.get_engine(name)
    with _LOCK:
        eng = _ENGINES.get(name)
        if eng is not None and getattr(eng, "remote_endpoint", None) != ep:
            _ENGINES.pop(name).close()
            eng = None
        if eng is None:
            if ep.kind == "ssh":
                eng = RemoteEngine(ep, link_for(ep))
            elif ep.kind in ("tcp", "unix"):
                eng = RemoteEngine(ep) if ep.kind == "tcp" else Engine(EngineEndpoint(
                    url=ep.url, name=ep.name, source="engines.toml"))
            else:  # pragma: no cover - parse_endpoint admits no other kind
                raise urls.EndpointError(f"engine {name}: unsupported address {ep.url}")
            _ENGINES[name] = eng
            engine_pkg.register(eng)
        return eng


def forget(name: str):
    with _LOCK:
        eng = _ENGINES.pop(name, None)
    if eng is not None:
        eng.close()


def close_all():
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for eng in engines:
        try:
            eng.close()
        except Exception:
            pass
