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
another host the same file runs over ssh, its source passed with ``-c`` (`remote_argv`), the ssh
channel's stdin being the pipe (not ``python3 - < reaper.py``: that stdin would end with the
source, and the reaper would take the EOF for the kernel's death).

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
#: How long the reaper keeps trying an engine that does not answer before it gives up.
GIVE_UP_S = 3600.0
RETRY_S = 2.0
#: How long an `rmlabel` request is watched, and how often its label is looked up meanwhile.
LABEL_WATCH_S = 30.0
LABEL_POLL_S = 0.5
_CALL_TIMEOUT_S = 10.0
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


def kernel_alive(label: str, hostname=None):
    """Whether the kernel a `dockmagic.kernel` label names still runs: True / False, or None
    when this host cannot tell (another host, or a malformed label)."""
    parsed = parse_kernel_label(label)
    if parsed is None:
        return None
    host, pid, start = parsed
    if host != (hostname or socket.gethostname()):
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
        if url.startswith("unix://"):
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

        filters = quote(json.dumps({"label": [label]}))
        status, body = self.request("GET", f"/containers/json?all=1&filters={filters}")
        if status != 200:
            raise EngineDown(f"{self.url}: listing containers gave HTTP {status}: "
                             f"{body[:200]!r}")
        return [(c["Id"], c.get("Labels") or {}) for c in json.loads(body)]

    def remove(self, cid: str) -> bool:
        """Force-remove CID with its anonymous volumes (as `--rm` does). True when it is gone."""
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


def serve(state: ReaperState, stdin_fd: int = 0, grace_s: float = GRACE_S,
          give_up_s: float = GIVE_UP_S):
    """Read requests until EOF (or `close`); meanwhile retry pending removals."""
    buf = b""
    next_pending = next_watch = 0.0
    while state.mode is None:
        timeout = LABEL_POLL_S if state.watched else RETRY_S if state.pending else None
        try:
            ready, _, _ = select.select([stdin_fd], [], [], timeout)
        except InterruptedError:
            continue
        if ready:
            try:
                data = os.read(stdin_fd, 65536)
            except OSError:
                data = b""
            if not data:
                break  # the kernel is gone
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
        time.sleep(grace_s)
    else:
        log("kernel closed (reap): reaping")
    state.reap(give_up_s)


def main(argv=None) -> int:
    import argparse
    import signal

    p = argparse.ArgumentParser(prog="reaper", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="unix:///var/run/docker.sock, tcp://H:P")
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
    args = p.parse_args(argv)
    # A Ctrl-C or hangup meant for the kernel's terminal is not for us (we have our own session
    # when started by ensure_reaper; not necessarily over ssh).
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    state = ReaperState(EngineAPI(args.endpoint, None if args.tls is None else tuple(args.tls)),
                        args.kernel, args.claims, args.glob)
    log(f"watching kernel {args.kernel} on {args.endpoint}")
    serve(state, 0, args.grace, args.give_up)
    log("done")
    if args.log and not state.errors and not state.pending:
        try:
            os.unlink(args.log)
        except OSError:
            pass
    return 0


# -- the kernel's side -----------------------------------------------------------------------------
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


