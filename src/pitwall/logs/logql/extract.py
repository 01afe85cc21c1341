"""Sample extraction for LogQL metric queries: log entries to per-series samples.

Contract: ``SampleExtractor(range, op, grouping, ctx).series()`` reads the
range's entries through ``LogQuerier.scan`` (column-wise) and returns one
``(labels, ts, values)`` per output series, ts ascending: counts or line
bytes for the counting ops, ``unwrap``ped label values otherwise. Entries are
decided column-wise when the pipeline allows (``| json`` and label filters,
no line rewrite), per entry otherwise; both give the same samples. Only the
labels the grouping and filters need are extracted. Pipeline errors become
``__error__`` labels, as in Loki.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pitwall.core.labels import Labels
from pitwall.logs.logql import ast
from pitwall.logs.logql.columnar import (
    FALSE,
    K_MISSING,
    K_TEXT,
    K_UNKNOWN,
    TRUE,
    UNKNOWN,
    JsonColumns,
    filter_prefix,
    label_filter_names,
    tri_filters,
)
from pitwall.logs.logql.context import QueryContext
from pitwall.logs.logql.errors import LogQLPipelineError
from pitwall.logs.logql.pipeline import (
    ERR_SAMPLE,
    ERROR_DETAILS_LABEL,
    ERROR_LABEL,
    Pipeline,
    label_filter_predicate,
    split_pushdown,
)
from pitwall.logs.logql.result import (
    labels_string,
)
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns, parse_go_float
from pitwall.logs.model import LEVEL_LABEL, ArrowLines, LogBatch

__all__ = ["SampleExtractor"]

_BYTES_OPS = frozenset({"bytes_over_time", "bytes_rate"})


def _unwrap_converter(conversion: str) -> Callable[[str], float]:
    if conversion in ("duration", "duration_seconds"):
        return lambda s: parse_duration_ns(s, go_only=True) / 1e9
    if conversion == "bytes":
        return lambda s: float(parse_bytes(s))
    return parse_go_float


def _required_labels(
    stages: Sequence[ast.Stage], grouping: ast.Grouping | None, unwrap: ast.Unwrap | None
) -> frozenset[str] | None:
    """Labels a metric query can need from parsers (Loki's parser hints); None means all."""
    if grouping is None or grouping.without:
        return None
    names: set[str] = set(grouping.labels)
    filters: list[ast.LabelFilter] = []
    for st in stages:
        if isinstance(st, (ast.LineFormat, ast.LabelFormat, ast.DropLabels, ast.KeepLabels)):
            return None
        if isinstance(st, ast.Distinct):
            names.update(st.labels)
        if isinstance(
            st,
            (
                ast.StringLabelFilter,
                ast.NumericLabelFilter,
                ast.DurationLabelFilter,
                ast.BytesLabelFilter,
                ast.BinaryLabelFilter,
                ast.IpLabelFilter,
            ),
        ):
            filters.append(st)
    if unwrap is not None:
        names.add(unwrap.label)
        filters.extend(unwrap.post_filters)
    while filters:
        f = filters.pop()
        if isinstance(f, ast.BinaryLabelFilter):
            filters.extend((f.left, f.right))
        elif isinstance(f, ast.StringLabelFilter):
            names.add(f.matcher.name)
        else:
            names.add(f.name)
    return frozenset(names)


class SampleExtractor:
    """Turns a log range into per-series sorted samples ``(labels, ts_ns, values)``."""

    def __init__(self, rng: ast.LogRange, op: str, grouping: ast.Grouping | None, ctx: QueryContext) -> None:
        self.rng = rng
        self.op = op
        self.grouping = grouping
        self.ctx = ctx
        self.pushed, self.rest = split_pushdown(rng.selector.stages)
        hints = _required_labels(self.rest, grouping, rng.unwrap)
        self.pipeline = Pipeline.compile(self.rest, required=hints)
        unwrap = rng.unwrap
        self.unwrap_label = unwrap.label if unwrap else None
        self.convert = _unwrap_converter(unwrap.conversion) if unwrap else None
        self.post = [label_filter_predicate(f) for f in unwrap.post_filters] if unwrap else []
        self.key = self._key_fn()
        self.col_filters = self._columnar_plan(hints)

    def _key_fn(self) -> Callable[[dict[str, str]], Labels]:
        """Series labels after extraction: grouped, minus the unwrapped label (Loki's GroupedLabels)."""
        g = self.grouping
        if g is not None and not g.without:
            names = sorted(set(g.labels))
            return lambda d: tuple([(n, d[n]) for n in names if n in d])
        drop = set(g.labels) if g is not None else set()
        if self.unwrap_label is not None:
            drop.add(self.unwrap_label)
        if not drop:
            return lambda d: tuple(sorted(d.items()))
        frozen = frozenset(drop)
        return lambda d: tuple(sorted((k, v) for k, v in d.items() if k not in frozen))

    def series(self) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        ctx = self.ctx
        rng = self.rng
        lo = ctx.start_ns - rng.range_ns - rng.offset_ns
        hi = ctx.end_ns - rng.offset_ns + 1  # windows are right-closed; the store's end is exclusive
        per_entry = bool(self.rest) or self.unwrap_label is not None
        batch = ctx.querier.scan(
            list(rng.selector.matchers), lo, hi, filters=self.pushed, with_lines=per_entry, with_metadata=True
        )
        ctx.stats.lines_processed += len(batch)
        ctx.stats.bytes_processed += int(batch.line_bytes.sum()) if len(batch) else 0
        has_md = batch.metadata is not None and any(batch.metadata)
        if not per_entry and not has_md:
            ctx.stats.post_filter_lines += len(batch)
            return self._columnar(batch)
        if batch.lines is None:
            batch = ctx.querier.scan(
                list(rng.selector.matchers), lo, hi, filters=self.pushed, with_lines=True, with_metadata=True
            )
        if self.col_filters is not None and len(batch):
            return self._columnar_json(batch, self.col_filters)
        return self._per_entry(batch)

    def _columnar_plan(self, hints: frozenset[str] | None) -> list[ast.LabelFilter] | None:
        """Label filters of a ``| json | <filters>`` pipeline the columnar path can run, or None."""
        if hints is None or not self.rest:
            return None
        filters = filter_prefix(self.rest)
        if filters is None or len(filters) != len(self.rest) - 1:
            return None
        unwrap = self.rng.unwrap
        if unwrap is not None and (unwrap.conversion or unwrap.post_filters):
            return None
        return filters

    def _columnar_json(
        self, batch: LogBatch, filters: list[ast.LabelFilter]
    ) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """``| json | filters`` column-wise; entries it cannot decide exactly go through ``_per_entry``."""
        assert batch.lines is not None
        g = self.grouping
        assert g is not None and not g.without
        names = sorted(set(g.labels))
        if batch.stream_md is not None and any(
                n.startswith(LEVEL_LABEL) for n in set(names) | label_filter_names(filters)):
            return self._per_entry(batch)  # detected_level is metadata here, not a stream label
        bases = [dict(lbl) for lbl in batch.streams]
        undecidable = None
        if batch.metadata is not None and any(batch.metadata):  # usually none: no per-line pass
            undecidable = np.fromiter((bool(m) for m in batch.metadata), dtype=bool, count=len(batch))
        needed = set(names) | label_filter_names(filters)
        if self.unwrap_label is not None:
            needed.add(self.unwrap_label)
        cols = JsonColumns(batch.lines, batch.stream_idx, bases, needed, undecidable)
        state = tri_filters(filters, cols)
        values = np.ones(len(batch), dtype=np.float64)
        if self.unwrap_label is not None:
            col = cols.column(self.unwrap_label)
            state[(col.kind == K_MISSING) & (state == TRUE)] = FALSE  # no label: no sample
            state[(col.kind == K_UNKNOWN) & (state == TRUE)] = UNKNOWN
            values = col.num.copy()
            for i in np.flatnonzero((col.kind == K_TEXT) & (state == TRUE)).tolist():
                try:
                    values[i] = parse_go_float(cols.text(self.unwrap_label, i) or "")
                except ValueError:
                    state[i] = UNKNOWN  # SampleExtractionErr: the pipeline reports it
        elif self.op in _BYTES_OPS:
            values = batch.line_bytes.astype(np.float64)
        combined = np.zeros(len(batch), dtype=np.int64)
        vocabs: list[list[str]] = []
        radix = 1
        for name in names:
            codes, vocab, unknown = cols.codes(name)
            if radix * (len(vocab) + 1) >= 2**62:
                return self._per_entry(batch)
            state[unknown & (state == TRUE)] = UNKNOWN
            combined += (codes + 1) * radix
            radix *= len(vocab) + 1
            vocabs.append(vocab)
        keep = np.flatnonzero(state == TRUE)
        uniq, inv = np.unique(combined[keep], return_inverse=True)
        keys: list[Labels] = []
        for code in uniq.tolist():
            pairs = []
            for name, vocab in zip(names, vocabs, strict=True):
                c = code % (len(vocab) + 1)
                code //= len(vocab) + 1
                if c:
                    pairs.append((name, vocab[c - 1]))
            keys.append(tuple(pairs))
        self.ctx.stats.post_filter_lines += len(keep)
        ids = inv.astype(np.int64).reshape(-1)
        idx = keep
        vals = values[keep]
        if (state == UNKNOWN).any():
            e_keys, e_ids, e_idx, e_vals = self._per_entry_rows(batch, np.flatnonzero(state == UNKNOWN))
            pos = {k: j for j, k in enumerate(keys)}
            remap = np.asarray([pos.setdefault(k, len(pos)) for k in e_keys], dtype=np.int64)
            keys = list(pos)
            if len(e_ids):
                ids = np.concatenate([ids, remap[e_ids]])
                idx = np.concatenate([idx, e_idx])
                vals = np.concatenate([vals, e_vals])
        return _series_from_rows(keys, ids, idx, vals, batch.ts_ns)

    def _columnar(self, batch: LogBatch) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """No stage needs the line: samples straight from the batch columns."""
        n_streams = len(batch.streams)
        if len(batch) == 0:
            return []
        bounds = np.searchsorted(batch.stream_idx, np.arange(n_streams + 1), side="left")
        values = batch.line_bytes.astype(np.float64) if self.op in _BYTES_OPS else None
        groups: dict[Labels, list[int]] = {}
        smd = batch.stream_md
        for s, lbl in enumerate(batch.streams):
            if bounds[s + 1] > bounds[s]:
                labels = dict(lbl)
                if smd is not None and smd[s]:
                    labels.update(smd[s])
                groups.setdefault(self.key(labels), []).append(s)
        out: list[tuple[Labels, np.ndarray, np.ndarray]] = []
        for key, members in groups.items():
            ts = np.concatenate([batch.ts_ns[bounds[s] : bounds[s + 1]] for s in members])
            vals = (
                np.concatenate([values[bounds[s] : bounds[s + 1]] for s in members])
                if values is not None
                else np.ones(ts.shape[0])
            )
            if len(members) > 1:
                order = np.argsort(ts, kind="stable")
                ts, vals = ts[order], vals[order]
            out.append((key, ts, vals))
        return out

    def _per_entry(self, batch: LogBatch) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """Run the pipeline per entry; samples keyed by their (grouped) labels."""
        keys, ids, idx, values = self._per_entry_rows(batch, None)
        return _series_from_rows(keys, ids, idx, values, batch.ts_ns)

    def _per_entry_rows(
        self, batch: LogBatch, subset: np.ndarray | None
    ) -> tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]:
        """The pipeline per entry (of ``subset``, default all): series keys, and per sample its key id,
        entry index and value."""
        ctx = self.ctx
        assert batch.lines is not None
        bases = [dict(lbl) for lbl in batch.streams]
        base_names = [frozenset(b) for b in bases]
        if batch.stream_md is not None:
            # Shared metadata (detected_level) joins the labels, yet is no stream label for parsers.
            bases = [b | dict(m) if m else b for b, m in zip(bases, batch.stream_md, strict=True)]
        mds = batch.metadata
        sidx = batch.stream_idx.tolist()
        tss = batch.ts_ns.tolist()
        lbytes = batch.line_bytes.tolist()
        process = self.pipeline.process
        key = self.key
        unwrap = self.unwrap_label
        convert = self.convert
        post = self.post
        bytes_op = self.op in _BYTES_OPS
        ids: dict[Labels, int] = {}
        out_id: list[int] = []
        out_ts: list[int] = []
        out_v: list[float] = []
        todo: Sequence[int] = range(len(batch.lines)) if subset is None else subset.tolist()
        # Python strings only for the entries that run the pipeline (Arrow lines convert on demand).
        all_lines = ArrowLines.of(batch.lines)
        lines = all_lines.as_list() if subset is None else all_lines.take(todo)
        for n_done, i in enumerate(todo):
            if n_done & 0x3FFF == 0:
                ctx.check_deadline()
            s = sidx[i]
            labels = bases[s].copy()
            if mds is not None and mds[i]:
                labels.update(mds[i])
            line = lines[i if subset is None else n_done]
            ts = tss[i]
            new_line = process(ts, line, labels, base_names[s])
            if new_line is None:
                continue
            v = 1.0
            if unwrap is not None:
                raw = labels.get(unwrap)
                if raw is None:
                    continue
                assert convert is not None
                try:
                    v = convert(raw)
                except ValueError as e:
                    v = 0.0
                    labels[ERROR_LABEL] = ERR_SAMPLE
                    labels[ERROR_DETAILS_LABEL] = str(e)
                if post and not all(p(labels) for p in post):
                    continue
            elif bytes_op:
                v = float(lbytes[i]) if new_line is line else float(len(new_line.encode()))
            if ERROR_LABEL in labels:
                full = tuple(sorted(labels.items()))
                raise LogQLPipelineError(labels[ERROR_LABEL], labels_string(full))
            k = key(labels)
            sid = ids.get(k)
            if sid is None:
                sid = ids[k] = len(ids)
            out_id.append(sid)
            out_ts.append(i)
            out_v.append(v)
        ctx.stats.post_filter_lines += len(out_ts)
        return (list(ids), np.asarray(out_id, dtype=np.int64), np.asarray(out_ts, dtype=np.int64),
                np.asarray(out_v, dtype=np.float64))


def _series_from_rows(
    keys: list[Labels], ids: np.ndarray, idx: np.ndarray, values: np.ndarray, ts_ns: np.ndarray
) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
    """Samples (key id, entry index, value) as per-series arrays sorted by time, ties in entry order."""
    if not len(ids):
        return []
    ts = ts_ns[idx]
    order = np.lexsort((idx, ts, ids))
    ids, ts, values = ids[order], ts[order], values[order]
    bounds = np.searchsorted(ids, np.arange(len(keys) + 1), side="left")
    return [
        (keys[j], ts[bounds[j] : bounds[j + 1]], values[bounds[j] : bounds[j + 1]])
        for j in range(len(keys))
        if bounds[j + 1] > bounds[j]
    ]
