"""One persistent OpenSSH connection per remote engine.

The system `ssh` (so ~/.ssh/config, ProxyJump, agents and keys all apply) runs as a ControlMaster
with `-N`, forwarding the remote Docker socket to a private local unix socket; the engine's
client talks to that socket as to a local engine, so every API call is one request on a
connection that is already up (no handshake per call, unlike docker-py's ssh transports).
Remote commands (`id`, `nvidia-smi`, `mkdir`) and rsync reuse the same connection through its
ControlPath.

The master's output goes to a log file, never to a pipe: a ControlMaster started from a command
whose output is captured keeps that pipe open, and the caller hangs. It needs nothing on the
remote host but sshd (and rsync for file sync): no paramiko, no docker CLI there.

A watcher thread notices when the connection drops and reconnects; `ensure()` waits for it.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Optional

from . import errors as rerrors
from .urls import Endpoint

#: An unreachable host is reported within this many seconds.
CONNECT_TIMEOUT_S = 5.0
#: Keepalives: a dead link is noticed after about interval * count seconds.
ALIVE_INTERVAL_S = 3
ALIVE_COUNT = 2
_PR_SET_PDEATHSIG = 1


def _die_with_parent():  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class _Spawner:
    """Starts the masters from one thread that lives as long as the kernel.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process; a
    master started from a short-lived thread (the reconnect watcher, a panel refresh) would be
    killed with it. One long-lived thread forks them all, so they end exactly with the kernel
    (SIGKILLed kernels included)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs = []
        self._cv = threading.Condition(self._lock)
        self._thread = None

    def __call__(self, argv, **kw) -> subprocess.Popen:
        done = threading.Event()
        box = {}
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dockmagic-ssh-spawner",
                                                daemon=True)
                self._thread.start()
            self._jobs.append((argv, kw, box, done))
            self._cv.notify()
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["proc"]

    def _run(self):
        while True:
            with self._cv:
                while not self._jobs:
                    self._cv.wait()
                argv, kw, box, done = self._jobs.pop(0)
            try:
                box["proc"] = subprocess.Popen(argv, **kw)
            except Exception as exc:  # handed to the caller
                box["error"] = exc
            done.set()


_spawn = _Spawner()


def _runtime_dir() -> str:
    # Unix socket paths are limited to ~107 bytes: keep the private folder short.
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or len(base) > 40 or not os.access(base, os.W_OK):
        base = tempfile.gettempdir()
    return tempfile.mkdtemp(prefix="dm-ssh-", dir=base)  # 0700


