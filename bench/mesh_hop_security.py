"""Cost of ``ServiceProxy.hop_security`` per request, the connection_security_policy label of each hop.

    .venv/bin/python bench/mesh_hop_security.py [--calls 200000] [--policies 20]

No sockets: a proxy whose mesh holds ``--policies`` workload PeerAuthentications (plus a namespace and a
mesh-wide one) and a DestinationRule, asked for the policy of the same few caller/destination pairs as a
steady stream of requests would ask. Reported: microseconds per call (best of 5 rounds). Not part of the
tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from pitwall.traffic import ServiceProxy
from pitwall.traffic.mesh import compile_mesh
from pitwall.traffic.peerauth import compile_peer_auth
from pitwall.traffic.pods import PodInfo


def _pa(name: str, ns: str, mode: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if labels:
        spec["selector"] = {"matchLabels": labels}
        spec["portLevelMtls"] = {"8080": {"mode": "PERMISSIVE"}}
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--policies", type=int, default=20)
    args = ap.parse_args()
    proxy = ServiceProxy(None)  # type: ignore[arg-type]  # no API: the mesh is set by hand
    pas = [_pa("mesh", "istio-system", "STRICT"), _pa("ns", "shop", "PERMISSIVE")]
    pas += [_pa(f"w{i}", "shop", "STRICT", {"app": f"svc{i}", "tier": "backend"}) for i in range(args.policies)]
    dr = {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"host": "web", "trafficPolicy": {}}}
    cfg = compile_mesh(["web.shop.svc.cluster.local"], [], [dr])
    proxy.mesh = dataclasses.replace(cfg, peer_auth=compile_peer_auth(pas))
    src = PodInfo("client-1", "shop", "client", {"app": "client"}, "client")
    dests = [PodInfo(f"web-{i}", "shop", "web", {"app": "web", "tier": "backend"}, "web") for i in range(3)]
    pairs = [(src, d, 8080 + i % 2, "web.shop.svc.cluster.local") for i, d in enumerate(dests * 2)]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(args.calls):
            s, d, port, svc = pairs[i % len(pairs)]
            proxy.hop_security(s, d, port, svc)
        best = min(best, time.perf_counter() - t0)
    print(f"hop_security: {best / args.calls * 1e6:.2f} µs per call ({args.policies} workload policies, "
          f"best of 5 x {args.calls})")


if __name__ == "__main__":
    main()
