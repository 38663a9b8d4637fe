"""`%docker SUBCOMMAND ...` for the engine's containers and images, and `%%dockerfile`: call
lifecycle, display. Thin.

Each subcommand is one function registered with ``@cli.subcommand`` (see cli.py for how to add
one); its ``@cli.argument`` lines are its parser and its `--help`. Flags keep docker's spellings
and meanings; flags only dockmagic has are long-form (`--all-containers`, `--orphans`). Every
mistake is a `UsageError` naming the fix; engine errors arrive as one-line
`errors.DockmagicError`s from lifecycle.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
import time
from typing import Callable, Optional, Sequence

from IPython.core.error import StdinNotImplementedError, UsageError

from . import errors, lifecycle, panelstate

from .cli import HelpShown, UsageParser, argument, subcommand

#: `%docker logs NAME` shows this many lines unless --tail says otherwise (the magics' traitlet
#: `DockerMagics.logs_tail` sets it).
LOGS_TAIL = 200


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _key_value(text: str) -> tuple:
    key, eq, value = text.partition("=")
    if not key or not eq:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


# -- display ----------------------------------------------------------------------------------
class Table:
    """A listing that renders as an HTML table in a notebook and as fixed-width text elsewhere."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str,
                 title: str = "", titles: Optional[Sequence[Sequence[str]]] = None):
        self.columns = tuple(columns)
        self.rows = tuple(tuple(str(c) for c in r) for r in rows)
        self.empty = empty
        self.title = title
        self.titles = titles  # per-cell hover text (full values behind shortened ones)

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        if not self.rows:
            return self.empty
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                 for row in (self.columns, *self.rows)]
        return "\n".join(([self.title] if self.title else []) + lines)

    def _repr_html_(self):
        if not self.rows:
            return f"<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for i, row in enumerate(self.rows):
            tips = self.titles[i] if self.titles else ()
            cells = []
            for j, value in enumerate(row):
                tip = tips[j] if j < len(tips) and tips[j] and tips[j] != value else ""
                attr = f" title='{html.escape(tip, quote=True)}'" if tip else ""
                cells.append(f"<td style='text-align:left'{attr}>{html.escape(value)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        caption = f"<caption style='text-align:left'>{html.escape(self.title)}</caption>" \
            if self.title else ""
        return (f"<table class='dockmagic-table'>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")


def to_human_size(n: int) -> str:
    """Bytes as `docker images` shows them (powers of 1000, three significant digits)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000.0
    return f"{n}B"


def to_ago(seconds: float) -> str:
    """A duration the way docker words it: "About a minute ago", "3 hours ago"."""
    s = max(0, int(seconds))
    if s < 1:
        return "Less than a second ago"
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''} ago"
    m = s // 60
    if m < 60:
        return "About a minute ago" if m == 1 else f"{m} minutes ago"
    h = round(s / 3600)
    if s < 48 * 3600:
        return "About an hour ago" if h == 1 else f"{h} hours ago"
    d = s // 86400
    if d < 14:
        return f"{d} days ago"
    if d < 90:
        return f"{d // 7} weeks ago"
    if d < 730:
        return f"{d // 30} months ago"
    return f"{d // 365} years ago"


class _Streams:
    """A container's stdout and stderr, each through the runner's incremental-UTF-8 sink (a
    flush per chunk, the tail kept for error messages)."""

    def __init__(self, text_filter=None):
        from .runner import OutputSink

        self.sinks = {1: OutputSink(sys.stdout, keep_tail=True, text_filter=text_filter),
                      2: OutputSink(sys.stderr, keep_tail=True, text_filter=text_filter)}

        self.newlines = 0

    def __call__(self, kind: int, data: bytes, final: bool = False):
        self.newlines += data.count(b"\n")
        self.sinks[2 if kind == 2 else 1].write(data, final)

    def lines(self) -> int:
        """How many lines went through (both streams)."""
        return self.newlines

    def finish(self):
        for sink in self.sinks.values():
            sink.write(b"", final=True)

    def tail_text(self, kind: int = 2) -> str:
        return self.sinks[kind].tail_text()


def _say(text: str):
    print(text, flush=True)


def _each(names: Sequence[str], action: Callable[[str], None]):
    """Act on every name like the CLI does: go on past failures, then raise one error for all."""
    failed = []
    for name in names:
        try:
            action(name)
        except errors.DockmagicError as exc:
            failed.append(str(exc))
            continue
        print(name, flush=True)
    if failed:
        raise errors.EngineError(failed[0] if len(failed) == 1 else
                                           f"{len(failed)} failed: " + "; ".join(failed))


# -- containers ----------------------------------------------------------------------------------
@subcommand("ps", "dockmagic's containers (-a: stopped too; --all-containers: every one)",
            description="dockmagic's containers, newest first: running ones, or all with -a.")
@argument("-a", "--all", action="store_true", help="include stopped containers")
@argument("--all-containers", action="store_true",
          help="every container on the engine, not only dockmagic's")
def cmd_ps(magics, args):
    """`%docker ps [-a] [--all-containers]`."""
    entries = lifecycle.query_containers(all=args.all, managed_only=not args.all_containers)
    rows = container_rows(entries, inspect=True, everyone=args.all_containers)
    return to_container_table(rows, all_states=args.all, everyone=args.all_containers)


def _needs_snapshot(inspected) -> bool:
    """Whether some container's GPUs are pinned by UUID (shown as indices, as the panel does)."""
    return any(i.startswith("GPU-") for seen in inspected.values()
               for _, ids in seen.gpu_requests for i in ids)


def container_rows(entries, inspect: bool = False, everyone: bool = True, snapshot=None):
    """Rows for a listing, built by the panel's own builder (`panelstate.build_state`), so
    `%docker ps` and the panel agree. ``inspect``: ask the engine for each container's GPUs
    (the listing lacks them); a snapshot is read only when a UUID needs its index."""
    inspected = {}
    if inspect:
        inspected = {cid: panelstate.parse_inspect(info) for cid, info in
                     lifecycle.inspect_containers([e["Id"] for e in entries]).items()}
        if snapshot is None and _needs_snapshot(inspected):
            from .nvml import query_snapshot

            snapshot = query_snapshot()
    from .kernel import kernel_id

    return panelstate.build_state(entries, snapshot, scope="all" if everyone else "dockmagic",
                                  now=time.time(), inspected=inspected,
                                  kernel=kernel_id()).rows


def to_container_table(rows, all_states: bool = False, everyone: bool = False) -> Table:
    """`panelstate.ContainerRow`s as a `Table`: the panel's rows, in `docker ps`'s words."""
    whose = "containers" if everyone else "dockmagic containers"
    which = "" if all_states else "running "
    hint = "" if all_states else " (`-a` shows stopped ones too)"
    table_rows, tips = [], []
    for r in rows:
        table_rows.append((r.name, r.image, r.status, panelstate.to_notebook_text(r),
                           panelstate.to_cell_text(r), panelstate.to_gpus_text(r), r.id[:12]))
        where = panelstate.to_where_title(r)
        tips.append(("", "", "", where, where, "", r.kernel or ""))
    return Table(("NAME", "IMAGE", "STATUS", "NOTEBOOK", "CELL", "GPUS", "ID"), table_rows,
                 empty=f"no {which}{whose}{hint}", titles=tips)


@subcommand("images", "local images [REPOSITORY[:TAG]]", group="images",
            description="Local images, one row per tag (like `docker images`).")
@argument("-a", "--all", action="store_true", help="include intermediate images")
@argument("reference", nargs="?", metavar="REPOSITORY[:TAG]", help="only images matching this")
def cmd_images(magics, args):
    """`%docker images [-a] [REPOSITORY[:TAG]]`."""
    rows = lifecycle.build_image_rows(lifecycle.query_images(args.reference, all=args.all))
    now = time.time()
    return Table(("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
                 [(r.repository, r.tag, r.id, to_ago(now - r.created), to_human_size(r.size))
                  for r in rows],
                 empty=f"no images{' matching ' + args.reference if args.reference else ''}")


def _tail(text: str):
    if text == "all":
        return None
    return _positive_int(text)


@subcommand("logs", "a container's output: the last lines, or -f to follow it live",
            description="A container's output, stdout and stderr apart: the last "
                        f"{LOGS_TAIL} lines unless --tail says otherwise. With -f, follow it "
                        "live until the container stops; interrupting the kernel stops "
                        "following (the container keeps running).")
@argument("-f", "--follow", action="store_true", help="follow the output live")
@argument("-n", "--tail", type=_tail, metavar="N", default=argparse.SUPPRESS,
          help=f"only the last N lines, or `all` (default {LOGS_TAIL}, then -f follows)")
@argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
@argument("name", metavar="NAME")
def cmd_logs(magics, args):
    """`%docker logs [-f] [--tail N|all] [-t] NAME`: by default the last LOGS_TAIL lines."""
    from .lifecycle import strip_markers  # a session's log holds its agent's end markers
    default = not hasattr(args, "tail")
    tail = LOGS_TAIL if default else args.tail
    out = _Streams(text_filter=strip_markers)
    try:
        lifecycle.stream_logs(args.name, out, follow=args.follow, tail=tail,
                              timestamps=args.timestamps)
    except KeyboardInterrupt:
        out.finish()
        print(f"\nstopped following the logs of {args.name} (it keeps running)", file=sys.stderr,
              flush=True)
        return None
    out.finish()
    if default and not args.follow and out.lines() >= LOGS_TAIL:
        from . import status
        status.note(magics.shell, f"(the last {LOGS_TAIL} lines; `%docker logs --tail all "
                                  f"{args.name}` shows all, `%docker logs -f {args.name}` follows)")
    return None


@subcommand("exec", "run a command in a running container: exec NAME CMD...",
            description="Run CMD in a running container, output streamed; a non-zero exit "
                        "raises. Everything after NAME is the command.")
@argument("-u", "--user", metavar="USER", help="user[:group] to run as")
@argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
@argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
          help="set an environment variable (repeatable)")
@argument("name", metavar="NAME")
@argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")
def cmd_exec(magics, args):
    """`%docker exec [-u USER] [-w DIR] [-e KEY=VALUE] NAME CMD...`."""
    cmd = list(args.cmd)
    if not cmd:
        raise UsageError(f"%docker exec: name the command to run after {args.name}, e.g. "
                         f"`%docker exec {args.name} ls -l`")
    for env in args.env:
        if "=" not in env:
            raise UsageError(f"%docker exec: -e {env!r} needs KEY=VALUE")
    out = _Streams()
    try:
        code = lifecycle.run_exec(args.name, cmd, out, user=args.user, workdir=args.workdir,
                                  environment=args.env)
    except KeyboardInterrupt:
        out.finish()
        raise errors.CellInterrupted(f"interrupted; `{' '.join(cmd)}` may still be running "
                                     f"in {args.name}") from None
    out.finish()
    if code != 0:
        # The engine reports a missing command on stdout ("OCI runtime exec failed: ...").
        missing = "executable file not found" in out.tail_text(1) + out.tail_text(2)
        raise errors.ExecFailed(code, args.name, cmd, out.tail_text(2), not_found=missing)
    return None


def _names(fn):
    return argument("names", nargs="+", metavar="NAME")(fn)


def _time(fn):
    return argument("-t", "--time", type=_positive_int, default=10, metavar="SECONDS",
                    help="seconds to wait after SIGTERM before SIGKILL (default 10)")(fn)


@subcommand("stop", "stop containers (SIGTERM, then SIGKILL after -t seconds)",
            description="Stop running containers: SIGTERM, then SIGKILL after -t seconds.")
@_time
@_names
def cmd_stop(magics, args):
    _each(args.names, lambda n: lifecycle.stop_container(n, timeout=args.time))


@subcommand("start", "start stopped containers",
            description="Start stopped containers (running ones are left as they are). "
                        "A dockmagic cell container starts again with an empty stdin.")
@_names
def cmd_start(magics, args):
    _each(args.names, lifecycle.start_container)


@subcommand("restart", "stop and start containers again",
            description="Stop containers (SIGTERM, SIGKILL after -t seconds) and start them "
                        "again; stopped ones are just started.")
@_time
@_names
def cmd_restart(magics, args):
    _each(args.names, lambda n: lifecycle.restart_container(n, timeout=args.time))


@subcommand("rm", "remove containers (-f: running ones too)", description="Remove containers.")
@argument("-f", "--force", action="store_true", help="remove running ones too (SIGKILL first)")
@_names
def cmd_rm(magics, args):
    _each(args.names, lambda n: lifecycle.remove_container(n, force=args.force))


@subcommand("rmi", "remove images (-f: even if in use)", group="images",
            description="Remove images (untag; delete once no tag is left).")
@argument("-f", "--force", action="store_true",
          help="remove even if containers or other tags use it")
@_names
def cmd_rmi(magics, args):
    _each(args.names, lambda n: lifecycle.remove_image(n, force=args.force))


def parse_label_filters(filters: Sequence[str]) -> list:
    """`--filter label=KEY[=VALUE]` values -> the engine's label filter strings."""
    labels = []
    for f in filters:
        kind, eq, value = f.partition("=")
        if kind != "label" or not eq or not value or value.startswith("="):
            raise UsageError(f"%docker prune --filter {f!r}: only label=KEY or label=KEY=VALUE "
                             "filters are supported")
        labels.append(value)
    return labels


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except (EOFError, StdinNotImplementedError):
        raise UsageError("%docker prune asks before removing, and this frontend cannot answer; "
                         "use `%docker prune -f`") from None
    return answer.strip().lower() in ("y", "yes")


@subcommand("prune", "remove dockmagic's stopped containers (asks first; --orphans)",
            description="Remove dockmagic's stopped containers, after asking. With --orphans, "
                        "also its orphans, running or not: containers whose kernel on this "
                        "host is gone and that no live kernel has reattached to. Sessions "
                        "started without --rm and -d jobs are not orphans, and a container a "
                        "live kernel claims is never removed. Other containers are never "
                        "touched.")
@argument("-f", "--force", action="store_true", help="do not ask")
@argument("--orphans", action="store_true",
          help="also remove containers left by kernels that no longer run (not sessions "
               "without --rm, not -d jobs, never one a live kernel reattached to)")
@argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]",
          help="only containers with this label (repeatable; docker's prune filter)")
