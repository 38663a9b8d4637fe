"""Plan a `%%docker` cell: its magic line + the notebook's defaults -> the final `RunSpec`.

Pure (stdlib + the translator). dockmagic's own defaults are written as docker-run flags placed
*before* the user's, so the user's flags win by docker's own rules (last `-w`, `-u`, `-e KEY`,
`--label KEY` wins) and `--dry-run` shows exactly what runs.
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from . import labels as L
from . import translate

DEFAULT_INTERPRETER = ("python3", "-u")
#: Interpreters that read a Python program on stdin, as `python3 -u` does.
PYTHON_STDIN = {("python",), ("python3",), ("python", "-u"), ("python3", "-u")}

#: dockmagic's own flags (long form only: docker owns the short letters), -> takes a value.
OWN_FLAGS = {
    "--dry-run": False,
    "--show-cmd": False,
    "--no-mount": False,
    "--as-root": False,
    "--keep-entrypoint": False,
    "--no-raise-error": False,
    "--in": True,
    "--out": True,
    "--out-pickle": True,
}

LABEL_PREFIX = "dockmagic."


class CellUsageError(ValueError):
    """A mistake in the magic line; shown as one line."""


@dataclass(frozen=True)
class Identity:
    """Who the kernel runs as: the container runs as the same uid:gid by default."""
    uid: int
    gid: int
    user: str


@dataclass(frozen=True)
class CellPlan:
    spec: "translate.RunSpec"
    dry_run: bool = False
    raise_error: bool = True
    inputs: tuple = ()
    outputs: tuple = ()
    pickle_outputs: tuple = ()  # --out-pickle: unpickled in full (runs the container's code)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def detach(self) -> bool:
        return self.spec.detach

    @property
    def wants_gpus(self) -> bool:
        return bool(self.spec.gpus)


def split_line(line: str) -> list:
    try:
        return shlex.split(line, posix=True)
    except ValueError as exc:
        raise CellUsageError(f"cannot split the magic line: {exc}; check its quotes") from None


def plan_cell(line: str, *, cwd: str, identity: Identity, default_flags: Sequence[str] = (),
              default_image: Optional[str] = None,
              default_gpus: Optional["translate.GpuRequest"] = None,
              labels: Mapping[str, str] = (), environ: Optional[Mapping[str, str]] = None,
              oneshot: bool = True) -> CellPlan:
    """Turn `%%docker LINE` into the RunSpec that will run, with dockmagic's defaults applied."""
    argv = split_line(line)
    try:
        own, docker_argv = translate.split_run_args(argv, OWN_FLAGS)
    except translate.TranslateError as exc:
        raise CellUsageError(str(exc)) from None
    if not docker_argv and not default_image:
        raise CellUsageError("%%docker needs an IMAGE: `%%docker [flags] IMAGE [INTERPRETER]`, "
                             "or set a default with `%docker config --image IMAGE`")
    user_argv = list(default_flags) + list(docker_argv)
    try:
        user = translate.parse_run_args(user_argv, cwd=cwd, environ=environ)
    except translate.UnknownFlag as exc:  # a misspelt flag: docker's, or dockmagic's own
        hint = translate.suggest_flag(exc.flag, [f[2:] for f in OWN_FLAGS])
        raise CellUsageError(f"unknown flag: '--{exc.flag}'{hint} (see docker run --help, "
                             "and `%docker --help` for dockmagic's own)") from None
    except translate.TranslateError as exc:
        # `%docker config --image X` lets a cell give flags only.
        if not default_image:
            raise CellUsageError(str(exc)) from None
        try:
            user = translate.parse_run_args(user_argv + [default_image], cwd=cwd, environ=environ)
        except translate.TranslateError:
            raise CellUsageError(str(exc)) from None
        user_argv.append(default_image)
    if user.tty:
        raise CellUsageError("-t gives the container a terminal, which a cell has not: drop -t "
                             "(the cell's output streams without it)")

    n_cmd = len(user.command or ())
    options, image = user_argv[:len(user_argv) - n_cmd - 1], user_argv[len(user_argv) - n_cmd - 1]
    # `docker run -- IMG` keeps the `--` before the image out of the options.
    if options and options[-1] == "--":
        options = options[:-1]

    prefix = ["-i"]
    if oneshot and not user.detach:
        prefix.append("--rm")
    if not (own.get("--no-mount") or user.volumes or user.mounts or user.workdir):
        # --mount, not -v: a folder whose path holds `:` or `,` stays one source (CSV-quoted)
        bind = translate.Mount(type="bind", source=cwd, target=cwd).to_cli()
        prefix += ["--mount", bind, "-w", cwd]
    if own.get("--as-root"):
        prefix += ["-u", "0:0"]
    elif user.user is None:
        prefix += ["-u", f"{identity.uid}:{identity.gid}"]
    if own.get("--as-root") or (user.user is None and identity.uid == 0):
        prefix += ["-e", "USER=root"]
    elif user.user is None:
        # The kernel's uid has no home in the image: give it a writable one, and its name.
        prefix += ["-e", "HOME=/tmp", "-e", f"USER={identity.user}"]
    # (a user named with -u keeps the HOME and USER the image gives it)
    prefix += ["-e", "PYTHONUNBUFFERED=1", "-e", "CUDA_DEVICE_ORDER=PCI_BUS_ID"]

    labels = dict(labels)
    if labels:
        labels.setdefault(L.KIND, ("detached" if user.detach else "oneshot")
                          if oneshot else "session")
        if oneshot and not user.detach:
            labels[L.REAP] = "1"  # removed with its kernel if the kernel dies mid-cell
    suffix = []
    for key, value in labels.items():
        suffix += ["-l", f"{key}={value}"]

    interpreter = tuple(user.command) if user.command else DEFAULT_INTERPRETER
    if own.get("--keep-entrypoint"):
        entry, command = [], list(user.command or ())
    elif user.entrypoint is not None:
        entry, command = [], list(user.command or ())
    else:
        entry, command = ["--entrypoint", interpreter[0]], list(interpreter[1:])

    final_argv = prefix + options + suffix + entry + [image] + command
    spec = _parse(final_argv, cwd, environ)
    if default_gpus is not None and not spec.gpus:  # %gpus' choice, as data
        spec = dataclasses.replace(spec, gpus=(default_gpus,))
    return CellPlan(
        spec=spec,
        dry_run=bool(own.get("--dry-run") or own.get("--show-cmd")),
        raise_error=not own.get("--no-raise-error"),
        inputs=tuple(own.get("--in", ())),
        outputs=tuple(own.get("--out", ())),
        pickle_outputs=tuple(own.get("--out-pickle", ())),
        labels=dict(labels),
    )


