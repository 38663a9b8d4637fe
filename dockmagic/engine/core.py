"""`Engine`: one Docker engine, reached at one `Endpoint`. The only caller of docker-py.

Every call is mapped to dockmagic's error tree (``sdkerrors.mapped``) and names the engine.
Containers go in as `RunSpec`s: ``to_create_kwargs`` is called here, once, at create. Each
container gets a client-side token label before create, so a create interrupted at any moment
(the engine may have made the container while the client was unwinding) is found and removed.
Removals that fail because the engine is gone are kept and retried when it answers again.
"""
from __future__ import annotations

import secrets
import socket
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence

from .. import errors, labels
from . import sdk
from .endpoint import Endpoint, resolve_endpoint
from .frames import HEADER_SIZE, STDERR, STDOUT, parse_header, read_frames, read_frames_until
from .sdkerrors import is_engine_failure, map_error, mapped

OnOutput = Callable[[int, bytes], None]  # (1 = stdout | 2 = stderr, raw bytes)

#: Seconds an engine call may take before it fails with `EngineTimeout` (pulls and builds
#: stream, so this bounds the silence between two events, not the whole call).
DEFAULT_TIMEOUT_S = 600.0


class Attached:
    """One hijacked attach connection: stdin in, the multiplexed stdout/stderr out.

    Over TLS (a tcp:// engine with --tls*) stdin has a connection of its own (``stdin``):
    a TLS connection cannot be half-closed from Python (`SSLSocket.shutdown` drops the TLS
    state, and `unwrap` fails on output that arrives after its close_notify), so the end of
    stdin is that connection's close, which ends the container's stdin (StdinOnce) while the
    output goes on arriving on ``raw``."""

    __slots__ = ("_wrapper", "raw", "_stdin_wrapper", "_stdin")

    def __init__(self, wrapper, stdin_wrapper=None):
        self._wrapper = wrapper
        self.raw = sdk.raw_socket(wrapper)
        self._stdin_wrapper = stdin_wrapper
        self._stdin = sdk.raw_socket(stdin_wrapper) if stdin_wrapper is not None else self.raw

    def send(self, data: bytes):
        self._stdin.sendall(data)

    def close_stdin(self):
        if self._stdin_wrapper is None:
            self.raw.shutdown(socket.SHUT_WR)
            return
        try:  # a TCP FIN, now (close() waits for the HTTP response's file to let go)
            self._stdin.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for closing in (self._stdin_wrapper, self._stdin):
            try:
                closing.close()
            except Exception:
                pass

    def read_frames(self, on_frame: OnOutput, frames=None):
        read_frames(self.raw, on_frame, frames)

    def read_frames_until(self, on_frame: OnOutput, frames, deadline: float) -> bool:
        """Go on reading (after an interrupt) until EOF (True) or DEADLINE (False)."""
        return read_frames_until(self.raw, on_frame, frames, deadline)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self):
        if self._stdin_wrapper is not None:
            self.close_stdin()
        try:
            self._wrapper.close()
        except Exception:
            pass
        try:
            self.raw.close()
        except Exception:
            pass


class Waiting:
    """A wait the engine has registered (`Engine.begin_wait`); `result()` is the exit status."""

    __slots__ = ("engine", "cid", "_res")

    def __init__(self, engine, cid: str, res):
        self.engine, self.cid, self._res = engine, cid, res

    def result(self) -> int:
        with mapped(self.engine.where, f"wait {self.cid[:12]}"):
            answer = self._res.json()
        error = (answer.get("Error") or {}).get("Message")
        if error:
            raise errors.EngineError(f"waiting for container {self.cid[:12]} on "
                                        f"{self.engine.where}: {error}")
        return int(answer["StatusCode"])

    def close(self):
        try:
            self._res.close()
        except Exception:
            pass


