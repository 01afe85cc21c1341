"""Session affinity (``analysis.sessionAffinity``) as Flagger's Istio router writes it (``pkg/router/istio.go``,
``getSessionAffinityRouteRules``, Flagger v1.44.0).

While the canary has weight, the weighted route's canary destination adds
``Set-Cookie: <cookieName>=<random>; Max-Age=<maxAge>`` to its responses, and
a route before it sends every request whose ``Cookie`` header carries that
cookie to the canary: a user who reached the canary once stays there. With
``primaryCookieName`` the primary destination sets a cookie of its own
(``Max-Age`` = the analysis interval) and a second sticky route keeps those
users on the primary. When the canary's weight goes back to 0 (promotion,
rollback, a restarted analysis) the run's cookie becomes the *previous* one:
requests carrying it go by the weights and are answered with
``Set-Cookie: <cookie>; Max-Age=-1``, which expires it (Flagger has done
so since session affinity came in v1.25.0; ``primaryCookieName`` came in
v1.43.0).

The cookies live in the Canary's status (``sessionAffinityCookie``,
``primarySessionAffinityCookie``, ``previousSessionAffinityCookie``) as in
Flagger, so the routes can be rebuilt from the status alone.
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_MAX_AGE", "Affinity", "build_cookie", "cookie_match", "sticky_routes"]

Obj = dict[str, Any]
DEFAULT_MAX_AGE = 86400  # Flagger's GetMaxAge: a day
_LETTERS = string.ascii_letters  # Flagger's randSeq alphabet, 10 of them
SET_COOKIE = "Set-Cookie"


@dataclass(frozen=True)
class Affinity:
    """The session-affinity cookies (``name=value``) of the current and the previous canary run."""

    canary: str = ""
    primary: str = ""
    previous: str = ""

    @classmethod
    def of(cls, status: Obj) -> Affinity:
        return cls(str(status.get("sessionAffinityCookie") or ""), str(status.get("primarySessionAffinityCookie")
                                                                      or ""),
                   str(status.get("previousSessionAffinityCookie") or ""))

    def status_fields(self) -> dict[str, str]:
        """The Canary status fields holding this state."""
        return {"sessionAffinityCookie": self.canary, "primarySessionAffinityCookie": self.primary,
                "previousSessionAffinityCookie": self.previous}


def _rand() -> str:
    return "".join(secrets.choice(_LETTERS) for _ in range(10))


def build_cookie(spec: Obj, cookie: str, max_age: int) -> str:
    """The ``Set-Cookie`` value (Flagger's SessionAffinity.BuildCookie)."""
    out = f"{cookie}; Max-Age={max_age}"
    if spec.get("domain"):
        out += f"; Domain={spec['domain']}"
    if spec.get("httpOnly"):
        out += "; HttpOnly"
    if spec.get("partitioned"):
        out += "; Partitioned"
    if spec.get("path"):
        out += f"; Path={spec['path']}"
    if spec.get("sameSite"):
        out += f"; SameSite={spec['sameSite']}"
    if spec.get("secure"):
        out += "; Secure"
    return out


def cookie_match(cookie: str) -> Obj:
    """A match on the ``Cookie`` request header carrying ``name=value`` (Flagger's ``.*name.*value.*``)."""
    name, _, value = cookie.partition("=")
    return {"headers": {"Cookie": {"regex": f".*{name}.*{value}.*"}}}


def _max_age(spec: Obj) -> int:
    v = spec.get("maxAge")
    return v if isinstance(v, int) and not isinstance(v, bool) and v != 0 else DEFAULT_MAX_AGE


def _add_response(dest: Obj, value: str) -> None:
    dest.setdefault("headers", {}).setdefault("response", {})["add"] = {SET_COOKIE: value}


def sticky_routes(spec: Obj, weighted: Obj, canary_w: int, state: Affinity, *, hosts: tuple[str, str],
                  interval_s: float, merge: Callable[[list[Obj]], list[Obj]]) -> tuple[list[Obj], Affinity]:
    """The HTTP routes for ``weighted`` (primary then canary destination) under session affinity ``spec``, and
    the cookie state they use (new cookies are drawn when a run starts).

    ``hosts`` is (primary, canary); ``merge(conditions)`` combines match conditions with the Canary's
    ``service.match`` (Flagger's mergeMatchConditions)."""
    primary, canary = hosts
    weighted = copy.deepcopy(weighted)
    sticky = {k: copy.deepcopy(v) for k, v in weighted.items() if k != "route"}
    if canary_w != 0:
        name, primary_name = str(spec.get("cookieName") or ""), str(spec.get("primaryCookieName") or "")
        state = replace(state, canary=state.canary or f"{name}={_rand()}",
                        primary=state.primary or (f"{primary_name}={_rand()}" if primary_name else ""))
        for d in weighted["route"]:
            host = (d.get("destination") or {}).get("host")
            if host == canary:
                _add_response(d, build_cookie(spec, state.canary, _max_age(spec)))
            elif host == primary and primary_name:
                _add_response(d, build_cookie(spec, state.primary, int(interval_s)))
        to_canary = {**sticky, "match": merge([cookie_match(state.canary)]),
                     "route": [_to(weighted, primary, 0), _to(weighted, canary, 100)]}
        if not primary_name:
            return [to_canary, weighted], state
        to_primary = {**copy.deepcopy(sticky), "match": merge([cookie_match(state.primary)]),
                      "route": [_to(weighted, primary, 100), _to(weighted, canary, 0)]}
        return [to_canary, to_primary, weighted], state
    if state.canary:
        state = replace(state, previous=state.canary)
    state = replace(state, canary="")
    # The previous run's cookie goes by the weights and is expired; with none, Flagger writes the weighted
    # route twice (the sticky slot keeps its place).
    expire = {**sticky, "route": copy.deepcopy(weighted["route"])}
    if state.previous:
        expire["match"] = merge([cookie_match(state.previous)])
        response = expire.setdefault("headers", {}).setdefault("response", {})
        response["add"] = {**(response.get("add") or {}), SET_COOKIE: f"{state.previous}; Max-Age=-1"}
    return [expire, weighted], state


def _to(weighted: Obj, host: str, weight: int) -> Obj:
    """A destination like ``weighted``'s one for ``host`` (its port), without response headers."""
    base = next((d for d in weighted["route"] if (d.get("destination") or {}).get("host") == host),
                {"destination": {"host": host}})
    return {"destination": copy.deepcopy(base["destination"]), "weight": weight}
