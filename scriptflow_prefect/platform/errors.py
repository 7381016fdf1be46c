"""The error every feature's service raises when a request breaks a rule."""

from __future__ import annotations


class ServiceError(ValueError):
    """A request broke a rule; `status` is the HTTP status to answer with, the message is
    translated and for a person. (scripts.service calls it ScriptError.)"""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
