"""`%docker SUBCOMMAND ...` and `%%dockerfile`: parse the line, call lifecycle, display. Thin.

Flags keep docker's spellings and meanings; flags only dockmagic has are long-form
(`--all-containers`, `--orphans`). Every mistake is a `UsageError` naming the fix; engine
errors arrive as one-line `errors.DockmagicError`s from lifecycle.
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

SUMMARY = """\
Lifecycle subcommands (`%docker SUB --help` for each):
  %docker ps [-a] [--all-containers]    dockmagic's containers; -a: stopped too;
                                        --all-containers: every container on the engine
  %docker images [-a] [REPO[:TAG]]      local images
  %docker logs [-f] [--tail N] [-t] NAME
                                        output; -f follows until it stops or you interrupt
  %docker exec [-u USER] [-w DIR] [-e K=V] NAME CMD...
                                        run a command in a running container
  %docker stop|restart [-t SECONDS] NAME...  /  %docker start NAME...
  %docker rm [-f] NAME...  /  %docker rmi [-f] IMAGE...
  %docker prune [-f] [--orphans] [--filter label=K[=V]]
                                        remove dockmagic's stopped containers (asks first);
                                        --orphans: also those of kernels that are gone
  %docker commit [-m MSG] [-a AUTHOR] [-c CHANGE] NAME [REPO[:TAG]]
  %docker tag SOURCE TARGET  /  %docker push REPO[:TAG]  /  %docker pull IMAGE
  %%dockerfile -t NAME:TAG [-f NAME] [--build-arg K=V] [--no-cache] [--target STAGE] [CONTEXT]
"""


# -- parsing -------------------------------------------------------------------------------------
class _HelpShown(Exception):
    """`--help` was printed; the subcommand does nothing else."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as one-line UsageErrors instead of exiting."""

    def __init__(self, prog: str, description: str, **kwargs):
        super().__init__(prog=prog, description=description, allow_abbrev=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")

    def exit(self, status=0, message=None):
        raise _HelpShown()

    def print_help(self, file=None):
        super().print_help(file or sys.stdout)

    def parse(self, argv: Sequence[str]):
        return self.parse_args(list(argv))


def _parser(name: str, description: str) -> _Parser:
    return _Parser(f"%docker {name}", description)


def _subcommand(fn: Callable) -> Callable:
    """Wrap a `cmd_*` so that `--help` returns quietly."""

    def run(magics, argv):
        try:
            return fn(magics, argv)
        except _HelpShown:
            return None

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run


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

    def __call__(self, kind: int, data: bytes, final: bool = False):
        self.sinks[2 if kind == 2 else 1].write(data, final)

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
_PS = _parser("ps", "dockmagic's containers, newest first: running ones, or all with -a.")
_PS.add_argument("-a", "--all", action="store_true", help="include stopped containers")
_PS.add_argument("--all-containers", action="store_true",
                 help="every container on the engine, not only dockmagic's")


@_subcommand
def cmd_ps(magics, argv):
    """`%docker ps [-a] [--all-containers]`."""
    args = _PS.parse(argv)
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
    return panelstate.build_state(entries, snapshot, scope="all" if everyone else "dockmagic",
                                  now=time.time(), inspected=inspected).rows


def to_container_table(rows, all_states: bool = False, everyone: bool = False) -> Table:
    """`panelstate.ContainerRow`s as a `Table`: the panel's rows, in `docker ps`'s words."""
    whose = "containers" if everyone else "dockmagic containers"
    which = "" if all_states else "running "
    hint = "" if all_states else " (`-a` shows stopped ones too)"
    table_rows, tips = [], []
    for r in rows:
        table_rows.append((r.name, r.image, r.status, panelstate.to_notebook_text(r), r.cell or "",
                           panelstate.to_gpus_text(r), r.id[:12]))
        tips.append(("", "", "", r.notebook or "", "", "", r.kernel or ""))
    return Table(("NAME", "IMAGE", "STATUS", "NOTEBOOK", "CELL", "GPUS", "ID"), table_rows,
                 empty=f"no {which}{whose}{hint}", titles=tips)


_IMAGES = _parser("images", "Local images, one row per tag (like `docker images`).")
_IMAGES.add_argument("-a", "--all", action="store_true", help="include intermediate images")
_IMAGES.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]",
                     help="only images matching this")


