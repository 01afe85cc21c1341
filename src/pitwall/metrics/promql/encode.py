"""A matrix result's JSON text, built with C-level string operations only.

Prometheus spells a matrix point ``[<seconds>,"<value>"]``, the value as Go's
``strconv.FormatFloat(v, 'f', -1, 64)``. Building a tuple per point and
handing them to a JSON encoder costs ~0.2 us a point; here every series'
values and timestamps are concatenated, printed by one ``orjson.dumps`` each
(orjson prints Go's shortest round-trip digits), and cut into per-point
pieces by ``str.replace``/``str.split``, so a point costs a few C loops.
Only exponent-form values (orjson's ``1.5e-7``, Go's ``0.00000015``) and
NaN/Inf (orjson's ``null``) are spelled one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from pitwall.core.labels import Labels
from pitwall.core.native import optional_module

__all__ = ["matrix_result_json", "matrix_result_text", "values_text"]

# The same text built in C (pitwall/_native/metricsc.c), ~5x faster; optional: not built without a compiler.
_metricsc: Any = optional_module("pitwall._metricsc")

_OPT = orjson.OPT_SERIALIZE_NUMPY
_SEP = "\x00"  # never in a number's text


def _positional(tok: str) -> str:
    """orjson's ``-1.5e-7`` -> Go's ``-0.00000015``: the same shortest digits, point placed."""
    mant, _, e = tok.partition("e")
    sign = "-" if mant.startswith("-") else ""
    ip, _, fp = mant.lstrip("-").partition(".")
    digits = (ip + fp).lstrip("0")
    dp = len(ip) - (len(ip) + len(fp) - len(digits)) + int(e)  # value == 0.DIGITS * 10**dp
    digits = digits.rstrip("0")
    if not digits:
        return sign + "0"
    if dp <= 0:
        return sign + "0." + "0" * (-dp) + digits
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return sign + digits[:dp] + "." + digits[dp:]


def _small_exponents(toks: list[str], vals: np.ndarray, idx: np.ndarray) -> None:
    """Spell the tokens ``idx`` (orjson's ``[-]D[.DDD]e-K``, K >= 6) positionally, a group per (K, sign).

    Within a group the rewrite is the same text edit for every token: drop
    ``e-K`` and the point, put ``0.`` and K-1 zeros in front. K comes from
    log10 and is checked against the text; a group that does not match is
    spelled token by token.
    """
    if not len(idx):
        return
    v = vals[idx]
    k = np.floor(np.log10(np.abs(v))).astype(np.int64)
    key = k * 2 + (v < 0)
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    for grp in np.split(idx[order], cuts):
        g = grp.tolist()
        x = float(vals[g[0]])
        kk, neg = int(np.floor(np.log10(abs(x)))), x < 0
        text = ",".join([toks[i] for i in g]) + ","
        suffix = f"e{kk},"
        if kk >= 0 or text.count("e") != len(g) or text.count(suffix) != len(g):
            for i in g:
                toks[i] = _positional(toks[i])
            continue
        text = text.replace(suffix, ",").replace(".", "")[:-1]  # "15,-2,..": the digits, signed
        lead = "0." + "0" * (-kk - 1)
        if neg:
            new = ("-" + lead + text[1:].replace(",-", ",-" + lead)).split(",")
        else:
            new = (lead + text.replace(",", "," + lead)).split(",")
        for i, t in zip(g, new, strict=True):
            toks[i] = t


def values_text(vals: np.ndarray) -> str:
    """Go's 'f' text of every value, each followed by ``,`` (empty for no values)."""
    if not len(vals):
        return ""
    vals = np.ascontiguousarray(vals, dtype=np.float64)
    txt = orjson.dumps(vals, option=_OPT).decode()[1:-1]
    if "e" in txt or "n" in txt:
        # orjson prints |v| < 1e-5 (but 0) and |v| >= 1e16 with an exponent, NaN/Inf as null.
        toks = txt.split(",")
        a = np.abs(vals)
        bad = np.flatnonzero(~np.isfinite(vals))
        for i, v in zip(bad.tolist(), vals[bad].tolist(), strict=True):
            toks[i] = "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
        _small_exponents(toks, vals, np.flatnonzero((a < 1e-5) & (a != 0)))
        for i in np.flatnonzero(np.isfinite(vals) & (a >= 1e16)).tolist():
            toks[i] = _positional(toks[i])
        txt = ",".join(toks)
    return (txt + ",").replace(".0,", ",")  # orjson's 2.0 is Go's 2


def _seconds_text(ts: np.ndarray) -> str:
    """Prometheus' JSON time of every timestamp (ms): seconds, integral when whole; each followed by ``,``."""
    whole = ts % 1000 == 0
    if whole.all():
        txt = orjson.dumps(ts // 1000, option=_OPT).decode()
    elif not whole.any():
        txt = orjson.dumps(ts / 1000, option=_OPT).decode()
    else:
        secs: list[int | float] = [t // 1000 if t % 1000 == 0 else t / 1000 for t in ts.tolist()]
        txt = orjson.dumps(secs).decode()
    return txt[1:-1] + ","


def matrix_result_json(series: Sequence[Labels], timestamps: Sequence[np.ndarray],
                       values: Sequence[np.ndarray]) -> bytes:
    """``matrix_result_text`` as UTF-8, from the C helper when it is built (the same bytes)."""
    if _metricsc is not None and series:
        counts = np.fromiter(map(len, timestamps), dtype=np.int64, count=len(timestamps))
        ts = np.concatenate(timestamps).astype(np.int64, copy=False)
        vals = np.ascontiguousarray(np.concatenate(values), dtype=np.float64)
        out: bytes | None = _metricsc.matrix_json(
            list(series), counts, ts, vals, lambda: orjson.dumps(vals, option=_OPT))
        if out is not None:
            return out
    return matrix_result_text(series, timestamps, values).encode()


def matrix_result_text(series: Sequence[Labels], timestamps: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> str:
    """The text of a matrix's ``result`` array: ``[{"metric":{...},"values":[[t,"v"],...]},...]``."""
    if not series:
        return "[]"
    counts = [len(t) for t in timestamps]
    ts = np.concatenate(timestamps).astype(np.int64, copy=False)
    vals = np.concatenate(values).astype(np.float64, copy=False)
    heads = ['{"metric":' + orjson.dumps(dict(lb)).decode() + ',"values":[' for lb in series]
    c = counts[0]
    if c and (len(counts) == 1 or (counts.count(c) == len(counts) and bool((ts.reshape(-1, c) == ts[:c]).all()))):
        # Every series has the same times (a range query's usual answer): one list holds the
        # text between values ('[t0,"', '"],[t1,"', ...); each series' values are slotted in
        # between and the list joined (2x faster than a "%s" template, 4x than per-point pieces).
        pieces = [""] * (2 * c)
        pieces[0::2] = ("[" + _seconds_text(ts[:c])[:-1].replace(",", ',"' + _SEP + '"],[') + ',"').split(_SEP)
        toks = values_text(vals)[:-1].split(",")
        out = []
        for i, h in enumerate(heads):
            pieces[1::2] = toks[i * c : (i + 1) * c]
            out.append(h + "".join(pieces) + '"]]}')
        return "[" + ",".join(out) + "]"
    n = len(ts)
    parts: list[str] = [""] * (2 * n)
    if n:
        # '[t,"' before each value and '"],' after it; pieces interleaved, then joined per series.
        parts[0::2] = ("[" + _seconds_text(ts)[:-1].replace(",", ',"' + _SEP + "[") + ',"').split(_SEP)
        parts[1::2] = values_text(vals).replace(",", '"],' + _SEP).split(_SEP)[:-1]
    out = []
    pos = 0
    for h, c in zip(heads, counts, strict=True):
        out.append(h + "".join(parts[2 * pos : 2 * (pos + c)])[:-1] + "]}")
        pos += c
    return "[" + ",".join(out) + "]"
