"""Waiting for a Flagger Canary's verdict from inside the server: a deploy job (``environment:``) whose
variable ``PITWALL_CANARY`` names ``namespace/name`` succeeds only when that Canary promotes the revision the
job applied, and fails with the Canary's message when it rolls back.

The Canary's status is about the revision the job applied once its ``lastAppliedSpec`` equals the hash of
the target's ``spec.template`` (Flagger's own test for "a new revision was seen"); then ``Succeeded`` or
``Initialized`` is a promotion and ``Failed`` a rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases import compute_hash

__all__ = ["CANARY_TIMEOUT_VAR", "CANARY_VAR", "CanaryVerdict", "KubeCanaryWaiter"]

CANARY_VAR = "PITWALL_CANARY"
CANARY_TIMEOUT_VAR = "PITWALL_CANARY_TIMEOUT"
PASSED = ("Succeeded", "Initialized")
POLL_S = 1.0
TARGET_KINDS = ("Deployment", "DaemonSet")


@dataclass(frozen=True)
class CanaryVerdict:
    """``passed``: promoted; else why not (rolled back, timed out, canceled, not found)."""

    passed: bool
    message: str


class KubeCanaryWaiter:
    """Polls the Canary and its target through the in-process Kubernetes client."""

    def __init__(self, client: KubeClient, poll_s: float = POLL_S) -> None:
        self.client = client
        self.poll_s = poll_s

    async def _state(self, ns: str, name: str) -> tuple[str, str, bool]:
        cd = await self.client.get("flagger.app/v1beta1", "Canary", name, ns)
        ref = (cd.get("spec") or {}).get("targetRef") or {}
        kind = str(ref.get("kind") or "Deployment")
        if kind not in TARGET_KINDS:
            raise ValueError(f"canary {ns}/{name} targets a {kind}: only Deployment and DaemonSet are supported")
        target = await self.client.get("apps/v1", kind, str(ref.get("name") or ""), ns)
        st = cd.get("status") or {}
        current = st.get("lastAppliedSpec") == compute_hash((target.get("spec") or {}).get("template") or {})
        cond = next((c for c in st.get("conditions") or [] if c.get("type") == "Promoted"), None) or {}
        return str(st.get("phase") or "Initializing"), str(cond.get("message") or ""), current

    async def _warnings(self, ns: str, name: str, since: str) -> str:
        events = await self.client.list("v1", "Event", ns)
        warns = sorted((str(e.get("lastTimestamp") or ""), str(e.get("message") or "")) for e in events.items
                       if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("kind") == "Canary"
                       and (e.get("involvedObject") or {}).get("name") == name)
        return "; ".join(m for t, m in warns if t >= since and m)

    async def wait(self, target: str, timeout_s: float, cancel: asyncio.Event,
                   say: Callable[[str], None]) -> CanaryVerdict:
        """Wait for the verdict on ``namespace/name``; ``say`` gets each phase change for the job's log."""
        ns, sep, name = target.partition("/")
        if not sep or not ns or not name or "/" in name:
            return CanaryVerdict(False, f"{CANARY_VAR}={target!r}: expected NAMESPACE/NAME")
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            try:
                phase, message, current = await self._state(ns, name)
            except NotFoundError as e:
                return CanaryVerdict(False, f"canary {target}: {e}")
            except ValueError as e:
                return CanaryVerdict(False, str(e))
            shown = f"{phase}{'' if current else ' (previous revision)'}"
            if shown != last:
                say(f"canary {target}: {shown}{': ' + message if message else ''}")
                last = shown
            if current and phase in PASSED:
                return CanaryVerdict(True, f"canary {target} {phase}: {message}")
            if current and phase == "Failed":
                why = await self._warnings(ns, name, since)
                return CanaryVerdict(False, f"canary {target} Failed: {message}{' (' + why + ')' if why else ''}")
            left = deadline - time.monotonic()
            if left <= 0:
                return CanaryVerdict(False, f"canary {target}: no verdict within {timeout_s:.0f}s (phase {phase})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), min(self.poll_s, left))
            if cancel.is_set():
                return CanaryVerdict(False, "canceled")

