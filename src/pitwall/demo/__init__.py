"""The demo system behind ``pitwall demo`` / ``make demo``.

A small shop of five Python HTTP services, instrumented the way a real team
would do it (OpenTelemetry SDK for traces and logs over OTLP/HTTP, W3C trace
context between services, ``prometheus_client`` ``/metrics`` scraped by
pitwall), driven by a load generator with a compressed daily traffic curve::

    loadgen -> frontend -> catalog  -> inventory
                        -> checkout -> inventory
                                    -> payment

The services and the load generator (``python -m pitwall.demo.services.<name>``,
``python -m pitwall.demo.loadgen``) are Deployments in ``manifests/shop.yaml``,
applied by :mod:`pitwall.demo.runner` (through :mod:`pitwall.demo.shop`) to
the ``pitwall server`` it runs with the shipped ``pitwall.yaml`` (scrape
configs, ``demo.rules.yaml``, ``alertmanager.yml``), so they run as that
server's pods; the server and ``python -m pitwall.demo.webhook`` are the
runner's supervised children. :mod:`pitwall.demo.scenario` holds the behaviour: the
traffic curve, the payment provider's periodic outage that makes the demo
alert fire and resolve, inventory's slow lock waits. ``--seed`` makes the
request sequence and every per-request decision reproducible.
"""
