"""The notebook folder on a remote engine's host: one workspace per notebook folder and host.

Before a cell the folder is pushed (rsync over the engine's SSH connection, only what the ignore
rules keep, see `filters`); the container mounts the workspace at the *same path* as the local
folder, so relative and printed paths read the same; after the cell -- failed and interrupted
cells included -- what the cell changed is pulled back, owned by the local user (rsync never
sets owners here).

A file changed here while the cell ran is never overwritten: the engine's copy is kept next to
it as `NAME.ENGINE-conflict.EXT`, and the cell says so. To know that, the workspace keeps a
snapshot of every synced file's (mtime, size) as both sides last agreed on it.

Sessions sync only what changed: local changes come from an mtime scan against the snapshot;
the container's changes come with the cell's reply (the agent scans the workspace), so a warm
cell that changed nothing on either side runs no rsync at all.

What moves files is a handful of transport methods (`_first_push_plan`, `_send`, `_delete`,
`list_remote`, `_fetch`, `_fetch_copy`, `_reading`): rsync over SSH here; tar through the
engine API into a named volume for engines without SSH (`volume.VolumeWorkspace`). The
decisions (what changed, what conflicts, the snapshot) are this class's alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shlex
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from . import errors as rerrors
from . import filters
from .sshlink import SSHLink

#: Warn when a push would send more than this (bytes); `DOCKMAGIC_SYNC_WARN_BYTES` overrides.
WARN_BYTES = int(os.environ.get("DOCKMAGIC_SYNC_WARN_BYTES", str(1 << 30)))
SYNC_MODES = ("both", "in", "out", "none")
_RSYNC_BASE = ["rsync", "-rltp", "--no-owner", "--no-group", "--omit-dir-times"]
#: --in/--out exchange folders (transfer.XFER_PREFIX) always travel, ignore files or not.
_ALWAYS_SEND = re.compile(r"^\.dockmagic-xfer-[0-9a-f]+(/|$)")

Entry = Tuple[int, int]  # (mtime_ns, size)


@dataclass
class SyncReport:
    sent: int = 0
    received: int = 0
    deleted: int = 0
    conflicts: List[Tuple[str, str]] = field(default_factory=list)
    rsyncs: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.sent or self.received or self.deleted or self.conflicts)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def conflict_name(rel: str, engine: str) -> str:
    """`results/out.txt` -> `results/out.ENGINE-conflict.txt` (a free name)."""
    head, base = posixpath.split(rel)
    stem, dot, ext = base.partition(".") if not base.startswith(".") else (base, "", "")
    return posixpath.join(head, f"{stem}.{engine}-conflict{dot}{ext}")


def scan(root: str) -> Tuple[Dict[str, Entry], List[str]]:
    """Files under ROOT the ignore rules keep -> {rel: (mtime_ns, size)}, and the folders
    left out."""
    out: Dict[str, Entry] = {}
    ignored_dirs: List[str] = []
    rules: List[filters.Rule] = []
    try:
        with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
            rules += filters.parse_dockerignore(f.read())
    except (OSError, UnicodeDecodeError):
        pass

    def walk(folder: str, rel: str, rules):
        try:
            with open(os.path.join(folder, ".gitignore"), encoding="utf-8") as f:
                rules = rules + filters.parse_gitignore(f.read(), rel)
        except (OSError, UnicodeDecodeError):
            pass
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if filters.is_ignored(r, is_dir, rules) and not _ALWAYS_SEND.match(r):
                if is_dir or e.name in filters.ALWAYS_SKIP:
                    ignored_dirs.append(r)
                continue
            if is_dir:
                walk(e.path, r, rules)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                out[r] = (st.st_mtime_ns, st.st_size)

    walk(root, "", rules)
    return out, ignored_dirs


def run_rsync(link: SSHLink, args: List[str], *, input: Optional[bytes] = None) -> str:
    """rsync over LINK's connection; its failures as one line naming the engine and the fix."""
    engine = link.name
    argv = _RSYNC_BASE + ["-e", link.rsync_rsh()] + args
    link.ensure()
    try:
        res = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=3600)
    except FileNotFoundError:
        raise rerrors.no_rsync(engine, link.target, "on this machine") from None
    err = res.stderr.decode("utf-8", "replace")
    if res.returncode in (0, 24):  # 24: a file vanished while listed (the cell deleted it)
        return res.stdout.decode("utf-8", "surrogateescape")
    if "command not found" in err or res.returncode == 127:
        raise rerrors.no_rsync(engine, link.target)
    if res.returncode == 255 or "connection unexpectedly closed" in err:
        raise rerrors.ConnectionDropped(
            f"engine {engine}: the SSH connection to {link.target} dropped while syncing "
            "files; run the cell again (it reconnects)")
    last = (err.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
    raise rerrors.RemoteEngineError(f"engine {engine}: syncing the notebook folder failed: "
                                    f"{last}")


class Workspace:
    """The workspace of one local folder on one engine's host."""

    def __init__(self, link: SSHLink, local_root: str, say: Callable[[str], None] = None):
        self.link = link
        self.engine = link.name
        self.local_root = os.path.realpath(local_root)
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._remote_root: Optional[str] = None
        self.snapshot: Optional[Dict[str, Entry]] = None  # None: never synced in this kernel
        self._warned = False
        self._made = False  # the folder exists there (made once per kernel)

    # -- where ---------------------------------------------------------------------------------
    @property
    def remote_root(self) -> str:
        if self._remote_root is None:
            info = self.link.remote_info()
            key = hashlib.sha256(f"{socket.gethostname()}:{os.getuid()}:{self.local_root}"
                                 .encode()).hexdigest()[:16]
            slug = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(self.local_root) or "root")
            self._remote_root = posixpath.join(info["home"], ".cache", "dockmagic",
                                               "workspaces", f"{slug[:40]}-{key}")
        return self._remote_root

    def _remote_spec(self, rel: str = "") -> str:
        return f"{self.link.endpoint.host}:{self.remote_root}/{rel}"

    def check_rsync(self):
        if not self.link.remote_info()["rsync"]:
            raise rerrors.no_rsync(self.engine, self.link.target)

    def ensure_remote(self):
        self.check_rsync()
        self.ensure_dir()

    def ensure_dir(self):
        """The workspace folder exists there (a `--mount` source must; `--sync none` too)."""
        if not self._made:
            self.link.run(f"mkdir -p {shlex.quote(self.remote_root)}", check=True)
            self._made = True

    # -- rsync ----------------------------------------------------------------------------------
    def _rsync(self, args: List[str], *, input: Optional[bytes] = None) -> str:
        return run_rsync(self.link, args, input=input)

    # -- push -----------------------------------------------------------------------------------
    def push(self, changed_only: bool = False) -> SyncReport:
        """Local -> workspace. The first push of a kernel also removes what the workspace holds
        that the folder no longer has (left from an earlier kernel); later ones send only the
        files whose (mtime, size) moved since the snapshot, and delete what was deleted here."""
        t0 = time.perf_counter()
        rep = SyncReport()
        files, _ignored = scan(self.local_root)
        first = self.snapshot is None
        if first:
            self.ensure_remote()
            send, gone = self._first_push_plan(files)
        else:
            send = sorted(r for r, e in files.items() if self.snapshot.get(r) != e)
            gone = sorted(r for r in self.snapshot if r not in files)
            if changed_only and not send and not gone:
                rep.seconds = time.perf_counter() - t0
                return rep
        total = sum(files[r][1] for r in send)
        if total > WARN_BYTES and not self._warned:
            self._warned = True
            self.say(f"dockmagic: syncing {_human(total)} of {self.local_root} to engine "
                     f"{self.engine}; leave out what cells do not need with .dockerignore or "
                     ".gitignore, or run cells with --sync none")
        if send:
            self._send(send, files)
            rep.rsyncs += 1
        if gone:
            self._delete(gone)
        rep.sent, rep.deleted = len(send) if not first else len(files), len(gone)
        self.snapshot = dict(files)
        rep.seconds = time.perf_counter() - t0
        return rep

    def _first_push_plan(self, files: Dict[str, Entry]) -> Tuple[List[str], List[str]]:
        """A kernel's first push: (what to send, what to delete there). rsync skips what the
        workspace already holds by itself, so everything is listed."""
        return sorted(files), self._stale_remote(files)

    def _send(self, send: List[str], files: Dict[str, Entry]):
        listing = "\0".join(send).encode("utf-8", "surrogateescape") + b"\0"
        self._rsync(["--from0", "--files-from=-", self.local_root + "/",
                     self._remote_spec()], input=listing)

    def _delete(self, gone: List[str]):
        """Deleted here since the last sync (rsync's --delete-missing-args trips on mixed rsync
        versions: "protocol incompatibility"); one command on the connection."""
        listing = "\0".join(gone).encode("utf-8", "surrogateescape") + b"\0"
        self.link.run(f"cd {shlex.quote(self.remote_root)} && xargs -0 rm -f --",
                      input=listing, check=True)

    def _stale_remote(self, files: Dict[str, Entry]) -> List[str]:
        """Files in the workspace the local folder does not have (and does not ignore)."""
        return [r for r in self.list_remote()
                if r not in files and not os.path.lexists(os.path.join(self.local_root, r))]

    def list_remote(self) -> Dict[str, Entry]:
        """The workspace's files -> (mtime_ns, size), from one `find` over the connection
        (rsync's own listing carries whole seconds only, too coarse to tell edits apart)."""
        res = self.link.run(
            f"cd {shlex.quote(self.remote_root)} 2>/dev/null || exit 0; find . -name .git -prune "
            r"-o \( -type f -o -type l \) -printf '%P\0%T@\0%s\0'", check=True)
        parts = res.stdout.split(b"\0")
        out: Dict[str, Entry] = {}
        for i in range(0, len(parts) - 2, 3):
            rel = parts[i].decode("utf-8", "surrogateescape")
            sec, _, frac = parts[i + 1].decode("ascii").partition(".")
            out[rel] = (int(sec) * 1_000_000_000 + int((frac + "000000000")[:9]),
                        int(parts[i + 2]))
        return out

    # -- pull -----------------------------------------------------------------------------------
    def pull(self, reported: Optional[Tuple[list, list]] = None) -> SyncReport:
        """Workspace -> local: what the cell changed or deleted there. REPORTED is the agent's
        ([[rel, mtime_ns, size], ...], [deleted rel, ...]) when a session cell gives it; else one
        rsync dry run finds the changes."""
        with self._reading():
            return self._pull(reported)

    def _pull(self, reported) -> SyncReport:
        t0 = time.perf_counter()
        rep = SyncReport()
        snap = self.snapshot if self.snapshot is not None else {}
        if reported is not None:  # what the container says: names checked, never trusted
            changed = {r: (int(m), int(s)) for r, m, s in _entries(reported[0])
                       if snap.get(r) != (int(m), int(s))}
            deleted = [r for r in reported[1] if isinstance(r, str) and r in snap]
        else:
            changed, deleted = self._remote_changes(snap)
        fetch, conflicts, gone = [], [], []
        for rel, remote in sorted(changed.items()):
            local = _lstat(os.path.join(self.local_root, rel))
            before = snap.get(rel)
            if local == before or (local is None and before is None):
                fetch.append(rel)  # unchanged here: take the engine's version
            elif remote is not None and before is not None and before == remote:
                continue  # only changed here: it goes out with the next push
            else:
                conflicts.append(rel)  # changed on both sides while the cell ran: keep both
        for rel in deleted:
            local = _lstat(os.path.join(self.local_root, rel))
            if local is not None and local == snap.get(rel):
                gone.append(rel)
        left_out = []
        if fetch:
            brought = self._fetch(fetch, changed)
            left_out = sorted(set(fetch) - set(brought))
            fetch = brought
            rep.rsyncs += 1
        for rel in conflicts:
            copy = conflict_name(rel, self.engine)
            n = 1
            while os.path.lexists(os.path.join(self.local_root, copy)):
                n += 1
                copy = conflict_name(rel, f"{self.engine}{n}")
            self._fetch_copy(rel, copy, changed.get(rel))
            rep.rsyncs += 1
            rep.conflicts.append((rel, copy))
            self.say(f"dockmagic: {rel} changed here while the cell ran on engine "
                     f"{self.engine}; kept yours, and the engine's version as {copy}")
        for rel in gone:
            try:
                os.unlink(os.path.join(self.local_root, rel))
            except OSError:
                pass
        if self.snapshot is not None:
            for rel in fetch:
                entry = _lstat(os.path.join(self.local_root, rel))
                if entry is not None:
                    self.snapshot[rel] = entry
            for rel in gone:
                self.snapshot.pop(rel, None)
            for rel in conflicts:
                # the engine keeps its version until the next push sends ours
                self.snapshot[rel] = (-1, -1)
            for rel in left_out:  # refused (a link out of the folder): ours goes back there
                if _lstat(os.path.join(self.local_root, rel)) is not None:
                    self.snapshot[rel] = (-1, -1)
        rep.received, rep.deleted = len(fetch), len(gone)
        rep.seconds = time.perf_counter() - t0
        return rep

    @contextlib.contextmanager
    def _reading(self):
        """Around one pull (a transport may hold something across its reads)."""
        yield

    def _fetch(self, fetch: List[str], changed: Dict[str, Optional[Entry]]) -> List[str]:
        """Bring FETCH (changed there as CHANGED says) here; returns what was brought."""
        listing = "\0".join(fetch).encode("utf-8", "surrogateescape") + b"\0"
        self._rsync(["--from0", "--files-from=-", "--safe-links", self._remote_spec(),
                     self.local_root + "/"], input=listing)
        return fetch

    def _fetch_copy(self, rel: str, copy: str, entry: Optional[Entry]):
        """The engine's REL, here as COPY (a conflict copy)."""
        self._rsync(["--safe-links", self._remote_spec(rel),
                     os.path.join(self.local_root, copy)])

    def _remote_changes(self, snap) -> Tuple[Dict[str, Optional[Entry]], List[str]]:
        there = self.list_remote()
        changed = {r: e for r, e in there.items() if snap.get(r) != e and safe_rel(r)}
        return changed, [r for r in snap if r not in there]

    def sync_cell(self, mode: str, run: Callable[[], object],
                  reported: Callable[[], Optional[tuple]] = lambda: None,
                  changed_only: bool = False):
        """Push (unless `out`/`none`), run, then pull (unless `in`/`none`) whatever happens."""
        if mode in ("both", "in"):
            self.push(changed_only=changed_only)
        elif self.snapshot is None and mode == "out":
            self.ensure_remote()
        try:
            return run()
        finally:
            if mode in ("both", "out"):
                self.pull(reported())


