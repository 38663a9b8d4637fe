"""The only docker SDK (docker-py) user: create, stream, wait, interrupt, clean up.

A one-shot cell is the `docker run -i --rm` dance done with as few engine round trips as the CLI
makes: create -> attach (stdin, stdout, stderr on one hijacked socket) -> start -> send the cell
body on stdin and half-close -> read multiplexed frames until EOF -> wait -> remove. The body
never becomes part of a shell command line, and a read-only root filesystem or an image without
/tmp does not matter.
"""
from __future__ import annotations

import codecs
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from . import errors

_client = None
_client_lock = threading.Lock()

#: How long an interrupted container gets after SIGINT before it is killed.
INTERRUPT_GRACE_S = 2.0
_STDERR_TAIL_BYTES = 4096
_READ_SIZE = 1 << 18


def get_client():
    """The shared docker SDK client, made on first use (loading the extension touches no engine)."""
    global _client
    if _client is not None:
        return _client
    with _client_lock:
        if _client is None:
            import docker  # the one lazy import of the SDK

            try:
                _client = docker.from_env(timeout=600)
            except docker.errors.DockerException as exc:
                raise errors.EngineUnavailable(errors.describe_no_engine(short_reason(exc))) from None
    return _client


def reset_client():
    """Forget the cached client (after the engine restarted, or in tests)."""
    global _client
    with _client_lock:
        if _client is not None:
            try:
                _client.close()
            except Exception:
                pass
        _client = None


def short_reason(exc) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    if "Connection aborted" in text or "FileNotFoundError" in text or "No such file" in text:
        return "the socket is missing or refuses connections"
    if "Permission denied" in text:
        return "permission denied on the socket (add yourself to the docker group)"
    return text.splitlines()[0][:200] if text else type(exc).__name__


@dataclass(frozen=True)
class CellResult:
    exit_code: int
    name: str
    oom: bool = False
    stderr_tail: str = ""


class OutputSink:
    """Incremental UTF-8 decoding per stream, one write and flush per chunk."""

    def __init__(self, stream, keep_tail: bool = False, text_filter=None):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tail = deque() if keep_tail else None
        self.tail_len = 0
        self.text_filter = text_filter

    def write(self, data: bytes, final: bool = False):
        text = self.decoder.decode(data, final)
        if self.tail is not None and data:
            self.tail.append(data)
            self.tail_len += len(data)
            while self.tail_len - len(self.tail[0]) >= _STDERR_TAIL_BYTES:
                self.tail_len -= len(self.tail.popleft())
        if text and self.text_filter is not None:
            text = self.text_filter(text)
        if text:
            self.stream.write(text)
            self.stream.flush()

    def tail_text(self) -> str:
        if not self.tail:
            return ""
        return b"".join(self.tail)[-_STDERR_TAIL_BYTES:].decode("utf-8", "replace")


def raw_socket(sock):
    return getattr(sock, "_sock", sock)


_FRAME_HEADER = struct.Struct(">BxxxL")


class FrameSplitter:
    """docker's multiplexed stream (8-byte header: stream, 0, 0, 0, size), fed in pieces as
    they arrive. Consecutive frames of one stream within a piece are handed over as one chunk,
    so a chatty program costs one decode and one write per read, not per line."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes, on_frame: Callable[[int, bytes], None]):
        if self.buf:  # a frame was cut off by the last piece
            self.buf += data
            data = self.buf
        n, pos = len(data), 0
        run_kind, run = None, []
        with memoryview(data) as view:
            while n - pos >= 8:
                kind, size = _FRAME_HEADER.unpack_from(data, pos)
                if n - pos - 8 < size:
                    break
                if kind != run_kind and run:
                    on_frame(run_kind, b"".join(run))
                    run = []
                run_kind = kind
                run.append(view[pos + 8:pos + 8 + size].tobytes())
                pos += 8 + size
        if run:
            on_frame(run_kind, b"".join(run))
        if data is self.buf:
            del self.buf[:pos]
        elif pos < n:
            self.buf = bytearray(data[pos:])


def read_frames(sock, on_frame: Callable[[int, bytes], None]):
    """Read docker's multiplexed attach stream from SOCK to EOF (see FrameSplitter)."""
    raw = raw_socket(sock)
    frames = FrameSplitter()
    while True:
        chunk = raw.recv(_READ_SIZE)
        if not chunk:
            break
        frames.feed(chunk, on_frame)


def create_container(client, kwargs: dict, on_pull=None) -> str:
    """Create a container from translator kwargs with the low-level API (one round trip)."""
    import docker
    from docker.models.containers import _create_container_args

    kw = dict(kwargs)
    extra = kw.pop("_host_config_extra", None)  # fields docker-py has no kwarg for
    kw["version"] = client.api._version
    args = _create_container_args(kw)
    if extra:
        args["host_config"].update(extra)
    try:
        return client.api.create_container(**args)["Id"]
    except docker.errors.ImageNotFound:
        pull_image(kwargs["image"], on_progress=on_pull)
        return client.api.create_container(**args)["Id"]


