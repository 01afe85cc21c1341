"""The API gateway (north-south): a public HTTP proxy configured by Kong 3.x's declarative format.

``wiring.build_gateway_part`` gives the composition root a ``Part``; the
loader (``declarative``), the router, the proxy and the plugins are
modules of this package.
"""