def safe_rel(rel) -> bool:
    """A relative path inside the folder: no absolute path, no `..`, no empty part. (Names come
    from the container's side; a container is untrusted and picks no path outside the folder.)"""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _entries(items) -> list:
    out = []
    for item in items or ():
        try:
            rel, mtime, size = item
            if safe_rel(rel):
                out.append((rel, int(mtime), int(size)))
        except (TypeError, ValueError):
            continue
    return out


def _lstat(path: str) -> Optional[Entry]:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class Mirror:
    """A private folder of this machine (an --in/--out exchange folder) copied whole to the
    engine's host before a cell and back after it. Unlike the workspace it is never mounted
    into other containers, and nothing is left out."""

    def __init__(self, link: SSHLink, local_dir: str, remote_dir: str):
        self.link = link
        self.local_dir = local_dir.rstrip("/")
        self.remote_dir = remote_dir.rstrip("/")

    def _rsync(self, args: List[str]):
        return run_rsync(self.link, args)

    def push(self):
        self.link.run(f"mkdir -p -m 700 {shlex.quote(self.remote_dir)}", check=True)
        self._rsync(["--delete", self.local_dir + "/",
                     f"{self.link.endpoint.host}:{self.remote_dir}/"])

    def pull(self):
        self._rsync(["--safe-links", f"{self.link.endpoint.host}:{self.remote_dir}/",
                     self.local_dir + "/"])

    def remove(self):
        try:
            self.link.run(f"rm -rf {shlex.quote(self.remote_dir)}", timeout=30)
        except rerrors.RemoteEngineError:
            pass  # the link is gone: the folder is removed with the next kernel's