class SSHLink:
    """The SSH connection of one engine; `base_url` is the forwarded local Docker socket."""

    def __init__(self, endpoint: Endpoint, ssh: str = "ssh"):
        if endpoint.kind != "ssh":
            raise ValueError(f"engine {endpoint.name} is not an ssh:// engine")
        self.endpoint = endpoint
        self.name = endpoint.name
        self.ssh = ssh
        self.dir = _runtime_dir()
        self.socket_path = os.path.join(self.dir, "docker.sock")
        self.control_path = os.path.join(self.dir, "cm")
        self.log_path = os.path.join(self.dir, "ssh.log")
        self.generation = 0  # +1 on every (re)connect: a cell notices its link dropped
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.RLock()
        self._closed = False
        self._up = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self.last_error: Optional[Exception] = None
        self._remote_info: Optional[dict] = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return "unix://" + self.socket_path

    @property
    def target(self) -> str:
        ep = self.endpoint
        return ep.ssh_target + (f":{ep.port}" if ep.port else "")

    @property
    def check_command(self) -> str:
        """The command a user runs to check the connection by hand."""
        ep = self.endpoint
        return shlex.join(["ssh", *(["-p", str(ep.port)] if ep.port else []), ep.ssh_target, "true"])

    def _dest_args(self) -> list:
        ep = self.endpoint
        args = ["-p", str(ep.port)] if ep.port else []
        if ep.user:
            args += ["-l", ep.user]
        return args + [ep.host]

    def _common_opts(self) -> list:
        return ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(CONNECT_TIMEOUT_S)}",
                "-o", f"ControlPath={self.control_path}"]

    def ssh_command(self) -> list:
        """`ssh` through the shared connection (for rsync -e and remote commands)."""
        return [self.ssh, *self._common_opts(), "-o", "ControlMaster=no"] + \
            (["-p", str(self.endpoint.port)] if self.endpoint.port else []) + \
            (["-l", self.endpoint.user] if self.endpoint.user else [])

    def rsync_rsh(self) -> str:
        return " ".join(shlex.quote(a) for a in self.ssh_command())

    # -- connection --------------------------------------------------------------------------
    def alive(self) -> bool:
        p = self._proc
        return p is not None and p.poll() is None and self._up.is_set()

    def ensure(self, timeout: float = CONNECT_TIMEOUT_S + 1) -> "SSHLink":
        """Connected, or one error naming the engine and the fix."""
        if self.alive():
            return self
        with self._lock:
            if self.alive():
                return self
            if self._closed:
                raise rerrors.ConnectionDropped(f"engine {self.name}: its connection was closed")
            self._connect(timeout)
            return self

    def _connect(self, timeout: float):
        self._kill()
        for path in (self.socket_path, self.control_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        argv = [self.ssh, "-N", *self._common_opts(),
                "-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
                "-o", "StreamLocalBindMask=0177",
                "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
                "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
                "-L", f"{self.socket_path}:{self.endpoint.remote_socket}",
                *self._dest_args()]
        if shutil.which(self.ssh) is None:
            raise rerrors.EngineUnreachable(
                f"engine {self.name}: no `{self.ssh}` on this machine; install OpenSSH's client "
                "(`sudo apt-get install openssh-client`)")
        log = open(self.log_path, "ab")
        try:
            # The output goes to a log file: a pipe would be held open by the master and hang us.
            # The master ends with the kernel (PDEATHSIG, see _spawn) and ignores the kernel's
            # SIGINT (a session of its own).
            self._proc = _spawn(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                close_fds=True, start_new_session=True,
                                preexec_fn=_die_with_parent)
        finally:
            log.close()
        start_pos = self._log_size_before(argv)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if os.path.exists(self.socket_path) and os.path.exists(self.control_path):
                self._up.set()
                self.generation += 1
                self._start_watcher()
                self.last_error = None
                return
            time.sleep(0.01)
        self._kill()
        err = rerrors.classify_ssh_failure(self.name, self.target, self._log_tail(start_pos),
                                           CONNECT_TIMEOUT_S, self.check_command)
        self.last_error = err
        raise err

    def _log_size_before(self, argv) -> int:
        # Mark where this attempt's lines start (the log accumulates across reconnects).
        try:
            with open(self.log_path, "ab") as f:
                f.write(f"--- {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n".encode())
                return f.tell()
        except OSError:
            return 0

    def _log_tail(self, start: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""

    def _start_watcher(self):
        proc = self._proc

        def watch():
            proc.wait()
            self._up.clear()
            if self._closed or proc is not self._proc:
                return
            # The link dropped: bring it back, a few times, quietly (the next call says why if
            # it cannot come back).
            for delay in (0.0, 0.5, 1.0, 2.0):
                time.sleep(delay)
                if self._closed:
                    return
                try:
                    with self._lock:
                        if self._proc is proc:
                            self._connect(CONNECT_TIMEOUT_S + 1)
                    return
                except rerrors.RemoteEngineError:
                    continue

        self._watcher = threading.Thread(target=watch, name=f"dockmagic-ssh-{self.name}",
                                         daemon=True)
        self._watcher.start()

    def wait_up(self, timeout: float = CONNECT_TIMEOUT_S + 2) -> bool:
        """After a drop: wait for the watcher to reconnect (or connect here)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive():
                return True
            time.sleep(0.05)
        try:
            self.ensure()
            return True
        except rerrors.RemoteEngineError:
            return False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def _kill(self):
        p = self._proc
        self._up.clear()
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self):
        self._closed = True
        with self._lock:
            self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- over the connection -----------------------------------------------------------------
    def run(self, command: str, *, input: Optional[bytes] = None, timeout: float = 30.0,
            check: bool = False) -> subprocess.CompletedProcess:
        """A shell command on the remote host, over the shared connection; output captured.

        (A child of the master's ControlPath with ControlMaster=no never becomes a master, so
        capturing its output is safe.)"""
        self.ensure()
        argv = self.ssh_command() + [self.endpoint.host, command]
        try:
            res = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=timeout,
                                 stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise rerrors.EngineUnreachable(
                f"engine {self.name}: `{command}` on {self.target} took over {timeout:g} s") from None
        if res.returncode == 255:  # ssh's own failure, not the command's
            raise rerrors.classify_ssh_failure(self.name, self.target,
                                               res.stderr.decode("utf-8", "replace"),
                                               CONNECT_TIMEOUT_S, self.check_command)
        if check and res.returncode != 0:
            raise rerrors.RemoteEngineError(
                f"engine {self.name}: `{command}` on {self.target} failed: "
                + (res.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1])
        return res

    def remote_info(self) -> dict:
        """uid, gid, HOME of the SSH user there, and whether rsync is there (asked once)."""
        if self._remote_info is None:
            res = self.run('id -u; id -g; printf "%s\\n" "$HOME"; '
                           'command -v rsync >/dev/null && echo rsync || echo no-rsync; id -un',
                           check=True)
            lines = res.stdout.decode().splitlines()
            if len(lines) < 5:
                raise rerrors.RemoteEngineError(
                    f"engine {self.name}: unexpected answer from {self.target}: {lines!r}")
            self._remote_info = {"uid": int(lines[0]), "gid": int(lines[1]), "home": lines[2],
                                 "rsync": lines[3] == "rsync", "user": lines[4]}
        return self._remote_info

    def ping(self, timeout: float = CONNECT_TIMEOUT_S) -> float:
        """Docker `_ping` through the forwarded socket; the round-trip time in seconds of one
        request on a connection already open (what an API call on a warm client costs).

        (A health check of the tunnel itself; every Docker API call goes through the Engine.)"""
        self.ensure()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.socket_path)
            times = []
            for _ in range(2):  # the first also opens the SSH channel
                t0 = time.perf_counter()
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                head = _read_response(s)
                times.append(time.perf_counter() - t0)
        except (OSError, ValueError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            raise rerrors.no_docker_there(self.name, self.target, self.endpoint.remote_socket,
                                          detail) from None
        finally:
            s.close()
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise rerrors.no_docker_there(self.name, self.target, self.endpoint.remote_socket,
                                          head.split(b"\r\n", 1)[0].decode("latin-1"))
        return times[-1]


def _read_response(s) -> bytes:
    """One HTTP response with a Content-Length body (docker's _ping); returns its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = s.recv(4096)
        if not piece:
            raise ValueError("the forwarded socket closed without an answer")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        piece = s.recv(4096)
        if not piece:
            break
        body += piece
    return head


_LINKS: dict = {}
_LINKS_LOCK = threading.Lock()


def link_for(endpoint: Endpoint) -> SSHLink:
    """The one link of an engine (made on first use, shared by everything in this kernel)."""
    with _LINKS_LOCK:
        link = _LINKS.get(endpoint.name)
        if link is not None and (link.endpoint != endpoint or link.closed):
            _LINKS.pop(endpoint.name).close()
            link = None
        if link is None:
            link = _LINKS[endpoint.name] = SSHLink(endpoint)
        return link


def drop_link(name: str):
    with _LINKS_LOCK:
        link = _LINKS.pop(name, None)
    if link is not None:
        link.close()


def close_all():
    with _LINKS_LOCK:
        links = list(_LINKS.values())
        _LINKS.clear()
    for link in links:
        link.close()

# (No atexit hook here: at exit the masters end with the process (PDEATHSIG), and the magics'
# shutdown hook closes the engines -- after spares and sessions were removed through them.)
