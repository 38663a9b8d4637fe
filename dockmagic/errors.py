"""One error tree for dockmagic, and the words that explain exit codes and engine errors.

Pure: no docker, IPython or pynvml imports. The runner turns the SDK's exceptions into these;
the magics show them as one short message (``_render_traceback_``), never as a traceback
through docker-py's internals.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Optional, Sequence

GPU_RUNTIME_HELP = (
    "the engine has no NVIDIA runtime for --gpus: install nvidia-container-toolkit on the Docker "
    "host and run `nvidia-ctk runtime configure --runtime=docker`, restart dockerd, then check with "
    "`docker info | grep -i runtimes`; or drop --gpus (`%gpus none`)"
)


class DockmagicError(Exception):
    """Base of every error dockmagic raises on purpose; shown as one short message."""

    def _render_traceback_(self):
        # IPython calls this instead of printing a traceback: the message is the whole story.
        return [f"{type(self).__name__}: {self}"]


class EngineUnavailable(DockmagicError):
    """No Docker engine answers at the address tried (or it went away mid-call)."""


class EngineTimeout(EngineUnavailable):
    """The engine did not answer a call in time."""


class ImageUnavailable(DockmagicError):
    """The image is not local and could not be pulled."""


class EngineError(DockmagicError):
    """The engine refused a request (create, start, ...)."""


class NotFound(EngineError):
    """The engine has no such container or image."""


class CellFailed(DockmagicError):
    """A cell's container exited non-zero."""

    def __init__(self, exit_code: int, image: str, stderr_tail: str = "", oom: bool = False,
                 name: str = "", memory_limit: Optional[int] = None):
        self.exit_code = exit_code
        self.image = image
        self.stderr_tail = stderr_tail
        self.oom = oom
        self.name = name
        self.memory_limit = memory_limit
        super().__init__(describe_exit(exit_code, image, oom, memory_limit, name))

    #: Whether the stderr tail was already shown to the user (a cell streams it live).
    streamed = True

    def _render_traceback_(self):
        lines = [f"{type(self).__name__}: {self}"]
        if self.stderr_tail.strip() and not self.streamed:
            lines.append("last lines of stderr:")
            lines.extend("  " + ln for ln in self.stderr_tail.rstrip("\n").splitlines()[-10:])
        return lines


class CellInterrupted(KeyboardInterrupt):
    """The kernel was interrupted while a cell ran. Still a KeyboardInterrupt (Run All stops;
    code that catches Ctrl-C still does), shown as the one line that says what became of the
    container: no frames of dockmagic's own."""

    def _render_traceback_(self):
        return [str(self)]


def describe_interrupt(container: str, how: str, seconds: float, removed: bool = True) -> str:
    """`interrupted; container X stopped by SIGINT in 0.4 s and removed`."""
    end = " and removed" if removed else ""
    return f"interrupted; container {container} stopped by {how} in {seconds:.1f} s{end}"


class BuildFailed(EngineError):
    """A `%%dockerfile` build stopped at a step."""


class ExecFailed(CellFailed):
    """`%docker exec` ran, and the command exited non-zero."""

    def __init__(self, exit_code: int, name: str, cmd: Sequence[str], stderr_tail: str = "",
                 not_found: bool = False):
        super().__init__(exit_code, image="", stderr_tail=stderr_tail, name=name)
        self.cmd = list(cmd)
        Exception.__init__(self, describe_exec_exit(exit_code, name, cmd, not_found))


def describe_exec_exit(code: int, name: str, cmd: Sequence[str], not_found: bool = False) -> str:
    shown = " ".join(cmd)
    base = f"`{shown}` in container {name} exited with code {code}"
    if not_found:
        return (f"{base}: {cmd[0]!r} is not on the container's PATH; check the spelling, or "
                "give its full path")
    if code == 126:
        return f"{base}: the command cannot be executed (permission, or not executable)"
    if code == 127:
        return f"{base}: command not found in the container; check its PATH and spelling"
    if code > 128:
        return f"{base}: killed by signal {code - 128}"
    return base


def engine_address() -> str:
    """The address docker-py tries, as a user would set it."""
    host = os.environ.get("DOCKER_HOST")
    return f"{host} (DOCKER_HOST)" if host else "unix:///var/run/docker.sock (DOCKER_HOST unset)"


def describe_no_engine(reason: str = "", where: str = "") -> str:
    """One line for an engine that does not answer; WHERE names it (`Endpoint.describe()`)."""
    why = f": {reason}" if reason else ""
    return (
        f"no Docker engine answers at {where or engine_address()}{why}. Is dockerd running? Start it "
        "(`sudo systemctl start docker`, or scripts/ensure-engine.sh as root), or point DOCKER_HOST "
        "at a running engine; check with `docker info`"
    )


def to_bytes_text(n: int) -> str:
    """2 GiB, 512 MiB, 1.5 GiB: binary units, as -m reads them."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def describe_exit(code: int, image: str, oom: bool = False,
                  memory_limit: Optional[int] = None, name: str = "") -> str:
    """One line explaining a container's exit status the way a user needs it; NAME: the
    container's name or short ID, where known."""
    base = f"container {name + ' ' if name else ''}({image}) exited with code {code}"
    if code == 137 and oom and memory_limit:
        return (f"{base}: killed for running out of memory (OOMKilled) at its limit of "
                f"{to_bytes_text(memory_limit)} (-m/--memory); raise -m or use less memory")
    if code == 137 and oom:
        return (f"{base}: killed for running out of memory (OOMKilled) with no -m limit set: "
                "the host ran short; set -m/--memory to bound it, or use less memory")
    if code == 137:
        return f"{base}: killed by SIGKILL (stopped, or out of memory outside its own limit)"
    if code == 139:
        return f"{base}: segmentation fault (SIGSEGV) inside the container"
    if code == 125:
        return f"{base}: the container could not be run (a docker or runtime error)"
    if code == 126:
        return f"{base}: the interpreter or command cannot be executed (permission or not executable)"
    if code == 127:
        return (f"{base}: command not found; is the interpreter installed in {image}? "
                "Name another after the image, e.g. `%%docker IMAGE bash`")
    if code == 130:
        return f"{base}: interrupted (SIGINT)"
    if code > 128:
        return f"{base}: killed by signal {code - 128}"
    return base


