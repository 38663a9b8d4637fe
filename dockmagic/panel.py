"""The live panel (``%docker panel`` / ``dockmagic.panel.Panel()``): what runs where, and actions.

One ipywidgets view kept current by ONE daemon refresher thread (stop event, adjustable
interval, pausable). Each tick reads the local engine's container list (one call: dockmagic's
containers, or every one for the "all" scope) and NVML, takes what the other engines of
``%docker engines`` last answered (each read on its own thread, :mod:`dockmagic.panelpoll`,
so a slow or unreachable host never holds a tick), builds a frozen
:class:`~dockmagic.panelstate.PanelState` off the kernel's thread
(:func:`~dockmagic.panelstate.build_state`, pure) and applies it to the widgets inside
``hold_sync()``, sending only what changed. The slow per-container reads - ``inspect`` (for
``--gpus`` and the start time) once per new or changed row shown, one-shot ``stats`` every few
seconds for the running rows shown - run on two daemon workers that the refresh never waits
for; their answers show on the next tick.

With engines added, the table has an engine column, each row's buttons act on its own engine,
and the GPU cards are grouped under a heading per engine (:mod:`dockmagic.panelgpus`).

A tick never raises: an engine that does not answer becomes one line saying why over the last
rows seen, and the next read tries again. Buttons act through :mod:`dockmagic.lifecycle` on short daemon
threads, so a 10 s ``docker stop`` never blocks the kernel; destructive actions on containers
dockmagic did not start (and force-removing a running one) ask first.

``Panel.close()`` (or :func:`close_all`, for unloading the extension) stops the threads.
"""
from __future__ import annotations

import dataclasses
import html
import os
import re
import threading
import time
import weakref
from typing import Callable, Dict, Optional, Sequence, Tuple

import ipywidgets as W
from ipywidgets.widgets.widget_string import HTMLStyle

from . import errors, lifecycle
from . import panelstate as ps
from .gpus import attach_containers, attach_process_info
from .units import mem as fmt_bytes
from .panelgpus import GpuGroups, card_html, sparkline_svg  # noqa: F401 (the panel's API)
from .panelpoll import ENGINE_TIMEOUT_S, LOG_LINES, EnginePoller, Fetcher
from .panelstate import ContainerRow, PanelState

__all__ = ["Panel", "show_panel", "close_all", "row_html", "card_html", "sparkline_svg"]

DEFAULT_INTERVAL = 2.0
INTERVALS = (("1 s", 1.0), ("2 s", 2.0), ("5 s", 5.0), ("10 s", 10.0), ("30 s", 30.0))
#: Rows drawn as widgets; the rest are counted ("N more: narrow the filter").
MAX_ROWS = 50
#: One-shot stats asked per tick at most (rows shown, running, oldest sample first).
STATS_PER_TICK = 16
#: A container's CPU/memory sample is renewed after this many seconds (or the interval, if
#: longer): stale by a few seconds is fine, and each sample costs the engine and us.
STATS_EVERY_S = 4.0
#: Row widgets made per tick at most (~10-15 ms a row in a kernel: 7 widgets): a first display
#: of many rows fills over a few back-to-back ticks instead of one long one.
NEW_ROWS_PER_TICK = 5
STOP_TIMEOUT_S = 10  # docker stop's own default grace before SIGKILL

_live: "weakref.WeakSet[Panel]" = weakref.WeakSet()
# The GPU history belongs to the kernel, not to one panel: a panel shown again (a re-run
# `%docker panel` cell) keeps the last minute of sparklines. Replaced, never changed in place.
_history: dict = {}
_history_lock = threading.Lock()
_by_owner: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# HTML fragments (pure)
# --------------------------------------------------------------------------------------------

