"""Errors of the notification pipeline, as kinds of ``core.errors``."""

from __future__ import annotations

from pitwall.core.errors import BadData, NotFound, Overloaded, PitwallError, Unavailable

__all__ = ["DeliveryError", "InvalidAlert", "QueueFull", "SharingFailed", "SilenceAlreadyExpired", "SilenceNotFound"]


class SilenceNotFound(NotFound):
    """No silence with that id."""


class InvalidAlert(BadData):
    """A posted alert Alertmanager would reject."""


class QueueFull(Overloaded):
    """The pending-notification queue is at its bound."""


class SharingFailed(Unavailable):
    """Several servers: the state store did not take received alerts (the sender should retry)."""


class DeliveryError(Unavailable):
    """A receiver could not be reached or answered with an error; retried with backoff."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SilenceAlreadyExpired(PitwallError):
    """Expiring an expired silence: Alertmanager answers 500 with this message."""

    kind = "internal"
