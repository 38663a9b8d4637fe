"""`Engine` against a real engine and a socket that never answers: `inspect_image` asks once for
a question already in flight (a spare's freshness check and the cell's provenance record both
ask at a cell's start); an engine that accepts and never answers fails in one line within the
negotiation timeout, and closing the engine meanwhile does not wait for it."""
import socket
import threading
import time

import pytest

from dockmagic import errors
from dockmagic.engine import sdk
from dockmagic.engine.core import Engine
from dockmagic.engine.endpoint import Endpoint

from conftest import BASE_IMAGE

pytestmark = pytest.mark.engine


@pytest.fixture
def engine():
    e = Engine()
    yield e
    e.close()


def slowed(engine, seconds):
    """Count the engine's image inspects, each held SECONDS before it is sent."""
    calls, real = [], engine.api.inspect_image

    def inspect(ref):
        calls.append(ref)
        time.sleep(seconds)
        return real(ref)

    engine.api.inspect_image = inspect
    return calls


def test_concurrent_inspects_of_one_image_ask_the_engine_once(engine):
    calls = slowed(engine, 0.3)
    got = []
    threads = [threading.Thread(target=lambda: got.append(engine.inspect_image(BASE_IMAGE)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [BASE_IMAGE]
    assert len(got) == 3 and len({g["Id"] for g in got}) == 1 and got[0]["Id"].startswith("sha256:")
    got[1]["Id"] = "changed"  # each caller has its own answer
    assert got[2]["Id"] != "changed"
    engine.inspect_image(BASE_IMAGE)  # a later question is asked again
    assert calls == [BASE_IMAGE, BASE_IMAGE]


def test_a_missing_image_fails_every_waiter_with_one_line(engine):
    slowed(engine, 0.3)
    failures = []

    def ask():
        try:
            engine.inspect_image("dockmagic-no-such-image:never")
        except errors.NotFound as exc:
            failures.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failures) == 2 and all("no such image" in f and "\n" not in f for f in failures)


def test_an_engine_that_never_answers_fails_in_one_line_and_close_does_not_wait(tmp_path):
    path = str(tmp_path / "hung.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)  # accepts (in the kernel's backlog), never answers
    engine = Engine(Endpoint(f"unix://{path}", name="hung"))
    outcome = []

    def ping():
        t0 = time.monotonic()
        try:
            engine.ping()
            outcome.append(("answered", 0.0))
        except errors.EngineUnavailable as exc:
            outcome.append((str(exc), time.monotonic() - t0))

    asker = threading.Thread(target=ping)
    asker.start()
    time.sleep(0.5)  # the client is being made: its version question hangs
    t0 = time.monotonic()
    engine.close()
    closed_in = time.monotonic() - t0
    asker.join(120)
    listener.close()
    (message, took), = outcome
    assert "hung" in message and path in message and "\n" not in message, message
    assert took < sdk.NEGOTIATE_TIMEOUT_S + 30, f"ping took {took:.0f} s, not the negotiation's"
    assert closed_in < 5, f"close waited {closed_in:.1f} s for the hung client"
