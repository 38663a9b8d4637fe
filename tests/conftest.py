"""Shared fixtures: the real engine, the project's images, cleanup by label."""
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

BASE_IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
ENTRYPOINT_IMAGE = "dockmagic-test:entrypoint"
ENV_IMAGE = "dockmagic-test:env"
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")


def wait_until(predicate, timeout: float, step: float = 0.5) -> bool:
    """Whether PREDICATE holds within TIMEOUT seconds (asked every STEP, and once at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for the local engine; the suite needs one (.ci/run starts it)."""
    import docker

    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/ensure-engine.sh as root")
    # docker-py's list inspects each container it lists: one the engine removes meanwhile (a
    # one-shot's --rm, a spare, a reaper's removal) must read as gone, not fail with a 404.
    # (On the class: `client.containers` makes a new collection at each use, so setting it on
    # one, as this did before, changed nothing.)
    from docker.models.containers import ContainerCollection

    listing = ContainerCollection.list
    ContainerCollection.list = lambda self, *args, ignore_removed=True, **kwargs: listing(
        self, *args, ignore_removed=ignore_removed, **kwargs)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client):
    try:
        docker_client.images.get(BASE_IMAGE)
    except Exception:
        pytest.fail(f"image {BASE_IMAGE} missing; run scripts/build-base-image.sh")
    return BASE_IMAGE


@pytest.fixture(scope="module")
def shell(docker_client, base_image):
    """A real IPython shell with dockmagic loaded; unloading closes spares and panels."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    yield ip
    ip.run_line_magic("unload_ext", "dockmagic")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The notebook's folder: a fresh temporary one, as the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@contextlib.contextmanager
def interrupt_when_printed(word, seen=None, wait=30):
    """Stand in for sys.stdout; once WORD is printed, send this process SIGINT 0.3 s later (as
    a kernel interrupt does). SEEN, a list, collects everything written."""
    started = threading.Event()

    class Watch:
        def write(self, text):
            if seen is not None:
                seen.append(text)
            if word in text:
                started.set()
            return len(text)

        def flush(self):
            pass

    def later():
        started.wait(wait)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=later)
    old, sys.stdout = sys.stdout, Watch()
    t.start()
    try:
        yield
    finally:
        sys.stdout = old
        t.join()


def as_kernel_user(uid, argv, gid=None):
    """argv run as a non-root kernel user (uid:gid, plus the docker socket's group).

    It keeps CAP_DAC_READ_SEARCH only, so it can read the project and its venv wherever the
    checkout lies (CI clones into a 0700 folder) while everything it writes is owned by uid.
    """
    gid = uid if gid is None else gid
    sock_gid = os.stat("/var/run/docker.sock").st_gid
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={sock_gid}",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *argv]


def remove_labelled(client, label):
    for c in client.containers.list(all=True, filters={"label": label}):
        try:
            c.remove(force=True)
        except Exception:
            pass


def _owned_by_another_live_kernel(entry) -> bool:
    """A container whose kernel still runs, and is not this process: another test run's (on a
    shared engine), not this run's to judge or remove. This run's own kernels are gone by now."""
    from dockmagic.lifecycle import kernel_alive, parse_kernel_label

    label = (entry.get("Labels") or {}).get("dockmagic.kernel", "")
    parsed = parse_kernel_label(label)
    return bool(parsed) and parsed[1] != os.getpid() and kernel_alive(label) is True


@pytest.fixture(scope="session", autouse=True)
def _no_dockmagic_leftovers():
    """After the whole suite, no dockmagic.managed container this run created may be left.

    Only containers created since the run began count (and are cleaned up), so a run never
    touches what another run on the same engine owns.
    """
    started = time.time() - 1
    yield
    if os.environ.get("DOCKMAGIC_SKIP_LEAK_CHECK"):
        return
    import docker

    client = docker.from_env()
    try:
        left = [c for c in client.api.containers(all=True, filters={"label": "dockmagic.managed"})
                if c.get("Created", 0) >= started and not _owned_by_another_live_kernel(c)]
    finally:
        client.close()
    if left:
        ids = [c["Id"][:12] for c in left]
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120)
        pytest.fail(f"{len(ids)} dockmagic.managed containers were left behind by the tests: "
                    f"{[(c['Id'][:12], c.get('Names'), c.get('Labels', {}).get('dockmagic.kind')) for c in left]}")


# The "remote GPU server" the remote-engine tests use (scripts/ensure-rig.sh).
from remote_rig import rig, rig_tcp  # noqa: E402,F401
