"""One way to parse magic lines, and the one registry of `%docker` subcommands.

Every magic line dockmagic reads (`%docker SUBCOMMAND ...`, `%gpus ...`, `%%docker @NAME ...`,
`%%dockerfile ...`) goes through a :class:`UsageParser`: argparse that reports a mistake as one
IPython ``UsageError`` naming the fix (with "did you mean" for a misspelt flag), and shows
``--help`` as formatted text. `%docker --help` is generated from :data:`REGISTRY`.

Adding a subcommand is one decorated function, in any module listed in :data:`MODULES`
(``commands.py`` for the engine's containers and images, ``nbcommands.py`` for this notebook's
own things)::

    @cli.subcommand("history", "what ran in this notebook's containers", group="cells")
    @cli.argument("-n", type=int, default=20, metavar="N", help="the last N cells")
    @cli.argument("name", nargs="?", metavar="NAME", help="one container only")
    def cmd_history(magics, args):
        ...  # args is argparse's Namespace; raise UsageError for a mistake; return what displays

The decorators stack like IPython's ``magic_arguments``: ``argument`` lines read top-down in the
order the help shows them. ``group`` places the subcommand under a heading of `%docker --help`
(see :data:`GROUPS`). Help is kept as one logical line per item and wrapped at spaces with
hanging indents (:class:`HelpText`: at 88 columns as text, by the browser in a notebook, never
inside a word); it is HTML text, so JupyterLab does not turn ``data:/data`` into a link.
"""
from __future__ import annotations

import argparse
import difflib
import html
import importlib
import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from IPython.core.error import UsageError

#: Modules whose ``@subcommand`` functions make up `%docker`'s subcommands (imported on first use).
MODULES = ("dockmagic.nbcommands", "dockmagic.commands", "dockmagic.reproduce")
#: `%docker --help` headings, in order.
GROUPS = {
    "cells": "this notebook: sessions, defaults, the panel",
    "containers": "containers",
    "images": "images",
}


class HelpShown(Exception):
    """`--help` was shown; the command does nothing else."""


#: Help is wrapped at this many columns, at spaces, each item with a hanging indent.
HELP_WIDTH = 88
_SYNOPSIS = re.compile(r"^(usage: |%)")
_TWO_COLUMNS = re.compile(r"^ *\S(?:.*?\S)? {2,}(?=\S)")
HELP_CSS = ("<style>.dockmagic-help{font-family:var(--jp-code-font-family,monospace);"
            "font-size:var(--jp-code-font-size,13px);line-height:var(--jp-code-line-height,1.4);"
            "color:var(--jp-content-font-color1,inherit);margin:0;"
            "padding-left:var(--jp-code-padding,5px);white-space:pre-wrap;word-break:normal;"
            "overflow-wrap:anywhere}.dockmagic-help>div{min-height:1lh}"
            ".dockmagic-help .dmh-w{white-space:nowrap}</style>")
_UNBREAKABLE = re.compile(r"[^\s]*[-/][^\s]*")


def help_layout(line: str):
    """One logical help line (an item, unwrapped) -> (indent, hanging indent, text).

    A synopsis (``usage: ...``, ``%docker ...``) continues 4 columns in; a two-column item
    (``  --flag ARG   what it does``) continues under its description; prose under itself."""
    text = line.lstrip(" ")
    lead = len(line) - len(text)
    two = _TWO_COLUMNS.match(line)
    if _SYNOPSIS.match(text):
        hang = lead + 4
    elif two:
        hang = two.end()
    else:
        hang = lead
    if hang > HELP_WIDTH - 30:  # a very long first column: its text goes on below it
        hang = lead + 4
    return lead, hang, text


def wrap_help(text: str, width: int = HELP_WIDTH) -> str:
    """Logical help lines (one per item) wrapped at spaces to WIDTH columns, with hanging
    indents; a word longer than a line is left whole."""
    import textwrap

    out = []
    for line in text.split("\n"):
        if not line.strip():
            out.append("")
            continue
        lead, hang, body = help_layout(line)
        out.append(textwrap.fill(body, width, initial_indent=" " * lead,
                                 subsequent_indent=" " * hang, break_long_words=False,
                                 break_on_hyphens=False, replace_whitespace=False))
    return "\n".join(out)


