"""Checks on what the metrics store accepts: label names, sample order and duplicates.

Contract: pure functions over numpy columns and label sets; they raise the
metrics pillar's typed errors (``InvalidLabels``, ``OutOfOrderSample``,
``DuplicateSample``) with Prometheus' wording and change nothing. A batch is
accepted whole or not at all, as Prometheus' remote-write handler rolls back
its appender.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pitwall.core.labels import Labels, format_labels
from pitwall.metrics.errors import DuplicateSample, InvalidLabels, OutOfOrderSample

__all__ = ["I64_MIN", "check_batch", "check_label_names"]

I64_MIN = int(np.iinfo(np.int64).min)


def check_batch(
    sids: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    last_ts: np.ndarray,
    last_bits: np.ndarray,
    labels_of: Callable[[int], Labels],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch sorted by (sid, ts) with exact repeats dropped; raises on the first bad sample.

    ``last_ts``/``last_bits`` are, per sid, the newest stored sample's time and
    value bits (``I64_MIN`` when none); ``labels_of`` names a series in errors.
    """
    order = np.argsort(sids, kind="stable")
    s, t, v = sids[order], ts[order].astype(np.int64, copy=False), vals[order].astype(np.float64, copy=False)
    if not len(s):
        return s, t, v
    bits = v.view(np.uint64)
    same = s[1:] == s[:-1]
    dt = t[1:] - t[:-1]
    back = np.flatnonzero(same & (dt < 0))
    if len(back):
        i = int(back[0]) + 1
        _reject(OutOfOrderSample, "out of order sample", s[i], t[i], last_ts, labels_of)
    dup = same & (dt == 0)
    keep = np.ones(len(s), dtype=bool)
    if dup.any():
        clash = np.flatnonzero(dup & (bits[1:] != bits[:-1]))
        if len(clash):
            i = int(clash[0]) + 1
            _reject(DuplicateSample, "duplicate sample for timestamp", s[i], t[i], last_ts, labels_of)
        keep[1:][dup] = False
    first = np.concatenate([[True], ~same])
    fi = np.flatnonzero(first)
    fs = s[fi]
    lt = last_ts[fs]
    older = np.flatnonzero(t[fi] < lt)
    if len(older):
        i = int(fi[older[0]])
        _reject(OutOfOrderSample, "out of order sample", s[i], t[i], last_ts, labels_of)
    eq = np.flatnonzero(t[fi] == lt)
    if len(eq):
        idx = fi[eq]
        differ = bits[idx] != last_bits[s[idx]]
        if differ.any():
            i = int(idx[np.flatnonzero(differ)[0]])
            _reject(DuplicateSample, "duplicate sample for timestamp", s[i], t[i], last_ts, labels_of)
        keep[idx] = False
    if not keep.all():
        s, t, v = s[keep], t[keep], v[keep]
    return s, t, v


def _reject(
    exc: type[Exception],
    what: str,
    sid: np.integer,
    ts: np.integer,
    last_ts: np.ndarray,
    labels_of: Callable[[int], Labels],
) -> None:
    sid_i = int(sid)
    labels = labels_of(sid_i)
    latest = int(last_ts[sid_i])
    detail = f"; newest stored sample is at {latest}" if latest != I64_MIN else ""
    raise exc(f"{what} for series {format_labels(labels)} at timestamp {int(ts)}{detail}")


def check_label_names(labels: Labels) -> None:
    """Label names non-empty, sorted and unique."""
    prev = ""
    for i, (k, _v) in enumerate(labels):
        if not k:
            raise InvalidLabels(f"invalid label name \"\" in series {format_labels(labels)}")
        if i and k <= prev:
            raise InvalidLabels(f"duplicate label name {k!r} in series {format_labels(labels)}")
        prev = k
