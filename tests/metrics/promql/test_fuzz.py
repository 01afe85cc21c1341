"""Property test: random well-formed expressions never crash the engine.

Every query either answers or raises one of the PromQL error kinds
(BadData / ExecutionError / Timeout subclasses).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitwall.core.errors import BadData, ExecutionError, Timeout
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.model import STALE_NAN
from pitwall.metrics.promql import Engine


def _data() -> MemoryQuerier:
    q = MemoryQuerier()
    for job in ("a", "b"):
        for inst in ("1", "2"):
            lb = (("__name__", "req_total"), ("inst", inst), ("job", job))
            for i in range(30):
                q.add(lb, i * 15_000, float(i * (3 if job == "a" else 5)) if i != 17 else STALE_NAN)
    for le in ("0.1", "1", "+Inf"):
        for i in range(30):
            q.add((("__name__", "lat_bucket"), ("job", "a"), ("le", le)), i * 15_000, float(i * len(le)))
    for i in range(30):
        q.add((("__name__", "temp"), ("room", "x")), i * 15_000, (-1.0) ** i * i / 3)
    return q


QUERIER = _data()
ENGINE = Engine(max_samples=200_000, timeout_s=30)

selectors = st.sampled_from(
    [
        "req_total",
        'req_total{job="a"}',
        "temp",
        "lat_bucket",
        "nothing",
        '{__name__=~"req.*|temp"}',
        "req_total offset 1m",
        "temp @ 100",
    ]
)
ranges = st.sampled_from(["[1m]", "[5m]", "[30s]", "[2m:30s]", "[3m:]"])
numbers = st.sampled_from(["0", "1", "-1", "0.5", "2", "NaN", "Inf", "1e3"])
range_fns = st.sampled_from(
    [
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "changes",
        "resets",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "stddev_over_time",
        "last_over_time",
        "present_over_time",
        "absent_over_time",
    ]
)
inst_fns = st.sampled_from(
    [
        "abs",
        "ceil",
        "floor",
        "exp",
        "sqrt",
        "ln",
        "sgn",
        "timestamp",
        "sort",
        "sort_desc",
        "absent",
        "hour",
        "month",
    ]
)
aggs = st.sampled_from(["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"])
binops = st.sampled_from(
    [
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "==",
        "!=",
        ">",
        "<",
        "and",
        "or",
        "unless",
        "> bool",
        "+ on(job)",
        "* ignoring(inst)",
        "/ on(job) group_left",
    ]
)
groupings = st.sampled_from(["", " by (job)", " without (inst)", " by (le)"])


def _vector_expr(depth: int) -> st.SearchStrategy[str]:
    base = st.one_of(
        selectors,
        st.builds(lambda f, s, r: f"{f}({s}{r})", range_fns, selectors, ranges),
    )
    if depth <= 0:
        return base
    sub = _vector_expr(depth - 1)
    return st.one_of(
        base,
        st.builds(lambda f, e: f"{f}({e})", inst_fns, sub),
        st.builds(lambda a, g, e: f"{a}{g} ({e})", aggs, groupings, sub),
        st.builds(lambda k, e: f"topk({k}, {e})", numbers, sub),
        st.builds(lambda q, e: f"quantile({q}, {e})", numbers, sub),
        st.builds(lambda q, e: f"histogram_quantile({q}, {e})", numbers, sub),
        st.builds(lambda a, o, b: f"({a}) {o} ({b})", sub, binops, sub),
        st.builds(lambda a, o, n: f"({a}) {o} {n}", sub, st.sampled_from(["+", "*", ">", "/"]), numbers),
        st.builds(lambda e, r: f"max_over_time(({e}){r})", sub, st.sampled_from(["[2m:30s]", "[1m:]"])),
        st.builds(lambda e: f'label_replace({e}, "x", "$1", "job", "(.*)")', sub),
        st.builds(lambda e: f"clamp({e}, 1, 10)", sub),
        st.builds(lambda e: f"-({e})", sub),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=_vector_expr(3), instant=st.booleans(), t=st.integers(min_value=0, max_value=500_000))
def test_random_expressions_never_crash(expr: str, instant: bool, t: int) -> None:
    try:
        if instant:
            res = ENGINE.instant(QUERIER, expr, t)
        else:
            res = ENGINE.range(QUERIER, expr, t, t + 120_000, 15_000)
    except (BadData, ExecutionError, Timeout):
        return
    data = res.to_prometheus_data()
    assert data["resultType"] in ("vector", "matrix", "scalar", "string")
