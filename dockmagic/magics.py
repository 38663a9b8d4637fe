"""The magics: `%%docker`, `%docker SUBCOMMAND`, `%gpus`. Thin: parse -> plan -> runner -> display."""
from __future__ import annotations

import os
import pwd
import shlex
import sys
from typing import Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from traitlets import Bool, Float, Int, observe

from . import cell as cellplan
from . import errors, translate
from . import labels as L
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


def _take_option(argv, flag):
    from .cli import take_option
    return take_option(argv, flag)


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


def _end_session_line(live, failure: Optional[BaseException]):
    """The summary of a session cell's line: its exit code and the session's largest process so
    far (from the agent's reply), or how it ended otherwise."""
    from . import session
    if isinstance(failure, KeyboardInterrupt):
        live.finish(interrupted=True)
    elif failure is None or isinstance(failure, session.SessionCellFailed):
        reply = getattr(session.attached(live.session), "last_reply", None) or {}
        if reply.get("s") == "error":  # an exception: the session lives on, nothing exited
            live.finish(raised=session.reply_raised(reply), peak=session.reply_peak(reply))
        else:
            code = reply.get("code", 1) if reply.get("s") == "exit" else 0
            live.finish(code, peak=session.reply_peak(reply))
    else:
        live.finish(failed=type(failure).__name__)


