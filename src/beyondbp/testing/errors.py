"""What a failed or skipped check raises."""
from __future__ import annotations


class MethodCheckError(AssertionError):
    """A method broke a property every method must satisfy; `property` names it and the message
    says what was measured."""

    def __init__(self, prop: str, message: str):
        super().__init__(message)
        self.property = prop


class MethodCheckSkipped(Exception):
    """A check that cannot run on this platform (no gloo, no fork); the message says why."""
