"""A remote engine's reaper runs on the engine's host (#10): when the kernel's host dies, sleeps
or loses its connection for good, the kernel's containers and exchange folders there go, and its
GPUs with them.

The process is `engine/reaper.py` itself, run with ``python3 -c SOURCE --remote`` over the
engine's SSH connection (its ControlMaster), talking to that host's own Docker socket; the ssh
channel's stdin is the pipe (`engine.reaping.remote_argv`). This module is the kernel's handle:

* what the kernel tells it (exchange folders, `owns`, claims) is translated from this host's
  exchange root to its copy there (`RemoteEngine.exchange_roots`) and remembered;
* it pings the reaper every `HEARTBEAT_S` (silence there counts as a dead kernel);
* when the channel goes (the link dropped and `SSHLink` reconnected, or the reaper died), it
  starts a new reaper over the new connection and replays what it remembers; the old reaper,
  in its longer grace, sees the newer one in the watch file there and exits without reaping.

No python3 there: one line says the reaper cannot run there, and cells go on without it.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from typing import Optional

from ..engine import reaping
from ..engine.reaper import HEARTBEAT_S, LABEL_WATCH_S, REMOTE_GRACE_S
from . import errors as rerrors

#: The interpreter the reaper runs with there (stdlib only, Python >= 3.8).
PYTHON = "python3"
#: Engines (by name) found without it, said once per kernel.
_NO_PYTHON: set = set()


class HostReaper(reaping.Reaper):
    """This kernel's reaper on a remote engine's host (see the module docstring)."""

    def __init__(self, engine, kernel_id: str, *, grace_s: float = REMOTE_GRACE_S,
                 python: str = "python3", local: Optional[reaping.Reaper] = None):
        self.engine, self.link = engine, engine.link
        self.local = local  # this host's folders-only reaper: the local copies go too
        self.grace_s, self.python = grace_s, python
        self.local_x, self.remote_x = engine.exchange_roots()
        self._globs: set = set()
        self._tracked: set = set()
        self._owned: dict = {}
        self._claims: set = set()
        self._removals: set = set()
        self._labels: dict = {}  # rmlabel KEY=VALUE -> when asked (monotonic)
        self.restarts = 0
        self.kernel_id = kernel_id
        proc = self._spawn()
        super().__init__(engine.endpoint.url, kernel_id, proc,
                         os.path.join(self.link.dir, "reaper.log"))
        self._keeper = threading.Thread(target=self._keep, daemon=True,
                                        name=f"dockmagic-reaper-{engine.name}")
        self._keeper.start()

    # -- the process there ------------------------------------------------------------------
    def argv(self) -> list:
        remote = reaping.remote_argv("unix://" + self.link.endpoint.remote_socket, self.kernel_id,
                                     python=self.python, grace_s=self.grace_s, remote=True)
        return self.link.ssh_command() + [self.link.endpoint.host, shlex.join(remote)]

    def _spawn(self) -> subprocess.Popen:
        self.link.ensure()
        with open(os.path.join(self.link.dir, "reaper.log"), "ab") as log:
            # Its own session: the kernel's Ctrl-C is not for it. No PDEATHSIG: when the kernel
            # dies the pipe closes, ssh passes the EOF on, and the reaper there takes it from
            # there.
            return subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=log,
                                    stderr=subprocess.STDOUT, close_fds=True,
                                    start_new_session=True, cwd="/")

    def alive(self) -> bool:
        return not self._closed  # a dead channel is restarted by the keeper thread

    def _keep(self):
        """Ping while the channel lives; start a new reaper when it goes."""
        backoff = 0.5
        while not self._closed:
            proc = self.proc
            try:
                proc.wait(HEARTBEAT_S)
            except subprocess.TimeoutExpired:
                self.send("ping")
                backoff = 0.5
                continue
            if self._closed or self.link.closed:
                return
            # The connection dropped (the link reconnects), or the reaper there died: a new one
            # over the new connection takes over before the old one's grace runs out.
            if not self.link.wait_up():
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            try:
                new = self._spawn()
            except (OSError, rerrors.RemoteEngineError):
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            with self._lock:
                if self._closed:
                    new.stdin.close()
                    return
                self.proc = new
            self.restarts += 1
            self._replay()
            time.sleep(backoff)  # a reaper that ends at once must not spin
            backoff = min(backoff * 2, 10.0)

    def _replay(self):
        for pattern in sorted(self._globs):
            self.send(f"glob {pattern}")
        for path in sorted(self._tracked):
            self.send(f"track {path}")
        for cid, paths in sorted(self._owned.items()):
            for path in sorted(paths):
                self.send(f"owns {cid} {path}")
        for cid in sorted(self._claims):
            self.send(f"claim {cid}")
        for cid in sorted(self._removals):
            self.send(f"rm {cid}")
        now = time.monotonic()
        for label, asked in sorted(self._labels.items()):
            if now - asked < LABEL_WATCH_S:  # the rest of its watch, anew
                self.send(f"rmlabel {label}")
            else:
                self._labels.pop(label, None)

    def close(self, reap: bool = False, wait: float = 0.0):
        """As `Reaper.close`, waiting (a little) for the reaper there to have read it: the link
        may be closed right after, and a channel closed without `close` reads as a death."""
        super().close(reap=reap, wait=max(wait, 3.0))

    # -- requests, in that host's paths ---------------------------------------------------------
    def there(self, path: str) -> Optional[str]:
        """PATH (or pattern) in this kernel's exchange root -> its copy on the engine's host;
        None for anything else (it has no copy there)."""
        root = self.local_x.rstrip("/")
        if path.startswith(root + "/"):
            return self.remote_x.rstrip("/") + path[len(root):]
        return None

    def track(self, path: str):
        remote = self.there(path)
        if remote:
            self._tracked.add(remote)
            self.send(f"track {remote}")

    def untrack(self, path: str):
        remote = self.there(path)
        if remote:
            self._tracked.discard(remote)
            self.send(f"untrack {remote}")

    def add_glob(self, pattern: str):
        remote = self.there(pattern)
        if remote and remote not in self._globs:
            self._globs.add(remote)
            self.send(f"glob {remote}")

    def remove_with(self, container_id: str, path: str):
        """A --rm session's folder goes with it there; its local copy goes with the kernel (no
        kernel here uses it: a reattaching kernel makes its own)."""
        if self.local is not None and self.local.alive():
            self.local.track(path)
        remote = self.there(path)
        if remote:
            self._owned.setdefault(container_id, set()).add(remote)
            self.send(f"owns {container_id} {remote}")

    def remove_labelled(self, label: str):
        self._labels[label] = time.monotonic()
        self.send(f"rmlabel {label}")

    def remove_later(self, container_id: str):
        self._removals.add(container_id)
        self.send(f"rm {container_id}")

    def claim(self, container_id: str):
        self._claims.add(container_id)
        self.send(f"claim {container_id}")

    def release(self, container_id: str):
        self._claims.discard(container_id)
        self._owned.pop(container_id, None)
        self.send(f"release {container_id}")


def start(engine, kernel_id: str) -> Optional[HostReaper]:
    """The reaper for ENGINE (a `RemoteEngine` over SSH) on its host, or None where python3 is
    missing there (said once, in one line; the cell goes on without it)."""
    python = PYTHON
    if engine.name in _NO_PYTHON:
        return None
    try:
        found = engine.link.run(f"command -v {shlex.quote(python)} >/dev/null && echo yes || "
                                "echo no", timeout=15).stdout.strip()
    except rerrors.RemoteEngineError:
        return None  # the link is down: the next cell's create asks again
    if found != b"yes":
        _NO_PYTHON.add(engine.name)
        print(f"dockmagic: engine {engine.name}: no {python} on {engine.link.target}, so this "
              "kernel's reaper cannot run there: if the kernel dies, its containers there stay "
              f"(install {python} there)", file=sys.stderr)
        return None
    # The local copies of the exchange folders go with the kernel too: a folders-only reaper
    # here (it gets this kernel's folder globs and tracked folders like every reaper).
    local = reaping.ensure_reaper(reaping.NO_ENGINE, kernel_id)
    try:
        return HostReaper(engine, kernel_id, local=local, python=python)
    except rerrors.RemoteEngineError:
        return None  # the link went meanwhile: the next cell's create asks again


#: Lists the claims folder of the SSH user there (`reaper.runtime_dir`: /dev/shm first, then the
#: temp folder): one line per claim, `ID KERNEL`.
_LIST_CLAIMS = (
    'u=$(id -u); for d in /dev/shm/dockmagic-run-$u/claims "${TMPDIR:-/tmp}"/dockmagic-run-$u/claims; '
    'do [ -d "$d" ] || continue; cd "$d" || continue; for f in *; do '
    '[ -f "$f" ] && [ ! -L "$f" ] && printf "%s %s\\n" "$f" "$(head -c 200 "$f")"; done; break; done')


def claims_on_host(engine) -> dict:
    """Container id -> the kernel claiming it, from the claims folder on ENGINE's host (where
    the reapers there look; kernels of other hosts claim there too). {} when it cannot be read."""
    try:
        out = engine.link.run(_LIST_CLAIMS, timeout=15).stdout.decode("utf-8", "replace")
    except rerrors.RemoteEngineError:
        return {}
    found = {}
    for line in out.splitlines():
        cid, _, kernel = line.strip().partition(" ")
        if 12 <= len(cid) <= 64 and set(cid) <= set("0123456789abcdef") and kernel:
            found[cid] = kernel
    return found