CSS = """<style>
.dm-panel{font-size:12px;line-height:1.35;color:var(--jp-ui-font-color1,#1f2328);
  font-family:var(--jp-ui-font-family,system-ui,sans-serif);
  --dm-ok:var(--jp-success-color1,#1a7f37);--dm-warn:var(--jp-warn-color1,#9a6700);
  --dm-err:var(--jp-error-color1,#cf222e);--dm-brand:var(--jp-brand-color1,#0969da);
  --dm-muted:var(--jp-ui-font-color2,#57606a);--dm-faint:var(--jp-ui-font-color3,#8c959f);
  --dm-util:var(--jp-brand-color1,#0969da);--dm-mem:var(--jp-accent-color1,#8250df);
  --dm-track:var(--jp-layout-color3,#d0d7de)}
.dm-panel .widget-html-content{font-size:12px;line-height:1.35}
.dm-panel .widget-button,.dm-panel .widget-toggle-button{font-size:12px;height:26px}
.dm-panel .widget-toggle-button{padding:0 10px}
.dm-panel .widget-dropdown select{font-size:12px;height:26px}
.dm-panel .widget-toggle-buttons .widget-toggle-button{margin-right:0;border-radius:0}
.dm-panel .widget-toggle-buttons .widget-toggle-button:first-child{border-radius:4px 0 0 4px}
.dm-panel .widget-toggle-buttons .widget-toggle-button:last-child{border-radius:0 4px 4px 0}
.dm-head{border-bottom:1px solid var(--jp-border-color1,#d0d7de)}
.dm-row{border-bottom:1px solid var(--jp-border-color2,#eaeef2);align-items:center}
.dm-row:hover{background:var(--jp-layout-color2,transparent)}
.dm-row.dm-logs-open{background:var(--jp-layout-color2,transparent)}
.dm-row .jupyter-button{height:22px;width:26px;padding:0;margin:0 1px;line-height:20px;
  background:transparent;color:var(--dm-muted)}
.dm-row .jupyter-button:hover:enabled{background:var(--jp-layout-color3,transparent)}
.dm-row .jupyter-button.dm-act-stop:hover:enabled,
.dm-row .jupyter-button.dm-act-remove:hover:enabled{color:var(--dm-err)}
.dm-row .jupyter-button:disabled{opacity:.25}
.dm-cellbox{container-type:inline-size}
.dm-cells{white-space:nowrap;display:flex;align-items:center}
.dm-c{display:inline-block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
  padding:0 6px 0 0;box-sizing:border-box;flex:none}
.dm-name{flex:1 1 150px;min-width:90px;font-weight:600}.dm-image{flex:1 1 130px;min-width:60px}
.dm-id{width:104px}.dm-state{width:84px}.dm-up{width:52px}.dm-gpus{width:48px}
.dm-cpu{width:46px;text-align:right}.dm-mem{width:124px;text-align:right;position:relative}
.dm-nb{flex:0 1 120px;min-width:64px;padding-left:10px}.dm-cell{width:40px}
.dm-engine{width:76px}.dm-panel:not(.dm-multi) .dm-engine{display:none}
.dm-engine-down{color:var(--dm-err);padding:2px 4px;border-bottom:1px solid var(--jp-border-color2,#eaeef2)}
.dm-engine-h .dm-endpoint{font-family:var(--jp-code-font-family,monospace);font-size:11px}
/* narrow: uptime goes first, then CPU, the memory limit, the short ID and the image; name,
   state, GPUs, memory, notebook and cell stay (the ID stays at 1400 px with the file browser
   open, where the table is about 800 px wide) */
@container (max-width:900px){.dm-up{display:none}}
@container (max-width:850px){.dm-cpu{display:none}}
@container (max-width:700px){.dm-memlim{display:none}.dm-mem{width:64px}}
@container (max-width:620px){.dm-id{display:none}}
@container (max-width:470px){.dm-image{display:none}}
/* a narrow panel keeps its toolbar on one line: tighter scope buttons, prune as its icon
   (its words on hover); the logs pane's heading breaks only between its parts */
.dm-panel{container-type:inline-size}
@container (max-width:660px){.dm-panel .widget-toggle-buttons .widget-toggle-button{padding:0 5px}
  .dm-panel .jupyter-button.dm-prune{font-size:0;width:32px;min-width:32px;flex:0 0 32px;
    padding:0}
  .dm-panel .jupyter-button.dm-prune i{font-size:12px;margin:0}}
.dm-part{white-space:nowrap}
.dm-membar{position:absolute;left:8px;right:6px;bottom:-2px;height:2px;
  background:var(--dm-track);border-radius:1px;overflow:hidden}
.dm-membar>span{display:block;height:100%;background:var(--dm-mem)}
.dm-memlim{color:var(--dm-muted)}
.dm-copy{font-family:var(--jp-code-font-family,monospace);font-size:11px;cursor:copy;
  user-select:all;color:var(--dm-muted);border-radius:3px;padding:0 2px}
.dm-copy:hover{color:var(--jp-ui-font-color1,#1f2328);background:var(--jp-layout-color3,transparent)}
.dm-copy.dm-copied{color:var(--dm-ok)}
.dm-actions-space{width:140px}
.dm-panel .widget-html-content{width:100%}
.dm-th{font-weight:600;color:var(--dm-muted);font-size:11px}
.dm-head .dm-c{padding-bottom:2px}
.dm-num{font-variant-numeric:tabular-nums}
.dm-muted{color:var(--dm-muted)}
.dm-pill{display:inline-block;border-radius:9px;padding:0 7px;font-size:11px;font-weight:600;
  --dm-pc:var(--dm-muted);color:var(--dm-pc);background:transparent;
  background:color-mix(in srgb,var(--dm-pc) 16%,transparent);
  border:1px solid color-mix(in srgb,var(--dm-pc) 35%,transparent)}
.dm-s-running{--dm-pc:var(--dm-ok)}
.dm-s-paused,.dm-s-restarting,.dm-s-busy{--dm-pc:var(--dm-warn)}
.dm-s-created{--dm-pc:var(--dm-brand)}
.dm-s-exited{--dm-pc:var(--dm-muted)}
.dm-s-failed,.dm-s-dead{--dm-pc:var(--dm-err)}
.dm-s-spare{--dm-pc:var(--dm-faint);border-style:dashed;font-weight:400}
.dm-row.dm-spare .dm-name{font-weight:400;color:var(--dm-muted)}
.dm-banner{color:var(--dm-err);border:1px solid var(--dm-err);border-radius:4px;
  background:color-mix(in srgb,var(--dm-err) 10%,transparent);padding:3px 8px;margin:2px 0}
.dm-notice{padding:1px 2px}.dm-notice-error{color:var(--dm-err)}
.dm-title{font-weight:700;font-size:13px;margin-right:6px}
.dm-section{font-weight:600;margin-top:6px;color:var(--dm-muted)}
.dm-card{width:100%;border:1px solid var(--jp-border-color2,#d0d7de);border-radius:6px;
  padding:5px 8px;margin:3px 6px 3px 0;box-sizing:border-box}
.dm-card-h{display:flex;justify-content:space-between;gap:6px;white-space:nowrap}
.dm-card-h .dm-muted{overflow:hidden;text-overflow:ellipsis;flex:1}
.dm-card-sub{display:flex;justify-content:space-between;white-space:nowrap;font-size:11px}
.dm-meter{display:flex;align-items:center;gap:6px;margin:2px 0}
.dm-k{width:52px;color:var(--dm-muted);white-space:nowrap}
.dm-bar{flex:1;height:8px;background:var(--dm-track);border-radius:4px;overflow:hidden}
.dm-bar>div{height:100%;border-radius:4px}
.dm-lv-light{background:var(--dm-ok)}.dm-lv-moderate{background:var(--dm-warn)}
.dm-lv-heavy{background:var(--dm-err)}.dm-lv-na{background:transparent}
.dm-bar.dm-nobar{visibility:hidden}
.dm-v{width:118px;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.dm-spark{display:block;margin:3px 0 1px;width:100%}
.dm-spark .dm-sp-bg{fill:var(--jp-layout-color2,#f6f8fa)}
.dm-spark .dm-sp-mid{stroke:var(--jp-border-color2,#d0d7de)}
.dm-spark .dm-sp-t{fill:var(--dm-faint)}
.dm-spark .dm-sp-util{stroke:var(--dm-util)}.dm-spark .dm-sp-mem{stroke:var(--dm-mem)}
.dm-spark circle.dm-sp-util{fill:var(--dm-util)}.dm-spark circle.dm-sp-mem{fill:var(--dm-mem)}
.dm-key-util{color:var(--dm-util)}.dm-key-mem{color:var(--dm-mem)}
.dm-procs{font-size:11px;margin-top:2px}
.dm-procs div{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.dm-logs{margin:0 0 4px 12px;border-left:2px solid var(--dm-brand);padding-left:6px}
.dm-logs .dm-logscroll{max-height:260px;overflow:auto;display:flex;flex-direction:column-reverse;
  background:var(--jp-layout-color2,transparent);border-radius:4px}
.dm-logs pre{flex:none;margin:0;padding:4px 6px;font-size:11px;white-space:pre-wrap;word-break:break-all;
  color:var(--jp-content-font-color1,inherit);background:transparent}
.dm-logs .widget-button{width:auto;padding:0 8px}
.dm-hot{color:var(--dm-err)}.dm-warm{color:var(--dm-warn)}
.dm-live{color:var(--dm-ok)}
</style>"""

