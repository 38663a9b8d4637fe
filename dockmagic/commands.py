"""`%docker SUBCOMMAND ...`: the lifecycle subcommands (ps, images, logs, stop, ...). Thin."""
from IPython.core.error import UsageError

COMMANDS = {}


def dockerfile_cell(magics, line, cell):
    raise UsageError("%%dockerfile is not available yet")