def cmd_prune(magics, args):
    """`%docker prune [-f] [--orphans]`."""
    rows = container_rows(lifecycle.query_prunable(orphans=args.orphans,
                                                   labels=parse_label_filters(args.filter)))
    if not rows:
        print("nothing to prune" + ("" if args.orphans else
                                    " (`--orphans` also looks for containers of dead kernels)"))
        return None
    if not args.force:
        print("\n".join(f"  {r.name}  ({r.image}, {r.status})" for r in rows))
        if not _confirm(f"Remove these {len(rows)} container{'s' if len(rows) != 1 else ''}? "
                        "[y/N] "):
            print("nothing removed")
            return None
    # A running orphan needs force; stopped ones do not, and a container that started meanwhile
    # is then refused rather than killed.
    _each([r.name for r in rows],
          lambda n: lifecycle.remove_container(n, force=any(
              r.name == n and r.state not in lifecycle.STOPPED_STATES for r in rows)))
    return None


# -- images --------------------------------------------------------------------------------------
@subcommand("commit", "save a container as an image: commit NAME [REPO[:TAG]]", group="images",
            description="Save a container's filesystem as an image. For dockmagic's "
                        "containers the image keeps the source image's ENTRYPOINT, CMD, USER "
                        "and WORKDIR (not the interpreter dockmagic fed the cell to), and "
                        "blanks the dockmagic.* labels.")