class Engine:
    """One Docker engine. Made from an `Endpoint` (default: docker's own rules); passed to what
    needs it. Thread-safe: docker-py's client keeps a connection pool."""

    def __init__(self, endpoint: Optional[Endpoint] = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.endpoint = endpoint or resolve_endpoint()
        self.timeout = timeout
        self._api = None
        self._lock = threading.Lock()
        self._pending = set()   # container ids whose removal failed while the engine was gone
        self._inspecting: Dict[str, Future] = {}  # image inspects in flight, by reference
        self._inspect_lock = threading.Lock()
        self._reaper = None
        self.reaper_globs: tuple = ()   # exchange folders the reaper removes after a crash

    def __repr__(self):
        return f"<Engine {self.endpoint.name} {self.endpoint.url}>"

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def url(self) -> str:
        """The endpoint as the user named it (what records and tables show)."""
        return self.endpoint.url

    @property
    def where(self) -> str:
        """`URL (engine NAME; SOURCE)`: how every message names this engine."""
        return self.endpoint.describe()

    # -- the client ------------------------------------------------------------------------
    @property
    def api(self):
        """docker-py's low-level client, made on first use."""
        api = self._api
        if api is not None:
            return api
        with self._lock:
            if self._api is None:
                try:
                    self._api = sdk.make_api_client(self.endpoint, self.timeout)
                except Exception as exc:
                    raise map_error(exc, self.where) from None
            return self._api

    def close(self):
        if self._reaper is not None:
            try:
                self._reaper.close(reap=False)
            except Exception:
                pass
            self._reaper = None
        api, self._api = self._api, None  # not under the lock: a client being made (an
        if api is not None:               # engine that does not answer) must not hold shutdown
            try:
                api.close()
            except Exception:
                pass

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` (a method of `api`), its failures as one dockmagic line."""
        with mapped(self.where, what):
            return fn(*args, **kwargs)

    def ping(self) -> bool:
        return bool(self.call("ping", self.api.ping))

    def info(self) -> dict:
        return self.call("info", self.api.info)

    def version(self) -> dict:
        return self.call("version", self.api.version)

    # -- containers ------------------------------------------------------------------------
    def create(self, spec, *, on_pull: Optional[Callable[[str], None]] = None,
               on_pull_event: Optional[Callable[[dict], None]] = None,
               wants_gpus: Optional[bool] = None, log_config: Optional[dict] = None) -> str:
        """Create a container from SPEC (a `RunSpec`); returns its id. A missing image is pulled
        first (progress to ``on_pull``). Interrupted at any moment, it leaves no container.
        ``log_config``: the one setting the translator has no flag for yet (`--log-opt`)."""
        kw = spec.to_create_kwargs()  # the one call: everything before it is a RunSpec
        if log_config:
            kw["log_config"] = log_config
        wants_gpus = bool(spec.gpus) if wants_gpus is None else wants_gpus
        token = secrets.token_hex(8)
        kw["labels"] = dict(kw.get("labels") or {}, **{labels.TOKEN: token})
        api = self.api
        self._flush_pending()
        self._ensure_reaper()
        try:
            with mapped(self.where, f"create {spec.image}"):
                args = sdk.create_args(api, kw)
            if spec.systempaths_unconfined:  # HostConfig fields docker-py has no kwarg for
                args["host_config"].update({"MaskedPaths": [], "ReadonlyPaths": []})
            try:
                return self._create(api, args, spec.image, wants_gpus)
            except errors.NotFound:
                self.pull(spec.image, on_progress=on_pull, on_event=on_pull_event,
                          implicit=True)
                return self._create(api, args, spec.image, wants_gpus)
        except BaseException:
            # The engine may have made it before the client gave up (Ctrl-C, engine lost).
            self._remove_token(token)
            raise

    def _create(self, api, args, image, wants_gpus) -> str:
        try:
            return api.create_container(**args)["Id"]
        except Exception as exc:
            docker = sdk.import_docker()
            if isinstance(exc, docker.errors.ImageNotFound):
                raise errors.NotFound(f"image {image} is not on the engine at {self.where}") from None
            raise self._refused(exc, image, wants_gpus) from None

    def _refused(self, exc, image: str, wants_gpus: bool) -> Exception:
        return map_error(exc, self.where, f"create {image}",
                         describe=lambda text: errors.describe_api_error(text, image, wants_gpus))

    def _remove_token(self, token: str):
        if self._reaper is not None:  # the engine may finish the create after we look
            self._reaper.remove_labelled(f"{labels.TOKEN}={token}")
        try:
            found = self.api.containers(all=True, filters={"label": f"{labels.TOKEN}={token}"})
        except BaseException:
            return  # engine gone: the reaper, or the next create's flush, takes it
        for c in found:
            self.remove(c["Id"])

    def attach(self, cid: str, *, stdin: bool = True, stdout: bool = True,
               stderr: bool = True) -> Attached:
        params = {"stdin": int(stdin), "stdout": int(stdout), "stderr": int(stderr), "stream": 1}
        with mapped(self.where, f"attach {cid[:12]}"):
            if stdin and self.endpoint.uses_tls:  # stdin on its own connection (see Attached)
                out = self.api.attach_socket(cid, params=dict(params, stdin=0))
                try:
                    inp = self.api.attach_socket(cid, params={"stdin": 1, "stdout": 0,
                                                              "stderr": 0, "stream": 1})
                except BaseException:
                    out.close()
                    raise
                return Attached(out, inp)
            return Attached(self.api.attach_socket(cid, params=params))

    def start(self, cid: str, *, image: str = "", wants_gpus: bool = False):
        try:
            self.api.start(cid)
        except Exception as exc:
            if not is_engine_failure(exc):
                raise
            raise self._refused(exc, image or cid[:12], wants_gpus) from None

    def wait(self, cid: str, timeout: Optional[float] = None) -> int:
        with mapped(self.where, f"wait {cid[:12]}"):
            return int(self.api.wait(cid, timeout=timeout)["StatusCode"])

    def begin_wait(self, cid: str, condition: str = "next-exit") -> "Waiting":
        """A wait registered now (before `start`), its exit status read later (`Waiting.result`):
        how a container the engine auto-removes gives its exit status without a race."""
        with mapped(self.where, f"wait {cid[:12]}"):
            return Waiting(self, cid, sdk.begin_wait(self.api, cid, condition))

    def kill(self, cid: str, signal: Optional[str] = None):
        with mapped(self.where, f"kill {cid[:12]}"):
            self.api.kill(cid, signal=signal)

    def interrupt(self, cid: str, grace: float) -> tuple:
        """SIGINT, up to GRACE seconds, then SIGKILL: what Ctrl-C in `docker run` amounts to.
        Returns (signal that ended it, seconds taken); never raises."""
        t0 = time.monotonic()
        api = self._api
        if api is None:
            return ("", 0.0)
        try:
            api.kill(cid, signal="SIGINT")
            api.wait(cid, timeout=grace)
            return ("SIGINT", time.monotonic() - t0)
        except Exception:
            try:
                api.kill(cid)
            except Exception:
                pass
            return ("SIGKILL", time.monotonic() - t0)

    def remove(self, cid: str, *, force: bool = True, quiet: bool = True,
               until_gone: bool = False):
        """Remove a container. Already gone (404) or going (409) is fine (UNTIL_GONE: going is
        waited for, a few seconds at most); an engine that does not answer keeps it pending,
        removed when the engine answers again (or by the reaper)."""
        try:
            self.api.remove_container(cid, force=force)
            self._pending.discard(cid)
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (404, 409):
                self._pending.discard(cid)
                if status == 409 and until_gone:  # the engine is removing it (`--rm`)
                    try:
                        self.api.wait(cid, timeout=10, condition="removed")
                    except Exception:
                        pass  # gone already (404), or slow: the engine finishes it anyway
                return
            mapped_exc = map_error(exc, self.where, f"rm {cid[:12]}")
            if isinstance(mapped_exc, errors.EngineUnavailable):
                self._pending.add(cid)
                if self._reaper is not None:  # removed when the engine answers, cell or not
                    self._reaper.remove_later(cid)
                if quiet:
                    return
            if not quiet:
                raise mapped_exc from None
            import sys

            print(f"dockmagic: could not remove container {cid[:12]}: {mapped_exc}",
                  file=sys.stderr)

    def _flush_pending(self):
        for cid in list(self._pending):
            self.remove(cid)

    @property
    def pending_removals(self) -> frozenset:
        return frozenset(self._pending)

    def reaper(self):
        """This kernel's reaper for this engine (engine/reaper.py), started if need be (for an
        ssh:// engine on that engine's host: `RemoteEngine`); None where none can run."""
        self._ensure_reaper()
        return self._reaper

    def _ensure_reaper(self):
        if self._reaper is not None and self._reaper.alive():  # closed at unload, or died
            return
        from ..kernel import kernel_id
        from . import reaping

        tls = None
        if self.endpoint.uses_tls:  # the reaper speaks TLS with docker's ca/cert/key.pem
            d = self.endpoint.cert_path
            tls = tuple(f"{d}/{n}.pem" for n in ("ca", "cert", "key")) if d else ()
        self._reaper = reaping.ensure_reaper(self.endpoint.url, kernel_id(), self.reaper_globs,
                                            tls=tls)

    def inspect(self, cid: str) -> dict:
        with mapped(self.where, f"inspect {cid}"):
            return self.api.inspect_container(cid)

    def containers(self, *, all: bool = True, filters: Optional[dict] = None) -> list:
        with mapped(self.where, "listing containers"):
            return self.api.containers(all=all, filters=filters)

    def stats(self, cid: str) -> Optional[dict]:
        """One stats sample (no streaming), or None if the container is gone."""
        try:
            return self.api.stats(cid, stream=False, one_shot=True)
        except Exception as exc:
            err = map_error(exc, self.where, f"stats {cid[:12]}")
            if isinstance(err, errors.EngineUnavailable):
                raise err from None
            return None

    def stop(self, cid: str, timeout: int = 10):
        with mapped(self.where, f"stop {cid}"):
            self.api.stop(cid, timeout=timeout)

    def restart(self, cid: str, timeout: int = 10):
        with mapped(self.where, f"restart {cid}"):
            self.api.restart(cid, timeout=timeout)

    def start_existing(self, cid: str):
        with mapped(self.where, f"start {cid}"):
            self.api.start(cid)

    def remove_named(self, name: str, force: bool = False):
        """`docker rm [-f] NAME`, its refusals raised (the user asked for it)."""
        with mapped(self.where, f"rm {name}"):
            self.api.remove_container(name, force=force)

    # -- exec and logs ---------------------------------------------------------------------
    def exec_run(self, cid: str, cmd: Sequence[str], on_output: OnOutput, *,
                 user: Optional[str] = None, workdir: Optional[str] = None,
                 environment: Optional[Sequence[str]] = None) -> int:
        """`docker exec NAME CMD...`, output streamed; returns the exit code. On
        KeyboardInterrupt the connection closes (the engine has no "kill exec")."""
        api = self.api
        what = f"exec {cid}"
        with mapped(self.where, what):
            exec_id = api.exec_create(cid, list(cmd), stdout=True, stderr=True, user=user or "",
                                      workdir=workdir, environment=list(environment or []))["Id"]
            stream = api.exec_start(exec_id, stream=True, demux=True)
        try:
            with mapped(self.where, what):
                for out, err in stream:
                    if out:
                        on_output(STDOUT, out)
                    if err:
                        on_output(STDERR, err)
        finally:
            stream.close()
        with mapped(self.where, what):
            code = api.exec_inspect(exec_id).get("ExitCode")
        return -1 if code is None else int(code)

    def logs(self, cid: str, *, tail: Optional[int] = 100) -> bytes:
        with mapped(self.where, f"logs {cid}"):
            return self.api.logs(cid, stdout=True, stderr=True,
                                 tail="all" if tail is None else tail)

    def stream_logs(self, cid: str, on_output: OnOutput, *, follow: bool = False,
                    tail: Optional[int] = None, timestamps: bool = False, tty: bool = False):
        """`docker logs [-f] [--tail N] [-t]` with stdout and stderr kept apart; following ends
        when the container stops; KeyboardInterrupt closes the connection and propagates."""
        params = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": int(timestamps),
                  "tail": "all" if tail is None else int(tail)}
        what = f"logs {cid}"
        with mapped(self.where, what):
            res = sdk.logs_response(self.api, cid, params, follow)
        try:
            with mapped(self.where, what):
                if tty:
                    for chunk in res.iter_content(chunk_size=None):
                        on_output(STDOUT, chunk)
                    return
                read = res.raw.read
                while True:
                    header = read(HEADER_SIZE)
                    if len(header) < HEADER_SIZE:
                        return
                    kind, size = parse_header(header)
                    data = read(size) if size else b""
                    if size and not data:
                        return
                    on_output(STDERR if kind == STDERR else STDOUT, data)
        finally:
            res.close()

    # -- images ----------------------------------------------------------------------------
    def inspect_image(self, ref: str) -> dict:
        """`docker image inspect REF`. Asked again while the same question is in flight (a
        spare's freshness check and the cell's provenance record, at the cell's start), the
        engine is asked once and both get its answer."""
        with self._inspect_lock:
            asked = self._inspecting.get(ref)
            mine = asked is None
            if mine:
                asked = self._inspecting[ref] = Future()
        if not mine:
            return dict(asked.result())
        try:
            with mapped(self.where, f"inspect {ref}"):
                info = self.api.inspect_image(ref)
            asked.set_result(info)
            return info
        except BaseException as exc:  # an interrupt here is this thread's, not the other's
            asked.set_exception(exc if isinstance(exc, Exception) else errors.EngineError(
                f"inspect {ref} on {self.where} was interrupted"))
            raise
        finally:
            with self._inspect_lock:
                self._inspecting.pop(ref, None)

    def images(self, name: Optional[str] = None, all: bool = False) -> list:
        with mapped(self.where, "listing images"):
            return self.api.images(name=name, all=all)

    def tag(self, source: str, repo: str, tag: Optional[str]):
        with mapped(self.where, f"tag {source}"):
            self.api.tag(source, repo, tag or "latest")

    def remove_image(self, ref: str, force: bool = False):
        with mapped(self.where, f"rmi {ref}"):
            self.api.remove_image(ref, force=force)

    def commit(self, cid: str, repo: Optional[str], tag: Optional[str], *,
               message: Optional[str] = None, author: Optional[str] = None,
               changes: Optional[Sequence[str]] = None, conf: Optional[dict] = None) -> str:
        with mapped(self.where, f"commit {cid}"):
            return self.api.commit(cid, repository=repo or None, tag=tag, message=message,
                                   author=author, changes=list(changes or []) or None,
                                   conf=conf)["Id"]

    def pull(self, ref: str, *, on_progress: Optional[Callable[[str], None]] = None,
             on_event: Optional[Callable[[dict], None]] = None, implicit: bool = False) -> dict:
        """`docker pull REF` (`:latest` when no tag), the one pull. Progress: each raw event to
        ``on_event``, else one line per layer state change to ``on_progress``. ``implicit``:
        pulled because a cell needs it (a failure says "neither local nor pullable")."""
        from ..errors import registry_of
        if "@" in ref:
            repo, tag, full = ref, None, ref
        else:
            repo, tag = split_reference(ref)
            tag = tag or "latest"  # the API pulls every tag when none is given; the CLI does not
            full = f"{repo}:{tag}"
        say = on_progress or (lambda line: None)
        if implicit:  # a typo of a local tag (`bookwrom`) is named before anything is pulled
            hint = errors.suggest_local_image(ref, self._local_tags())
            say(f"{ref} is not local{hint}; pulling it from {registry_of(ref)} ...")
            describe, error = (lambda text: errors.describe_pull_failure(ref, text, hint),
                               errors.ImageUnavailable)
        else:
            describe, error = (lambda text: errors.describe_registry_error("pull", ref, text),
                               errors.EngineError)
        self._registry_stream(f"pull {ref}", lambda: self.api.pull(repo, tag=tag, stream=True,
                                                                     decode=True),
                              say, on_event, describe, error)
        return self.inspect_image(full)

    def _local_tags(self) -> list:
        try:
            return [t for entry in self.api.images() for t in entry.get("RepoTags") or ()]
        except Exception:
            return []

    def push(self, ref: str, *, on_progress: Optional[Callable[[str], None]] = None,
             on_event: Optional[Callable[[dict], None]] = None) -> Optional[str]:
        """`docker push REPO[:TAG]`; returns the pushed digest (None if the engine did not say).
        Without a tag every tag of REPO is pushed, as the CLI does."""
        repo, tag = split_reference(ref)
        aux = self._registry_stream(
            f"push {ref}", lambda: self.api.push(repo, tag=tag, stream=True, decode=True),
            on_progress or (lambda line: None), on_event,
            lambda text: errors.describe_registry_error("push", ref, text), errors.EngineError)
        return aux.get("Digest")

    def _registry_stream(self, what, start, say, on_event, describe, error) -> dict:
        last_state: Dict[str, str] = {}
        aux: dict = {}
        with mapped(self.where, what, describe, error):
            for event in start():
                if "error" in event or "errorDetail" in event:
                    text = event.get("error") or (event.get("errorDetail") or {}).get("message", "")
                    raise error(describe(text))
                if "aux" in event:
                    aux = event["aux"] or {}
                    continue
                if on_event is not None:
                    on_event(event)
                    continue
                status, layer = event.get("status", ""), event.get("id", "")
                if not status or last_state.get(layer) == status:
                    continue
                last_state[layer] = status  # one line per layer state change, not per chunk
                say(f"  {layer}: {status}" if layer else f"  {status}")
        return aux

    def build(self, fileobj, *, tag: str, dockerfile: str, buildargs=None, nocache=False,
              target=None, describe: Callable[[str], str] = str) -> Iterator[dict]:
        """`docker build` (legacy builder, `--force-rm`) of a tar context: its events."""
        with mapped(self.where, f"build {tag}", describe, errors.BuildFailed):
            events = self.api.build(fileobj=fileobj, custom_context=True, dockerfile=dockerfile,
                                    tag=tag, rm=True, forcerm=True, decode=True, pull=False,
                                    buildargs=dict(buildargs or {}) or None, nocache=nocache,
                                    target=target)
            yield from events

    def build_context(self, root: str, patterns: Iterable[str], dockerfile_name: str,
                      extra_files) -> object:
        """A tar build context of ROOT (honouring .dockerignore PATTERNS), or of only
        ``extra_files`` when ROOT is None."""
        if root is None:
            return sdk.build_context("/", [], extra_files)
        files = sorted(sdk.context_files(root, list(patterns), dockerfile_name))
        return sdk.build_context(root, files, extra_files)


def split_reference(ref: str) -> tuple:
    """`REPO[:TAG][@DIGEST]` -> (repo, tag or None); a port (`localhost:5000/x`) is no tag."""
    name = ref.partition("@")[0]
    repo, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return name, None

