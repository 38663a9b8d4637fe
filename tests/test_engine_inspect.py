"""`Engine.inspect_image`: the same question asked while it is in flight goes to the engine once
(a spare's freshness check and the cell's provenance record both ask at a cell's start)."""
import threading
import time

import pytest

from dockmagic import errors
from dockmagic.engine.core import Engine

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
