"""The reaper: when a kernel dies (SIGKILL, OOM, crash), its one-shot containers, spares, `--rm`
sessions and exchange folders go too, within seconds, even with no other kernel running.

The pattern is testcontainers' reaper (Ryuk): a small process holds a connection from the client,
and when that connection drops it removes the client's labelled containers. Here the connection is
a pipe: the kernel starts one reaper per engine it uses, detached (its own session, so neither
SIGKILL of the kernel nor a kill of the kernel's process group reaches it), and keeps the write
end of the reaper's stdin. The kernel dying closes that end; the reaper reads EOF, waits a short
grace, then, through the Docker Engine API (HTTP over the unix socket, or plain/TLS tcp), removes
every container labelled ``dockmagic.reap=1`` whose ``dockmagic.kernel`` is its kernel (or that
its kernel had claimed), skipping any that another live kernel claims; removes the kernel's
exchange folders; and exits. If the engine does not answer it keeps trying for a while.

Why a process on the engine's host and not a container like Ryuk: the reaper needs the engine's
socket, and a container with the socket mounted is root on the host. Ryuk runs a trusted image;
ours would have to be the user's (untrusted) image or one we pull, so a host process it is. On
another host the same file runs over ssh, its source passed with ``-c`` (`reaping.remote_argv`),
the ssh channel's stdin being the pipe (not ``python3 - < reaper.py``: that stdin would end with
the source, and the reaper would take the EOF for the kernel's death).

``--remote`` (a reaper on an engine's host, started over the kernel's SSH connection): a closed
channel may be a dropped connection the kernel reconnects from, not its death, so
  * the grace is longer (REMOTE_GRACE_S), and a newer reaper for the same kernel takes over: each
    records itself in ``<runtime>/reapers/<kernel>.watch`` when it starts; one whose kernel went
    quiet that finds another live reaper named there finishes its `rm` requests and exits
    without reaping (the kernel replays its state to the new one);
  * the kernel sends ``ping`` every few seconds, and silence for ``--silence`` seconds counts as
    a closed channel (a sleeping laptop's TCP connection is never closed; its GPUs must not stay
    held);
  * claims and logs live in this host's runtime folder; the log is a file there (the channel may
    be gone when the reaper writes);
  * kernels of the kernel's host are judged only there: if this host has the same name, no
    kernel label is judged by pid here.

This file is stdlib only (Python >= 3.8) and stands alone (``python3 -I -S reaper.py ARGS``, or
``-c SOURCE``). It also holds what both sides must agree on: how a kernel label is judged alive,
and the claim files (one per container id in a per-user runtime folder, holding the claiming
kernel's label).

Requests on stdin, one per line (the kernel side below writes them):
  ``track PATH`` / ``untrack PATH``  an exchange folder to remove when reaping / removed already
  ``glob PATTERN``                   more folders to remove when reaping (absolute glob)
  ``owns ID PATH``                   PATH (a session's exchange folder) goes when container ID goes
  ``rm ID``                          remove this container now, retrying until the engine answers
  ``rmlabel KEY=VALUE``              for a while, remove containers with this label as they appear
                                     (a create interrupted in flight: the engine may finish it
                                     after the kernel looked)
  ``close keep``                     the kernel shuts down cleanly (its own clean-up ran): finish
                                     the `rm`/`rmlabel` requests, then exit
  ``close reap``                     the kernel is about to exit without cleaning up: reap now
  ``claim ID`` / ``release ID``      the kernel holds container ID (a session it reattached to) /
                                     no longer: written in this host's claims folder
  ``ping``                           the kernel lives (see ``--silence``)
"""
from __future__ import annotations

import fnmatch
import json
import os
import select
import socket
import stat
import sys
import threading
import time
from typing import Optional

