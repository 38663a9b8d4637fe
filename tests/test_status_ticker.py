"""The one thread that redraws running session cells' status lines (status._Ticker): a line is
first redrawn after FIRST_S, then every interval, never after it is discarded; a ticker that
fell asleep (no cell for IDLE_S) is woken by the next line."""
import threading
import time

from dockmagic import status


class Line:
    def __init__(self):
        self.t0 = time.monotonic()
        self.ticks = []
        self.ticked = threading.Event()

    def tick(self):
        self.ticks.append(time.monotonic() - self.t0)
        self.ticked.set()


def ticker(first=0.3, idle=0.4):
    t = status._Ticker()
    t.FIRST_S, t.IDLE_S = first, idle
    return t


def test_a_line_is_redrawn_after_first_s_then_every_interval_until_discarded():
    t = ticker()
    line = Line()
    t.add(line, 0.1)
    deadline = time.monotonic() + 10
    while len(line.ticks) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    t.discard(line)
    seen = list(line.ticks)
    time.sleep(0.3)
    assert line.ticks == seen  # nothing after discard
    assert len(seen) >= 3, seen  # 0.3, 0.4, 0.5, ... while it ran
    assert seen[0] >= 0.3 - 0.01, seen  # not before FIRST_S
    assert all(b - a >= 0.09 for a, b in zip(seen, seen[1:])), seen  # not more often


def test_a_line_over_before_first_s_is_never_redrawn():
    t = ticker(first=0.5)
    line = Line()
    t.add(line, 0.1)
    time.sleep(0.2)
    t.discard(line)
    time.sleep(0.6)
    assert line.ticks == []


def test_an_asleep_ticker_is_woken_by_the_next_line():
    t = ticker(first=0.2, idle=0.3)
    first = Line()
    t.add(first, 0.1)
    assert first.ticked.wait(5)
    t.discard(first)
    deadline = time.monotonic() + 5
    while not t._asleep and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t._asleep  # no line for IDLE_S: it waits until woken
    second = Line()
    t.add(second, 0.1)
    assert second.ticked.wait(5)
    assert not t._asleep
    t.discard(second)
