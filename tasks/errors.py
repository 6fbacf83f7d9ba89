"""The one exception for bad input: what the user can fix, as opposed to a bug in clip-icm.

The CLI prints an InputError as one line and exits 2; any other exception keeps its traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input, its message naming the field or file and the fix; `field` is the RunConfig field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field
