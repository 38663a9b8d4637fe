"""`%docker history`, `%docker export`, `%docker pin`: parse the line, read the records (this
kernel's, or a saved notebook's), hand them to ``provenance`` / ``export``, show or write. Thin."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from IPython.core.error import UsageError

from . import __version__, export, provenance, recording

_HISTORY_USAGE = "usage: %docker history [--notebook PATH.ipynb]"
_EXPORT_USAGE = ("usage: %docker export run.sh|compose.yaml [--from-notebook PATH.ipynb] "
                 "[--force]")
#: First lines dockmagic writes; a file that starts otherwise is the user's and is kept.
_OURS = ("#!/usr/bin/env bash\n# Replays the container cells of ", "# Session containers of ")


def _value(args: List[str], i: int, flag: str, usage: str) -> str:
    if "=" in args[i]:
        return args[i].split("=", 1)[1]
    if i + 1 >= len(args):
        raise UsageError(f"{flag} needs a value; {usage}")
    return args[i + 1]


def read_notebook(path: str) -> dict:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return provenance.parse_notebook(f.read())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}; give the saved notebook's path "
                         "(save it first: records are written when the notebook is)") from None
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None


def history_table(records: Sequence[dict], title: str = ""):
    from .commands import Table
    return Table(provenance.HISTORY_COLUMNS, provenance.to_history_rows(records),
                 "no container cells recorded yet", title=title)


def history_command(args: Sequence[str]):
    args = list(args)
    if not args:
        return history_table([h["record"] for h in recording.HISTORY])
    if args[0].split("=", 1)[0] == "--notebook" and len(args) <= 2:
        path = _value(args, 0, "--notebook", _HISTORY_USAGE)
        found = provenance.records_from_notebook(read_notebook(path))
        return history_table([f["record"] for f in found], title=path)
    raise UsageError(_HISTORY_USAGE)


def _kernel_source() -> str:
    return os.environ.get("JPY_SESSION_NAME") or "this kernel's cells"


def export_command(args: Sequence[str], say=print) -> Optional[str]:
    args = list(args)
    target, notebook, force = None, None, False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.split("=", 1)[0] == "--from-notebook":
            notebook = _value(args, i, "--from-notebook", _EXPORT_USAGE)
            i += 1 if "=" in arg else 2
            continue
        if arg in ("-f", "--force"):
            force = True
        elif arg.startswith("-") or target is not None:
            raise UsageError(_EXPORT_USAGE)
        else:
            target = arg
        i += 1
    if target is None:
        raise UsageError(_EXPORT_USAGE)
    if notebook:
        entries = export.pair_bodies(provenance.records_from_notebook(read_notebook(notebook)))
        source = notebook
    else:
        entries = [dict(h) for h in recording.HISTORY]
        source = _kernel_source()
    compose = target.endswith((".yaml", ".yml"))
    try:
        text = (export.build_compose if compose else export.build_script)(
            entries, source=source, version=__version__)
    except export.ExportError as exc:
        raise UsageError(str(exc)) from None
    _write(target, text, force, executable=not compose)
    if compose:
        say(f"wrote {target}: the session containers as compose services "
            f"(`docker compose -f {target} up -d`)")
    else:
        say(f"wrote {target}: {export.summarize(entries)}; run it with `bash {target}`")
    return None


def _write(path: str, text: str, force: bool, executable: bool):
    path = os.path.expanduser(path)
    if os.path.exists(path) and not force:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                head = f.read(200)
        except OSError:
            head = ""
        if not head.startswith(_OURS):
            raise UsageError(f"{path} exists and dockmagic did not write it; pick another name, "
                             "or add --force to replace it")
    tmp = f"{path}.dockmagic-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    if executable:
        os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def pin_command(args: Sequence[str], say=print):
    args = list(args)
    if args == ["--refresh"]:
        recording.PINS.refresh()
        say("pins cleared: each tag resolves to its digest again at its next use")
    elif args:
        raise UsageError("usage: %docker pin [--refresh] (turn pinning on with "
                         "`%docker config --pin on`)")
    say(recording.PINS.describe())
    return None
