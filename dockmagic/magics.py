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
        self.engine = None  # `%docker config --engine NAME`: cells run there by default

    def describe(self) -> str:
        from . import gpus
        return "\n".join([
            f"default image: {self.image or '(none: each cell names its image)'}",
            f"default flags: {shlex.join(self.flags) if self.flags else '(none)'}",
            gpus.describe_choice(self.gpus.to_cli() if self.gpus is not None else None),
            f"spare containers: {'on' if self.spare else 'off'}",
            f"engine: {self.engine or 'local (docker context / DOCKER_HOST)'}",
        ])


def _take_option(argv: list, flag: str):
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


def _close_remote_engines():
    """At shutdown, after spares and sessions: this kernel's reapable containers left on remote
    engines are removed, then their SSH connections end. (Nothing to do, and nothing imported,
    when no remote engine was used.)"""
    mod = sys.modules.get("dockmagic.remote.engines")
    if mod is not None:
        mod.close_all()


class GpusByEngine:
    """`%gpus --engine all`: each engine's GPUs, as `%gpus` shows them, under its name."""

    def __init__(self, items):
        self.items = list(items)

    def __repr__(self):
        from .gpus import GpuTable
        return "\n\n".join(f"engine {n}\n{GpuTable(snap)!r}" for n, snap in self.items)

    def _repr_html_(self):
        import html

        from .gpus import GpuTable
        return "".join(f"<h4>engine {html.escape(n)}</h4>{GpuTable(snap)._repr_html_()}"
                       for n, snap in self.items)