class HelpText:
    """Help as text: wrapped at :data:`HELP_WIDTH` in a terminal; in a notebook one block per
    item that the browser wraps at spaces with the same hanging indent (never inside a word),
    plain HTML text, so that JupyterLab links nothing (``data:/data``)."""

    def __init__(self, text: str):
        self.lines = text.rstrip("\n").split("\n")  # logical lines: one per item
        self.text = wrap_help("\n".join(self.lines))

    def __repr__(self):
        return self.text

    def _repr_html_(self):
        blocks = []
        for line in self.lines:
            if not line.strip():
                blocks.append("<div></div>")
                continue
            lead, hang, body = help_layout(line)
            # a flag or path is one unit: a line never ends after the hyphen of `--no-mount`
            # or the slash of `/data:/data`
            words = _UNBREAKABLE.sub(r'<span class="dmh-w">\g<0></span>', html.escape(body))
            blocks.append(f'<div style="padding-left:{hang}ch;text-indent:{lead - hang}ch">'
                          f"{words}</div>")
        return f"{HELP_CSS}<div class='dockmagic-help'>{''.join(blocks)}</div>"


def show(text: str):
    from IPython.display import display
    display(HelpText(text))


def did_you_mean(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """` (did you mean --gpus?)` for the closest of CHOICES, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


class _Formatter(argparse.HelpFormatter):
    """argparse's help, with each paragraph of a description wrapped on its own."""

    def _fill_text(self, text, width, indent):
        import textwrap
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                           subsequent_indent=indent)
                             for p in text.split("\n\n"))


class UsageParser(argparse.ArgumentParser):
    """argparse for magic lines: mistakes are one-line UsageErrors, `--help` is shown as
    text and ends the command (no SystemExit), unknown flags get a suggestion."""

    def __init__(self, prog: str, description: str = "", hint: str = "", **kwargs):
        self.hint = hint  # added to every mistake's message: the likely fix
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kwargs)

    def error(self, message):
        hint = ""
        if message.startswith("unrecognized arguments:"):
            first = message.split(":", 1)[1].split()[0] if message.split(":", 1)[1].split() \
                else ""
            flag = first.split("=", 1)[0]
            if flag.startswith("-"):
                hint = did_you_mean(flag, [s for a in self._actions for s in a.option_strings])
        extra = f"; {self.hint}" if self.hint else ""
        raise UsageError(f"{self.prog}: {message}{hint}{extra}; see `{self.prog} --help`")

    def exit(self, status=0, message=None):
        if message:
            raise UsageError(message.strip())
        raise HelpShown()

    def _get_formatter(self):
        # one line per item: HelpText wraps it (text) or the browser does (HTML)
        return self.formatter_class(prog=self.prog, width=100_000)

    def print_help(self, file=None):
        show(self.format_help())

    def parse(self, argv: Sequence[str]):
        return self.parse_args(list(argv))


# -- the registry -------------------------------------------------------------------------------
@dataclass
class Subcommand:
    name: str
    summary: str
    parser: UsageParser
    run: Callable
    group: str = "containers"


REGISTRY: Dict[str, Subcommand] = {}
_loaded = False


def argument(*args, **kwargs):
    """One `add_argument` for the `@subcommand` below it (stack them, top line first)."""

    def deco(fn):
        fn.__dict__.setdefault("_dm_arguments", []).insert(0, (args, kwargs))
        return fn

    return deco


def subcommand(name: str, summary: str, *, description: str = "", group: str = "containers",
               usage: Optional[str] = None):
    """Register FN(magics, args) as `%docker NAME`; SUMMARY is its line in `%docker --help`,
    DESCRIPTION (default SUMMARY) heads `%docker NAME --help`."""

    def deco(fn):
        parser = UsageParser(f"%docker {name}", description or summary, usage=usage)
        for args, kwargs in fn.__dict__.get("_dm_arguments", ()):
            parser.add_argument(*args, **kwargs)
        if name in REGISTRY and REGISTRY[name].run is not fn:
            raise ValueError(f"two %docker subcommands named {name!r}")
        REGISTRY[name] = Subcommand(name, summary, parser, fn, group)
        fn.parser = parser
        return fn

    return deco


