"""LogQL query results and their Loki JSON shape (the ``data`` object of the HTTP API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitwall.core.gofmt import go_quote
from pitwall.core.labels import Labels
from pitwall.logs.logql.units import format_sample_value

__all__ = ["LogQLResult", "QueryStats", "SeriesResult", "StreamEntry", "StreamResult", "labels_string"]


def labels_string(labels: Labels) -> str:
    """Prometheus' ``labels.Labels.String()``: ``{a="1", b="2"}`` (Loki sorts streams by it)."""
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in labels) + "}"


@dataclass(frozen=True)
class StreamEntry:
    ts_ns: int
    line: str
    metadata: tuple[tuple[str, str], ...] = ()
    parsed: tuple[tuple[str, str], ...] = ()


@dataclass
class StreamResult:
    """One result stream: its full label set (stream + metadata + parsed) and entries in order."""

    labels: Labels
    stream_labels: Labels
    entries: list[StreamEntry]


@dataclass
class SeriesResult:
    labels: Labels
    points: list[tuple[int, float]]  # (ts ms, value)


@dataclass
class QueryStats:
    """What the engine measured; rendered in Loki's stats JSON shape."""

    exec_time_s: float = 0.0
    lines_processed: int = 0
    bytes_processed: int = 0
    post_filter_lines: int = 0
    entries_returned: int = 0
    structured_metadata_bytes: int = 0
    splits: int = 0

    def to_loki(self) -> dict[str, Any]:
        t = self.exec_time_s
        chunk = {
            "headChunkBytes": self.bytes_processed,
            "headChunkLines": self.lines_processed,
            "decompressedBytes": 0,
            "decompressedLines": 0,
            "compressedBytes": 0,
            "totalDuplicates": 0,
            "postFilterLines": self.post_filter_lines,
            "headChunkStructuredMetadataBytes": self.structured_metadata_bytes,
            "decompressedStructuredMetadataBytes": 0,
        }
        store = {
            "totalChunksRef": 0,
            "totalChunksDownloaded": 0,
            "chunksDownloadTime": 0,
            "queryReferencedStructuredMetadata": self.structured_metadata_bytes > 0,
            "chunk": chunk,
            "chunkRefsFetchTime": 0,
            "congestionControlLatency": 0,
            "pipelineWrapperFilteredLines": 0,
        }
        cache_entry = {
            "entriesFound": 0,
            "entriesRequested": 0,
            "entriesStored": 0,
            "bytesReceived": 0,
            "bytesSent": 0,
            "requests": 0,
            "downloadTime": 0,
            "queryLengthServed": 0,
        }
        return {
            "summary": {
                "bytesProcessedPerSecond": int(self.bytes_processed / t) if t > 0 else 0,
                "linesProcessedPerSecond": int(self.lines_processed / t) if t > 0 else 0,
                "totalBytesProcessed": self.bytes_processed,
                "totalLinesProcessed": self.lines_processed,
                "execTime": t,
                "queueTime": 0,
                "subqueries": 0,
                "totalEntriesReturned": self.entries_returned,
                "splits": self.splits,
                "shards": 0,
                "totalPostFilterLines": self.post_filter_lines,
                "totalStructuredMetadataBytesProcessed": self.structured_metadata_bytes,
            },
            "querier": {"store": store},
            "ingester": {
                "totalReached": 0,
                "totalChunksMatched": 0,
                "totalBatches": 0,
                "totalLinesSent": 0,
                "store": {**store, "chunk": dict.fromkeys(chunk, 0)},
            },
            "cache": {
                name: dict(cache_entry)
                for name in (
                    "chunk",
                    "index",
                    "result",
                    "statsResult",
                    "volumeResult",
                    "seriesResult",
                    "labelResult",
                    "instantMetricResult",
                )
            },
        }


def _ts_seconds(ts_ms: int) -> float | int:
    return ts_ms // 1000 if ts_ms % 1000 == 0 else ts_ms / 1000


@dataclass
class LogQLResult:
    """A query's result: ``result_type`` is "streams", "matrix", "vector" or "scalar"."""

    result_type: str
    streams: list[StreamResult] = field(default_factory=list)
    series: list[SeriesResult] = field(default_factory=list)
    scalar: tuple[int, float] | None = None
    stats: QueryStats = field(default_factory=QueryStats)
    backward: bool = True  # entry order of streams results

    def to_loki_data(self, *, categorize_labels: bool = False) -> dict[str, Any]:
        """Loki's ``data`` object: ``{"resultType", "result", "stats"}``.

        By default stream labels hold stream labels, structured metadata and
        parsed labels together and values are ``[ts, line]`` pairs (Loki 3
        without the ``categorize-labels`` encoding flag). With
        ``categorize_labels`` streams keep only their own labels and each
        value carries ``{"structuredMetadata": ..., "parsed": ...}`` third.
        """
        result: Any
        if self.result_type == "streams":
            result = self._streams_json(categorize_labels)
        elif self.result_type == "matrix":
            result = [
                {
                    "metric": dict(s.labels),
                    "values": [[_ts_seconds(t), format_sample_value(v)] for t, v in s.points],
                }
                for s in self.series
            ]
        elif self.result_type == "vector":
            result = [
                {
                    "metric": dict(s.labels),
                    "value": [_ts_seconds(s.points[0][0]), format_sample_value(s.points[0][1])],
                }
                for s in self.series
            ]
        else:
            assert self.scalar is not None
            result = [_ts_seconds(self.scalar[0]), format_sample_value(self.scalar[1])]
        return {"resultType": self.result_type, "result": result, "stats": self.stats.to_loki()}

    def _streams_json(self, categorize: bool) -> list[dict[str, Any]]:
        if not categorize:
            return [
                {"stream": dict(s.labels), "values": [[str(e.ts_ns), e.line] for e in s.entries]}
                for s in self.streams
            ]
        grouped: dict[Labels, list[StreamEntry]] = {}
        for s in self.streams:
            grouped.setdefault(s.stream_labels, []).extend(s.entries)
        out: list[dict[str, Any]] = []
        for lbl in sorted(grouped, key=labels_string):
            values: list[list[Any]] = []
            for e in sorted(grouped[lbl], key=lambda x: x.ts_ns, reverse=self.backward):
                v: list[Any] = [str(e.ts_ns), e.line]
                cats: dict[str, dict[str, str]] = {}
                if e.metadata:
                    cats["structuredMetadata"] = dict(e.metadata)
                if e.parsed:
                    cats["parsed"] = dict(e.parsed)
                if cats:
                    v.append(cats)
                values.append(v)
            out.append({"stream": dict(lbl), "values": values})
        return out