REAP_LABEL = "dockmagic.reap"
KERNEL_LABEL = "dockmagic.kernel"
#: After EOF without `close`: how long before reaping (late writes of a dying kernel settle).
GRACE_S = 2.0
#: The same for a reaper on another host (``--remote``): its channel closes when the kernel's SSH
#: connection drops, and the kernel reconnects and starts the reaper that takes over within it.
REMOTE_GRACE_S = 25.0
#: How often the kernel pings a remote reaper, and how long a silence means the kernel is gone.
HEARTBEAT_S = 5.0
REMOTE_SILENCE_S = 60.0
#: How long the reaper keeps trying an engine that does not answer before it gives up.
GIVE_UP_S = 3600.0
RETRY_S = 2.0
#: How long an `rmlabel` request is watched, and how often its label is looked up meanwhile.
LABEL_WATCH_S = 30.0
LABEL_POLL_S = 0.5
_CALL_TIMEOUT_S = 10.0
#: `--endpoint none`: folders only (a remote engine's local copies; its containers are reaped
#: on its own host).
NO_ENGINE = "none"
_HEX = frozenset("0123456789abcdef")


# -- kernels: alive or not -----------------------------------------------------------------------
def parse_kernel_label(value: str):
    """`host:pid:start` (the `dockmagic.kernel` label) -> (host, pid, start) or None."""
    host, _, rest = (value or "").rpartition(":")
    host, _, pid = host.rpartition(":")
    try:
        return (host, int(pid), int(rest)) if host else None
    except ValueError:
        return None


