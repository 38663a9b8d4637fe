"""The panel's GPU part: one heading per engine (name, endpoint, reachable, GPUs free/total)
and, under it, that engine's GPU cards.

The local engine's GPUs come from NVML on the refresher's tick (no driver: its heading says
so, once, with the fix on hover); every other engine's from ``nvidia-smi -q -x`` over its SSH
connection, read by :mod:`dockmagic.panelpoll`. With no engine added the part looks as it did
before engines existed: one "GPUs" heading and the local cards.

* :func:`card_html` / :func:`sparkline_svg` / :func:`heading_html` - pure HTML;
* :class:`GpuGroups` - the widgets, updated from a :class:`~dockmagic.panelstate.PanelState`
  (inside the panel's ``hold_sync()``), sending only what changed.
"""
from __future__ import annotations

import html
from typing import Dict, Optional, Sequence, Tuple

import ipywidgets as W

from . import gpus
from . import panelstate as ps
from .panelstate import EngineGroup, GpuCard, PanelState
from .units import NA  # the units and words of %gpus
from .units import mem as fmt_bytes

__all__ = ["card_html", "sparkline_svg", "heading_html", "GpuGroups", "UTIL_COLOUR",
           "MEM_COLOUR"]

UTIL_COLOUR, MEM_COLOUR = "#0969da", "#8250df"  # fallbacks; the theme's colours win (CSS)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _polylines(points: Sequence[Tuple[float, Optional[float]]], colour: str, cls: str) -> str:
    """Polylines through (x, y) points; a None value breaks the line (a gap, not a zero)."""
    runs, run = [], []
    for x, y in points:
        if y is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(f"{x:.1f},{y:.1f}")
    if run:
        runs.append(run)
    out = []
    for r in runs:
        if len(r) == 1:
            cx, cy = r[0].split(",")
            out.append(f'<circle class="{cls}" cx="{cx}" cy="{cy}" r="1.2" fill="{colour}"/>')
        else:
            out.append(f'<polyline class="{cls}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.4" stroke-linejoin="round" points="{" ".join(r)}"/>')
    return "".join(out)


def sparkline_svg(samples: Sequence[Tuple[float, Optional[float], Optional[float]]],
                  now: float,
                  window: float = ps.HISTORY_S, width: int = 300, height: int = 30) -> str:
    """An inline SVG of GPU utilisation and memory used, 0-100 %, over the last ``window``
    seconds ending at ``now``; no plotting library. Its colours are the theme's (classes
    styled by :data:`CSS`); the attributes are fallbacks for pages without it."""
    top, bottom = 2.0, height - 2.0

    def xy(t, v):
        x = width * (1.0 - (now - t) / window)
        y = None if v is None else bottom - (bottom - top) * max(0.0, min(100.0, v)) / 100.0
        return x, y

    recent = [s for s in samples if now - window <= s[0] <= now]
    util = _polylines([xy(t, u) for t, u, _ in recent], UTIL_COLOUR, "dm-sp-util")
    mem = _polylines([xy(t, m) for t, _, m in recent], MEM_COLOUR, "dm-sp-mem")
    frame = (f'<rect class="dm-sp-bg" x="0" y="0" width="{width}" height="{height}" rx="3" '
             f'fill="none"/>'
             f'<line class="dm-sp-mid" x1="0" y1="{(top + bottom) / 2:.1f}" x2="{width}" '
             f'y2="{(top + bottom) / 2:.1f}" stroke="#8c959f" stroke-width="0.6" '
             f'stroke-dasharray="2 3"/>'
             f'<text class="dm-sp-t" x="3" y="{height - 3}" font-size="8" '
             f'fill="#8c959f">{window:g} s</text>')
    return (f'<svg class="dm-spark" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
            f'xmlns="http://www.w3.org/2000/svg" role="img">'
            f"<title>{gpus.UTIL_NAME} and {gpus.MEMORY_NAME} used, last {window:g} s</title>"
            f"{frame}{mem}{util}</svg>")


def _bar(pct: Optional[float], levels: Tuple[int, int]) -> str:
    if pct is None:  # no reading: no bar (an empty track reads as 0 %), its place kept
        return '<div class="dm-bar dm-nobar"></div>'
    width = max(0.0, min(100.0, pct))
    return (f'<div class="dm-bar"><div class="dm-lv-{gpus.level(pct, levels)}" '
            f'style="width:{width:.1f}%"></div></div>')