# (class, heading, tooltip); the order of the row's cells
_COLUMNS = (
    ("dm-name", "name", "container name"),
    ("dm-engine", "engine", "the Docker engine it runs on (%docker engines); its buttons act "
                            "there"),
    ("dm-id", "ID", "short container ID; click to copy the full ID"),
    ("dm-image", "image", "image"),
    ("dm-state", "state", "state (docker ps STATUS on hover); spare = a warm container kept "
                          "for the next identical cell, not a job"),
    ("dm-up", "uptime", "time since the container started"),
    ("dm-gpus", "GPUs", "GPUs given with --gpus"),
    ("dm-cpu dm-num", "CPU", "CPU, % of one core"),
    ("dm-mem dm-num", "memory", "memory used (without page cache) / the container's limit "
                                "(the host's memory when it has none)"),
    ("dm-nb", "notebook", "the notebook that started it"),
    ("dm-cell", "cell", "the cell that started it: its execution count, as in the prompt [N]"),
)
_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")
# The full ID goes to the clipboard (secure contexts: https or localhost); the text is
# user-select:all elsewhere, so a click selects it for Ctrl+C.
_COPY_JS = ("navigator.clipboard&amp;&amp;navigator.clipboard.writeText('{cid}')"
            ".then(()=&gt;{{this.classList.add('dm-copied');this.textContent='copied';"
            "setTimeout(()=&gt;{{this.classList.remove('dm-copied');"
            "this.textContent='{short} ❐'}},1200)}},()=&gt;{{}})")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def header_html() -> str:
    """The table's column headings, aligned with :func:`row_html`."""
    cells = "".join(f'<span class="dm-c dm-th {c}" title="{_e(t)}">{_e(h)}</span>'
                    for c, h, t in _COLUMNS)
    return f'<div class="dm-cells dm-head">{cells}</div>'


def _state_class(row: ContainerRow) -> str:
    if row.spare and row.state == "running":
        return "spare"
    if row.state == "exited" and row.exit_code not in (None, 0):
        return "failed"
    return row.state if row.state in ("running", "paused", "restarting", "created", "exited",
                                      "dead") else "exited"


def _id_html(row: ContainerRow) -> str:
    short = row.short_id
    if not _HEX_ID.match(row.id or ""):
        return _e(short)
    js = _COPY_JS.format(cid=row.id, short=short)
    return (f'<span class="dm-copy" title="copy the full ID {row.id}" role="button" '
            f'onclick="{js}">{short} ❐</span>')


def _mem_html(row: ContainerRow) -> Tuple[str, str]:
    """The memory cell's body and tooltip: used / limit, with a thin bar of the fraction."""
    if row.mem_used is None:
        return "", ""
    used = fmt_bytes(row.mem_used)
    if not row.mem_limit:
        return _e(used), f"{used} used"
    limit, pct = fmt_bytes(row.mem_limit), row.mem_percent or 0.0
    body = (f'{_e(used)}<span class="dm-memlim"> / {_e(limit)}</span>'
            f'<span class="dm-membar"><span style="width:{min(100.0, pct):.1f}%"></span></span>')
    return body, f"{used} of the {limit} limit ({pct:.0f}%)"


def row_html(row: ContainerRow, note: Optional[str] = None) -> str:
    """One container's cells; ``note`` ("stopping…") replaces the state while an action runs."""
    cells = dict(zip(ps.COLUMNS, ps.to_cells(row)))
    if note:
        state = f'<span class="dm-pill dm-s-busy">{_e(note)}</span>'
    else:
        state = f'<span class="dm-pill dm-s-{_state_class(row)}">{_e(cells["STATE"])}</span>'
    kind = f" · {row.kind}" if row.kind else ""
    mem, mem_title = _mem_html(row)
    state_title = row.status + (" · a warm spare for the next identical cell, not a job"
                                if row.spare else "")
    where = ps.to_where_title(row)
    bodies = (
        (f"{row.name}{kind}", _e(cells["NAME"])),
        (f"engine {row.engine}", _e(row.engine)),
        (f"ID {row.id}", _id_html(row)),
        (row.image, _e(cells["IMAGE"])),
        (state_title, state),
        ("uptime", _e(cells["UPTIME"])),
        ("GPUs (--gpus)", _e(cells["GPUS"])),
        ("CPU, % of one core", _e(cells["CPU"])),
        (mem_title, mem),
        (where, _e(cells["NOTEBOOK"])),
        (where, f"[{_e(cells['CELL'])}]" if cells["CELL"] else ""),
    )
    body = "".join(f'<span class="dm-c {c}" title="{_e(t)}">{b}</span>'
                   for (c, _, _), (t, b) in zip(_COLUMNS, bodies))
    return f'<div class="dm-cells">{body}</div>'


def status_html(state: PanelState, paused: bool, interval: float, shown: int) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(state.time)) if state.time else "--:--:--"
    live = ('<span class="dm-warm">❚❚ paused</span>' if paused
            else f'<span class="dm-live">●</span> every {interval:g} s')
    stopped = sum(r.stopped for r in state.rows)
    spares = (f' · <span title="warm containers kept for the next identical cell; not jobs">'
              f"{state.spares} spare{'s' if state.spares != 1 else ''}</span>"
              if state.spares else "")
    return (f'<span class="dm-muted dm-num">{live} · {when} · {state.running} running'
            f"{spares} · {stopped} stopped</span>")


def _engine_message(exc: BaseException) -> str:
    if isinstance(exc, errors.DockmagicError):
        return str(exc)
    return errors.describe_no_engine(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])


# --------------------------------------------------------------------------------------------
# Widgets
# --------------------------------------------------------------------------------------------

SCOPE_TIPS = {
    "notebook": "the containers this notebook (this kernel) started",
    "dockmagic": "every container dockmagic started, from any kernel; another kernel's that "
                 "named no notebook shows as 'other kernel'",
    "all": "every container on the engine, dockmagic's or not",
}

