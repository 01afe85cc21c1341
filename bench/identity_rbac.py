"""Authorization cost on the Kubernetes API: one RBAC decision read from the state store, and the
pitwall-role fast path, in-process over a fresh SQLite state store (a few seconds).

The RBAC authorizer reads the Roles and bindings on every decision it makes (no cache), so its cost
grows with the number of RBAC objects; principals holding a pitwall role skip it.

    .venv/bin/python bench/identity_rbac.py [--bindings 50] [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from pitwall.core.tenancy import Principal
from pitwall.kube import build_kube
from pitwall.kube.rbac import request_info
from pitwall.storage.revstore.sqlite import SqliteRevStore

RBAC = "rbac.authorization.k8s.io/v1"


async def main(bindings: int, n: int) -> None:
    store = SqliteRevStore(Path(tempfile.mkdtemp()) / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    for i in range(bindings):
        await api.client.create({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": f"r{i}", "namespace": "default"},
                                 "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})
        await api.client.create({"apiVersion": RBAC, "kind": "RoleBinding",
                                 "metadata": {"name": f"b{i}", "namespace": "default"},
                                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"r{i}"},
                                 "subjects": [{"kind": "User", "name": f"u{i}"}]})
    attrs = request_info("GET", "/api/v1/namespaces/default/configmaps/x", {})
    for label, who in (("RBAC (last binding matches)", Principal(f"u{bindings - 1}", frozenset(), frozenset())),
                       ("pitwall admin (fast path)", Principal("op", frozenset({"admin"}), None))):
        t = time.perf_counter()
        for _ in range(n):
            allowed, _ = await api.authorizer.decide(who, attrs)
        print(f"{label}: {(time.perf_counter() - t) / n * 1e3:.3f} ms per decision (allowed={allowed}, "
              f"{bindings} Roles + {bindings} RoleBindings)")
    await api.stop()
    await store.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindings", type=int, default=50)
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    asyncio.run(main(args.bindings, args.n))
