"""The Component protocol: every long-lived part of the server follows it."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """Started in dependency order under the app lifespan, stopped in reverse."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class Reloadable(Protocol):
    """A component that can apply new settings without a restart (SIGHUP, /-/reload)."""

    async def reload(self, settings: Any) -> None: ...