def _process_html(proc) -> str:
    c = proc.container
    where = ""
    if c is not None:
        where = f" · <b>{_e(c.name)}</b>"
        if c.managed and (c.notebook or c.cell):
            where += f' <span class="dm-muted">{_e(gpus.notebook_cell_words(c))}</span>'
    who = ""
    if proc.user or proc.command:
        who = f' <span class="dm-muted">{_e(proc.user or NA)} {_e(proc.command or NA)}</span>'
    title = " ".join(x for x in (proc.user, proc.command, gpus.process_where(proc)) if x)
    return (f'<div title="{_e(title)}">PID {proc.pid} · {_e(fmt_bytes(proc.used_memory))}'
            f"{where}{who}</div>")


def card_html(card: GpuCard, now: float) -> str:
    """One GPU: name, temperature, power, utilisation and memory bars (``%gpus``'s thresholds),
    sparkline, processes."""
    g = card.info
    if g.lost:
        return (f'<div class="dm-card"><div class="dm-card-h"><b>GPU {g.index}</b></div>'
                f'<div class="dm-hot">lost or unreadable: {_e(g.error or NA)}</div></div>')
    temp = gpus.format_temp(g.temperature)
    if g.temperature is not None and g.temperature >= 75:
        temp = f'<span class="{"dm-hot" if g.temperature >= 85 else "dm-warm"}">{_e(temp)}</span>'
    else:
        temp = _e(temp)
    power = gpus.format_power_pair(g.power_mw, g.power_limit_mw)   # the same words as %gpus
    mem_pct = gpus.memory_percent(g)
    mem_text = gpus.format_memory_pair(g.mem_used, g.mem_total)
    procs = "".join(_process_html(p) for p in g.processes[:4])
    if len(g.processes) > 4:
        procs += f'<div class="dm-muted">+{len(g.processes) - 4} more</div>'
    if not procs:
        procs = '<div class="dm-muted">no processes</div>'
    return (
        '<div class="dm-card">'
        f'<div class="dm-card-h"><b>GPU {g.index}</b>'
        f'<span class="dm-muted" title="{_e(g.uuid or "")}">{_e(g.name or NA)}</span>'
        f'<span class="dm-num">{temp} · {_e(power)}</span></div>'
        f'<div class="dm-meter"><span class="dm-k dm-key-util">{gpus.UTIL_NAME}</span>'
        f"{_bar(g.util_gpu, gpus.UTIL_LEVELS)}"
        f'<span class="dm-v">{_e(gpus.format_percent(g.util_gpu))}</span></div>'
        f'<div class="dm-meter"><span class="dm-k dm-key-mem">{gpus.MEMORY_NAME}</span>'
        f"{_bar(mem_pct, gpus.MEMORY_LEVELS)}"
        f'<span class="dm-v">{_e(mem_text)}</span></div>'
        f"{sparkline_svg(card.history, now)}"
        f'<div class="dm-card-sub dm-muted"><span>'
        f'<span class="dm-key-util">━ {gpus.UTIL_NAME}</span> '
        f'<span class="dm-key-mem">━ {gpus.MEMORY_NAME}</span></span>'
        f'<span class="dm-num" title="memory-controller utilisation">'
        f"{gpus.MEM_UTIL_NAME} {_e(gpus.format_percent(g.util_mem))}</span></div>"
        f'<div class="dm-procs">{procs}</div></div>')



def gpu_text_html(snap) -> str:
    """What a heading says of the GPUs: driver, CUDA and count, or why there are none (the
    reason on the line, the whole message with its fix on hover)."""
    if snap is None:
        return "reading GPUs…"
    if snap.error:
        reason = snap.error.split(". ", 1)[0]
        return f'<span title="{_e(snap.error)}">{_e(reason)}</span>'
    return _e(ps.to_gpu_header(snap))