@magics_class
class DockerMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.config_ = NotebookConfig()
        from . import kernel
        kernel.on_shutdown(_close_remote_engines)  # first registered: runs last

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
        """The engine this notebook's cells run on: `%docker config --engine NAME`, else the one
        docker's own rules pick."""
        return self.engine_named(self.config_.engine)

    def engine_named(self, name):
        """`local`/None: docker's default engine; another NAME: from `%docker engines`."""
        if not name or name == "local":
            from . import engine
            return engine.default()
        from .remote import engines, urls
        try:
            return engines.get_engine(name)
        except urls.EndpointError as exc:
            raise UsageError(str(exc)) from None

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

    def plan(self, line: str, oneshot: bool = True, engine=None) -> cellplan.CellPlan:
        """The cell's plan; on a remote ENGINE the container runs as the SSH user there (who
        owns the synced workspace), and `%gpus`' choice (GPUs of this machine) does not apply."""
        identity, gpus = self._identity(), self.config_.gpus
        ident = getattr(engine, "identity", None)
        if ident is not None and ident() is not None:
            uid, gid, user = ident()
            identity, gpus = cellplan.Identity(uid, gid, user), None
        try:
            return cellplan.plan_cell(
                self._expand(line), cwd=os.getcwd(), identity=identity,
                default_flags=self.config_.flags, default_image=self.config_.image,
                default_gpus=gpus, labels=self._labels(), oneshot=oneshot)
        except cellplan.CellUsageError as exc:
            raise UsageError(str(exc)) from None

    def _plan_with_engine(self, line: str, oneshot: bool = True):
        """(plan, engine) for a cell line: `--engine NAME`, `--engine auto --gpus auto:N`, or
        the notebook's engine."""
        from .remote import auto
        if auto.wants_auto(line):
            from .remote import store
            from .remote.table import query_gpu_snapshot
            names = ["local", *store.load_engines()]
            try:
                line = auto.pick(line, names, lambda n: query_gpu_snapshot(self.engine_named(n)))
            except auto.AutoChoiceError as exc:
                raise UsageError(str(exc)) from None
            print(f"dockmagic: --engine auto: {line}", file=sys.stderr)
        plan = self.plan(line, oneshot)
        engine = self.engine_named(plan.engine or self.config_.engine)
        if getattr(engine, "remote", False):
            plan = self.plan(line, oneshot, engine=engine)
        return plan, engine

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

        Remote engines: `--engine NAME` runs the cell on an engine of `%docker engines` (over
        one SSH connection; the notebook folder is synced there before the cell and back after
        it, `--sync both|in|out|none`); `--engine auto --gpus auto:N` picks the engine and GPUs
        with the most free memory.

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
        plan, engine = self._plan_with_engine(line)
        remote = getattr(engine, "remote", False)
        if plan.dry_run:
            if plan.inputs or plan.outputs or plan.pickle_outputs:
                from . import transfer
                print(f"# --in/--out add --mount type=bind,source=FOLDER,"
                      f"target={transfer.XFER_TARGET}, FOLDER a fresh private one made for "
                      f"the cell in {transfer.exchange_root()[0]}")
            print(cellplan.describe_plan(plan) + (f"   # on engine {engine.name}" if remote
                                                  else ""))
            return None
        return self.run_plan(plan, cell, engine)

    def run_plan(self, plan: cellplan.CellPlan, body: str, engine=None):
        from . import runner

        engine = engine or self.engine
        remote = getattr(engine, "remote", False)
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
        if not remote:  # (on a remote engine, -v sources are paths on that host)
            from . import binds
            try:
                binds.ensure_bind_sources(spec)  # missing -v sources: made as you, where you own
            except binds.BindSourceError as exc:
                if xfer is not None:
                    xfer.close()
                raise UsageError(str(exc)) from None
        sync = None
        if remote:  # the notebook folder (and the --in/--out folder) travel there and back
            from .remote import cells, placement
            mounts = placement.binds_from_spec(spec)
            xroot = xfer.exchange.host_dir if xfer is not None else None
            sync = lambda run, mode=plan.sync: cells.run_oneshot(  # noqa: E731
                engine, mounts, mode, run, xroot=xroot)
        if spec.detach:
            run = lambda: runner.run_detached(engine, spec, data, on_pull=say)  # noqa: E731
            if sync is None:
                return run()
            return sync(run, "in" if plan.sync in ("both", "in") else "none")
        from . import spare  # a ready spare with the same spec skips create + start
        # (on a remote engine an --in/--out cell runs cold: its folder travels with it)
        run_oneshot = spare.runner_for(spec, self.config_.spare and not (remote and xfer))
        try:
            run = lambda: run_oneshot(  # noqa: E731
                engine, spec, data, exchange=xfer, on_pull=say,
                on_interrupt=lambda cid, how, took: say(
                    f"dockmagic: interrupted; container {cid[:12]} stopped by {how} in "
                    f"{took:.1f} s and removed"))
            result = run() if sync is None else sync(run)
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
                # `--engine NAME` (or `%docker config --engine NAME`): the calls go there
                args, name = _take_option(argv[1:], "--engine")
                from . import engine
                with engine.using(self.engine_named(name) if name else
                                  self.engine if self.config_.engine else None):
                    return handler(self, args)
        if handler is None:
            raise UsageError(f"%docker has no subcommand {argv[0]!r}; see `%docker --help` "
                             "(to run code, use the cell form `%%docker IMAGE`)")
        return handler(argv[1:])

    def _cmd_config(self, args):
        """`%docker config [--image IMAGE] [--flags "FLAGS"] [--reset]`: per-notebook defaults."""
        it = iter(args)
        for arg in it:
            key, eq, value = arg.partition("=")
            if key in ("--image", "--flags", "--spare", "--engine") and not eq:
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
            elif key == "--engine":
                if value and value != "local":
                    self.engine_named(value)  # known? (no connection made yet)
                self.config_.engine = None if value in ("", "local") else value
            elif key == "--spare":
                if value not in ("on", "off"):
                    raise UsageError("%docker config --spare takes on or off")
                self.config_.spare = value == "on"
                if not self.config_.spare:
                    from . import spare
                    spare.SPARES.discard()
            else:
                raise UsageError(f"%docker config takes --image IMAGE, --flags \"FLAGS\", "
                                 f"--spare on|off, --engine NAME or --reset, not {arg!r}")
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
        args, name = _take_option(list(args), "--engine")
        known = session.attached(args[-1]) if args and not name else None
        # a session this kernel knows is stopped/reattached on its own engine
        engine = self.engine_named(name) if name else (known.engine if known else self.engine)
        try:
            return session.command(engine, args,
                                   plan=lambda line: self.plan(line, oneshot=False,
                                                               engine=engine))
        except session.SessionUsage as exc:
            raise UsageError(str(exc)) from None

    def _cmd_engines(self, args):
        """`%docker engines [add NAME URL [--tls*] | add NAME --context CTX | rm NAME]`: the
        engines cells can run on (`%%docker --engine NAME`), with reachability, version, GPUs,
        running containers and round-trip time."""
        from .remote import command
        try:
            return command.engines_command(args, default=self.config_.engine)
        except command.EnginesUsage as exc:
            raise UsageError(str(exc)) from None

    @cell_magic
    def dockerfile(self, line, cell):
        """Build an image from the cell body: `%%dockerfile -t NAME:TAG [-f NAME] [CONTEXT]`."""
        from . import commands, engine
        argv, name = _take_option(cellplan.split_line(line), "--engine")
        if name:
            line = shlex.join(argv)
        with engine.using(self.engine_named(name) if name else
                          self.engine if self.config_.engine else None):
            return commands.dockerfile_cell(self, line, cell)

    # -- %gpus ----------------------------------------------------------------------------
    @line_magic
    def gpus(self, line):
        """Show GPU state, and choose the GPUs the next `%%docker` cells get.

        `%gpus` shows one row per GPU (utilisation, memory, temperature, power, processes and
        the containers they live in) and the current choice. `%gpus all`, `%gpus 2` (any two),
        `%gpus 0,2` or `%gpus device=0,2`, `%gpus none`, `%gpus auto:2` (the two least-loaded
        GPUs, pinned by UUID). A cell's own `--gpus` wins over the choice. `%gpus --engine
        NAME|all` shows the GPUs of a remote engine's host (nvidia-smi over its SSH connection),
        or of every engine.
        """
        from . import gpus

        arg = line.strip()
        argv, which = _take_option(cellplan.split_line(arg) if arg else [], "--engine")
        if which is not None:
            if argv:
                raise UsageError("%gpus --engine NAME|all shows GPUs; to use GPUs there, give the "
                                 "cell --engine NAME --gpus ..., or --engine auto --gpus auto:N")
            from .remote import store
            from .remote.table import query_gpu_snapshot
            names = ["local", *store.load_engines()] if which == "all" else [which]
            return GpusByEngine([(n, query_gpu_snapshot(self.engine_named(n))) for n in names])
        if arg:
            try:
                snap = gpus.snapshot_for_choice(arg)
                value = gpus.choose_gpus(arg, snap)
                self.config_.gpus = translate.parse_gpus(value) if value else None
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            print(gpus.describe_choice(self.gpus_value))
            note = gpus.describe_no_driver(self.gpus_value, snap)
            if note:
                print(note)
            return None
        snap = gpus.query_with_containers(self.engine)
        print(gpus.describe_choice(self.gpus_value))
        return gpus.GpuTable(snap)
