"""The Deployment controller's rules: rounding, hashing, new replicas, proportions, conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pitwall.controllers.rollout import (
    HASH_LABEL,
    MAX_REPLICAS,
    calculate_status,
    compute_hash,
    deployment_timed_out,
    equal_ignore_hash,
    max_surge,
    max_unavailable,
    new_rs_new_replicas,
    proportional_sizes,
    resolve_fenceposts,
    safe_encode,
    set_condition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def dep(replicas: int, surge: Any = "25%", unavailable: Any = "25%", strategy: str = "RollingUpdate",
        deadline: int = 600) -> dict[str, Any]:
    strat: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"metadata": {"name": "web", "generation": 1}, "spec": {
        "replicas": replicas, "strategy": strat, "progressDeadlineSeconds": deadline,
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}}}}


def rs(replicas: int, available: int = 0, max_replicas: int | None = None, status_replicas: int | None = None
       ) -> dict[str, Any]:
    ann = {MAX_REPLICAS: str(max_replicas)} if max_replicas is not None else {}
    return {"metadata": {"annotations": ann}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas if status_replicas is None else status_replicas,
                       "availableReplicas": available}}


@pytest.mark.parametrize(("surge", "unavailable", "desired", "want"), [
    ("25%", "25%", 10, (3, 2)),  # surge rounds up, unavailable down
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    ("25%", "25%", 3, (1, 0)),
    ("0%", "0%", 10, (0, 1)),  # both zero: one may be unavailable
    (0, "10%", 5, (0, 0 + 1)),
    (2, 1, 10, (2, 1)),
    ("50%", "50%", 5, (3, 2)),
    ("100%", "0%", 7, (7, 0)),
])
def test_fenceposts_round_as_upstream(surge: Any, unavailable: Any, desired: int, want: tuple[int, int]) -> None:
    assert resolve_fenceposts(surge, unavailable, desired) == want


def test_max_unavailable_bounds() -> None:
    assert max_unavailable(dep(10)) == 2
    assert max_unavailable(dep(0)) == 0
    assert max_unavailable(dep(3, unavailable=5)) == 3  # never more than replicas
    assert max_unavailable(dep(10, strategy="Recreate")) == 0
    assert max_surge(dep(10, strategy="Recreate")) == 0
    assert max_surge(dep(10)) == 3


def test_hash_renders_with_the_safe_alphabet() -> None:
    t = dep(1)["spec"]["template"]
    h = compute_hash(t)
    assert h and set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and len(h) <= 10
    assert compute_hash(t) == h  # stable
    assert compute_hash(t, 1) != h  # a collision count moves it
    other = dep(1)["spec"]["template"]
    other["spec"]["containers"][0]["image"] = "b"
    assert compute_hash(other) != h
    # SafeEncodeString maps each character: '0' (48) -> alphabet[48 % 27]
    assert safe_encode("0123") == "".join("bcdfghjklmnpqrstvwxz2456789"[c % 27] for c in b"0123")


def test_equal_ignore_hash() -> None:
    a = dep(1)["spec"]["template"]
    b = dep(1)["spec"]["template"]
    b["metadata"]["labels"][HASH_LABEL] = "abc"
    assert equal_ignore_hash(a, b)
    b["spec"]["containers"][0]["image"] = "z"
    assert not equal_ignore_hash(a, b)
    # what kubectl rollout undo sends: a typed template with creationTimestamp: null
    c = dep(1)["spec"]["template"]
    c["metadata"]["creationTimestamp"] = None
    assert equal_ignore_hash(a, c) and compute_hash(a) == compute_hash(c)


def test_new_rs_new_replicas() -> None:
    d = dep(10)  # surge 3
    assert new_rs_new_replicas(d, [rs(10), rs(0)], rs(0)) == 3
    assert new_rs_new_replicas(d, [rs(10), rs(3)], rs(3)) == 3  # at 13 already
    assert new_rs_new_replicas(d, [rs(5), rs(3)], rs(3)) == 8  # room for 5 more, capped at replicas - new
    assert new_rs_new_replicas(d, [rs(0), rs(9)], rs(9)) == 10
    assert new_rs_new_replicas(dep(10, strategy="Recreate"), [rs(10), rs(0)], rs(0)) == 10


def test_proportional_scaling_mid_rollout() -> None:
    # 10 -> 15 while old has 8 and new 5 (both last scaled for 10 + 3 surge): the 5 extra are shared
    d = dep(15)  # surge 4 -> allowed 19
    sizes = proportional_sizes(d, [rs(8, max_replicas=13), rs(5, max_replicas=13)], 13)
    assert sum(sizes) == 19
    assert sizes[0] > 8 and sizes[1] > 5
    # scaling down to 0 empties all
    assert proportional_sizes(dep(0), [rs(8, max_replicas=13), rs(5, max_replicas=13)], 13) == [0, 0]


def test_conditions_and_deadline() -> None:
    d = dep(2, deadline=10)
    st = calculate_status(d, [rs(2, available=2)], rs(2, available=2), T0)
    avail = next(c for c in st["conditions"] if c["type"] == "Available")
    assert avail["status"] == "True" and avail["reason"] == "MinimumReplicasAvailable"
    st = calculate_status(d, [rs(2, available=0)], rs(2, available=0), T0)
    avail = next(c for c in st["conditions"] if c["type"] == "Available")
    assert avail["status"] == "False" and avail["reason"] == "MinimumReplicasUnavailable"
    t = "2026-01-01T00:00:00Z"
    st = {"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                          "lastUpdateTime": t, "lastTransitionTime": t}]}
    assert not deployment_timed_out(d, st, T0 + timedelta(seconds=5))
    assert deployment_timed_out(d, st, T0 + timedelta(seconds=11))
    # set_condition keeps the transition time while the status stays
    set_condition(st, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "",
                       "lastUpdateTime": "later", "lastTransitionTime": "later"})
    assert st["conditions"][0]["lastTransitionTime"] == t and st["conditions"][0]["reason"] == "NewReplicaSetAvailable"


def test_replica_failure_is_carried_to_the_deployment() -> None:
    d = dep(2)
    failing = rs(2)
    failing["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                        "message": "quota", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    st = calculate_status(d, [failing], failing, T0)
    c = next(c for c in st["conditions"] if c["type"] == "ReplicaFailure")
    assert (c["status"], c["reason"], c["message"]) == ("True", "FailedCreate", "quota")
    d["status"] = st
    healed = calculate_status(d, [rs(2)], rs(2), T0)
    assert not [c for c in healed["conditions"] if c["type"] == "ReplicaFailure"]
