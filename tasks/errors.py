"""The one exception for bad input: what the user can fix, as opposed to a bug in clip-icm.

Whoever finds the problem raises `InputError(message, field=...)`: the message names the file or
value and the fix; `field` is the RunConfig field it concerns, if any. The CLI prints it as one
line, adding the field and its flag (`config field 'ks' (--ks): ...`), and exits 2; elsewhere (a
deployment's logs) the field is named without the flag. Any other exception keeps its traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input: `message` names the file or value and the fix; `field` is the RunConfig field, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field

    def __str__(self) -> str:
        return f"config field {self.field!r}: {self.message}" if self.field else self.message
