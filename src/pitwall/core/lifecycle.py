"""The wiring contract: components have a lifecycle; pillars are ``Part``s of the server.

``server.py`` (the composition root) builds each pillar or capability into
a ``Part`` and treats them all alike, as Datasette loads its built-ins
through the same hooks as plugins: start their components in order, stop
them in reverse, mount their routers, hand them new settings on reload and
let them register self-metrics. A component whose long-lived loops run
under a ``core.tasks.Supervisor`` is ``Supervised``; readiness turns false
when one of those loops dies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fastapi import APIRouter

    from pitwall.core.selfmetrics import SelfMetrics
    from pitwall.core.tasks import Supervisor

__all__ = ["Component", "Mount", "Part", "Reloadable", "Supervised"]


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


@runtime_checkable
class Supervised(Protocol):
    """A component whose background loops run under a supervisor."""

    tasks: Supervisor


@dataclass(frozen=True)
class Mount:
    """A router of a part; ``server_wide`` routes act on the whole server, not one tenant."""

    router: APIRouter
    server_wide: bool = False


class Part(Protocol):
    """What every pillar and capability gives the composition root."""

    name: str

    def components(self) -> Sequence[Component]:
        """Started in this order after the parts before it; stopped in reverse."""
        ...

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        """Its routers; ``is_ready`` tells whether the whole server has started."""
        ...

    async def reload(self, settings: Any) -> None:
        """Apply what it can of new ``pitwall.config.Settings``; ConfigError keeps the old."""
        ...

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """Add its gauges to the server's self-metrics."""
        ...