@_subcommand
def cmd_images(magics, argv):
    """`%docker images [-a] [REPOSITORY[:TAG]]`."""
    args = _IMAGES.parse(argv)
    rows = lifecycle.build_image_rows(lifecycle.query_images(args.reference, all=args.all))
    now = time.time()
    return Table(("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
                 [(r.repository, r.tag, r.id, to_ago(now - r.created), to_human_size(r.size))
                  for r in rows],
                 empty=f"no images{' matching ' + args.reference if args.reference else ''}")


_LOGS = _parser("logs", "A container's output, stdout and stderr apart. With -f, follow it live "
                        "until the container stops; interrupting the kernel stops following "
                        "(the container keeps running).")
_LOGS.add_argument("-f", "--follow", action="store_true", help="follow the output live")
_LOGS.add_argument("-n", "--tail", type=_positive_int, metavar="N",
                   help="only the last N lines (default: all)")
_LOGS.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
_LOGS.add_argument("name", metavar="NAME")


@_subcommand
def cmd_logs(magics, argv):
    """`%docker logs [-f] [--tail N] [-t] NAME`."""
    args = _LOGS.parse(argv)
    from .session import strip_markers  # a session's log holds the agent's end-of-cell markers
    out = _Streams(text_filter=strip_markers)
    try:
        lifecycle.stream_logs(args.name, out, follow=args.follow, tail=args.tail,
                              timestamps=args.timestamps)
    except KeyboardInterrupt:
        out.finish()
        print(f"\nstopped following the logs of {args.name} (it keeps running)", file=sys.stderr,
              flush=True)
        return None
    out.finish()
    return None


_EXEC = _parser("exec", "Run CMD in a running container, output streamed; a non-zero exit "
                        "raises. Everything after NAME is the command.")
_EXEC.add_argument("-u", "--user", metavar="USER", help="user[:group] to run as")
_EXEC.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
_EXEC.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (repeatable)")
_EXEC.add_argument("name", metavar="NAME")
_EXEC_VALUED = {"-u", "--user", "-w", "--workdir", "-e", "--env"}


def split_exec_argv(argv: Sequence[str]) -> tuple:
    """`[OPTIONS] NAME CMD...` -> (options + NAME, CMD): options stop at NAME, as docker's do."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _EXEC_VALUED:
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return list(argv[:i + 1]), list(argv[i + 1:])
    return list(argv), []


@_subcommand
def cmd_exec(magics, argv):
    """`%docker exec [-u USER] [-w DIR] [-e KEY=VALUE] NAME CMD...`."""
    head, cmd = split_exec_argv(argv)
    args = _EXEC.parse(head)
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
        print(f"\ninterrupted; `{' '.join(cmd)}` may still be running in {args.name}",
              file=sys.stderr, flush=True)
        raise
    out.finish()
    if code != 0:
        # The engine reports a missing command on stdout ("OCI runtime exec failed: ...").
        missing = "executable file not found" in out.tail_text(1) + out.tail_text(2)
        raise errors.ExecFailed(code, args.name, cmd, out.tail_text(2), not_found=missing)
    return None


def _names_parser(name: str, description: str, timeout: bool = False, force: str = ""):
    p = _parser(name, description)
    if timeout:
        p.add_argument("-t", "--time", type=_positive_int, default=10, metavar="SECONDS",
                       help="seconds to wait after SIGTERM before SIGKILL (default 10)")
    if force:
        p.add_argument("-f", "--force", action="store_true", help=force)
    p.add_argument("names", nargs="+", metavar="NAME")
    return p


_STOP = _names_parser("stop", "Stop running containers: SIGTERM, then SIGKILL after -t seconds.",
                      timeout=True)
_START = _names_parser("start", "Start stopped containers (running ones are left as they are). "
                                "A dockmagic cell container starts again with an empty stdin.")
_RESTART = _names_parser("restart", "Stop containers (SIGTERM, SIGKILL after -t seconds) and "
                                    "start them again; stopped ones are just started.",
                         timeout=True)
_RM = _names_parser("rm", "Remove containers.", force="remove running ones too (SIGKILL first)")
_RMI = _names_parser("rmi", "Remove images (untag; delete once no tag is left).",
                     force="remove even if containers or other tags use it")


@_subcommand
def cmd_stop(magics, argv):
    args = _STOP.parse(argv)
    _each(args.names, lambda n: lifecycle.stop_container(n, timeout=args.time))


@_subcommand
def cmd_start(magics, argv):
    args = _START.parse(argv)
    _each(args.names, lifecycle.start_container)


@_subcommand
def cmd_restart(magics, argv):
    args = _RESTART.parse(argv)
    _each(args.names, lambda n: lifecycle.restart_container(n, timeout=args.time))


@_subcommand
def cmd_rm(magics, argv):
    args = _RM.parse(argv)
    _each(args.names, lambda n: lifecycle.remove_container(n, force=args.force))


@_subcommand
def cmd_rmi(magics, argv):
    args = _RMI.parse(argv)
    _each(args.names, lambda n: lifecycle.remove_image(n, force=args.force))


_PRUNE = _parser("prune", "Remove dockmagic's stopped containers, after asking. With --orphans, "
                          "also its orphans, running or not: containers whose kernel on this "
                          "host is gone and that no live kernel has reattached to. Sessions "
                          "started without --rm and -d jobs are not orphans, and a container a "
                          "live kernel claims is never removed. Other containers are never "
                          "touched.")
_PRUNE.add_argument("-f", "--force", action="store_true", help="do not ask")
_PRUNE.add_argument("--orphans", action="store_true",
                    help="also remove containers left by kernels that no longer run (not sessions "
                         "without --rm, not -d jobs, never one a live kernel reattached to)")
_PRUNE.add_argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]",
                    help="only containers with this label (repeatable; docker's prune filter)")


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


@_subcommand
def cmd_prune(magics, argv):
    """`%docker prune [-f] [--orphans]`."""
    args = _PRUNE.parse(argv)
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
_COMMIT = _parser("commit", "Save a container's filesystem as an image. For dockmagic's "
                            "containers the image keeps the source image's ENTRYPOINT, CMD, USER "
                            "and WORKDIR (not the interpreter dockmagic fed the cell to), and "
                            "blanks the dockmagic.* labels.")
_COMMIT.add_argument("-m", "--message", help="commit message")
_COMMIT.add_argument("-a", "--author", help='author, e.g. "Ada <ada@example.org>"')
_COMMIT.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                     help="a Dockerfile instruction to apply, e.g. 'ENV A=1' (repeatable)")
_COMMIT.add_argument("name", metavar="NAME")
_COMMIT.add_argument("reference", nargs="?", metavar="REPO[:TAG]")


@_subcommand
def cmd_commit(magics, argv):
    args = _COMMIT.parse(argv)
    image_id = lifecycle.commit_container(args.name, args.reference, message=args.message,
                                          author=args.author, changes=args.change)
    _say(f"{args.reference or 'untagged image'}: {image_id}")
    return None


_TAG = _parser("tag", "Give an image another name: `%docker tag SOURCE TARGET` (TARGET "
                      "REGISTRY/REPO:TAG to push it there).")
_TAG.add_argument("source", metavar="SOURCE")
_TAG.add_argument("target", metavar="TARGET")


@_subcommand
def cmd_tag(magics, argv):
    args = _TAG.parse(argv)
    lifecycle.tag_image(args.source, args.target)
    _say(f"tagged {args.source} as {args.target}")


_PUSH = _parser("push", "Push an image to its registry (the REGISTRY/ part of its name), with "
                        "progress. Without :TAG every tag of REPO is pushed.")
_PUSH.add_argument("reference", metavar="REPO[:TAG]")
_PULL = _parser("pull", "Pull an image (`:latest` when no tag), with progress.")
_PULL.add_argument("reference", metavar="IMAGE")


@_subcommand
def cmd_push(magics, argv):
    args = _PUSH.parse(argv)
    digest = lifecycle.push_image(args.reference, _say)
    _say(f"pushed {args.reference}" + (f" ({digest})" if digest else ""))


@_subcommand
def cmd_pull(magics, argv):
    args = _PULL.parse(argv)
    info = lifecycle.pull_image(args.reference, _say)
    _say(f"pulled {args.reference} ({info['Id']})")


COMMANDS = {
    "ps": cmd_ps, "images": cmd_images, "logs": cmd_logs, "exec": cmd_exec,
    "stop": cmd_stop, "start": cmd_start, "restart": cmd_restart, "rm": cmd_rm, "rmi": cmd_rmi,
    "prune": cmd_prune, "commit": cmd_commit, "tag": cmd_tag, "push": cmd_push, "pull": cmd_pull,
}


# -- %%dockerfile --------------------------------------------------------------------------------
_BUILD = _Parser("%%dockerfile", "Build an image from the cell: the body is the Dockerfile. Uses "
                                 "the classic builder (no BuildKit); the log streams live, and a "
                                 "failing step raises one line naming it.\n\nCONTEXT is the folder "
                                 "sent for COPY/ADD (its .dockerignore is honoured); without one "
                                 "the context is empty, so nothing is uploaded: write "
                                 "`%%dockerfile -t NAME:TAG .` to send the notebook's folder.")
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
    except _HelpShown:
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
