"""The magics: `%%docker`, `%docker SUBCOMMAND`, `%gpus`. Thin: parse -> plan -> runner -> display."""
from __future__ import annotations

import os
import pwd
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class

from . import cell as cellplan
from . import errors
from . import translate
from .kernel import kernel_id, notebook_path


def _username(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER", str(uid))


class NotebookConfig:
    """Per-notebook defaults set by `%docker config`."""

    def __init__(self):
        self.image = None
        self.flags = []
        self.gpus = None  # the GpuRequest %gpus chose (translate.GpuRequest), or None
        self.spare = True  # start a spare container after a one-shot cell (`--spare off`)

    def describe(self) -> str:
        from . import gpus
        return "\n".join([
            f"default image: {self.image or '(none: each cell names its image)'}",
            f"default flags: {shlex.join(self.flags) if self.flags else '(none)'}",
            gpus.describe_choice(self.gpus.to_cli() if self.gpus is not None else None),
            f"spare containers: {'on' if self.spare else 'off'}",
        ])


@magics_class
class DockerMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.config_ = NotebookConfig()

    def close(self):
        """Stop what this notebook started in the background: spares, sessions started with
        --rm, panels' refreshers, NVML (each registered itself with `kernel.on_shutdown`)."""
        from . import kernel
        kernel.shutdown()

    @property
    def gpus_value(self):
        """%gpus' choice as a `--gpus` value (None: no GPUs)."""
        return self.config_.gpus.to_cli() if self.config_.gpus is not None else None

    @property
    def engine(self):
        """The engine this notebook's cells run on (docker's own rules pick it)."""
        from . import engine
        return engine.default()

    # -- helpers -------------------------------------------------------------------------
    def _identity(self) -> cellplan.Identity:
        uid, gid = os.getuid(), os.getgid()
        return cellplan.Identity(uid, gid, _username(uid))

    def _notebook(self) -> str:
        return notebook_path(self.shell)

    def _labels(self) -> dict:
        count = getattr(self.shell, "execution_count", 0) if self.shell is not None else 0
        return {
            "dockmagic.managed": "1",
            "dockmagic.kernel": kernel_id(),
            "dockmagic.notebook": self._notebook(),
            "dockmagic.cell": str(count),
        }

    def _expand(self, line: str) -> str:
        # IPython has already expanded $var/{var} from the notebook's namespace; what is left
        # ($HOME, ${DATA}) comes from the kernel's environment, as a shell would do it.
        return os.path.expandvars(line)

    def _report_orphans_once(self):
        # On first use, not at load: loading the extension touches no engine.
        if getattr(self, "_orphans_reported", False):
            return
        self._orphans_reported = True
        from . import lifecycle
        message = lifecycle.report_orphans(engine=self.engine)
        if message:
            print(message, file=sys.stderr)

    def plan(self, line: str, oneshot: bool = True) -> cellplan.CellPlan:
        try:
            return cellplan.plan_cell(
                self._expand(line), cwd=os.getcwd(), identity=self._identity(),
                default_flags=self.config_.flags, default_image=self.config_.image,
                default_gpus=self.config_.gpus, labels=self._labels(), oneshot=oneshot)
        except cellplan.CellUsageError as exc:
            raise UsageError(str(exc)) from None

    # -- %%docker / %docker ------------------------------------------------------------------
    @line_cell_magic
    def docker(self, line, cell=None):
        """Run the cell in a Docker container, or manage dockmagic (line form).

        Cell form::

            %%docker [docker-run flags] [dockmagic flags] IMAGE [INTERPRETER ...]

        The flags are `docker run`'s own (`--gpus`, `-v`, `-e`, `--shm-size`, `-w`, `-u`,
        `--entrypoint`, `--rm`, `-d`, ... with docker's spellings); everything after IMAGE is the
        interpreter the cell body is fed to on stdin (default `python3 -u`; `bash`, `bash -l` for a
        login shell that reads profile/.bashrc env, `sh`; an interpreter that needs a file name can
        read `/dev/stdin`, e.g. `Rscript /dev/stdin`).

        By default the notebook's folder is mounted at the same path and is the working directory
        (`--no-mount`, or your own `-v`/`--mount`/`-w`, turns that off), the container runs as the
        kernel's uid:gid so files it writes are yours (`-u` or `--as-root` overrides), with HOME,
        USER, PYTHONUNBUFFERED=1 and CUDA_DEVICE_ORDER=PCI_BUS_ID set (your `-e` wins). The image's
        ENTRYPOINT is replaced by the interpreter (`--keep-entrypoint` keeps it). Output streams
        live; a non-zero exit raises (`--no-raise-error` opts out); interrupting the kernel stops
        and removes the container. `-d` starts it in the background and returns its name.

        dockmagic flags: --dry-run / --show-cmd (print the equivalent `docker run` and stop),
        --no-mount, --as-root, --keep-entrypoint, --no-raise-error, --in NAMES / --out NAMES
        (move variables into the cell and back: `--in x,cfg --out result`, `dest=src` renames;
        numpy arrays travel as .npy). `--out` brings back plain data only (None, bool, numbers,
        str, bytes, lists, tuples, dicts and sets of those, numpy arrays, scalars and dtypes),
        so nothing the container writes can run code in your kernel. `--out-pickle NAMES`
        brings back any picklable object: unpickling RUNS CODE FROM THE CONTAINER IN YOUR
        KERNEL; use it only with images you trust.

        Sessions: `%docker session NAME [docker-run flags] IMAGE` starts (or reattaches to) a
        long-lived container; `%%docker @NAME` runs the cell in its one persistent Python
        interpreter (variables and imports stay), `%%docker @NAME bash` via exec in it.
        After a one-shot cell a spare container with the same spec is kept warm, so the next
        identical cell starts at once in a fresh container (`%docker config --spare off`).

        Departures from the CLI: an unquoted `--gpus device=1,2` means devices 1 and 2 (the CLI
        would fail with "cannot set both Count and DeviceIDs"); `'"device=1,2"'` works too. A
        missing `-v` source inside a folder you own is created as you (docker creates it as
        root); elsewhere the cell fails and says to create it first.
        `$NAME` and `{expr}` in the line expand from the notebook's variables first, then `$NAME`
        from the kernel's environment (so `-v $HOME/data:/data` works).

        Line form: `%docker --help`, `%docker config [--image IMAGE] [--flags "FLAGS"]
        [--spare on|off] [--reset]`, and the subcommands listed by `%docker --help`.
        """
        if cell is not None and line.lstrip().startswith("@"):  # `%%docker @NAME`: a session
            from . import session
            try:
                return session.run_cell(self.engine, line, cell, self.shell.user_ns)
            except session.SessionUsage as exc:
                raise UsageError(str(exc)) from None
        self._report_orphans_once()
        if cell is None:
            return self._line(line)
        plan = self.plan(line)
        if plan.dry_run:
            if plan.inputs or plan.outputs or plan.pickle_outputs:
                from . import transfer
                print(f"# --in/--out add --mount type=bind,source=FOLDER,"
                      f"target={transfer.XFER_TARGET}, FOLDER a fresh private one made for "
                      f"the cell in {transfer.exchange_root()[0]}")
            print(cellplan.describe_plan(plan))
            return None
        return self.run_plan(plan, cell)

    def run_plan(self, plan: cellplan.CellPlan, body: str):
        from . import runner

        engine = self.engine
        spec = plan.spec
        data = body.encode("utf-8")
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        xfer = None
        if plan.inputs or plan.outputs or plan.pickle_outputs:
            # --in/--out: the body becomes a loader + the cell + a saver; the inputs wait in a
            # fresh private folder that only this cell's container gets
            from . import transfer
            try:
                xfer = transfer.prepare_oneshot(plan, self.shell.user_ns)
            except transfer.TransferUsage as exc:
                raise UsageError(str(exc)) from None
            data = xfer.body(body)
        from . import binds
        try:
            binds.ensure_bind_sources(spec)  # missing -v sources: made as you, where you own
        except binds.BindSourceError as exc:
            if xfer is not None:
                xfer.close()
            raise UsageError(str(exc)) from None
        if spec.detach:
            return runner.run_detached(engine, spec, data, on_pull=say)
        from . import spare  # a ready spare with the same spec skips create + start
        run_oneshot = spare.runner_for(spec, self.config_.spare)
        try:
            result = run_oneshot(
                engine, spec, data, exchange=xfer, on_pull=say,
                on_interrupt=lambda cid, how, took: say(
                    f"dockmagic: interrupted; container {cid[:12]} stopped by {how} in "
                    f"{took:.1f} s and removed"))
            if xfer is not None:
                xfer.finish(result.exit_code, self.shell.user_ns)
        finally:
            if xfer is not None:
                xfer.close()
        if result.exit_code != 0 and plan.raise_error:
            raise errors.CellFailed(result.exit_code, spec.image, result.stderr_tail, result.oom,
                                    result.name)
        return None

    def _line(self, line: str):
        argv = cellplan.split_line(line) if line.strip() else []
        if not argv or argv[0] in ("--help", "-h", "help"):
            from . import commands
            print(self.docker.__doc__)
            print(commands.SUMMARY)
            return None
        handler = getattr(self, f"_cmd_{argv[0].replace('-', '_')}", None)
        if handler is None:
            from . import commands  # the lifecycle subcommands: ps, logs, stop, commit, ...
            handler = commands.COMMANDS.get(argv[0])
            if handler is not None:
                return handler(self, argv[1:])
        if handler is None:
            raise UsageError(f"%docker has no subcommand {argv[0]!r}; see `%docker --help` "
                             "(to run code, use the cell form `%%docker IMAGE`)")
        return handler(argv[1:])

    def _cmd_config(self, args):
        """`%docker config [--image IMAGE] [--flags "FLAGS"] [--reset]`: per-notebook defaults."""
        it = iter(args)
        for arg in it:
            key, eq, value = arg.partition("=")
            if key in ("--image", "--flags", "--spare") and not eq:
                value = next(it, None)
                if value is None:
                    raise UsageError(f"%docker config {key} needs a value")
            if key == "--image":
                self.config_.image = value or None
            elif key == "--flags":
                flags = cellplan.split_line(value)
                try:  # check them now, with a placeholder image, rather than at the next cell
                    translate.parse_run_args(flags + ["image"])
                except translate.TranslateError as exc:
                    raise UsageError(f"%docker config --flags: {exc}") from None
                self.config_.flags = flags
            elif key == "--reset":
                self.config_.image, self.config_.flags = None, []
            elif key == "--spare":
                if value not in ("on", "off"):
                    raise UsageError("%docker config --spare takes on or off")
                self.config_.spare = value == "on"
                if not self.config_.spare:
                    from . import spare
                    spare.SPARES.discard()
            else:
                raise UsageError(f"%docker config takes --image IMAGE, --flags \"FLAGS\", "
                                 f"--spare on|off or --reset, not {arg!r}")
        print(self.config_.describe())

    def _cmd_panel(self, args):
        """`%docker panel [--scope notebook|dockmagic|all] [--interval S]`: the live panel."""
        from . import panel
        return panel.show_panel(self, args)

    def _cmd_session(self, args):
        """`%docker session NAME [docker-run flags] IMAGE [PYTHON]`: start (or reattach to) a
        long-lived container running one Python interpreter; `%%docker @NAME` cells run in it
        and keep its variables. `%docker session` lists sessions; `--stop NAME` removes one."""
        from . import session
        try:
            return session.command(self.engine, args,
                                   plan=lambda line: self.plan(line, oneshot=False))
        except session.SessionUsage as exc:
            raise UsageError(str(exc)) from None

    @cell_magic
    def dockerfile(self, line, cell):
        """Build an image from the cell body: `%%dockerfile -t NAME:TAG [-f NAME] [CONTEXT]`."""
        from . import commands
        return commands.dockerfile_cell(self, line, cell)

    # -- %gpus ----------------------------------------------------------------------------
    @line_magic
    def gpus(self, line):
        """Show GPU state, and choose the GPUs the next `%%docker` cells get.

        `%gpus` shows one row per GPU (utilisation, memory, temperature, power, processes and
        the containers they live in) and the current choice. `%gpus all`, `%gpus 2` (any two),
        `%gpus 0,2` or `%gpus device=0,2`, `%gpus none`, `%gpus auto:2` (the two least-loaded
        GPUs, pinned by UUID). A cell's own `--gpus` wins over the choice.
        """
        from . import gpus

        arg = line.strip()
        if arg:
            try:
                snap = gpus.snapshot_for_choice(arg)
                value = gpus.choose_gpus(arg, snap)
                self.config_.gpus = translate.parse_gpus(value) if value else None
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            print(gpus.describe_choice(self.gpus_value, snap, arg))
            note = gpus.describe_no_driver(self.gpus_value, snap)
            if note:
                print(note)
            return None
        snap = gpus.query_with_containers(self.engine)
        print(gpus.describe_choice(self.gpus_value, snap))
        return gpus.GpuTable(snap, self.gpus_value)
