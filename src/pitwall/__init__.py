"""pitwall: production support for microservices in one Python process."""

import sys
from typing import Any

__version__ = "0.1.0"

# httpx's package root imports its command-line client (``httpx._main``: click, rich and pygments, ~6 MiB)
# and keeps a stub ``httpx.main`` when that import fails. pitwall never runs httpx's CLI in-process, so a
# process importing pitwall before httpx blocks that one module (None in sys.modules refuses an import).
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def __getattr__(name: str) -> Any:
    # ``pitwall.instrument(...)`` without paying the OpenTelemetry import on every ``import pitwall``.
    if name == "instrument":
        import importlib

        return importlib.import_module("pitwall.instrument")
    raise AttributeError(f"module 'pitwall' has no attribute {name!r}")
