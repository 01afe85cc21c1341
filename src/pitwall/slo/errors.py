"""Errors of the SLO capability (kinds from ``core.errors``, mapped to HTTP once)."""

from __future__ import annotations

from pitwall.core.errors import BadData, NotFound

__all__ = ["SLONotFound", "SpecError"]


class SpecError(BadData):
    """An SLO spec or windows file is invalid; the message names the field."""


class SLONotFound(NotFound):
    """No SLO of that name is loaded."""