# action -> (icon, tooltip, what the row says while it runs, what the notice says after)
ACTIONS = {
    "stop": ("stop", "stop the container (docker stop: SIGTERM, SIGKILL after 10 s)",
             "stopping…", "stopped"),
    "restart": ("repeat", "restart the container (docker restart; starts a stopped one)",
                "restarting…", "restarted"),
    "remove": ("trash", "remove the container (docker rm)", "removing…", "removed"),
    "logs": ("align-left", "show its logs under this row, following live until closed",
             None, None),
    "commit": ("camera", "commit the container as an image (asks for REPO:TAG)", None, None),
}


def _add_history(snap, now: float) -> dict:
    global _history
    with _history_lock:
        _history = ps.build_history(_history, snap, now)
        return _history


def logs_html(text: str) -> str:
    """The logs pane's body: newest lines at the bottom, and in view (a column-reversed
    scroll box starts, and stays, scrolled to its end while new lines arrive)."""
    return (f'<div class="dm-logscroll"><pre>{_e(text) if text else "(no output yet)"}</pre>'
            "</div>")


def _show(widget, visible: bool) -> None:
    display = None if visible else "none"
    if widget.layout.display != display:
        widget.layout.display = display


class _RowView:
    """The widgets of one container row: its cells (one HTML) and one button per action."""

    def __init__(self, panel: "Panel", cid: str):
        self.id = cid
        self._key = None
        self.cells = W.HTML(layout=panel._cell_layout, style=panel._html_style)
        self.cells.add_class("dm-cellbox")  # the narrow-width rules measure this box
        self._spare = False
        self.buttons = {}
        for action, (icon, tip, _, _) in ACTIONS.items():
            b = W.Button(icon=icon, tooltip=tip, layout=panel._btn_layout,
                         style=panel._btn_style)
            b.add_class(f"dm-act-{action}")
            b.on_click(lambda _b, a=action: panel._on_action(a, cid))
            self.buttons[action] = b
        self.box = W.HBox([self.cells, *self.buttons.values()], layout=panel._row_layout)
        self.box.add_class("dm-row")

    def update(self, row: ContainerRow, note: Optional[str]) -> None:
        key = (ps.to_cells(row), row.status, row.notebook, note)
        if key == self._key:  # what the row shows has not changed: nothing to send
            return
        self._key = key
        if row.spare != self._spare:
            self._spare = row.spare
            (self.box.add_class if row.spare else self.box.remove_class)("dm-spare")
        value = row_html(row, note)
        if self.cells.value != value:
            self.cells.value = value
        busy = note is not None
        wanted = {"stop": busy or not row.active, "restart": busy, "remove": busy,
                  "logs": False, "commit": busy}
        for action, disabled in wanted.items():
            b = self.buttons[action]
            if b.disabled != disabled:
                b.disabled = disabled

    def close(self) -> None:
        for w in (*self.buttons.values(), self.cells, self.box):
            w.close()


def _this_notebook(shell) -> str:
    """The notebook path %%docker writes into the ``dockmagic.notebook`` label."""
    from .kernel import notebook_path

    return notebook_path(shell)


