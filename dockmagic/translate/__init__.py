"""`docker run` argv <-> frozen `RunSpec` <-> docker SDK kwargs / CLI argv.

Pure and stdlib only: no docker, IPython or NVML import. The only I/O is reading the files a
flag names (``--env-file``, ``--label-file``, ``--security-opt seccomp=FILE``).

The real ``docker run`` CLI (v28) is the oracle: every flag below parses the way the CLI parses it
(pflag rules: grouped short flags, ``--f=v`` / ``--f v``, Go bool literals, Go integer prefixes,
``--``, everything after IMAGE is the command) and produces the container configuration the CLI
would send. ``tests/test_translate_cli_diff.py`` checks that against the real CLI and engine.

Supported flags: ``--gpus``, ``-v/--volume``, ``--mount``, ``-e/--env``, ``--env-file``,
``-w/--workdir``, ``-u/--user``, ``--entrypoint``, ``--name``, ``-l/--label``, ``--label-file``,
``--rm``, ``-d/--detach``, ``-i/--interactive``, ``-t/--tty``, ``--shm-size``, ``--ipc``,
``--network/--net``, ``-p/--publish``, ``-P/--publish-all``, ``-m/--memory``, ``--memory-swap``,
``--memory-swappiness``, ``--cpus``, ``--cpuset-cpus``, ``--device`` (paths and CDI names),
``--cap-add``, ``--cap-drop``, ``--privileged``, ``--ulimit``, ``--runtime``, ``--restart``,
``--init``, ``--tmpfs``, ``--add-host``, ``-h/--hostname``, ``--read-only``, ``--group-add``,
``--pids-limit``, ``--security-opt``, ``--sysctl``, ``--stop-signal``, ``--platform``.
Any other flag ``docker run`` knows raises ``TranslateError`` ("... is not supported by
dockmagic"); a flag docker does not know raises "unknown flag". Nothing is dropped silently.

Deliberate departures from the CLI (all of them):

* ``--gpus device=0,1`` (unquoted) means devices 0 and 1, like the quoted ``'"device=0,1"'``.
  The CLI reads it as DeviceIDs ["0"] plus Count 1, which the daemon refuses at start.
* Inputs the CLI accepts but mangles are refused with a message instead: a second CSV record in a
  ``--gpus``/``--mount`` value (the CLI ignores everything after a newline), a ``-v`` source of one
  letter (the CLI reads ``a:/data`` as a Windows drive path), a relative anonymous volume
  (``-v data``), sizes or ``--cpus`` beyond int64 (the CLI wraps them around), a CDI name with a
  one-letter vendor or class (the CLI panics), ``-test.*`` (the CLI ignores it),
  ``--mount ...,bind-recursive=readonly`` (needs API 1.44), and ``--network`` options other than
  the name or a second ``--network`` (``containers.create`` cannot carry them; an API 1.41 engine
  refuses the second network anyway).
* ``-v`` specs are de-duplicated after ``./`` is resolved (the CLI de-duplicates before, and the
  engine then refuses the duplicate mount point).

Layout (each module names the flags it owns): ``argv`` the flag table, the pflag walk and
``split_run_args``; ``parse`` ``parse_run_args`` and the checks that span flags; ``spec``
``RunSpec`` and its parts, ``to_create_kwargs``, ``to_cli``, ``format_cli``; the value parsers
``gpus``, ``volumes``, ``mounts``, ``devices``, ``network``, ``quantities``, ``limits``,
``security``, ``kvfiles``, ``image``; ``gocompat`` the Go parsing rules they share; ``errors``
``TranslateError`` (``UnknownFlag`` for a flag docker run lacks, with a "did you mean" from
``argv.suggest_flag``).
"""

# Re-exported so ``from dockmagic.translate import X`` and ``translate.X`` keep working; the
# private names are the ones the magics and tests reach for.
from .argv import _LONG, _SHORT, split_run_args, suggest_flag  # noqa: F401
from .errors import TranslateError, UnknownFlag
from .gocompat import INT64_MAX, INT64_MIN, _csv_join  # noqa: F401
from .gpus import parse_gpus
from .limits import _ULIMITS  # noqa: F401
from .parse import parse_run_args
from .quantities import parse_size
from .security import _canonical_caps  # noqa: F401
from .spec import DeviceMapping, GpuRequest, Mount, PortBinding, RunSpec, Ulimit, format_cli
from .volumes import _split_volume  # noqa: F401
from .volumes import _split_volume as split_volume

__all__ = [
    "TranslateError", "UnknownFlag", "suggest_flag", "GpuRequest", "Mount", "DeviceMapping", "PortBinding", "Ulimit", "RunSpec",
    "parse_run_args", "parse_gpus", "parse_size", "split_run_args", "split_volume", "format_cli",
]
