"""pitwall: production support for microservices in one Python process."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``pitwall.instrument(...)`` without paying the OpenTelemetry import on every ``import pitwall``.
    if name == "instrument":
        import importlib

        return importlib.import_module("pitwall.instrument")
    raise AttributeError(f"module 'pitwall' has no attribute {name!r}")