def _parse(argv, cwd, environ):
    try:
        return translate.parse_run_args(argv, cwd=cwd, environ=environ)
    except translate.TranslateError as exc:
        raise CellUsageError(str(exc)) from None


def describe_plan(plan: CellPlan) -> str:
    """The equivalent `docker run` command line, for --dry-run / --show-cmd."""
    return (translate.format_cli(plan.spec)
            + "  < cell-body   # the cell's text reaches the container on stdin")


# -- the cell's text as the interpreter gets it --------------------------------------------------
# Python reads its program from stdin as `<stdin>`, with no source lines in tracebacks. A cell
# in the notebook has a number: the prelude compiles the body under `<cell [6]>`, puts its
# lines in linecache, and prints an uncaught exception with the traceback module without the
# prelude's own frame. Everything else stays `python3 -u`'s: one __main__, the exit codes
# (1, 130 for KeyboardInterrupt, sys.exit's), stdin at EOF for the program.
_PRELUDE = (
    "import sys as _dm_sys, linecache as _dm_lc\n"
    "_dm_lc.cache[{name!r}] = ({size}, None, {lines!r}, {name!r})\n"
    "def _dm_hook(t, v, tb):\n"
    "    while tb is not None and tb.tb_frame.f_code.co_filename == '<stdin>':\n"
    "        tb = tb.tb_next\n"
    "    import traceback\n"
    "    traceback.print_exception(t, v, tb)\n"
    "_dm_sys.excepthook = _dm_hook\n"
    "del _dm_sys, _dm_lc, _dm_hook\n"
    "exec(compile({body!r}, {name!r}, 'exec'))\n"
)


def reads_python_stdin(spec) -> bool:
    """Whether the container's command is a plain Python reading its program on stdin."""
    argv = tuple(spec.entrypoint or ()) + tuple(spec.command or ())
    return argv in PYTHON_STDIN


def to_python_stdin(body: str, filename: str) -> str:
    """BODY as a program for `python3 -u` on stdin whose frames read FILENAME, with source,
    numbered as the notebook numbers the cell's lines (see `as_cell_source`)."""
    source = as_cell_source(body)
    return _PRELUDE.format(name=filename, size=len(source), lines=source.splitlines(True),
                           body=source)


def as_cell_source(body: str) -> str:
    """The body with the magic line's place kept: line 1 of the notebook's cell is
    `%%docker ...`, so the body's first line is the cell's line 2, and a traceback's
    `line 6` is the line the notebook shows as 6."""
    return "\n" + body
