"""The routing tree: which routes (and so receivers and timings) an alert goes to.

Mirrors Alertmanager's ``dispatch/route.go``: options are inherited from the
parent unless set; matching is depth-first, a matching child stops the search
among its siblings unless it has ``continue: true``; when no child matches the
node itself matches. A route's key (``{}/{env="prod"}``) prefixes the group key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pitwall.alerting.notify.config import RouteConfig
from pitwall.alerting.notify.matchers import Matcher, matchers_match, matchers_string

__all__ = ["DEFAULT_GROUP_INTERVAL_MS", "DEFAULT_GROUP_WAIT_MS", "DEFAULT_REPEAT_INTERVAL_MS", "Route",
           "build_route"]

DEFAULT_GROUP_WAIT_MS = 30_000
DEFAULT_GROUP_INTERVAL_MS = 300_000
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000


@dataclass
class Route:
    """One node of the routing tree with its inherited options resolved."""

    receiver: str
    matchers: list[Matcher]
    group_by: frozenset[str]
    group_by_all: bool
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    continue_: bool = False
    mute_time_intervals: list[str] = field(default_factory=list)
    active_time_intervals: list[str] = field(default_factory=list)
    parent: Route | None = None
    children: list[Route] = field(default_factory=list)
    index: int = 0

    @property
    def key(self) -> str:
        own = matchers_string(self.matchers)
        return own if self.parent is None else f"{self.parent.key}/{own}"

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert with ``labels`` is handled by (depth first)."""
        if not matchers_match(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.children:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The subset of ``labels`` this route groups by (all with ``...``)."""
        if self.group_by_all:
            return dict(labels)
        return {k: v for k, v in labels.items() if k in self.group_by}

    def route_labels(self) -> dict[str, str]:
        """Equality matchers along the path from the root: what every alert here shares."""
        out = self.parent.route_labels() if self.parent else {}
        out.update({m.name: m.value for m in self.matchers if m.type == "="})
        return out

    def walk(self) -> list[Route]:
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


def build_route(cfg: RouteConfig, parent: Route | None = None, index: int = 0) -> Route:
    """Build the tree from a validated ``route`` section."""
    if cfg.group_by is not None:
        group_by_all = cfg.group_by == ["..."]
        group_by = frozenset() if group_by_all else frozenset(cfg.group_by)
    elif parent is not None:
        group_by_all, group_by = parent.group_by_all, parent.group_by
    else:
        group_by_all, group_by = False, frozenset()

    def pick(own: int | None, inherited: int | None, default: int) -> int:
        return own if own is not None else (inherited if inherited is not None else default)

    route = Route(
        receiver=cfg.receiver or (parent.receiver if parent else ""),
        matchers=cfg.compiled_matchers,
        group_by=group_by,
        group_by_all=group_by_all,
        group_wait_ms=pick(cfg.group_wait, parent.group_wait_ms if parent else None, DEFAULT_GROUP_WAIT_MS),
        group_interval_ms=pick(cfg.group_interval, parent.group_interval_ms if parent else None,
                               DEFAULT_GROUP_INTERVAL_MS),
        repeat_interval_ms=pick(cfg.repeat_interval, parent.repeat_interval_ms if parent else None,
                                DEFAULT_REPEAT_INTERVAL_MS),
        continue_=cfg.continue_,
        mute_time_intervals=list(cfg.mute_time_intervals),
        active_time_intervals=list(cfg.active_time_intervals),
        parent=parent,
        index=index,
    )
    route.children = [build_route(c, route, i) for i, c in enumerate(cfg.routes)]
    return route
