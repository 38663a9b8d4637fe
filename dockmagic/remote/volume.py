"""The notebook folder on an engine reached without SSH (`tcp://`): a named volume per notebook
folder, filled and read with tar through the engine API.

The volume (`dockmagic-ws-<folder>-<hash of host, uid, path>`, labelled `dockmagic.workspace`)
is mounted in the cell's container at the notebook folder's own path, like the SSH workspace.
Files move through a short-lived helper container from the cell's image (see
`engine.volumes.Helper`): never started to copy files in or out; started (no network, no
capabilities but reading) to list the volume with the image's python3 after a one-shot cell
(without python3: the volume's archive is read whole), and (no network) to delete files deleted
here. A one-shot cell has one helper for both (files in before, listing and files out after).
What moves, what conflicts and what the snapshot holds are `Workspace`'s decisions, the same
as over SSH; only the transport differs.

The volume stays between kernels (the next kernel sends only what differs); `%docker engines
rm NAME` removes this user's workspace volumes there (`remove_workspaces`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import socket
import sys
from typing import Callable, Dict, List, Optional

from .. import errors
from .. import labels as L
from ..engine import volumes
from . import errors as rerrors
from . import tarfiles
from .workspace import Entry, Workspace

#: Labels of workspace volumes.
WORKSPACE = "dockmagic.workspace"
WS_HOST = "dockmagic.workspace.host"
WS_UID = "dockmagic.workspace.uid"
WS_PATH = "dockmagic.workspace.path"
#: Where helpers mount the volume, and where the listing helper writes its list.
MOUNT = "/dockmagic-ws"
LISTING = "/dockmagic-ws-list"


def volume_name(local_root: str) -> str:
    key = hashlib.sha256(f"{socket.gethostname()}:{os.getuid()}:{local_root}"
                         .encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(local_root) or "root")
    return f"dockmagic-ws-{slug[:40]}-{key}"


def mine() -> List[str]:
    """Label filters for this user's (host + uid) workspace volumes."""
    return [f"{WORKSPACE}=1", f"{WS_HOST}={socket.gethostname()}", f"{WS_UID}={os.getuid()}"]