def load() -> Dict[str, Subcommand]:
    global _loaded
    if not _loaded:
        for module in MODULES:
            importlib.import_module(module)
        _loaded = True
    return REGISTRY


def take_option(argv: list, flag: str):
    """ARGV without `FLAG VALUE` / `FLAG=VALUE`, and VALUE (the last one given), or None."""
    out, value, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == flag:
            if i + 1 >= len(argv):
                raise UsageError(f"{flag} needs a value")
            value, i = argv[i + 1], i + 2
            continue
        if a.startswith(flag + "="):
            value = a[len(flag) + 1:]
        else:
            out.append(a)
        i += 1
    return out, value


def dispatch(magics, argv: Sequence[str]):
    """`%docker SUBCOMMAND ARGS...`: parse ARGS with the subcommand's parser and run it."""
    registry = load()
    name, rest = argv[0], list(argv[1:])
    sub = registry.get(name)
    if sub is None:
        raise UsageError(f"%docker has no subcommand {name!r}{did_you_mean(name, registry)}; "
                         "see `%docker --help` (to run code, use the cell form "
                         "`%%docker IMAGE`)")
    try:
        args = sub.parser.parse(rest)
    except HelpShown:
        return None
    return sub.run(magics, args)


def parse(parser: UsageParser, argv: Sequence[str]):
    """ARGV through PARSER; None when `--help` was shown."""
    try:
        return parser.parse(argv)
    except HelpShown:
        return None


# -- `%%docker @NAME` and `%gpus` ----------------------------------------------------------------
SESSION_CELL = UsageParser(
    "%%docker @NAME", "Run the cell in session NAME (started with `%docker session NAME ... "
    "IMAGE`): Python cells in its one interpreter, others via exec. Container flags belong to "
    "`%docker session`.",
    usage="%%%%docker @NAME [--in NAMES] [--out NAMES] [--out-pickle NAMES] [--no-raise-error] "
          "[INTERPRETER ...]",
    hint="container flags belong to `%docker session NAME [flags] IMAGE`")
SESSION_CELL.add_argument("--in", dest="inputs", action="append", default=[], metavar="NAMES",
                          help="variables sent into the cell: x,cfg (dest=src renames)")
SESSION_CELL.add_argument("--out", dest="outputs", action="append", default=[],
                          metavar="NAMES", help="variables brought back after the cell")
SESSION_CELL.add_argument("--out-pickle", dest="pickle_outputs", action="append", default=[],
                          metavar="NAMES",
                          help="variables brought back by pickle: this RUNS CODE FROM THE "
                               "CONTAINER IN YOUR KERNEL; only for containers you trust")
SESSION_CELL.add_argument("--no-raise-error", action="store_true",
                          help="a failing cell does not raise")
SESSION_CELL.add_argument("interpreter", nargs=argparse.REMAINDER, metavar="INTERPRETER",
                          help="default: the session's Python; e.g. bash, `bash -l`")


def parse_session_cell(line: str):
    """`@NAME [--in X] [--out Y] [--out-pickle Z] [--no-raise-error] [INTERPRETER ...]` ->
    (NAME, Namespace),
    or None when `--help` was shown."""
    from .cell import CellUsageError, split_line

    plain = line.split()
    if not any(c in line for c in "'\"\\") and (len(plain) < 2 or plain[1][0] != "-"):
        # `@NAME` or `@NAME bash -l`: the warm path, which must stay well under a millisecond
        # (argparse alone costs a few hundred microseconds).
        name = plain[0][1:] if plain else ""
        if name:
            return name, argparse.Namespace(inputs=[], outputs=[], pickle_outputs=[],
                                            no_raise_error=False, interpreter=plain[1:])
    try:
        argv = split_line(line)
    except CellUsageError as exc:
        raise UsageError(str(exc)) from None
    name = argv[0][1:]
    if not name:
        raise UsageError("%%docker @NAME: give the session's name, e.g. `%%docker @work`")
    args = parse(SESSION_CELL, argv[1:])
    return None if args is None else (name, args)


