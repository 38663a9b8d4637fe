"""The translator's one error: every refusal is a ``TranslateError`` with a one-line message."""
from __future__ import annotations


class TranslateError(ValueError):
    """A `docker run` argv dockmagic cannot translate: one line naming the flag and the fix."""


class UnknownFlag(TranslateError):
    """A flag `docker run` does not have; ``flag`` is its name without dashes (`gpu`)."""

    def __init__(self, message: str, flag: str):
        super().__init__(message)
        self.flag = flag