class VolumeWorkspace(Workspace):
    """The workspace of one local folder on one engine without SSH: a named volume."""

    def __init__(self, engine, local_root: str, say: Callable[[str], None] = None):
        self.link = None
        self.api_engine = engine
        self.engine = engine.name
        self.local_root = os.path.realpath(local_root)
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.snapshot: Optional[Dict[str, Entry]] = None
        self._warned = False
        self._made = False
        self.volume = volume_name(self.local_root)
        self.image: Optional[str] = None  # the cell's image: helpers are made from it
        self._reader: Optional[volumes.Helper] = None
        self._into: Optional[volumes.Helper] = None      # the cell's helper, before the cell
        self._listed_by: Optional[volumes.Helper] = None  # ... and after it
        self._said_no_python = False
        self._keep_reader = False

    # -- where ---------------------------------------------------------------------------------
    @property
    def remote_root(self) -> str:
        return self.volume

    def ensure_remote(self):
        self.ensure_dir()

    def ensure_dir(self):
        if not self._made:
            volumes.ensure_volume(self.api_engine, self.volume, {
                WORKSPACE: "1", WS_HOST: socket.gethostname(), WS_UID: str(os.getuid()),
                WS_PATH: self.local_root[:1000]})
            self._made = True

    def _helper(self, argv=("true",), **kw) -> volumes.Helper:
        from ..kernel import kernel_id
        self.ensure_dir()  # (a create would make the volume, unlabelled)
        if not self.image:
            raise errors.EngineError(f"engine {self.engine}: no image to copy files with")
        return volumes.Helper(self.api_engine, self.image, self.volume, MOUNT, dict(
            L.build_labels(kernel_id(), "", "", kind="workspace", reap=True)), argv,
            on_pull=self.say, **kw)

    # -- push ------------------------------------------------------------------------------------
    def _first_push_plan(self, files):
        """A kernel's first push sends only what the volume lacks or holds otherwise (the
        volume outlives kernels), and deletes there what this folder no longer has."""
        with self._reading():
            there = self.list_remote()
        send = sorted(r for r, e in files.items() if there.get(r) != e)
        gone = sorted(r for r in there if r not in files
                      and not os.path.lexists(os.path.join(self.local_root, r)))
        return send, gone

    def _send(self, send: List[str], files: Dict[str, Entry]):
        chunks = tarfiles.to_tar_chunks(self.local_root, send, MOUNT.strip("/"), os.getuid(),
                                        os.getgid())
        if self._into is not None:
            self._into.put("/", chunks)
            return
        with self._helper() as helper:
            helper.put("/", chunks)

    def _lister(self, read_only: bool = True) -> volumes.Helper:
        return self._helper(["python3", "-I", "-S", "-c", tarfiles.LIST_SCRIPT, MOUNT, LISTING],
                            read_only=read_only, caps=("DAC_READ_SEARCH",))

    def sync_cell(self, mode: str, run, reported=lambda: None, changed_only: bool = False):
        """`Workspace.sync_cell` with one helper for the whole cell (`--sync both`): the files
        go into the volume through it (never started), and after the cell it lists the volume
        and the changed files come out of it -- two engine calls fewer than a helper each way
        (each archive call costs the engine a mount, or a process, of its own)."""
        helper = None
        try:
            if mode == "both" and self.snapshot is not None:
                helper = self._lister(read_only=False)
                helper.create()
            self._into = helper
            if mode in ("both", "in"):
                self.push(changed_only=changed_only)
            elif self.snapshot is None and mode == "out":
                self.ensure_remote()
            self._into = None
            try:
                return run()
            finally:
                if mode in ("both", "out"):
                    self._listed_by = helper
                    self.pull(reported())
        finally:
            self._into = self._listed_by = None
            if helper is not None:
                helper.remove()

    def _delete(self, gone: List[str]):
        paths = [posixpath.join(MOUNT, r) for r in gone if tarfiles.safe_rel(r)]
        for i in range(0, len(paths), 500):
            with self._helper(["rm", "-f", "--", *paths[i:i + 500]],
                              caps=("DAC_OVERRIDE",)) as helper:
                code = helper.run()
                if code == -1:
                    raise rerrors.RemoteEngineError(
                        f"engine {self.engine}: deleting files in the workspace volume needs "
                        f"`rm` in image {self.image}")

    # -- pull ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self):
        self._keep_reader = True
        try:
            yield
        finally:
            self._keep_reader = False
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.remove()

    def list_remote(self) -> Dict[str, Entry]:
        """The volume's files -> (mtime_ns, size), listed by a helper that runs the image's
        python3 (stdlib only) with the volume read-only; its list is read back as a file."""
        helper, self._listed_by = self._listed_by, None
        if helper is None:
            helper = self._lister()
            helper.create()
        try:
            if helper.run() == 0:
                chunks, _stat = helper.get(LISTING)
                there = tarfiles.parse_listing(_one_file(chunks))
            else:  # no python3 in the image: the volume's own archive, read whole
                there = self._list_by_tar(helper)
        except BaseException:
            helper.remove()
            raise
        if not self._keep_reader:  # not inside a pull: nothing more to read from it
            helper.remove()
            return there
        if self._reader is not None:
            self._reader.remove()
        self._reader = helper  # read the changed files from it too (a stopped container)
        return there

    def _list_by_tar(self, helper: volumes.Helper) -> Dict[str, Entry]:
        """The listing from the engine's archive of the whole volume (headers read, contents
        skipped; slower for big folders). Tar keeps whole seconds: a file whose second and
        size match the snapshot counts as the snapshot's (unchanged)."""
        import io
        import tarfile
        if not self._said_no_python:
            self._said_no_python = True
            self.say(f"dockmagic: image {self.image} has no python3 to list the notebook "
                     f"folder's volume on engine {self.engine}; reading the volume whole instead "
                     "(slower for big folders)")
        chunks, _stat = helper.get(MOUNT)
        snap = self.snapshot or {}
        top = posixpath.basename(MOUNT)
        out: Dict[str, Entry] = {}
        with tarfile.open(fileobj=io.BufferedReader(tarfiles.ChunkReader(chunks),
                                                    tarfiles.CHUNK), mode="r|") as tar:
            for m in tar:
                rel = m.name[len(top) + 1:].rstrip("/") if m.name.startswith(top + "/") else ""
                if not tarfiles.safe_rel(rel) or ".git" in rel.split("/") or \
                        not (m.isreg() or m.issym()):
                    continue
                size = m.size if m.isreg() else len(os.fsencode(m.linkname))
                sec = int(m.mtime)
                known = snap.get(rel)
                same = known is not None and known[1] == size and known[0] // 10**9 == sec
                out[rel] = known if same else (sec * 10**9, size)
        return out

    def _fetch(self, fetch: List[str], changed) -> List[str]:
        return self._extract(fetch, changed, {})

    def _fetch_copy(self, rel: str, copy: str, entry):
        self._extract([rel], {rel: entry}, {rel: copy})

    def _extract(self, rels: List[str], changed, rename: Dict[str, str]) -> List[str]:
        if self._reader is None:
            self._reader = self._helper()
            self._reader.create()
        wanted = {r: changed.get(r) for r in rels}
        done: List[str] = []
        refused = []
        if len(rels) <= 16:  # one archive per file
            groups = [(r, posixpath.join(MOUNT, r)) for r in rels]
        else:  # one archive of the whole volume, only the changed files taken
            groups = [("", MOUNT)]
        for base, path in groups:
            try:
                chunks, _stat = self._reader.get(path)
            except errors.NotFound:
                continue  # deleted since it was listed
            top = posixpath.basename(path)
            res = tarfiles.extract(chunks, self.local_root, top, base, wanted, rename)
            done += res.written
            refused += res.refused
        for name, why in refused[:5]:
            self.say(f"dockmagic: left out {name!r} from engine {self.engine}: {why}")
        if len(refused) > 5:
            self.say(f"dockmagic: ... and {len(refused) - 5} more left out")
        return done


def _one_file(chunks) -> bytes:
    import io
    import tarfile
    with tarfile.open(fileobj=io.BufferedReader(tarfiles.ChunkReader(chunks)), mode="r|") as t:
        for member in t:
            if member.isreg() and member.size < (256 << 20):
                return t.extractfile(member).read()
    return b""


def remove_workspaces(engine) -> List[str]:
    """Remove this user's workspace volumes on ENGINE; their names."""
    gone = []
    for vol in volumes.list_volumes(engine, mine()):
        if volumes.remove_volume(engine, vol["Name"]):
            gone.append(vol["Name"])
    return gone
