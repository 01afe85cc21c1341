"""payment: charges cards through an (imaginary) provider that misbehaves.

``POST /charge`` (``{"order_id", "amount", "card"}``) -> 200 approved, 402
declined (the customer's problem, not an error) or 502 when the provider
fails: now and then on its own, and most of the time during the scenario's
periodic outages. Latency has occasional spikes, worse during an outage.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from pitwall.demo.services._base import Reply, Request, Service, main

TRANSACTIONS = Counter("payment_transactions", "Charges by result.", ["result", "card_type"])
CHARGED = Counter("payment_charged_dollars", "Money successfully charged.")
PROVIDER_LATENCY = Histogram("payment_provider_latency_seconds", "Time the payment provider took.",
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0))
PROVIDER_UP = Gauge("payment_provider_healthy", "1 while the provider is not in an outage (as seen by the demo).")

PROVIDER = "acme-pay"
BASE_ERROR_PROBABILITY = 0.025
OUTAGE_ERROR_PROBABILITY = 0.75
DECLINE_PROBABILITY = 0.04
SPIKE_PROBABILITY = 0.03


def setup(svc: Service) -> None:
    @svc.route("POST", "/charge")
    def charge(req: Request) -> Reply:
        order_id = str(req.body.get("order_id", ""))
        amount = req.body.get("amount")
        card = str(req.body.get("card", "visa"))
        if not order_id or not isinstance(amount, (int, float)) or amount <= 0:
            return Reply(400, {"error": "order_id and a positive amount required"})
        outage = svc.scenario.payment_outage(time.time())
        PROVIDER_UP.set(0 if outage else 1)
        span = trace.get_current_span()
        span.set_attributes({"payment.provider": PROVIDER, "payment.card_type": card, "payment.amount": amount})
        latency = _provider_latency(req, outage)
        with svc.tracer.start_as_current_span(f"{PROVIDER} authorize", kind=trace.SpanKind.CLIENT,
                                              attributes={"peer.service": PROVIDER}) as provider_span:
            time.sleep(latency)
            PROVIDER_LATENCY.observe(latency)
            failed = req.rng.random() < (OUTAGE_ERROR_PROBABILITY if outage else BASE_ERROR_PROBABILITY)
            if failed:
                provider_span.set_status(trace.Status(trace.StatusCode.ERROR, "gateway timeout"))
        if failed:
            TRANSACTIONS.labels("error", card).inc()
            svc.log.error("payment provider error for order %s: %s gateway timeout after %.0f ms",
                          order_id, PROVIDER, latency * 1000)
            return Reply(502, {"error": f"payment provider {PROVIDER} unavailable"})
        if req.rng.random() < DECLINE_PROBABILITY:
            TRANSACTIONS.labels("declined", card).inc()
            svc.log.info("card declined for order %s (%s)", order_id, card)
            return Reply(402, {"error": "card declined"})
        TRANSACTIONS.labels("approved", card).inc()
        CHARGED.inc(float(amount))
        svc.log.info("charged %.2f USD for order %s (%s)", amount, order_id, card)
        return Reply(200, {"transaction_id": f"tx-{order_id}", "amount": amount})


def _provider_latency(req: Request, outage: bool) -> float:
    base = req.rng.lognormvariate(0.0, 0.4) * 0.045
    if req.rng.random() < SPIKE_PROBABILITY:
        base += req.rng.uniform(0.6, 1.6)
    return min(5.0, base * (3.0 if outage else 1.0))


if __name__ == "__main__":
    main("payment", setup)