def describe_pull_failure(image: str, reason: str, hint: str = "") -> str:
    """One line for an image a cell needs that is not local and could not be pulled; HINT
    (`suggest_local_image`) leads when there is one: a typo is likelier than a missing image."""
    registry = registry_of(image)
    cause = registry_cause(reason, registry) or reason.strip().rstrip(".")
    if hint:
        return (f"image {image!r} is not local; {hint.strip(' ()')} Pulling it from {registry} "
                f"failed: {cause}")
    return (f"image {image!r} is neither local nor pullable from {registry}: {cause}. Build it "
            "(`docker build -t ...`), load it (`docker load`), or check the name and tag")


def registry_cause(text: str, registry: str) -> str:
    """What a registry error means, in a few words (`the engine cannot resolve
    registry-1.docker.io (no such host)`), for the errors a user can act on; else ""."""
    low = text.lower()
    host = re.search(r"lookup ([\w.-]+)", text) or re.search(r"https?://([\w.-]+)", text)
    host = host.group(1) if host else registry
    if "no such host" in low:
        return (f"the engine cannot resolve {host} (no such host): check the engine's DNS and "
                "network, or the registry's name")
    if "connection refused" in low:
        return f"{host} refused the connection: is the registry running?"
    if "i/o timeout" in low or "no route to host" in low or "timeout" in low:
        return f"{host} did not answer in time: is it reachable from the engine?"
    return ""


def suggest_local_image(image: str, local: Iterable[str]) -> str:
    """` (did you mean dockmagic-base:bookworm, which is local?)` when IMAGE, not local, is a
    typo or two away from a local reference (`bookwrom`), or names a local repository without
    its tag (docker then means `:latest`); otherwise ""."""
    local = [ref for ref in local if ref and ref != "<none>:<none>"]
    last = image.rsplit("/", 1)[-1]
    repo, tag = (image.rpartition(":")[0], image.rpartition(":")[2]) if ":" in last \
        else (image, "")
    if not tag:
        same_repo = sorted(ref for ref in local if ref.rpartition(":")[0] == repo)
        if same_repo:
            return f" (did you mean {same_repo[0]}, which is local?)"
    best, found = None, None
    for ref in local:
        d = typo_distance(image, ref)
        if d <= 2 and d * 3 < len(tag or image) and (best is None or d < best):
            best, found = d, ref
    return f" (did you mean {found}, which is local?)" if found else ""


def typo_distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) from A to B."""
    if abs(len(a) - len(b)) > 2:
        return 3
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if (prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2]
                    and a[i - 2] == b[j - 1]):
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[len(b)]


def registry_of(image: str) -> str:
    """The registry an image reference would be pulled from (docker's default rule)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "Docker Hub (docker.io)"


def describe_api_error(exc_text: str, image: str, wants_gpus: bool) -> str:
    """Turn the engine's own error text into one line naming the fix."""
    low = exc_text.lower()
    if wants_gpus and ("could not select device driver" in low or "nvidia" in low):
        return f"{GPU_RUNTIME_HELP} (engine said: {exc_text.strip()})"
    if "unknown or invalid runtime name" in low and "nvidia" in low:
        return f"{GPU_RUNTIME_HELP} (engine said: {exc_text.strip()})"
    if "executable file not found" in low or "no such file or directory" in low and "exec" in low:
        return (f"the engine could not start the interpreter in {image}: {exc_text.strip()}. "
                "Name an interpreter the image has after the image (e.g. `bash`, `python3`)")
    if "conflict" in low and "name" in low and "already in use" in low:
        return f"{exc_text.strip()}. Pick another --name, or remove the old one (`%docker rm -f NAME`)"
    return f"the engine refused the container for {image}: {exc_text.strip()}"


def describe_registry_error(action: str, ref: str, text: str) -> str:
    """One line for a failed push or pull, naming the likely fix."""
    registry = registry_of(ref)
    low = text.lower()
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    cause = registry_cause(text, registry)
    if "does not exist locally" in low or "no such image" in low:
        fix = f"there is no local image {ref}; tag one first (`%docker tag IMAGE {ref}`)"
    elif cause:
        return f"{action} {ref} failed: {cause}"
    elif "dial tcp" in low:
        fix = (f"the registry {registry} does not answer; is it running, and reachable from "
               "the engine?")
    elif "manifest unknown" in low or "not found" in low:
        fix = f"{ref} is not in {registry}; check the name and tag"
    elif "denied" in low or "unauthorized" in low or "authentication required" in low:
        fix = (f"{registry} refused access; log in (`docker login {registry}`), or use a "
               "repository you may write to")
    elif "server gave http response to https client" in low:
        fix = (f"{registry} speaks plain HTTP; list it in the engine's insecure-registries "
               "(loopback registries are insecure by default)")
    else:
        fix = "check the name, and that the registry answers"
    return f"{action} {ref} failed: {first.rstrip('.')}; {fix}"
