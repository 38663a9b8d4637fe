"""`%docker history`, `%docker export`, `%docker pin`: the subcommands about what this notebook
ran. Read the records (this kernel's, or a saved notebook's), hand them to ``provenance`` /
``export``, show or write. Thin; registered in cli's one registry."""
from __future__ import annotations

import os
from typing import Sequence

from IPython.core.error import UsageError

from . import __version__, export, provenance, recording
from .cli import argument, subcommand

#: First lines dockmagic writes; a file that starts otherwise is the user's and is kept.
_OURS = ("#!/usr/bin/env bash\n# Replays the container cells of ", "# Session containers of ")


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


@subcommand("history", "what this notebook's container cells ran: image@digest, engine, GPUs, "
            "exit, duration", group="cells",
            description="The provenance records of this kernel's container cells as a table "
                        "(cell, image@digest, engine, GPUs, exit, duration), or those saved in "
                        "a notebook.")
@argument("--notebook", metavar="PATH.ipynb", help="read the records from a saved notebook")
def cmd_history(magics, args):
    if args.notebook is None:
        return history_table([h["record"] for h in recording.HISTORY])
    found = provenance.records_from_notebook(read_notebook(args.notebook))
    return history_table([f["record"] for f in found], title=args.notebook)


@subcommand("export", "a bash script replaying the container cells, or compose.yaml of the "
            "sessions", group="cells",
            description="Write TARGET: a bash script (needs bash and the docker CLI only) that "
                        "replays the container cells in order, each with its recorded docker "
                        "run line pinned by digest and its body on stdin; or, for a .yaml/.yml "
                        "TARGET, the session containers as compose services. --in/--out cells "
                        "are skipped (a script has no kernel to move variables with).")
@argument("--from-notebook", metavar="PATH.ipynb",
          help="the records of a saved notebook, in notebook order (default: this kernel's, in "
               "the order they ran)")
@argument("--force", "-f", action="store_true", help="replace TARGET even if dockmagic did not "
                                                     "write it")
@argument("target", metavar="TARGET", help="run.sh or compose.yaml")
def cmd_export(magics, args, say=print):
    if args.from_notebook:
        found = provenance.records_from_notebook(read_notebook(args.from_notebook))
        entries, source = export.pair_bodies(found), args.from_notebook
    else:
        entries = [dict(h) for h in recording.HISTORY]
        source = os.environ.get("JPY_SESSION_NAME") or "this kernel's cells"
    compose = args.target.endswith((".yaml", ".yml"))
    try:
        text = (export.build_compose if compose else export.build_script)(
            entries, source=source, version=__version__)
    except export.ExportError as exc:
        raise UsageError(str(exc)) from None
    _write(args.target, text, args.force, executable=not compose)
    if compose:
        say(f"wrote {args.target}: the session containers as compose services "
            f"(`docker-compose -f {args.target} up -d`)")
    else:
        say(f"wrote {args.target}: {export.summarize(entries)}; run it with "
            f"`bash {args.target}`")
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


@subcommand("pin", "the images pinned by `config --pin on`; --refresh resolves tags anew",
            group="cells",
            description="Show which tag runs which digest. With `%%docker config --pin on`, each "
                        "tag is resolved to its digest (REPO@sha256:..., or the image ID for an "
                        "image built here and never pushed) the first time a cell uses it, and "
                        "later cells run that digest even if the tag moves.")
@argument("--refresh", action="store_true",
          help="forget the pins: each tag resolves to its digest again at its next use")
def cmd_pin(magics, args, say=print):
    if args.refresh:
        recording.PINS.refresh()
        say("pins cleared: each tag resolves to its digest again at its next use")
    say(recording.PINS.describe())
    return None
