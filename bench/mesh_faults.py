"""Cost of the chaos fault table on the mesh's HTTP hop, and how faithfully a delay is applied.

    .venv/bin/python bench/mesh_faults.py [--rps 500] [--duration 10] [--connections 16] [--delay-ms 50]

The same open-loop measurement as ``bench/mesh_hop.py`` (its backend and load
generator, run as separate processes) through a Service's cluster IP, three
times: no fault in force (the proxy's fast path: one attribute test);
faults in force that do not match this traffic (an HTTPChaos on another path
of the backend and a NetworkChaos between other pods: the lookup cost);
an HTTPChaos delaying every request by ``--delay-ms`` (the added p50 should be
that delay); no fault again (how much the machine drifted meanwhile). Faults are put in the proxy's table directly, as the chaos
controller does. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import mesh_hop  # type: ignore[import-not-found]  # run from bench/, as the other scripts

from pitwall.chaos.meshfaults import HttpRule, NetRule


def _line(name: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
    out = (f"  {name:<28} p50 {r['p50']:7.2f} ms  p90 {r['p90']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
           f"({r['n']} ok, {r['errors']} errors, {r['achieved_rps']:.0f} req/s)")
    if base is not None:
        out += f"  p50 {r['p50'] - base['p50']:+.2f} ms"
    return out


async def main(a: argparse.Namespace) -> None:
    async with mesh_hop.mesh_world() as (proxy, cip):
        base = await mesh_hop._run_loadgen(cip, 80, a)
        other = NetRule({"action": "delay", "delay": {"latency": "1s"}})
        other.sources["default/x"] = "127.42.254.99"  # pods this traffic does not involve
        proxy.faults.put_net("net", other)
        proxy.faults.put_http("http", mesh_hop.BACKEND_IP, mesh_hop.BACKEND_PORT,
                              HttpRule({"target": "Request", "path": "/elsewhere/*", "abort": True}))
        idle = await mesh_hop._run_loadgen(cip, 80, a)
        proxy.faults.remove("net")
        proxy.faults.put_http("http", mesh_hop.BACKEND_IP, mesh_hop.BACKEND_PORT,
                              HttpRule({"target": "Request", "path": "/api/*", "delay": f"{a.delay_ms}ms"}))
        delayed = await mesh_hop._run_loadgen(cip, 80, a)
        proxy.faults.remove("http")
        again = await mesh_hop._run_loadgen(cip, 80, a)  # the same as the first, to see the drift of the run
        print(f"mesh hop with chaos faults, open loop at {a.rps} req/s for {a.duration:g}s over "
              f"{a.connections} keep-alive connections")
        print(_line("no fault", base, None))
        print(_line("faults, none matching", idle, base))
        print(_line(f"HTTPChaos delay {a.delay_ms}ms", delayed, base))
        print(_line("no fault again", again, base))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rps", type=int, default=500)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--delay-ms", type=int, default=50)
    asyncio.run(main(ap.parse_args()))
