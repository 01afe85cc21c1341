"""What happens in the demo, and when: one deterministic script every process reads.

All processes get the same ``epoch`` (the moment the demo's services start)
and ``seed``, so the load generator's traffic curve and the payment
provider's outages line up without any coordination at run time.

* **Traffic** follows a daily curve compressed into ``day_s`` seconds
  (default five minutes): quiet at night, a morning ramp, a lunch bump, an
  evening decline. The demo starts at 08:24 "shop time", so traffic climbs
  during the first minutes.
* **Payment outages** (the periodic burst): from ``incident_at_s`` after the
  epoch, and every ``incident_every_s`` after that, the payment provider
  fails most charges for ``incident_len_s`` seconds. The demo's
  ``HighErrorRate`` alert fires during the first one (within a minute of the
  start) and resolves after it.
* **Per-request luck** (declined cards, slow inventory locks, latency spikes)
  comes from :func:`request_rng`, seeded by the run's seed and the request's
  id (carried in W3C baggage from the load generator), so the same seed gives
  the same decisions whatever the thread interleaving.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Scenario", "epoch_arg", "request_rng"]


@dataclass(frozen=True)
class Scenario:
    """The demo's timeline; times are seconds since ``epoch`` (a Unix time)."""

    epoch: float
    seed: int = 1
    day_s: float = 300.0
    start_hour: float = 8.4
    peak_visits_per_s: float = 5.0
    night_visits_per_s: float = 0.8
    incident_at_s: float = 8.0
    incident_every_s: float = 150.0
    incident_len_s: float = 18.0

    def elapsed(self, now: float) -> float:
        return max(0.0, now - self.epoch)

    def hour_of_day(self, now: float) -> float:
        """Shop time, 0 <= h < 24, advancing one day every ``day_s`` seconds."""
        return (self.start_hour + 24.0 * self.elapsed(now) / self.day_s) % 24.0

    def traffic_shape(self, hour: float) -> float:
        """Relative traffic in [0, 1] at ``hour``: a daily wave with a lunch bump."""
        wave = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 2.5) / 24.0)  # lowest 02:30, highest 14:30
        lunch = 0.25 * math.exp(-(((hour - 12.5) / 0.8) ** 2))
        return min(1.0, 0.8 * wave + lunch)

    def visits_per_s(self, now: float) -> float:
        """How many shopper visits per second the load generator starts at ``now``."""
        shape = self.traffic_shape(self.hour_of_day(now))
        return self.night_visits_per_s + (self.peak_visits_per_s - self.night_visits_per_s) * shape

    def payment_outage(self, now: float) -> bool:
        """Whether the payment provider is failing at ``now`` (the periodic burst)."""
        t = self.elapsed(now) - self.incident_at_s
        return t >= 0 and (t % self.incident_every_s) < self.incident_len_s


def request_rng(seed: int, *parts: str) -> random.Random:
    """A generator seeded by the run's seed and a request's identity.

    ``random.Random`` seeds from a string through SHA-512, so the stream is
    the same in every process and every run (unlike ``hash()``).
    """
    return random.Random(":".join([str(seed), *parts]))


def epoch_arg(text: str) -> float | None:
    """``--epoch``'s value: Unix time, or None ("now") for an empty string.

    The demo's manifests pass ``--epoch $(DEMO_EPOCH)``, which is empty when
    the scenario's ConfigMap names no start (a plain ``kubectl apply``).
    """
    return float(text) if text.strip() else None