GPUS = UsageParser(
    "%gpus", "Show GPU state (utilisation, memory, temperature, power, processes and their "
    "containers), or choose the GPUs the next %%docker cells get. A cell's own --gpus wins.")
GPUS.add_argument("choice", nargs="?", metavar="CHOICE",
                  help="all | N (any N) | 0,2 | device=0,2 | none | auto:N (the N least-loaded, "
                       "pinned by UUID)")


# -- `%docker --help` ---------------------------------------------------------------------------
# One logical line per item (a backslash-newline continues it): HelpText wraps them.
CELL_HELP = """\
%%docker [docker-run flags] [dockmagic flags] IMAGE [INTERPRETER ...]
  Runs the cell in a new container; its output streams into the cell. The flags are docker \
run's own, spelled as docker spells them (--gpus, -v, -e, --shm-size, -w, -u, -m, -d, ...). \
The cell's text reaches INTERPRETER on stdin (default `python3 -u`; bash, `bash -l`, sh, \
`Rscript /dev/stdin`). The notebook's folder is mounted at the same path and is the working \
directory; the container runs as your uid:gid; interrupting the kernel stops and removes it.
  Example:  %%docker --gpus all -v /data:/data:ro pytorch/pytorch

dockmagic's own flags (cell form):
{own}

%%docker @NAME [--in NAMES] [--out NAMES] [--out-pickle NAMES] [--no-raise-error] [INTERPRETER]
  Runs the cell in session NAME (`%docker session NAME ... IMAGE` starts it): one persistent \
Python interpreter whose variables and imports stay; another INTERPRETER runs via exec.

%docker SUBCOMMAND ...   (`%docker SUBCOMMAND --help` shows its flags)
{subcommands}

%%dockerfile -t NAME:TAG [-f NAME] [--build-arg K=V] [--no-cache] [--target STAGE] [CONTEXT]
  Builds an image; the cell is the Dockerfile.

%gpus [all | N | 0,2 | device=0,2 | none | auto:N]
  Shows the GPUs and their processes; with an argument, picks the GPUs the next cells get.

Settings: %config DockerMagics  (e.g. %config DockerMagics.interrupt_grace = 5)
"""

#: dockmagic's own cell flags, as `%docker --help` explains them (cell.OWN_FLAGS parses them).
OWN_FLAG_HELP = (
    ("--dry-run, --show-cmd", "print the equivalent `docker run` command and run nothing"),
    ("--in NAMES, --out NAMES", "move variables in and back: `--in x,cfg --out result`; "
     "--out loads plain data and numpy arrays only, never code"),
    ("--out-pickle NAMES", "bring back any object by pickle: this RUNS CODE FROM THE CONTAINER "
     "IN YOUR KERNEL; only for images you trust"),
    ("--no-mount", "do not mount the notebook's folder"),
    ("--as-root", "run as root instead of your uid:gid"),
    ("--keep-entrypoint", "keep the image's ENTRYPOINT (the interpreter becomes its arguments)"),
    ("--no-raise-error", "a non-zero exit does not raise (Run All goes on)"),
    ("--engine NAME", "run on an engine of `%docker engines` (the notebook folder is synced "
     "there and back over its SSH connection); `--engine auto --gpus auto:N` picks the engine "
     "and GPUs with the most free memory"),
    ("--sync both|in|out|none", "remote engines: which way the notebook folder travels"),
)


def format_help() -> str:
    registry = load()
    own = "\n".join(f"  {flags:26s}{text}" for flags, text in OWN_FLAG_HELP)
    width = max([8] + [len(name) for name in registry]) + 2
    blocks = []
    for group, title in [*GROUPS.items(), (None, "more")]:
        subs = [s for s in registry.values()
                if (s.group == group if group is not None else s.group not in GROUPS)]
        if subs:
            blocks.append("\n".join([f" {title}:"] + [
                f"  {sub.name:{width}s}{sub.summary}"
                for sub in sorted(subs, key=lambda s: s.name)]))
    return CELL_HELP.format(own=own, subcommands="\n".join(blocks))


def show_help():
    show(format_help())