def _process_start(pid: int):
    """A process's start time (epoch seconds) from /proc, or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


#: Host names whose kernels this process may not judge by pid (see ``--remote``).
UNJUDGED_HOSTS: set = set()


def kernel_alive(label: str, hostname=None):
    """Whether the kernel a `dockmagic.kernel` label names still runs: True / False, or None
    when this host cannot tell (another host, or a malformed label)."""
    parsed = parse_kernel_label(label)
    if parsed is None:
        return None
    host, pid, start = parsed
    if host != (hostname or socket.gethostname()) or host in UNJUDGED_HOSTS:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's
    except OSError:
        return None
    began = _process_start(pid)
    # The label's start is when dockmagic was imported, after the process began; a process that
    # began later is a new one that reused the pid. (A zombie still "exists": it is dead.)
    if began is not None and began > start + 2:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return False
    except (OSError, IndexError):
        pass
    return True


# -- claims: a live kernel that reattached to a container holds it ---------------------------------
def _valid_id(cid: str) -> bool:
    return 12 <= len(cid) <= 64 and set(cid) <= _HEX


def read_claim(claims_dir: str, cid: str):
    """The kernel label claiming container CID (its full id), or None."""
    if not claims_dir or not _valid_id(cid):
        return None
    try:
        fd = os.open(os.path.join(claims_dir, cid), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 512).decode("utf-8", "replace").strip() or None
    finally:
        os.close(fd)


def write_claim(claims_dir: str, cid: str, kernel: str):
    """Record that KERNEL holds container CID (atomically; the last claimer wins)."""
    if not _valid_id(cid):
        raise ValueError(f"not a container id: {cid!r}")
    tmp = os.path.join(claims_dir, f".{cid}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, kernel.encode("utf-8") + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(claims_dir, cid))


def drop_claim(claims_dir: str, cid: str, kernel=None):
    """Forget the claim on CID (only KERNEL's, when given)."""
    if not _valid_id(cid) or (kernel is not None and read_claim(claims_dir, cid) != kernel):
        return
    try:
        os.unlink(os.path.join(claims_dir, cid))
    except OSError:
        pass


def prune_claims(claims_dir: str):
    """Forget the claims of kernels that are gone (they hold nothing any more)."""
    try:
        names = os.listdir(claims_dir)
    except OSError:
        return
    for n in names:
        claimer = read_claim(claims_dir, n) if _valid_id(n) else None
        if claimer and kernel_alive(claimer) is False:
            drop_claim(claims_dir, n, claimer)


def claims_of(claims_dir: str, kernel: str) -> set:
    """The container ids KERNEL claims."""
    try:
        names = os.listdir(claims_dir)
    except OSError:
        return set()
    return {n for n in names if _valid_id(n) and read_claim(claims_dir, n) == kernel}


# -- the engine, with the stdlib -------------------------------------------------------------------
class EngineDown(Exception):
    """The engine did not answer (socket missing, refused, timed out)."""


class EngineAPI:
    """The few Engine API calls the reaper makes, at `unix:///path` or `tcp://host:port` (TLS
    when ``tls`` is not None: () for the system's CAs, or (ca, cert, key) file names)."""

    def __init__(self, url: str, tls=None):
        self.url = url
        self.tls = tls
        self.path = self.host = self.port = None
        if url == NO_ENGINE:
            pass
        elif url.startswith("unix://"):
            self.path = url[len("unix://"):]
            self.host = self.port = None
        elif url.startswith(("tcp://", "http://", "https://")):
            hostport = url.split("://", 1)[1].rstrip("/")
            host, _, port = hostport.rpartition(":")
            self.path = None
            self.host = (host or hostport).strip("[]")
            self.port = int(port) if host and port else (2376 if tls else 2375)
            if url.startswith("https://") and tls is None:
                self.tls = ()
        else:
            raise ValueError(f"the reaper speaks unix:// and tcp:// endpoints, not {url!r}")

    def _connection(self, timeout):
        import http.client

        if self.path is not None:
            path = self.path

            class UnixConnection(http.client.HTTPConnection):
                def connect(self):
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(timeout)
                    try:
                        sock.connect(path)
                    except OSError:
                        sock.close()
                        raise
                    self.sock = sock

            return UnixConnection("localhost", timeout=timeout)
        if self.tls is not None:
            import ssl

            ctx = ssl.create_default_context(cafile=self.tls[0] if self.tls else None)
            if self.tls and len(self.tls) == 3:
                ctx.load_cert_chain(self.tls[1], self.tls[2])
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, timeout: float = _CALL_TIMEOUT_S):
        """(status, body bytes); EngineDown when the engine cannot be reached."""
        conn = None
        try:
            conn = self._connection(timeout)
            conn.request(method, path, headers={"Host": "docker"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, EOFError) as exc:  # refused, missing socket, reset, timeout
            raise EngineDown(f"{self.url}: {exc}") from None
        except Exception as exc:  # http.client's own (BadStatusLine, ...): the same to us
            raise EngineDown(f"{self.url}: {type(exc).__name__}: {exc}") from None
        finally:
            if conn is not None:
                conn.close()

    def vanished(self) -> bool:
        """A unix socket whose folder is gone (a private engine purged): it will not come back."""
        return self.path is not None and not os.path.isdir(os.path.dirname(self.path) or "/")

    def list_reapable(self, label: str = f"{REAP_LABEL}=1") -> list:
        """Every container labelled dockmagic.reap=1 (or LABEL), any state: [(id, labels)]."""
        from urllib.parse import quote

        if self.url == NO_ENGINE:
            return []

        filters = quote(json.dumps({"label": [label]}))
        status, body = self.request("GET", f"/containers/json?all=1&filters={filters}")
        if status != 200:
            raise EngineDown(f"{self.url}: listing containers gave HTTP {status}: "
                             f"{body[:200]!r}")
        return [(c["Id"], c.get("Labels") or {}) for c in json.loads(body)]

    def remove(self, cid: str) -> bool:
        """Force-remove CID with its anonymous volumes (as `--rm` does). True when it is gone."""
        if self.url == NO_ENGINE:
            return True
        status, body = self.request("DELETE", f"/containers/{cid}?force=1&v=1")
        if status in (200, 204, 404):
            return True
        if status == 409:  # "removal already in progress": see it gone on the next pass
            return False
        raise EngineDown(f"{self.url}: removing {cid[:12]} gave HTTP {status}: {body[:200]!r}")


# -- folders: remove without following links, never outside the root ------------------------------
def _rmtree_at(dir_fd: int, name: str):
    """Remove NAME in DIR_FD; a symlink is unlinked, never followed; a folder is emptied through
    descriptors opened with O_NOFOLLOW, so a link swapped in meanwhile cannot lead outside."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        if not os.path.samestat(st, os.fstat(fd)):
            return  # swapped under us
        if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)  # a cell made it read-only
        for entry in list(os.scandir(fd)):
            if entry.is_dir(follow_symlinks=False):
                _rmtree_at(fd, entry.name)
            else:
                try:
                    os.unlink(entry.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _open_dir(path: str) -> int:
    """Open the absolute folder PATH one component at a time, following no link."""
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            if part in (".", ".."):
                raise OSError(f"{path}: not a normalized path")
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _safe_root(root: str) -> int:
    """A descriptor for ROOT if it may hold folders to remove: a real folder (no link on the
    way), owned by us, writable by nobody else (not a shared /tmp or /dev/shm)."""
    if not os.path.isabs(root) or os.path.normpath(root) != root or root == "/":
        raise OSError(f"{root}: the root must be an absolute, normalized folder")
    fd = _open_dir(root)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise OSError(f"{root}: not ours alone (owner {st.st_uid}, mode "
                      f"{stat.S_IMODE(st.st_mode):o}); nothing removed there")
    return fd


def remove_globs(root: str, patterns) -> list:
    """Remove what matches PATTERNS (paths relative to ROOT, or absolute paths under it, with
    glob characters per component); returns what was removed (relative paths)."""
    fd = _safe_root(root)
    removed = []
    try:
        for pattern in patterns:
            rel = pattern[len(root) + 1:] if pattern.startswith(root + "/") else pattern
            parts = [p for p in rel.split("/") if p]
            if not parts or os.path.isabs(rel) or any(p in (".", "..") for p in parts):
                continue  # not under ROOT: never
            _remove_matching(fd, parts, "", removed)
    finally:
        os.close(fd)
    return removed


def _remove_matching(dir_fd: int, parts, prefix: str, removed: list):
    head, rest = parts[0], parts[1:]
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return
    for name in names:
        if not fnmatch.fnmatchcase(name, head) or (name.startswith(".") and not
                                                   head.startswith(".")):
            continue
        if rest:
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                _remove_matching(sub, rest, prefix + name + "/", removed)
            finally:
                os.close(sub)
        else:
            try:
                _rmtree_at(dir_fd, name)
                removed.append(prefix + name)
            except OSError as exc:
                log(f"could not remove {prefix + name}: {exc}")


def remove_path(path: str) -> bool:
    """Remove the folder PATH (a tracked exchange folder) without following links on the way."""
    if not os.path.isabs(path) or os.path.normpath(path) != path or path.count("/") < 2:
        return False
    parent, name = os.path.split(path)
    try:
        fd = _open_dir(parent)
    except OSError:
        return False  # gone already, or a link on the way: not ours to follow
    try:
        _rmtree_at(fd, name)
        return True
    except OSError as exc:
        log(f"could not remove {path}: {exc}")
        return False
    finally:
        os.close(fd)


# -- the reaper process ----------------------------------------------------------------------------
def log(text: str):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} reaper {os.getpid()}: {text}", flush=True)


class ReaperState:
    """What the kernel told us, and the reaping itself."""

    def __init__(self, endpoint: EngineAPI, kernel: str, claims_dir, globs):
        self.endpoint, self.kernel, self.claims_dir = endpoint, kernel, claims_dir
        self.globs = list(globs)  # absolute patterns; each under a root only we may write to
        self.tracked = set()
        self.pending = set()  # containers to remove now (the kernel could not)
        self.watched = {}     # label -> until when (monotonic) to remove what carries it
        self.owned = {}       # container id -> folders that go with it
        self.mode = None      # None (EOF: the kernel died), "reap" or "keep"
        self.errors = 0

    def handle(self, line: str):
        verb, _, arg = line.strip().partition(" ")
        if verb == "track" and arg:
            self.tracked.add(arg)
        elif verb == "untrack":
            self.tracked.discard(arg)
        elif verb == "glob" and arg:
            self.globs.append(arg)
        elif verb == "owns" and " " in arg and _valid_id(arg.split(" ", 1)[0]):
            cid, path = arg.split(" ", 1)
            self.owned.setdefault(cid, set()).add(path)
        elif verb == "rm" and _valid_id(arg):
            self.pending.add(arg)
        elif verb == "rmlabel" and "=" in arg and " " not in arg:
            self.watched[arg] = time.monotonic() + LABEL_WATCH_S
        elif verb == "close" and arg in ("reap", "keep"):
            self.mode = arg
        elif verb == "ping":
            pass
        elif verb in ("claim", "release") and _valid_id(arg) and self.claims_dir:
            try:
                if verb == "claim":
                    write_claim(self.claims_dir, arg, self.kernel)
                else:
                    drop_claim(self.claims_dir, arg, self.kernel)
            except OSError as exc:
                log(f"could not {verb} {arg[:12]}: {exc}")
        elif verb:
            log(f"ignoring {line.strip()[:80]!r}")

    def removed(self, cid: str, why: str = ""):
        """CID is gone: so are the folders that went with it."""
        log(f"removed {cid[:12]}{why}")
        self.pending.discard(cid)
        for full in [c for c in self.owned if c.startswith(cid) or cid.startswith(c)]:
            for path in sorted(self.owned.pop(full)):
                if remove_path(path):
                    log(f"removed folder {path} (with {cid[:12]})")

    def remove_pending(self):
        for cid in sorted(self.pending):
            try:
                if self.endpoint.remove(cid):
                    self.removed(cid, " (the kernel could not)")
            except EngineDown:
                return

    def remove_watched(self):
        now = time.monotonic()
        for label, until in list(self.watched.items()):
            try:
                for cid, _ in self.endpoint.list_reapable(label):
                    if self.endpoint.remove(cid):
                        self.removed(cid, f" ({label}: made after the kernel gave up)")
            except EngineDown:
                return
            if now > until:
                del self.watched[label]

    def finish_requests(self, give_up_s: float):
        """The `rm` and `rmlabel` requests, to the end (a clean shutdown reaps nothing else)."""
        deadline = time.monotonic() + give_up_s
        while (self.pending or self.watched) and time.monotonic() < deadline \
                and not self.endpoint.vanished():
            self.remove_pending()
            self.remove_watched()
            if self.pending or self.watched:
                time.sleep(LABEL_POLL_S if self.watched else RETRY_S)

    def held_elsewhere(self, cid: str) -> bool:
        """Claimed by another kernel that runs, or that this host cannot judge."""
        claimer = read_claim(self.claims_dir, cid)
        return bool(claimer) and claimer != self.kernel and kernel_alive(claimer) is not False

    def reap_containers(self) -> bool:
        """One pass; True when nothing of ours is left (EngineDown when it did not answer)."""
        mine = claims_of(self.claims_dir, self.kernel) if self.claims_dir else set()
        left = False
        targets = set(self.pending)
        for label in self.watched:
            targets.update(cid for cid, _ in self.endpoint.list_reapable(label))
        for cid, labels in self.endpoint.list_reapable():
            if labels.get(KERNEL_LABEL) == self.kernel or cid in mine:
                targets.add(cid)
        for cid in sorted(targets):
            if self.held_elsewhere(cid):
                log(f"keeping {cid[:12]}: claimed by {read_claim(self.claims_dir, cid)}")
                continue
            if self.endpoint.remove(cid):
                self.removed(cid)
            else:
                left = True
        return not left

    def reap_folders(self):
        for path in sorted(self.tracked):
            if remove_path(path):
                log(f"removed folder {path}")
        self.tracked.clear()
        for root in sorted({_root_of(g) for g in self.globs}):
            try:
                for rel in remove_globs(root, [g for g in self.globs if _root_of(g) == root]):
                    log(f"removed folder {root}/{rel}")
            except OSError as exc:
                self.errors += 1
                log(f"folders under {root} left alone: {exc}")

    def drop_claims(self):
        if self.claims_dir:
            for cid in claims_of(self.claims_dir, self.kernel):
                drop_claim(self.claims_dir, cid, self.kernel)
            prune_claims(self.claims_dir)

    def reap(self, give_up_s: float):
        """Containers (retrying while the engine is away), then folders, then claims."""
        deadline = time.monotonic() + give_up_s
        folders_done = False
        clean_passes = 0
        said = 0.0
        while True:
            gone = False
            try:
                if self.reap_containers():
                    clean_passes += 1
                else:
                    clean_passes = 0
            except EngineDown as exc:
                clean_passes = 0
                gone = self.endpoint.vanished()
                if gone:
                    log(f"engine gone for good ({exc}); nothing more to remove there")
                elif time.monotonic() - said > 300:  # once, then every 5 minutes
                    said = time.monotonic()
                    log(f"engine does not answer ({exc}); trying again every {RETRY_S:g} s")
            if not folders_done:  # the --in data must go even while the engine is away
                self.reap_folders()
                folders_done = True
            if gone:  # nothing to learn from its log: it goes too
                self.pending.clear()
                break
            # Two clean passes RETRY_S apart: a create the kernel sent just before it died may
            # still finish on the engine after the first listing.
            if clean_passes >= 2:
                break
            if time.monotonic() > deadline:
                self.errors += 1
                log(f"giving up after {give_up_s:g} s; the engine never answered")
                break
            time.sleep(RETRY_S)
        self.drop_claims()


def kernel_tag(kernel: str) -> str:
    """A kernel label as a file name (as `transfer.kernel_tag` names exchange folders)."""
    return "".join(c if c.isascii() and c.isalnum() or c in ".-" else "_" for c in kernel)[:120]


class Watch:
    """Who watches a kernel on this host now (``--remote``): ``<runtime>/reapers/<kernel>.watch``
    names the newest reaper started for it (`pid start`). A reaper whose channel closed hands over
    to a newer one that still runs instead of reaping the kernel it still serves."""

    def __init__(self, folder: str, kernel: str):
        self.path = os.path.join(folder, kernel_tag(kernel) + ".watch")
        self.me = f"{os.getpid()} {int(_process_start(os.getpid()) or 0)}"

    def take(self):
        tmp = f"{self.path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, self.me.encode() + b"\n")
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def _named(self) -> str:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        try:
            return os.read(fd, 100).decode("ascii", "replace").strip()
        finally:
            os.close(fd)

    def successor(self):
        """The pid of a newer reaper for the kernel that still runs, or None."""
        named = self._named()
        try:
            pid, start = (int(x) for x in named.split())
        except ValueError:
            return None
        if named == self.me or pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        began = _process_start(pid)
        return pid if began is None or abs(began - start) <= 2 else None

    def wait_successor(self, seconds: float):
        """Poll for a successor for up to SECONDS; its pid, or None."""
        deadline = time.monotonic() + seconds
        while True:
            pid = self.successor()
            if pid is not None or time.monotonic() >= deadline:
                return pid
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def leave(self):
        if self._named() == self.me:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def serve(state: ReaperState, stdin_fd: int = 0, grace_s: float = GRACE_S,
          give_up_s: float = GIVE_UP_S, silence_s: Optional[float] = None,
          watch: Optional[Watch] = None):
    """Read requests until EOF (or `close`, or SILENCE_S seconds without a line); meanwhile
    retry pending removals. WATCH: hand over to a newer reaper rather than reap (``--remote``)."""
    buf = b""
    next_pending = next_watch = 0.0
    heard = time.monotonic()
    while state.mode is None:
        timeout = LABEL_POLL_S if state.watched else RETRY_S if state.pending else None
        if silence_s:
            left = max(0.0, heard + silence_s - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        try:
            ready, _, _ = select.select([stdin_fd], [], [], timeout)
        except InterruptedError:
            continue
        if not ready and silence_s and time.monotonic() - heard >= silence_s:
            log(f"no word from kernel {state.kernel} for {silence_s:g} s")
            break  # asleep, or its connection gone without a word: as good as gone
        if ready:
            try:
                data = os.read(stdin_fd, 65536)
            except OSError:
                data = b""
            if not data:
                break  # the kernel is gone
            heard = time.monotonic()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                state.handle(line.decode("utf-8", "replace"))
        now = time.monotonic()  # at most one try per period, however many lines arrive
        if state.pending and state.mode is None and now >= next_pending:
            next_pending = now + RETRY_S
            state.remove_pending()
        if state.watched and state.mode is None and now >= next_watch:
            next_watch = now + LABEL_POLL_S
            state.remove_watched()
    if state.mode == "keep":
        log("kernel closed (keep): finishing what it asked for, then exiting")
        state.finish_requests(give_up_s)
        return
    if state.mode is None:
        log(f"kernel {state.kernel} gone; reaping in {grace_s:g} s")
        successor = watch.wait_successor(grace_s) if watch is not None else time.sleep(grace_s)
        if successor is not None:  # the kernel reconnected and started a new reaper
            log(f"reaper {successor} took over; finishing the removals asked for, then exiting")
            state.finish_requests(min(give_up_s, 60.0))
            return
    else:
        log("kernel closed (reap): reaping")
    state.reap(give_up_s)


def main(argv=None) -> int:
    import argparse
    import signal

    p = argparse.ArgumentParser(prog="reaper", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="unix:///var/run/docker.sock, tcp://H:P, or none (folders only)")
    p.add_argument("--kernel", required=True, help="the kernel's dockmagic.kernel label")
    p.add_argument("--claims", help="the claims folder on this host")
    p.add_argument("--glob", action="append", default=[],
                   help="absolute glob of folders to remove (repeatable); its fixed leading part "
                        "must be a folder only we may write to")
    p.add_argument("--tls", nargs="*", metavar="FILE",
                   help="tcp:// with TLS: no files (the system's CAs), or CA CERT KEY")
    p.add_argument("--grace", type=float, default=GRACE_S)
    p.add_argument("--give-up", type=float, default=GIVE_UP_S)
    p.add_argument("--log", help="this reaper's log file, removed when all went well")
    p.add_argument("--remote", action="store_true",
                   help="on an engine's host, over the kernel's SSH connection (see above)")
    p.add_argument("--silence", type=float, default=None,
                   help=f"seconds without a line that count as EOF (--remote: "
                        f"{REMOTE_SILENCE_S:g})")
    args = p.parse_args(argv)
    # A Ctrl-C or hangup meant for the kernel's terminal is not for us (we have our own session
    # when started by ensure_reaper; not necessarily over ssh).
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    watch = None
    if args.remote:
        watch, args.claims, args.log = _remote_setup(args.kernel, args.claims, args.log)
        if args.silence is None:
            args.silence = REMOTE_SILENCE_S
    state = ReaperState(EngineAPI(args.endpoint, None if args.tls is None else tuple(args.tls)),
                        args.kernel, args.claims, args.glob)
    log(f"watching kernel {args.kernel} on {args.endpoint}")
    try:
        serve(state, 0, args.grace, args.give_up, args.silence or None, watch)
    finally:
        if watch is not None:
            watch.leave()
    log("done")
    if args.log and not state.errors and not state.pending:
        try:
            os.unlink(args.log)
        except OSError:
            pass
    return 0


def _remote_setup(kernel: str, claims, log_path):
    """``--remote``: this host's claims folder, a log file in its runtime folder (stdout and
    stderr go there: the channel may be gone when we write), the watch file taken."""
    host = (parse_kernel_label(kernel) or ("",))[0]
    if host and host == socket.gethostname():
        UNJUDGED_HOSTS.add(host)  # a namesake of the kernel's host: its pids mean nothing here
    folder = subdir("reapers")
    claims = claims or claims_dir()
    if not log_path:
        log_path = os.path.join(folder, f"{kernel_tag(kernel)}-{os.getpid()}.log")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:  # where its log is, for the kernel's side; the channel may be closed already (the
        # kernel died while we started): writing there must not end us before we reap
        os.write(1, f"reaper {os.getpid()} on {socket.gethostname()}: log {log_path}\n".encode())
    except OSError:
        pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    watch = Watch(folder, kernel)
    watch.take()
    return watch, claims, log_path


# -- this user's runtime folder on this host (both sides) ---------------------------------------
def runtime_dir() -> str:
    """This user's private runtime folder on this host (claims, reaper logs): the same for
    every kernel of the user, private (0700, ours, no link), gone at reboot when on /dev/shm.
    Not the exchange root: containers get that one mounted."""
    import tempfile

    uid = os.getuid()
    for base in ("/dev/shm", tempfile.gettempdir()):
        path = os.path.join(base, f"dockmagic-run-{uid}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077:
            return path
    raise OSError("no private runtime folder: /dev/shm and the temp folder refuse one")


def subdir(name: str) -> str:
    path = os.path.join(runtime_dir(), name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return path


def claims_dir() -> str:
    return subdir("claims")


def _root_of(pattern: str) -> str:
    """The folder a glob pattern lives in: its leading components without glob characters."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"



if __name__ == "__main__":
    sys.exit(main())