@argument("-m", "--message", help="commit message")
@argument("-a", "--author", help='author, e.g. "Ada <ada@example.org>"')
@argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
          help="a Dockerfile instruction to apply, e.g. 'ENV A=1' (repeatable)")
@argument("name", metavar="NAME")
@argument("reference", nargs="?", metavar="REPO[:TAG]")
def cmd_commit(magics, args):
    image_id = lifecycle.commit_container(args.name, args.reference, message=args.message,
                                          author=args.author, changes=args.change)
    _say(f"{args.reference or 'untagged image'}: {image_id}")
    return None


@subcommand("tag", "give an image another name: tag SOURCE TARGET", group="images",
            description="Give an image another name: `%docker tag SOURCE TARGET` (TARGET "
                        "REGISTRY/REPO:TAG to push it there).")
@argument("source", metavar="SOURCE")
@argument("target", metavar="TARGET")
def cmd_tag(magics, args):
    lifecycle.tag_image(args.source, args.target)
    _say(f"tagged {args.source} as {args.target}")


@subcommand("push", "push an image to its registry, with progress", group="images",
            description="Push an image to its registry (the REGISTRY/ part of its name), with "
                        "progress. Without :TAG every tag of REPO is pushed.")
@argument("reference", metavar="REPO[:TAG]")
def cmd_push(magics, args):
    digest = lifecycle.push_image(args.reference, _say)
    _say(f"pushed {args.reference}" + (f" ({digest})" if digest else ""))