class Panel(W.VBox):
    """The live panel. Display it (it is a widget); ``close()`` stops its refresher.

    ``scope``: "notebook" (this kernel's / notebook's containers), "dockmagic" (every container
    dockmagic made) or "all". ``interval``: seconds between refreshes. ``notebook``/``kernel``
    default to this kernel's, as the labels of its ``%%docker`` containers say.
    ``query_gpus``: a function returning a :class:`~dockmagic.nvml.GpuSnapshot` (tests pass
    recorded ones). ``autostart=False`` leaves the thread off: call :meth:`refresh` yourself
    (the other engines are then read by :meth:`refresh` too, each once, waiting for them).
    ``default_engine``: the notebook's (``%docker config --engine``), marked ``*``.
    """

    #: Another engine whose read has been in flight this long (seconds) shows as not answering.
    engine_timeout = ENGINE_TIMEOUT_S

    def __init__(self, scope: str = "dockmagic", interval: float = DEFAULT_INTERVAL, *,
                 notebook: Optional[str] = None, kernel: Optional[str] = None,
                 max_rows: int = MAX_ROWS, query_gpus: Optional[Callable] = None,
                 autostart: bool = True, default_engine: Optional[str] = None):
        if scope not in ps.SCOPES:
            raise ValueError(f"scope must be one of {', '.join(ps.SCOPES)}, not {scope!r}")
        super().__init__()
        if notebook is None or kernel is None:
            from .kernel import kernel_id

            try:
                from IPython import get_ipython
                shell = get_ipython()
            except ImportError:  # pragma: no cover - IPython is a dependency
                shell = None
            notebook = _this_notebook(shell) if notebook is None else notebook
            kernel = kernel_id() if kernel is None else kernel
        self.notebook, self.kernel = notebook, kernel
        self.scope = scope
        self.interval = float(interval)
        self.paused = False
        self.max_rows = max_rows
        if query_gpus is None:
            from .nvml import query_snapshot as query_gpus
        self._query_gpus = query_gpus
        self._pstate = PanelState(scope=scope)
        self._listing: tuple = ()
        self._listed_at = 0.0
        self.default_engine = default_engine
        self._logs_id: Optional[str] = None  # the row (key) whose logs pane is open
        self._logs_shown: Optional[str] = None
        self._notes: Dict[str, str] = {}  # row key -> "stopping…" while an action on it runs
        self._rows: Dict[str, _RowView] = {}  # by row key (ps.row_key)
        self._pending_ok: Optional[Callable[[str], None]] = None
        self._apply_lock = threading.RLock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._force = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._fetcher = Fetcher()  # the local engine's; each other engine has its own
        # every other engine of `%docker engines`, each read on its own thread once started
        self.engines = EnginePoller(lambda: self.interval, lambda: not self.paused,
                                     lambda: self.scope != "all", self._on_engine_change)
        self._local_url: Optional[str] = None
        self._build_widgets()
        _live.add(self)
        from .kernel import on_shutdown
        on_shutdown(close_all)
        if autostart:
            self.start()

    # -- widgets ---------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        # Shared layout and style models: one per panel, not one per row button.
        self._btn_layout = W.Layout(width="26px", height="22px")
        self._btn_style = W.ButtonStyle()
        self._row_layout = W.Layout(align_items="center", width="100%")
        # every row's cells get the same width (not their content's), so columns line up
        self._cell_layout = W.Layout(flex="1 1 0%", min_width="0", overflow="hidden")
        self._html_style = HTMLStyle()
        # cards share the width: two side by side from about 540 px, up to 340 px each
        self._card_layout = W.Layout(flex="1 1 270px", min_width="250px", max_width="340px")
        self.add_class("dm-panel")

        self.scope_w = W.ToggleButtons(
            options=[(ps.SCOPE_NAMES[s], s) for s in ps.SCOPES], value=self.scope,
            tooltips=[SCOPE_TIPS[s] for s in ps.SCOPES],
            style={"button_width": "auto"}, layout=W.Layout(width="auto"))
        self.scope_w.observe(self._on_scope, names="value")
        values = [v for _, v in INTERVALS]
        options = list(INTERVALS) if self.interval in values else \
            sorted(INTERVALS + ((f"{self.interval:g} s", self.interval),), key=lambda o: o[1])
        self.interval_w = W.Dropdown(options=options, value=self.interval, tooltip="refresh every",
                                     layout=W.Layout(width="64px"))
        self.interval_w.observe(self._on_interval, names="value")
        self.pause_w = W.ToggleButton(value=False, icon="pause", tooltip="pause refreshing",
                                      layout=W.Layout(width="34px", padding="0"))
        self.pause_w.observe(self._on_pause, names="value")
        self.refresh_w = W.Button(icon="refresh", tooltip="refresh the panel now (re-reads the "
                                  "engine and the GPUs; changes no container)",
                                  layout=W.Layout(width="32px"))
        self.refresh_w.on_click(lambda _b: self.refresh_soon())
        self.prune_w = W.Button(description="prune stopped", icon="trash", disabled=True,
                                tooltip="remove dockmagic's stopped containers shown here",
                                layout=W.Layout(width="auto"))
        self.prune_w.add_class("dm-prune")
        self.prune_w.on_click(lambda _b: self._on_prune())
        self.status_w = W.HTML()
        title = W.HTML(CSS + '<span class="dm-title">dockmagic</span>')
        header = W.HBox([title, self.scope_w, self.interval_w, self.pause_w, self.refresh_w,
                         self.prune_w, self.status_w],
                        layout=W.Layout(align_items="center", flex_flow="row wrap"))

        self.banner_w = W.HTML(layout=W.Layout(display="none"))
        self.notice_w = W.HTML(layout=W.Layout(display="none"))

        self.prompt_msg = W.HTML()
        self.prompt_text = W.Text(placeholder="REPO:TAG", layout=W.Layout(width="220px"))
        self.prompt_ok = W.Button(description="OK", button_style="danger",
                                  layout=W.Layout(width="auto"))
        self.prompt_cancel = W.Button(description="cancel", layout=W.Layout(width="auto"))
        self.prompt_ok.on_click(lambda _b: self._on_prompt(True))
        self.prompt_cancel.on_click(lambda _b: self._on_prompt(False))
        self.prompt_w = W.HBox([self.prompt_msg, self.prompt_text, self.prompt_ok,
                                self.prompt_cancel],
                               layout=W.Layout(display="none", align_items="center"))

        self.logs_title = W.HTML(layout=W.Layout(flex="1 1 auto"))
        self.logs_body = W.HTML()
        self.logs_close = W.Button(description="close", icon="times",
                                   tooltip="close the logs (stops following)",
                                   layout=W.Layout(width="auto", flex="none"))
        self.logs_close.on_click(lambda _b: self.close_logs())
        self.logs_w = W.VBox([W.HBox([self.logs_title, self.logs_close],
                                     layout=W.Layout(align_items="center", width="100%")),
                              self.logs_body],
                             layout=W.Layout(display="none"))
        self.logs_w.add_class("dm-logs")

        # the headings share the rows' flex layout, with a spacer where the buttons are
        thead_cells = W.HTML(header_html(), layout=self._cell_layout)
        thead_cells.add_class("dm-cellbox")
        self.thead_w = W.HBox([thead_cells,
                               W.HTML('<div class="dm-actions-space"></div>')],
                              layout=W.Layout(width="100%"))
        self.rows_w = W.VBox()
        self.more_w = W.HTML()
        # the GPUs: a heading per engine, its cards under it (the local engine's first)
        self.gpus_w = GpuGroups(self._html_style, self._card_layout)
        self.gpu_head_w, self.cards_w = self.gpus_w.head, self.gpus_w.cards
        # engines of `%docker engines` that do not answer: one line each, over the table
        self.engines_w = W.HTML(layout=W.Layout(display="none"))
        # the logs pane is not a child here: it is placed in rows_w, under its row
        self.children = (header, self.banner_w, self.prompt_w, self.notice_w, self.engines_w,
                         self.thead_w, self.rows_w, self.more_w, self.gpu_head_w, self.cards_w,
                         self.gpus_w.others)

    # -- thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the refresher thread (done on creation unless ``autostart=False``)."""
        if self._closed or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self.engines.start_threads()
        self._thread = threading.Thread(target=self._run, name="dockmagic-panel", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            force, self._force = self._force, False
            if force or not self.paused:
                self.refresh()
            self._wake.wait(self.interval)

    def _on_engine_change(self) -> None:
        """Another engine's rows or state changed (on its reader's thread): draw it now."""
        if self._thread is not None and self._thread.is_alive():
            self.refresh_soon()

    def refresh_soon(self) -> None:
        """Ask the refresher for a tick now, even while paused (after an action)."""
        self._force = True
        self._wake.set()

    @property
    def state(self) -> PanelState:
        """The state last applied."""
        return self._pstate

    def refresh(self) -> PanelState:
        """Read the engine and the GPUs now, build the state and apply it. Never raises."""
        with self._refresh_lock:
            try:
                state = self._build_state()
            except Exception as exc:  # a bug here must not kill the refresher
                state = dataclasses.replace(
                    self._pstate, time=time.time(),
                    engine_error=f"panel refresh failed: {type(exc).__name__}: {exc}")
            if not self._stop.is_set():
                try:
                    self._apply(state)
                except Exception:  # widgets closed under us (kernel shutting down)
                    pass
            return state

    def _build_state(self) -> PanelState:
        now = time.time()
        snap = self._query_gpus()
        # Only dockmagic's containers unless every one is asked for: a tick's cost follows
        # what the panel can show, not how busy the engine is.
        managed_only = self.scope != "all"
        try:
            listing = lifecycle.query_containers(all=True, managed_only=managed_only)
            engine_error = None
            self._listing, self._listed_at = tuple(listing), now
        except Exception as exc:
            listing, engine_error = self._listing, _engine_message(exc)
        fetcher = self._fetcher
        if engine_error is None:
            if not snap.error and any(g.processes for g in snap.gpus):
                # GPU processes may live in anyone's container: join on the running ones
                try:
                    running = lifecycle.query_containers(all=False) if managed_only \
                        else listing
                    snap = attach_containers(snap, running)
                except Exception:  # the join is a nicety; the next tick tries again
                    pass
            snap = attach_process_info(snap)
            fetcher.forget_except({e.get("Id") for e in listing})
        history = _add_history(snap, now)
        readings = self._read_engines()
        inspected, stats = fetcher.inspected(), fetcher.stats()
        others = self.engines.fetchers()
        if others:  # keyed ENGINE/id: one dict for the state builder
            inspected = dict(inspected)
            stats = dict(stats)
            for f in others:
                inspected.update(f.inspected())
                stats.update(f.stats())
        state = ps.build_state(listing, snap, stats, self.scope, self.notebook, now,
                               kernel=self.kernel, inspected=inspected,
                               history=history, engine_error=engine_error, engines=readings,
                               local_endpoint=self._local_endpoint() if readings else "",
                               default_engine=self.default_engine,
                               timeout=self.engine_timeout)
        if self._logs_id is not None:  # the pane follows the container's output
            row = self._row(self._logs_id, state)
            target = self._fetcher_for(row.engine) if row is not None else None
            if target is not None:
                target.want("logs", row.id)
        shown = state.rows[:self.max_rows]
        if engine_error is None:
            ids = {r.id for r in shown if r.engine == ps.LOCAL}
            entries = [e for e in listing if e.get("Id") in ids]
            for cid in ps.ids_to_inspect(entries, fetcher.inspected(), now):
                fetcher.want("inspect", cid)
        for reading in readings:
            if reading.listing is not None and reading.error is None:
                self._want_inspect(reading, shown, now)
        self._want_stats(state)
        return state

    def _read_engines(self) -> tuple:
        """The other engines' last readings (read now, and waited for, when no thread runs)."""
        poller = self.engines
        poller.sync()
        if not poller.threaded:
            poller.read_all()
        return poller.readings()

    def _want_inspect(self, reading, shown, now) -> None:
        """Another engine's rows shown: inspect what is new or changed there (on its own
        fetcher), and forget what is no longer listed."""
        fetcher = self.engines.fetcher(reading.name)
        if fetcher is None:
            return
        fetcher.forget_except({e.get("Id") for e in reading.listing})
        ids = {r.id for r in shown if r.engine == reading.name}
        entries = [e for e in reading.listing if e.get("Id") in ids]
        for cid in ps.ids_to_inspect(entries, fetcher.inspected_ids(), now):
            fetcher.want("inspect", cid)

    def _local_endpoint(self) -> str:
        if self._local_url is None:
            from .engine import resolve_endpoint
            try:
                self._local_url = resolve_endpoint().url
            except Exception:
                self._local_url = ""
        return self._local_url

    def _fetcher_for(self, engine: str) -> Optional[Fetcher]:
        return self._fetcher if engine == ps.LOCAL else self.engines.fetcher(engine)

    def _want_stats(self, state: PanelState) -> None:
        mono = time.monotonic()
        due = [(self._fetcher_for(r.engine), r) for r in state.rows[:self.max_rows]
               if r.state == "running"]
        due = [(f.sample_age(r.id, mono), r.key, f, r.id) for f, r in due if f is not None]
        due = [d for d in due if d[0] >= max(self.interval, STATS_EVERY_S) * 0.9]
        for _, _, fetcher, cid in sorted(due, key=lambda d: (d[0], d[1]),
                                         reverse=True)[:STATS_PER_TICK]:
            fetcher.want("stats", cid)

    # -- applying a state ------------------------------------------------------------------
    def _apply(self, state: PanelState) -> None:
        with self._apply_lock, self.hold_sync():
            if self._closed:
                return
            self._pstate = state
            shown = state.rows[:self.max_rows]
            views, made, waiting = {}, 0, 0
            for row in shown:
                view = self._rows.get(row.key)
                if view is None:
                    if made >= NEW_ROWS_PER_TICK:
                        waiting += 1
                        continue
                    view, made = _RowView(self, row.key), made + 1
                view.update(row, self._notes.get(row.key))
                views[row.key] = view
            for key, view in self._rows.items():
                if key not in views:
                    view.close()
            self._rows = views
            if self._logs_id is not None and self._logs_id not in views:
                self._close_logs_locked()  # its container is gone (or out of scope)
            self._place_rows()
            self._apply_logs()
            hidden = len(state.rows) - len(shown)
            if waiting:
                self.refresh_soon()  # draw the rest on a tick right after this one
            more = (f'<span class="dm-muted">drawing {waiting} more rows…</span>' if waiting
                    else f'<span class="dm-muted">{hidden} more not shown: narrow the filter'
                         "</span>" if hidden else "" if shown else
                    f'<span class="dm-muted">no containers ({_e(ps.SCOPE_NAMES[state.scope])})'
                    f"{'; start one with %%docker -d IMAGE' if state.scope != 'all' else ''}"
                    "</span>")
            if self.more_w.value != more:
                self.more_w.value = more
            self.status_w.value = status_html(state, self.paused, self.interval, len(shown))
            prunable = len(state.prunable)
            with self.prune_w.hold_sync():
                self.prune_w.disabled = prunable == 0
                self.prune_w.description = f"prune stopped ({prunable})" if prunable else \
                    "prune stopped"
            if state.engine_error:
                seen = time.strftime("%H:%M:%S", time.localtime(self._listed_at)) \
                    if self._listed_at else "never"
                self.banner_w.value = (
                    f'<div class="dm-banner">Docker engine: {_e(state.engine_error)}<br>'
                    f"retrying every {self.interval:g} s; rows are as last seen ({seen})</div>")
            _show(self.banner_w, bool(state.engine_error))
            self._apply_engines(state)
            self.gpus_w.apply(state)

    def _apply_engines(self, state: PanelState) -> None:
        """The engine column (shown once another engine is added), and one line per engine
        that does not answer, with why and how old its rows are."""
        if state.multi_engine != ("dm-multi" in self._dom_classes):
            (self.add_class if state.multi_engine else self.remove_class)("dm-multi")
        lines = []
        for group in state.engine_problems:
            seen = time.strftime("%H:%M:%S", time.localtime(group.seen_at)) \
                if group.seen_at else "never"
            lines.append(f'<div class="dm-engine-down" data-engine="{_e(group.name)}">'
                         f"{_e(ps.to_engine_problem(group))} · its rows are as last seen "
                         f"({seen}); retrying</div>")
        if self.engines.error:
            lines.append(f'<div class="dm-engine-down">engines: {_e(self.engines.error)}</div>')
        value = "".join(lines)
        if self.engines_w.value != value:
            self.engines_w.value = value
        _show(self.engines_w, bool(value))

    # -- controls --------------------------------------------------------------------------
    def _on_scope(self, change) -> None:
        self.scope = change["new"]
        self.engines.poke()  # the other engines' listings follow the scope too
        self.refresh_soon()

    def _on_interval(self, change) -> None:
        self.interval = float(change["new"])
        self.refresh_soon()

    def _on_pause(self, change) -> None:
        self.paused = bool(change["new"])
        self.pause_w.icon = "play" if self.paused else "pause"
        self.pause_w.tooltip = "resume refreshing" if self.paused else "pause refreshing"
        self.refresh_soon()

    def notice(self, text: str, error: bool = False) -> None:
        """One line under the header: what the last action did, or why it failed."""
        stamp = time.strftime("%H:%M:%S")
        cls = "dm-notice dm-notice-error" if error else "dm-notice dm-muted"
        with self._apply_lock:
            self.notice_w.value = f'<div class="{cls}">{stamp} · {_e(text)}</div>'
            _show(self.notice_w, True)

    def _ask(self, message: str, on_ok: Callable[[str], None], ok_label: str = "OK",
             text: Optional[str] = None) -> None:
        """Show the prompt bar; ``on_ok`` gets the text field's value (when ``text`` is given)."""
        with self._apply_lock, self.prompt_w.hold_sync():
            self._pending_ok = on_ok
            self.prompt_msg.value = f"<b>{_e(message)}</b>&nbsp;"
            _show(self.prompt_text, text is not None)
            if text is not None:
                self.prompt_text.value = text
            self.prompt_ok.description = ok_label
            _show(self.prompt_w, True)

    def _on_prompt(self, ok: bool) -> None:
        action, self._pending_ok = self._pending_ok, None
        _show(self.prompt_w, False)
        if ok and action is not None:
            action(self.prompt_text.value.strip())

    def _row(self, key: str, state: Optional[PanelState] = None) -> Optional[ContainerRow]:
        return next((r for r in (state or self._pstate).rows if r.key == key), None)

    def _on_action(self, action: str, key: str) -> None:
        """A row button was clicked (on the kernel's thread): ask if needed, then act."""
        row = self._row(key)
        if row is None:
            return
        if action == "logs":
            self._spawn(self._show_logs, row)
        elif action == "commit":
            self._ask(f"commit {row.name} as image", ok_label="commit", text="",
                      on_ok=lambda tag: self._commit(row, tag))
        elif not row.managed or (action == "remove" and row.active):
            who = "" if row.managed else " (not started by dockmagic)"
            verb = "force-remove running" if action == "remove" and row.active else action
            self._ask(f"{verb} {row.name}{_on(row)}{who}?", ok_label=action,
                      on_ok=lambda _t: self.act(action, row))
        else:
            self.act(action, row)

    def act(self, action: str, row: ContainerRow) -> None:
        """Run stop / restart / remove on ``row`` in the background; the row says so meanwhile."""
        note = ACTIONS[action][2]
        with self._apply_lock:
            self._notes = {**self._notes, row.key: note}
            view = self._rows.get(row.key)
            if view is not None:
                view.update(row, note)

        def work():
            try:
                engine = self.engines.engine(row.engine)  # the row's own engine
                if action == "stop":
                    lifecycle.stop_container(row.id, timeout=STOP_TIMEOUT_S, engine=engine)
                elif action == "restart":
                    lifecycle.restart_container(row.id, timeout=STOP_TIMEOUT_S, engine=engine)
                elif action == "remove":
                    lifecycle.remove_container(row.id, force=row.active, engine=engine)
                self.notice(f"{ACTIONS[action][3]} {row.name}{_on(row)}")
            finally:
                with self._apply_lock:
                    self._notes = {k: v for k, v in self._notes.items() if k != row.key}
                self.engines.poke(row.engine)
                self.refresh_soon()

        self._spawn(work)

    def _commit(self, row: ContainerRow, repo_tag: str) -> None:
        if not repo_tag:
            self.notice("commit needs REPO:TAG, e.g. myexp:v1", error=True)
            return

        def work():
            image = lifecycle.commit_container(
                row.id, repo_tag, message=f"committed from the dockmagic panel ({row.name})",
                author=os.environ.get("USER") or None, engine=self.engines.engine(row.engine))
            self.notice(f"committed {row.name} as {repo_tag}{_on(row)} ({image[:19]})")

        self._spawn(work)

    # -- the logs pane -----------------------------------------------------------------------
    def _show_logs(self, row: ContainerRow) -> None:
        """Open the logs pane under ``row`` (on an action thread); each refresh then reads the
        last lines again on a worker, so the pane follows the container until closed."""
        text = lifecycle.fetch_logs(row.id, tail=LOG_LINES,
                                    engine=self.engines.engine(row.engine))
        with self._apply_lock, self.hold_sync():
            if self._closed:
                return
            previous = self._rows.get(self._logs_id) if self._logs_id else None
            if previous is not None and self._logs_id != row.key:
                previous.box.remove_class("dm-logs-open")
            self._logs_id, self._logs_shown = row.key, text
            self.logs_title.value = (
                f'<b class="dm-part">logs of {_e(row.name)}{_e(_on(row))}</b> '
                f'<span class="dm-muted"><span class="dm-part">last {LOG_LINES} lines,</span> '
                f'<span class="dm-part">newest at the bottom</span> · '
                f'<span class="dm-part"><span class="dm-live">●</span> following (every '
                f"{self.interval:g} s)</span></span>")
            self.logs_body.value = logs_html(text)
            view = self._rows.get(row.key)
            if view is not None:
                view.box.add_class("dm-logs-open")
            _show(self.logs_w, True)
            self._place_rows()
        self.refresh_soon()

    def close_logs(self) -> None:
        """Close the logs pane and stop following."""
        with self._apply_lock, self.hold_sync():
            self._close_logs_locked()
            self._place_rows()

    def _close_logs_locked(self) -> None:
        view = self._rows.get(self._logs_id) if self._logs_id else None
        if view is not None:
            view.box.remove_class("dm-logs-open")
        self._logs_id = None
        _show(self.logs_w, False)

    def _place_rows(self) -> None:
        """The rows' boxes in order, with the logs pane right under its row."""
        children = []
        for key, view in self._rows.items():
            children.append(view.box)
            if key == self._logs_id:
                children.append(self.logs_w)
        children = tuple(children)
        if self.rows_w.children != children:
            self.rows_w.children = children

    def _apply_logs(self) -> None:
        row = self._row(self._logs_id) if self._logs_id is not None else None
        fetcher = self._fetcher_for(row.engine) if row is not None else None
        got = fetcher.logs() if fetcher is not None else None
        if got is None or got[0] != self._logs_id:
            return
        if got[1] != self._logs_shown:
            self._logs_shown = got[1]
            self.logs_body.value = logs_html(got[1])

    def _on_prune(self) -> None:
        rows = self._pstate.prunable
        if not rows:
            return
        names = ", ".join(r.name for r in rows[:5]) + (" …" if len(rows) > 5 else "")
        self._ask(f"remove {len(rows)} stopped dockmagic container"
                  f"{'s' if len(rows) != 1 else ''} ({names})?", ok_label="remove",
                  on_ok=lambda _t: self._spawn(self._prune, rows))

    def _prune(self, rows: Sequence[ContainerRow]) -> None:
        removed = []
        try:
            for name in dict.fromkeys(r.engine for r in rows):  # each engine's own, in order
                removed += lifecycle.prune_stopped([r.id for r in rows if r.engine == name],
                                                   engine=self.engines.engine(name))
                self.engines.poke(name)
        finally:
            self.notice(f"removed {len(removed)} stopped container"
                        f"{'s' if len(removed) != 1 else ''}")
            self.refresh_soon()

    def _spawn(self, fn, *args) -> None:
        """Run an action on a short daemon thread; its failure becomes the notice line."""
        def run():
            try:
                fn(*args)
            except Exception as exc:
                self.notice(str(exc) if isinstance(exc, errors.DockmagicError)
                            else f"{type(exc).__name__}: {exc}", error=True)

        threading.Thread(target=run, name="dockmagic-panel-action", daemon=True).start()

    # -- closing ---------------------------------------------------------------------------
    def hand_over(self, where: str) -> None:
        """The panel is shown again (``%docker panel`` in a later cell): stop this one (no
        second refresher) and leave one dim line saying where the live one is now, instead
        of an empty output. Its history stays with the kernel (the new panel draws it)."""
        if getattr(self, "_closed", True):
            return
        note = W.HTML(f'<div class="dm-moved" style="color:var(--jp-ui-font-color2,#57606a);'
                      f'font-size:12px;padding:2px 0">dockmagic: this panel moved to {_e(where)}'
                      "</div>")
        self._moved_w = note
        self._shutdown(replace_with=note)

    def close(self) -> None:
        """Stop the refresher and the workers, and close the panel's widgets. Idempotent."""
        self._shutdown()
        note = getattr(self, "_moved_w", None)
        if note is not None:
            note.close()
        _live.discard(self)
        super().close()

    def _shutdown(self, replace_with=None) -> None:
        """Stop the threads and close every widget of the panel but the panel itself (and,
        when the panel stays shown with ``replace_with`` as its one child, its layout)."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self._stop.set()
            self._wake.set()
            t = self._thread
            if t is not None and t.is_alive() and t is not threading.current_thread():
                t.join(timeout=10)
            self._fetcher.close()
            self.engines.close()
            with self._apply_lock:
                owned = [w for view in self._rows.values()
                         for w in (*view.buttons.values(), view.cells, view.box)]
                owned += [*self.gpus_w.widgets(), *_descendants(self),
                          *_descendants(self.logs_w), self.logs_w, self._btn_layout,
                          self._btn_style, self._row_layout, self._cell_layout,
                          self._card_layout, self._html_style]
                if replace_with is None:
                    owned.append(self.layout)
                else:  # first: the view never shows a closed widget
                    with self.hold_sync():
                        self.children = (replace_with,)
                        self.remove_class("dm-panel")
                        self.add_class("dm-panel-moved")
                self._rows = {}
                for w in owned:
                    for part in (getattr(w, "layout", None), getattr(w, "style", None)):
                        if isinstance(part, W.Widget) and part is not self.layout:
                            part.close()
                    w.close()


def _on(row: ContainerRow) -> str:
    """' on ENGINE' for a row of another engine than the local one, else ""."""
    return "" if row.engine == ps.LOCAL else f" on {row.engine}"


def _descendants(box) -> list:
    out = []
    for child in getattr(box, "children", ()):
        out.extend(_descendants(child))
        out.append(child)
    return out


# --------------------------------------------------------------------------------------------
# For the magics
# --------------------------------------------------------------------------------------------


def show_panel(magics=None, args: Sequence[str] = ()) -> Panel:
    """``%docker panel [--scope notebook|dockmagic|all] [--interval SECONDS]``: a new panel
    (the cell's result displays it); an earlier panel of the same ``magics`` is stopped, so
    re-running the cell leaves no refresher behind, and its output says where the panel went."""
    from IPython.core.error import UsageError

    options = {"--scope": "dockmagic", "--interval": str(DEFAULT_INTERVAL)}
    it = iter(args)
    for arg in it:
        key, eq, value = arg.partition("=")
        if key not in options:
            raise UsageError(f"%docker panel takes --scope {{{'|'.join(ps.SCOPES)}}} and "
                             f"--interval SECONDS, not {arg!r}")
        options[key] = value if eq else next(it, "")
    if options["--scope"] not in ps.SCOPES:
        raise UsageError(f"%docker panel --scope: one of {', '.join(ps.SCOPES)}")
    try:
        interval = float(options["--interval"])
        if not 0.2 <= interval <= 3600:
            raise ValueError
    except ValueError:
        raise UsageError("%docker panel --interval: seconds between 0.2 and 3600") from None
    notebook = None
    if magics is not None:
        previous = _by_owner.pop(magics, None)
        if previous is not None:  # its output says where the live panel went
            number = magics.cell_number() if hasattr(magics, "cell_number") else None
            previous.hand_over(f"cell [{number}]" if number is not None else "a later cell")
        notebook = magics._notebook()
    panel = Panel(scope=options["--scope"], interval=interval, notebook=notebook,
                  default_engine=getattr(getattr(magics, "config_", None), "engine", None))
    if magics is not None:
        _by_owner[magics] = panel
    return panel


def close_all() -> None:
    """Close every open panel (for ``unload_ipython_extension``)."""
    for panel in list(_live):
        panel.close()