@magics_class
class DockerMagics(Magics):
    """`%%docker`, `%docker`, `%gpus`. Timeouts and intervals are traitlets: set them with
    `%config DockerMagics.interrupt_grace = 5` or in ipython_config.py
    (`c.DockerMagics.interrupt_grace = 5`)."""

    interrupt_grace = Float(2.0, help="seconds an interrupted one-shot cell's container gets "
                                      "after SIGINT before SIGKILL").tag(config=True)
    session_interrupt_wait = Float(3.0, help="seconds an interrupted session cell gets to stop "
                                             "before the kernel stops waiting").tag(config=True)
    session_hello_timeout = Float(30.0, help="seconds a new or reattached session gets to "
                                             "answer").tag(config=True)
    spare_idle = Float(600.0, help="seconds an unused spare container is kept").tag(config=True)
    panel_interval = Float(2.0, help="seconds between panel refreshes").tag(config=True)
    logs_tail = Int(200, help="lines `%docker logs NAME` shows without --tail").tag(config=True)
    status_line = Bool(True, help="show a live status line (container or session, image, "
                                  "engine, elapsed) above a cell's output in a notebook, and "
                                  "a summary at the end").tag(config=True)
    status_interval = Float(1.0, help="seconds between updates of the live status "
                                      "line").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell, **kwargs)
        self.config_ = NotebookConfig()
        from . import kernel
        kernel.on_shutdown(_close_remote_engines)  # first registered: runs last

    #: trait -> (module, attribute) it sets.
    _SETTINGS = {
        "interrupt_grace": ("dockmagic.runner", "INTERRUPT_GRACE_S"),
        "session_interrupt_wait": ("dockmagic.session", "INTERRUPT_WAIT_S"),
        "session_hello_timeout": ("dockmagic.session", "HELLO_TIMEOUT_S"),
        "spare_idle": ("dockmagic.spare", "SPARE_IDLE_S"),
        "logs_tail": ("dockmagic.commands", "LOGS_TAIL"),
    }

    @observe(*_SETTINGS)
    def _setting_changed(self, change):
        self.__dict__.setdefault("_settings_set", set()).add(change["name"])

    def _push_settings(self):
        """Hand the settings a user set (`%config`, ipython_config.py) to the modules that
        read them; the modules' own defaults stand for the rest. Modules not imported yet get
        theirs at a later use (loading the extension imports none of them)."""
        names = self.__dict__.get("_settings_set")
        if not names:
            return
        mods = sys.modules
        for name in names:
            module, attr = self._SETTINGS[name]
            m = mods.get(module)
            if m is not None:
                setattr(m, attr, getattr(self, name))

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

    def cell_number(self):
        """The prompt number of the cell that is running, as the notebook shows it (`[6]`).

        IPython (>= 9) advances `execution_count` before the cell runs, so during a cell it
        names the *next* one. The running cell's own number is on the ExecutionResult the
        display hook holds while the cell runs (IPython 8 and 9, terminal and ipykernel alike).
        Outside a running cell (a direct `run_cell_magic` call) there is none: the count the
        next cell would get stands in."""
        shell = self.shell
        if shell is None:
            return None
        result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
        count = getattr(result, "execution_count", None)
        return count if count is not None else getattr(shell, "execution_count", None)

    def cell_name(self) -> str:
        """The file name a cell's Python frames carry in tracebacks: `<cell [6]>`."""
        n = self.cell_number()
        return f"<cell [{n}]>" if n is not None else "<cell>"

    def _labels(self) -> dict:
        count = self.cell_number()
        return L.build_labels(kernel_id(), self._notebook(), "" if count is None else count)

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
        message = lifecycle.report_orphans()
        if message:
            print(message, file=sys.stderr)

    def plan(self, line: str, oneshot: bool = True, engine=None) -> cellplan.CellPlan:
        """The cell's plan; on a remote ENGINE the container runs as the SSH user there (who
        owns the synced workspace), and `%gpus`' choice (GPUs of this machine) does not apply."""
        identity, gpus = self._identity(), self.config_.gpus
        ident = getattr(engine, "identity", None)
        who = ident() if ident is not None else None
        if who is not None:
            identity, gpus = cellplan.Identity(*who), None
        try:
            plan = cellplan.plan_cell(
                self._expand(line), cwd=os.getcwd(), identity=identity,
                default_flags=self.config_.flags, default_image=self.config_.image,
                default_gpus=gpus, labels=self._labels(), oneshot=oneshot)
        except cellplan.CellUsageError as exc:
            raise UsageError(str(exc)) from None
        from . import recording
        return recording.PINS.apply(engine or self.engine, plan) if recording.PINS.on else plan  # (#12)

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
            return self._session_cell(line, cell)
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
        from . import recording, runner

        self._push_settings()
        engine = engine or self.engine
        remote = getattr(engine, "remote", False)
        rec = recording.begin(engine, plan, body)  # provenance record (#12): finished below
        spec = plan.spec
        python = cellplan.reads_python_stdin(spec)
        text = cellplan.to_python_stdin(body, self.cell_name()) if python else body
        data = text.encode("utf-8")
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        xfer = None
        if plan.inputs or plan.outputs or plan.pickle_outputs:
            # --in/--out: the body becomes a loader + the cell + a saver; the inputs wait in a
            # fresh private folder that only this cell's container gets
            from . import transfer
            try:
                xfer = transfer.prepare_oneshot(plan, self.shell.user_ns, local=not remote)
            except transfer.TransferUsage as exc:
                raise UsageError(str(exc)) from None
            data = xfer.body(cellplan.as_cell_source(body), self.cell_name())
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
                engine, mounts, mode, run, xroot=xroot, image=spec.image)
        if spec.detach:
            if sync is None:
                name = runner.run_detached(engine, spec, data, on_pull=say)
            else:
                name = sync(lambda: runner.run_detached(engine, spec, data, on_pull=say),
                            "in" if plan.sync in ("both", "in") else "none")
            from . import status
            try:
                cid = engine.inspect(name)["Id"]
            except errors.DockmagicError:
                cid = ""
            started = status.Started(name, spec.image, cid)
            rec.finish(name=name, live=started)  # the record rides on the message
            return started
        from . import spare  # a ready spare with the same spec skips create + start
        # (on a remote engine an --in/--out cell runs cold: its folder travels with it)
        run_oneshot = spare.runner_for(spec, self.config_.spare and not (remote and xfer))
        live = None
        if self.status_line:
            from . import status
            if status.frontend_updates_in_place(self.shell):
                live = status.CellStatus(engine, spec.image, self.cell_number(),
                                         self.status_interval)
        started = []
        result = None

        def on_started(cid):
            started.append(cid)
            if live is not None:
                live.started(cid)

        try:
            run = lambda: run_oneshot(  # noqa: E731
                engine, spec, data, exchange=xfer, on_pull=live if live is not None else say,
                on_pull_event=live.pull_event if live is not None else None,
                on_started=on_started)
            result = run() if sync is None else sync(run)
            if xfer is not None:
                xfer.finish(result.exit_code, self.shell.user_ns)
        except KeyboardInterrupt as exc:
            if live is not None:
                live.finish(interrupted=True)
            if isinstance(exc, errors.CellInterrupted):
                raise
            # before the container ran (create, pull, start), or once it had ended
            raise errors.CellInterrupted(
                f"interrupted; container {started[0][:12]} removed" if started else
                "interrupted before the cell's container ran; nothing is left of it") from None
        except BaseException as exc:
            if live is not None:
                live.finish(failed=type(exc).__name__)
            raise
        finally:
            rec.finish(result, xfer=xfer, live=live)
            if xfer is not None:
                xfer.close()
        if live is not None:
            live.finish(result.exit_code)
        if result.exit_code != 0 and plan.raise_error:
            raise errors.CellFailed(result.exit_code, spec.image, result.stderr_tail, result.oom,
                                    result.name, memory_limit=spec.mem_limit)
        return None

    def _session_cell(self, line: str, cell: str):
        from . import cli, session

        parsed = cli.parse_session_cell(line)
        if parsed is None:  # --help
            return None
        name, args = parsed
        self._push_settings()
        from . import recording, status
        engine = self.engine
        live = None
        show = self.status_line and status.frontend_updates_in_place(self.shell)

        def ready(sess):  # the session answered: the cell gets its line, which carries its
            nonlocal live  # record and goes out before the cell's first output
            if show:
                live = rec.live = status.SessionStatus(
                    sess.engine or engine, name, sess.image, self.cell_number(),
                    self.status_interval)
                return live.streams(sys.stdout, sys.stderr)
            return None

        failure = None
        try:
            with recording.session_cell(engine, name, args, line, cell) as rec:  # (#12)
                session.run_cell(engine, name, cellplan.as_cell_source(cell), self.shell.user_ns,
                                 interpreter=args.interpreter, inputs=args.inputs,
                                 outputs=args.outputs, pickle_outputs=args.pickle_outputs,
                                 raise_error=not args.no_raise_error,
                                 cell_name=self.cell_name(), on_ready=ready)
            return None
        except session.SessionUsage as exc:
            raise UsageError(str(exc)) from None
        except BaseException as exc:
            failure = exc
            raise
        finally:  # after the record: the summary and the record go out as one update
            if live is not None:
                _end_session_line(live, failure)

    def _line(self, line: str):
        from . import cli

        try:
            argv = cellplan.split_line(line) if line.strip() else []
        except cellplan.CellUsageError as exc:
            raise UsageError(str(exc)) from None
        if not argv or argv[0] in ("--help", "-h", "help"):
            cli.show_help()
            return None
        cli.load()
        self._push_settings()
        if argv[0] in ("session", "engines", "config"):  # they take --engine themselves
            return cli.dispatch(self, argv)
        # `--engine NAME` (or `%docker config --engine NAME`): the subcommand's calls go there
        rest, name = _take_option(argv[1:], "--engine")
        from . import engine
        with engine.using(self.engine_named(name) if name else
                          self.engine if self.config_.engine else None):
            return cli.dispatch(self, [argv[0]] + rest)

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
        GPUs, pinned by UUID). A cell's own `--gpus` wins over the choice.
        """
        from . import cli, gpus

        try:
            argv = cellplan.split_line(line)
        except cellplan.CellUsageError as exc:
            raise UsageError(str(exc)) from None
        argv, which = _take_option(argv, "--engine")
        if which is not None:  # `%gpus --engine NAME|all`: the GPUs of that engine's host
            if argv:
                raise UsageError("%gpus --engine NAME|all shows GPUs; to use GPUs there, give the "
                                 "cell --engine NAME --gpus ..., or --engine auto --gpus auto:N")
            from .remote import store
            from .remote.table import query_gpu_snapshot
            names = ["local", *store.load_engines()] if which == "all" else [which]
            return GpusByEngine([(n, query_gpu_snapshot(self.engine_named(n))) for n in names])
        args = cli.parse(cli.GPUS, argv)
        if args is None:  # --help
            return None
        arg = args.choice or ""
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