@subcommand("pull", "pull an image, with progress", group="images",
            description="Pull an image (`:latest` when no tag), with progress.")
@argument("reference", metavar="IMAGE")
def cmd_pull(magics, args):
    from . import status

    if not status.frontend_updates_in_place(magics.shell):
        info = lifecycle.pull_image(args.reference, _say)
        _say(f"pulled {args.reference} ({info['Id']})")
        return
    view = status.PullView(args.reference)  # a notebook: one progress line, updated in place
    try:
        info = magics.engine.pull(args.reference, on_progress=view, on_event=view.pull_event)
    except BaseException as exc:
        view.failed(exc)
        raise
    view.done(info["Id"])


# -- %%dockerfile --------------------------------------------------------------------------------
_BUILD = UsageParser("%%dockerfile",
                     "Build an image from the cell: the body is the Dockerfile. Uses the "
                     "classic builder (no BuildKit); the log streams live, and a failing step "
                     "raises one line naming it.\n\nCONTEXT is the folder sent for COPY/ADD "
                     "(its .dockerignore is honoured); without one the context is empty, so "
                     "nothing is uploaded: write `%%dockerfile -t NAME:TAG .` to send the "
                     "notebook's folder.")
_BUILD.add_argument("-t", "--tag", required=True, metavar="NAME:TAG", help="the image's name")
_BUILD.add_argument("-f", "--file", default="Dockerfile", metavar="NAME",
                    help="the name the body gets inside the context (default Dockerfile; it "
                         "replaces a file of that name there; nothing is written to disk)")
