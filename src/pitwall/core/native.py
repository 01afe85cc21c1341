"""Optional C extensions: imported when built, ``None`` otherwise.

The extensions (``pitwall/_native/*.c``) are built where a compiler and Python's headers exist; every caller
keeps a pure-Python path that gives the same answer, so a missing build only costs speed. One helper so the
pillars (metrics, storage) that share an extension need not import each other for it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional_module"]


def optional_module(name: str) -> ModuleType | None:
    """The module ``name`` (e.g. ``"pitwall._metricsc"``), or ``None`` when it was not built."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the build
        return None
