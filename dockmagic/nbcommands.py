"""`%docker config`, `%docker session`, `%docker panel`: the subcommands about this notebook
(its defaults, its sessions, its live view). Registered in cli's one registry, like the
lifecycle subcommands in commands.py."""
from __future__ import annotations

import argparse

from IPython.core.error import UsageError

from . import translate
from .cli import argument, subcommand


@subcommand("config", "this notebook's defaults: image, flags, spare containers", group="cells",
            description="Show or set this notebook's defaults for the next %%docker cells. "
                        "Without flags, show them.")
@argument("--image", metavar="IMAGE", help="the image a cell without one runs")
@argument("--flags", metavar='"FLAGS"',
          help='docker-run flags every cell gets, quoted: --flags "--shm-size 8g" (one flag '
               'alone: --flags=--rm)')
@argument("--spare", choices=("on", "off"),
          help="keep a warm spare container after one-shot cells (default on)")
@argument("--pin", choices=("on", "off"),
          help="pin each image tag to its digest at its first use, so later cells run that "
               "image even if the tag moves (`%%docker pin --refresh` resolves anew)")
@argument("--reset", action="store_true", help="forget the default image and flags")
@argument("--engine", metavar="NAME",
          help="the engine cells (and ps, logs, ...) use: one of `%%docker engines`, or local")
def cmd_config(magics, args):
    from .cell import CellUsageError, split_line

    config = magics.config_
    if args.reset:
        config.image, config.flags = None, []
    if args.image is not None:
        config.image = args.image or None
    if args.flags is not None:
        try:
            flags = split_line(args.flags)
        except CellUsageError as exc:
            raise UsageError(f"%docker config --flags: {exc}") from None
        try:  # check them now, with a placeholder image, rather than at the next cell
            translate.parse_run_args(flags + ["image"])
        except translate.TranslateError as exc:
            raise UsageError(f"%docker config --flags: {exc}") from None
        config.flags = flags
    if args.engine is not None:
        if args.engine not in ("", "local"):
            magics.engine_named(args.engine)  # known? (no connection made yet)
        config.engine = None if args.engine in ("", "local") else args.engine
    if args.spare is not None:
        config.spare = args.spare == "on"
        if not config.spare:
            from . import spare
            spare.SPARES.discard()
    from . import recording
    if args.pin is not None:
        recording.PINS.on = args.pin == "on"
    print(config.describe() + "\n" + recording.PINS.describe())


@subcommand("session", "a long-lived container for %%docker @NAME cells (--stop NAME)",
            group="cells",
            usage="%%docker session [NAME [docker-run flags] IMAGE [PYTHON]] | --stop NAME",
            description="Start (or reattach to) session NAME: a long-lived container running "
                        "one Python interpreter; `%%docker @NAME` cells run in it and keep "
                        "its variables. Without NAME, list the sessions.")
@argument("--stop", metavar="NAME", help="stop and remove session NAME")
@argument("--list", action="store_true", help="list the sessions (as with no arguments)")
@argument("name", nargs="?", metavar="NAME")
@argument("run_args", nargs=argparse.REMAINDER, metavar="FLAGS IMAGE [PYTHON]",
          help="docker-run flags, the image, and optionally its Python")
def cmd_session(magics, args):
    from . import session

    from .cli import take_option
    run_args, where = take_option(list(args.run_args), "--engine")
    if args.stop is not None:
        if args.name or args.list:
            raise UsageError("%docker session --stop NAME takes nothing else")
        argv = ["--stop", args.stop]
    elif args.name is None:
        argv = []
    else:
        argv = [args.name] + run_args
    # `--engine NAME` starts it there; a session this kernel knows is stopped on its own engine
    known = session.attached(args.stop or args.name or "") if where is None else None
    engine = (magics.engine_named(where) if where else
              known.engine if known is not None else magics.engine)
    from . import recording
    try:
        return session.command(engine, argv, plan=lambda line: (
            recording.remember_session(magics.plan(line, oneshot=False, engine=engine))))
    except session.SessionUsage as exc:
        raise UsageError(str(exc)) from None


@subcommand("panel", "the live panel: containers and GPUs, with actions", group="cells",
            description="A live view of containers and GPUs with stop / restart / remove / "
                        "logs / commit actions, refreshed from one background thread. With "
                        "engines added (`%docker engines add`), every engine's containers "
                        "(an engine column; each row's actions act there) and a GPU heading "
                        "per engine.")
@argument("--scope", choices=("notebook", "dockmagic", "all"), default="dockmagic",
          help="whose containers: this notebook's, dockmagic's (default), or all")
@argument("--interval", type=float, default=None, metavar="SECONDS",
          help="seconds between refreshes (default: DockerMagics.panel_interval)")
def cmd_panel(magics, args):
    from . import panel

    interval = args.interval if args.interval is not None else magics.panel_interval
    return panel.show_panel(magics, ["--scope", args.scope, "--interval", repr(interval)])


@subcommand("engines", "Docker engines on other hosts: list, add NAME URL, rm NAME",
            group="cells", usage="%%docker engines [add NAME URL [--tls*] | add NAME --context "
                                 "CTX | rm NAME]",
            description="Every engine cells can run on (`%%docker --engine NAME`): reachable, "
                        "version, GPUs free/total, running containers, round-trip time. `add` "
                        "takes ssh://[user@]host[:port] (an ~/.ssh/config alias works), "
                        "tcp://host:port with --tlsverify/--tlscacert/--tlscert/--tlskey, or "
                        "--context CTX; engines are saved in $XDG_CONFIG_HOME/dockmagic/"
                        "engines.toml.")
@argument("words", nargs=argparse.REMAINDER, metavar="add NAME URL | rm NAME")
def cmd_engines(magics, args):
    from .remote import command

    try:
        return command.engines_command(args.words, default=magics.config_.engine)
    except command.EnginesUsage as exc:
        raise UsageError(str(exc)) from None