_BUILD.add_argument("--build-arg", action="append", default=[], type=_key_value,
                    metavar="KEY=VALUE", help="set a build-time ARG (repeatable)")
_BUILD.add_argument("--no-cache", action="store_true", help="do not use cached layers")
_BUILD.add_argument("--target", metavar="STAGE", help="build up to this stage")
_BUILD.add_argument("context", nargs="?", metavar="CONTEXT")


def dockerfile_cell(magics, line, cell):
    """`%%dockerfile -t NAME:TAG [-f NAME] [--build-arg K=V] [--no-cache] [--target S] [CTX]`."""
    from .cell import CellUsageError, split_line

    try:
        argv = split_line(line)
    except CellUsageError as exc:
        raise UsageError(str(exc)) from None
    try:
        args = _BUILD.parse(argv)
    except HelpShown:
        return None
    if not (cell or "").strip():
        raise UsageError("%%dockerfile: the cell is empty; write the Dockerfile in it "
                         "(starting with FROM IMAGE)")
    if "/" in args.file or args.file in ("", ".", ".."):
        raise UsageError(f"%%dockerfile -f {args.file!r}: give a plain file name, e.g. "
                         "Dockerfile.gpu")
    context = None
    if args.context is not None:
        context = os.path.abspath(os.path.expanduser(args.context))
        if not os.path.isdir(context):
            raise UsageError(f"%%dockerfile: the context {args.context!r} is not a folder "
                             f"(resolved to {context}); name an existing folder, or none for "
                             "an empty context")
    image_id = lifecycle.build_image(cell, args.tag, _write_build_log, context=context,
                                     dockerfile_name=args.file,
                                     buildargs=dict(args.build_arg), nocache=args.no_cache,
                                     target=args.target)
    _say(f"built {args.tag} ({image_id})")
    return None


def _write_build_log(text: str):
    sys.stdout.write(text)
    sys.stdout.flush()