def heading_html(group: EngineGroup, multi: bool) -> str:
    """One engine's GPU heading. Alone (no engine added): "GPUs · driver …" as before engines
    existed; with others: the engine's name, endpoint, whether it answers, GPUs free/total,
    running jobs and round-trip time."""
    muted = '<span class="dm-muted" style="font-weight:400">'
    if not multi:
        return f'<div class="dm-section">GPUs {muted}· {gpu_text_html(group.snapshot)}</span></div>'
    name = _e(group.name)
    star = (' <span class="dm-muted" title="the notebook\'s default engine (%docker config '
            '--engine NAME)">*</span>' if group.default else "")
    parts = []
    if group.endpoint:
        parts.append(f'<span class="dm-endpoint">{_e(group.endpoint)}</span>')
    if group.reachable is None:
        parts.append('<span class="dm-reach">connecting…</span>')
    elif not group.reachable:
        reason = (group.error or "").split("; ", 1)[0]
        parts.append(f'<span class="dm-reach dm-hot" title="{_e(group.error or "")}">'
                     f"● not reachable: {_e(reason)}</span>")
    else:
        parts.append('<span class="dm-reach dm-live-text"><span class="dm-live">●</span> '
                     "reachable</span>")
        snap = group.snapshot
        free, total = ps.to_gpu_counts(snap)
        if total is not None:
            parts.append(f'<span class="dm-gpucount">GPUs {free}/{total} free</span>')
            parts.append(gpu_text_html(snap))
        elif snap is None:
            parts.append('<span class="dm-gpucount">reading GPUs…</span>')
        else:  # no driver (or nvidia-smi) there: the reason, the whole message on hover
            reason = snap.error.split(f"engine {group.name}: ", 1)[-1].split(". ", 1)[0]
            parts.append(f'<span class="dm-gpucount" title="{_e(snap.error)}">no GPUs: '
                         f"{_e(reason)}</span>")
        if group.running is not None:
            parts.append(f"{group.running} running")
        if group.rtt_ms is not None:
            parts.append(f"{group.rtt_ms:.1f} ms")
    return (f'<div class="dm-section dm-engine-h" data-engine="{name}">GPUs on '
            f'<b class="dm-engine-name">{name}</b>{star} {muted}· {" · ".join(parts)}</span>'
            "</div>")


class _Group:
    """One engine's heading and cards."""

    def __init__(self, owner: "GpuGroups", head=None, cards=None):
        self.head = head if head is not None else W.HTML()
        self.cards_w = cards if cards is not None else W.Box(
            layout=W.Layout(flex_flow="row wrap"))
        self.cards: Dict[str, W.HTML] = {}
        self._owner = owner

    def apply(self, group: EngineGroup, multi: bool, now: float) -> None:
        head = heading_html(group, multi)
        if self.head.value != head:
            self.head.value = head
        cards = {}
        for card in group.cards:
            key = card.info.uuid or f"#{card.info.index}"
            w = self.cards.get(key) or W.HTML(style=self._owner.html_style,
                                              layout=self._owner.card_layout)
            value = card_html(card, now)
            if w.value != value:
                w.value = value
            cards[key] = w
        for key, w in self.cards.items():
            if key not in cards:
                w.close()
        self.cards = cards
        children = tuple(cards.values())
        if self.cards_w.children != children:
            self.cards_w.children = children

    def widgets(self) -> list:
        return [*self.cards.values(), self.head, self.cards_w]


class GpuGroups:
    """The GPU part's widgets: the local engine's heading and cards (``head``, ``cards``),
    then a box (``others``) with each other engine's heading and cards, in the engines
    file's order."""

    def __init__(self, html_style, card_layout):
        self.html_style, self.card_layout = html_style, card_layout
        self.local = _Group(self, W.HTML('<div class="dm-section">GPUs</div>'))
        self.head, self.cards = self.local.head, self.local.cards_w
        self.others = W.VBox()
        self._groups: Dict[str, _Group] = {}

    def apply(self, state: PanelState) -> None:
        groups = state.groups or (EngineGroup(ps.LOCAL, snapshot=state.snapshot,
                                              cards=state.cards),)
        multi = len(groups) > 1
        self.local.apply(groups[0], multi, state.time)
        seen = {}
        for group in groups[1:]:
            view = self._groups.get(group.name) or _Group(self)
            view.apply(group, multi, state.time)
            seen[group.name] = view
        for name, view in self._groups.items():
            if name not in seen:
                for w in view.widgets():
                    w.close()
        self._groups = seen
        children = tuple(w for v in seen.values() for w in (v.head, v.cards_w))
        if self.others.children != children:
            self.others.children = children

    def widgets(self) -> list:
        """Every widget it made (to close them)."""
        return [w for g in (self.local, *self._groups.values()) for w in g.widgets()] + \
            [self.others]
