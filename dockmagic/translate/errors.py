"""The translator's one error: every refusal is a ``TranslateError`` with a one-line message."""
from __future__ import annotations


class TranslateError(ValueError):
    """A `docker run` argv dockmagic cannot translate: one line naming the flag and the fix."""
