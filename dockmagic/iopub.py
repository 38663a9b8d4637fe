"""Display data sent through the kernel's IOPub thread without waiting on it.

ipykernel's `publish_display_data` first flushes stdout and stderr, and each flush waits for
the kernel's IOPub thread to come round (two thread hops, a few hundred microseconds each on a
busy machine): most of what a provenance record cost a warm session cell. Here the flushes and
the send are handed to that thread as one scheduled call instead, so the cell does not wait:

* order holds: the IOPub thread runs scheduled calls first in, first out, and the call flushes
  the streams (queuing what the cell printed) before it queues the display message, so the
  display still follows the output printed before it;
* it reaches the notebook before the cell ends: the kernel flushes stdout/stderr at the end of
  each execution (waiting on that same thread), which puts the display ahead of the `idle`
  status a client such as nbclient waits for.

Where that does not hold (no ipykernel, its IOPub thread not running, or a hook such as an
`ipywidgets.Output` capturing displays), it is IPython's own `publish_display_data`.
"""
from __future__ import annotations

import sys
from typing import Optional


def publish(data: dict, metadata: Optional[dict] = None, *, display_id: Optional[str] = None,
            update: bool = False, flush: bool = True):
    """`IPython.display.publish_display_data(data, metadata)` (with DISPLAY_ID and UPDATE as
    `DisplayHandle.update` sends them), without blocking the cell. FLUSH=False: sent ahead of
    what the cell is writing now (a line that must stand above the output that follows: the
    streams' own flush comes later on the same thread)."""
    pub = _fast_publisher()
    transient = {"display_id": display_id} if display_id else {}
    if pub is None:
        from IPython.display import publish_display_data
        publish_display_data(data=data, metadata=metadata, transient=transient or None,
                             update=update)
        return
    content = {"data": data, "metadata": metadata or {}, "transient": transient}
    msg = pub.session.msg("update_display_data" if update else "display_data", content,
                          parent=pub.parent_header)
    session, socket, topic = pub.session, pub.pub_socket, pub.topic
    out, err = sys.stdout, sys.stderr

    def flush_then_send():  # on the IOPub thread, where flush() sends directly
        for stream in (out, err) if flush else ():
            try:
                stream.flush()
            except Exception:
                pass
        session.send(socket, msg, ident=topic)

    out.pub_thread.schedule(flush_then_send)


def show(data: dict, metadata: Optional[dict] = None, flush: bool = True) -> str:
    """`display(data, raw=True, display_id=True)` for a mimebundle DATA, without blocking the
    cell; returns its display id. (A bundle, not an object: IPython's formatter costs more than
    the send, and a status line is sent at least twice a cell.) FLUSH: as for `publish`."""
    if _fast_publisher() is None:
        from IPython.display import display
        handle = display(data, raw=True, metadata=metadata, display_id=True)
        return handle.display_id if handle is not None else ""
    import uuid

    display_id = uuid.uuid4().hex
    publish(data, metadata, display_id=display_id, flush=flush)
    return display_id


def update(data: dict, display_id: str, metadata: Optional[dict] = None):
    """`update_display(data, raw=True, display_id=...)` for a mimebundle DATA, without
    blocking the cell."""
    if _fast_publisher() is None:
        from IPython.display import update_display
        update_display(data, raw=True, display_id=display_id, metadata=metadata)
        return
    publish(data, metadata, display_id=display_id, update=True)


def _fast_publisher():
    """The kernel's display publisher when the scheduled path keeps its guarantees, else None."""
    from IPython.core.getipython import get_ipython
    ip = get_ipython()
    pub = getattr(ip, "display_pub", None)
    if getattr(ip, "kernel", None) is None or pub is None:
        return None
    if getattr(pub, "_hooks", None):  # an Output widget (or another hook) captures displays
        return None
    if getattr(pub, "store_display_history", False):  # IPython keeps outputs in its history
        return None
    thread = getattr(sys.stdout, "pub_thread", None)
    if getattr(sys.stderr, "pub_thread", None) is not thread or thread is None:
        return None
    io = getattr(thread, "thread", None)
    if io is None or not io.is_alive() or not all(
            hasattr(pub, a) for a in ("session", "pub_socket", "topic", "parent_header")):
        return None
    return pub
