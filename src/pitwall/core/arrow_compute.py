"""``pyarrow.compute`` for the modules that compute on Arrow columns, imported by the first call that uses it.

Its native library and function registry are ~10 MiB of an idle server's
RSS that nothing idle uses (issue 13); see ``core.exports.lazy_module``.
Import it as ``from pitwall.core.arrow_compute import pc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_module

__all__ = ["pc"]

if TYPE_CHECKING:
    import pyarrow.compute as pc
else:
    pc = lazy_module("pyarrow.compute")
