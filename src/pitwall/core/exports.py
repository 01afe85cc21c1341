"""Lazy re-exports for a pillar's package ``__init__``: its public interface without import-time work.

A pillar's ``__init__`` lists in ``__all__`` what other pillars may import
and maps each name to the module that defines it. Nothing is imported until
a name is first used, so ``pitwall.config`` can load ``<pillar>.settings``
without pulling in engines and stores, and a store that imports
``<pillar>.model`` does not import the pillar's query code back (no import
cycles through package roots). Type checkers read the same names from an
``if TYPE_CHECKING:`` block of plain imports beside the table;
``tests/test_layout.py`` checks that table, ``__all__`` and the real
objects agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for the package whose ``globals()`` is ``namespace``.

    ``exports`` maps each public name to ``"module"`` (same attribute name) or
    ``"module:attribute"`` (exported under another name).
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
