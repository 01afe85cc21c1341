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
import importlib.util
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
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



class _DeferredModule(ModuleType):
    """Stands for a module until an attribute is first read, then holds a copy of the module's namespace."""

    def __getattr__(self, attr: str) -> Any:  # only called for names not (yet) in this object's namespace
        # The import system's per-module lock makes concurrent first reads wait for one import
        # (``importlib.util.LazyLoader`` on 3.11 lets a second thread see an empty module meanwhile).
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)  # from now on reads find the names here, at a module's cost
        return getattr(real, attr)


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, imported on the first attribute read instead of now.

    For a heavy library used only inside functions (``pyarrow.compute`` maps
    its native library and builds its function registry, ~10 MiB, though an
    idle server never calls it): the first call pays the import, later reads
    find the module's names in the returned object's own namespace, as fast
    as reading them from the module. Nothing is registered in ``sys.modules``,
    so any other import of ``name`` is an ordinary one. Already imported: that
    module. Type checkers should see a plain import under ``if TYPE_CHECKING:``.
    """
    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(name) is None:  # fail now, as the import it replaces would have
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    return _DeferredModule(name)