def _subdir(name: str) -> str:
    path = os.path.join(runtime_dir(), name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return path


def claims_dir() -> str:
    return _subdir("claims")


def _root_of(pattern: str) -> str:
    """The folder a glob pattern lives in: its leading components without glob characters."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


class Reaper:
    """The kernel's handle on one reaper process (see the module docstring)."""

    def __init__(self, endpoint_url: str, kernel_id: str, proc, log_path: Optional[str] = None):
        self.endpoint_url, self.kernel_id = endpoint_url, kernel_id
        self.proc = proc
        self.log_path = log_path
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self._closed and self.proc.poll() is None

    def send(self, line: str) -> bool:
        """One request; False when the reaper is gone (it is then started anew on next use)."""
        with self._lock:
            if self._closed:
                return False
            try:
                self.proc.stdin.write(line.encode("utf-8") + b"\n")
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def track(self, path: str):
        self.send(f"track {path}")

    def untrack(self, path: str):
        self.send(f"untrack {path}")

    def remove_labelled(self, label: str):
        """For a while (LABEL_WATCH_S), remove containers labelled LABEL (`KEY=VALUE`) as they
        appear: a create interrupted in flight may finish on the engine after the kernel looked
        for it (the engine's client-side create token)."""
        self.send(f"rmlabel {label}")

    def remove_with(self, container_id: str, path: str):
        """The folder PATH (e.g. a `--rm` session's exchange folder) is removed when the reaper
        removes CONTAINER_ID (its full id), and only then: a session another kernel claimed keeps
        its folder too."""
        self.send(f"owns {container_id} {path}")

    def remove_later(self, container_id: str):
        """The kernel could not remove CONTAINER_ID (engine away): the reaper removes it as soon
        as the engine answers again, while the kernel goes on."""
        self.send(f"rm {container_id}")

    def close(self, reap: bool = False, wait: float = 0.0):
        """Clean shutdown. Not ``reap``: the reaper finishes the removals it was asked for and
        exits. ``reap``: it removes this kernel's reapable containers and folders now, as if the
        kernel had died; only for a process about to exit that made no clean-up of its own (it
        would remove containers the process makes afterwards). ``wait``: seconds to wait."""
        self.send(f"close {'reap' if reap else 'keep'}")
        with self._lock:
            self._closed = True
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if _REAPERS.get(self.endpoint_url) is self:
            _REAPERS.pop(self.endpoint_url, None)
        if wait:
            try:
                self.proc.wait(wait)
            except Exception:
                pass
        self.proc.poll()


_REAPERS: dict = {}
_TRACKED: set = set()
_GLOBS: set = set()
_start_lock = threading.Lock()


def ensure_reaper(endpoint_url: str, kernel_id: str, cleanup_globs=(), *,
                  grace_s: float = GRACE_S, tls=None) -> Optional[Reaper]:
    """This kernel's reaper for the engine at ENDPOINT_URL, started on first use (a Popen, nothing
    waited on); later calls return it (one dict lookup and a waitpid). ``cleanup_globs``: absolute
    glob patterns of this kernel's exchange folders, each under a folder only we may write to.
    ``tls``: (ca, cert, key) file names for a tcp:// endpoint with TLS.

    None for an endpoint this host cannot reach with the stdlib (ssh://, npipe://): such an
    engine needs its reaper started on its own host (`remote_argv`, over ssh)."""
    reaper = _REAPERS.get(endpoint_url)
    if reaper is not None and reaper.alive():
        return reaper
    try:
        EngineAPI(endpoint_url, tls)
    except ValueError:
        return None
    with _start_lock:
        reaper = _REAPERS.get(endpoint_url)
        if reaper is not None and reaper.alive():
            return reaper
        try:
            reaper = start_reaper(endpoint_url, kernel_id, cleanup_globs, grace_s=grace_s, tls=tls)
        except OSError:
            return None  # a safety net must never fail the cell that asked for it
        _REAPERS[endpoint_url] = reaper
    for pattern in sorted(_GLOBS):
        reaper.send(f"glob {pattern}")
    for path in sorted(_TRACKED):
        reaper.track(path)
    try:
        from .. import kernel  # the process-wide shutdown owner (absent when run as a script)
        kernel.on_shutdown(close_all)
    except ImportError:
        pass
    return reaper


def script_args(endpoint_url: str, kernel_id: str, cleanup_globs=(), *,
                grace_s: float = GRACE_S, tls=None, claims=None, log_path=None) -> list:
    """The reaper's command-line arguments (after the interpreter and the script)."""
    args = ["--endpoint", endpoint_url, "--kernel", kernel_id, "--grace", repr(grace_s)]
    if claims:
        args += ["--claims", claims]
    for g in cleanup_globs:
        args += ["--glob", g]
    if tls is not None:
        args += ["--tls", *tls]
    if log_path:
        args += ["--log", log_path]
    return args


def remote_argv(endpoint_url: str, kernel_id: str, cleanup_globs=(), *, python: str = "python3",
                grace_s: float = GRACE_S, claims=None) -> list:
    """The command that runs a reaper on another host, e.g. ``ssh HOST -- shlex.join(ARGV)``
    with stdin a pipe kept open by the kernel (``Reaper(url, kernel, that_process)``)."""
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        source = f.read()
    return [python, "-I", "-S", "-c", source] + script_args(
        endpoint_url, kernel_id, cleanup_globs, grace_s=grace_s, claims=claims)


def start_reaper(endpoint_url: str, kernel_id: str, cleanup_globs=(), *, grace_s: float = GRACE_S,
                 tls=None) -> Reaper:
    """Start a reaper process for KERNEL_ID on ENDPOINT_URL on this host (`ensure_reaper` keeps
    one per endpoint; tests start their own): a Popen, nothing waited on."""
    import subprocess

    try:
        claims, logs = claims_dir(), _subdir("reapers")
        log_path = os.path.join(logs, f"{os.getpid()}-{abs(hash(endpoint_url)):x}.log")
    except OSError:
        claims, log_path = None, None
    argv = [sys.executable, "-I", "-S", os.path.abspath(__file__)] + script_args(
        endpoint_url, kernel_id, cleanup_globs, grace_s=grace_s, tls=tls, claims=claims,
        log_path=log_path)
    with open(log_path or os.devnull, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd="/")
    return Reaper(endpoint_url, kernel_id, proc, log_path)


def track(paths):
    """Exchange folders this kernel made: every reaper removes them if the kernel dies."""
    for path in paths:
        _TRACKED.add(path)
        for reaper in list(_REAPERS.values()):
            reaper.track(path)


def add_globs(patterns):
    """Folders of this kernel, by pattern (absolute; e.g. its one-shot exchange folders, named
    after the kernel): every reaper removes what matches if the kernel dies. Cheap to repeat."""
    for pattern in patterns:
        if pattern not in _GLOBS:
            _GLOBS.add(pattern)
            for reaper in list(_REAPERS.values()):
                reaper.send(f"glob {pattern}")


def untrack(paths):
    """Exchange folders this kernel removed itself."""
    for path in paths:
        _TRACKED.discard(path)
        for reaper in list(_REAPERS.values()):
            reaper.untrack(path)


def reaper_for(endpoint_url: str):
    """The running reaper for ENDPOINT_URL, or None."""
    reaper = _REAPERS.get(endpoint_url)
    return reaper if reaper is not None and reaper.alive() else None


def close_all(reap: bool = False):
    """Close every reaper of this kernel (unload, process exit). Not ``reap``: the kernel's own
    shutdown removed what it owns, and after an unload the process may go on making containers
    with the same kernel label; the reapers finish what they were asked to remove, then exit."""
    for reaper in list(_REAPERS.values()):
        reaper.close(reap=reap)


if __name__ == "__main__":
    sys.exit(main())
