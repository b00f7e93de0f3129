"""The one exception type users see: a message naming what is wrong, and the fix."""

from __future__ import annotations


class InitrdError(Exception):
    """A user-facing failure. The CLI prints `message` (and `hint`) and exits non-zero."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message