def pull_image(image: str, on_progress: Optional[Callable[[str], None]] = None):
    """Pull IMAGE, reporting progress lines; a failure says the image is neither local nor pullable."""
    import docker

    client = get_client()
    repo, tag = _split_tag(image)
    say = on_progress or (lambda line: None)
    say(f"{image} is not local; pulling it from {errors.registry_of(image)} ...")
    last = {}
    try:
        for event in client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise errors.ImageUnavailable(errors.describe_pull_failure(image, event["error"]))
            status, layer = event.get("status", ""), event.get("id", "")
            if last.get(layer) != status:  # one line per layer state change, not per byte
                last[layer] = status
                say(f"  {layer + ': ' if layer else ''}{status}")
    except docker.errors.APIError as exc:
        raise errors.ImageUnavailable(
            errors.describe_pull_failure(image, short_reason(exc))) from None
    except docker.errors.DockerException as exc:
        raise errors.ImageUnavailable(
            errors.describe_pull_failure(image, short_reason(exc))) from None


def _split_tag(image: str):
    if "@" in image:
        return image, None
    repo, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return image, "latest"


def api_error(exc, image: str, wants_gpus: bool):
    text = str(getattr(exc, "explanation", None) or exc)
    return errors.EngineError(errors.describe_api_error(text, image, wants_gpus))


def run_oneshot(kwargs: dict, body: bytes, *, stdout=None, stderr=None, wants_gpus: bool = False,
                on_pull=None, on_interrupt=None, remove: bool = True) -> CellResult:
    """Run one cell: the container gets BODY on stdin and is removed afterwards, whatever happens.

    ``kwargs`` come from ``RunSpec.to_create_kwargs()`` (plus dockmagic's labels). Output is
    streamed to ``stdout``/``stderr`` as it arrives. KeyboardInterrupt stops the container
    (SIGINT, a short grace, then SIGKILL), removes it and is re-raised.
    """
    import docker

    client = get_client()
    api = client.api
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    image = kwargs.get("image", "")
    kw = dict(kwargs, stdin_open=True, detach=False, tty=False, auto_remove=False)
    cid = None
    sock = None
    try:
        try:
            cid = create_container(client, kw, on_pull)
        except docker.errors.APIError as exc:
            raise api_error(exc, image, wants_gpus) from None
        sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        try:
            api.start(cid)
        except docker.errors.APIError as exc:
            raise api_error(exc, image, wants_gpus) from None
        return finish_cell(api, cid, sock, body, stdout=stdout, stderr=stderr,
                           on_interrupt=on_interrupt)
    finally:
        if sock is not None:
            try:
                sock.close()
            except Exception:
                pass
        if cid is not None and remove:
            remove_quietly(api, cid)


def finish_cell(api, cid: str, sock, body: bytes, *, stdout=None, stderr=None, on_interrupt=None,
                intercept: Optional[Callable[[int, bytes], bool]] = None) -> CellResult:
    """A one-shot cell once its container runs with SOCK attached: BODY on stdin, half-close,
    stdout/stderr streamed until EOF, wait. ``intercept(kind, data)`` may claim a chunk before
    it is shown. KeyboardInterrupt stops the container (SIGINT, grace, SIGKILL), is re-raised."""
    raw = raw_socket(sock)
    if body:
        raw.sendall(body)
    raw.shutdown(socket.SHUT_WR)
    out = OutputSink(stdout or sys.stdout)
    err = OutputSink(stderr or sys.stderr, keep_tail=True)

    def on_frame(kind, data):
        if intercept is None or not intercept(kind, data):
            (err if kind == 2 else out).write(data)

    try:
        read_frames(sock, on_frame)
        out.write(b"", final=True)
        err.write(b"", final=True)
    except KeyboardInterrupt:
        interrupt_container(api, cid)
        if on_interrupt:
            on_interrupt(cid)
        raise
    code = api.wait(cid)["StatusCode"]
    oom = code == 137 and bool(api.inspect_container(cid)["State"].get("OOMKilled"))
    return CellResult(code, cid[:12], oom, err.tail_text())


def interrupt_container(api, cid: str):
    """SIGINT, a short grace, then SIGKILL: what Ctrl-C in `docker run` amounts to."""
    try:
        api.kill(cid, signal="SIGINT")
        api.wait(cid, timeout=INTERRUPT_GRACE_S)
    except Exception:
        try:
            api.kill(cid)
        except Exception:
            pass


def remove_quietly(api, cid: str):
    try:
        api.remove_container(cid, force=True)
    except Exception as exc:  # already gone (404) or going (409) are the expected cases
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is None and _remove_later(cid):
            return  # the engine is away: the reaper removes it when it answers again
        if status not in (404, 409):
            print(f"dockmagic: could not remove container {cid[:12]}: {short_reason(exc)}",
                  file=sys.stderr)


def _remove_later(cid: str) -> bool:
    # reaper (interim, until the engine owns removal): hand it to this endpoint's reaper.
    import os
    from .engine import reaper
    r = reaper.reaper_for(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    return r is not None and r.send(f"rm {cid}")


def run_detached(kwargs: dict, body: bytes, *, wants_gpus: bool = False, on_pull=None) -> str:
    """Start a background container that reads BODY on stdin; returns its name at once."""
    import docker

    client = get_client()
    api = client.api
    image = kwargs.get("image", "")
    kw = dict(kwargs, stdin_open=True, detach=False, tty=False)
    cid = None
    try:
        cid = create_container(client, kw, on_pull)
        sock = api.attach_socket(cid, params={"stdin": 1, "stream": 1})
        api.start(cid)
        raw = raw_socket(sock)
        raw.sendall(body)
        raw.shutdown(socket.SHUT_WR)
        sock.close()
        name = api.inspect_container(cid)["Name"].lstrip("/")
        cid = None  # started: it is the user's now
        return name
    except docker.errors.APIError as exc:
        raise api_error(exc, image, wants_gpus) from None
    finally:
        if cid is not None:
            remove_quietly(api, cid)
