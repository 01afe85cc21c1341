"""Log patterns with the Drain algorithm, as Loki's pattern ingester finds them (``pkg/pattern/drain``).

Drain (He et al., ICWS 2017) files each line into a cluster through a
fixed-depth prefix tree: first by token count, then by the leading tokens
(tokens with digits go down the ``<_>`` branch); among the leaf's clusters the
most similar one (share of equal tokens >= ``sim_th``) takes the line and its
differing tokens become ``<_>``. Loki's parameters: depth 30, similarity 0.3,
15 children per node, at most 300 clusters (least recently used evicted),
lines over 3000 bytes or with fewer than 4 / more than 80 tokens skipped.
Lines are tokenised by their format, detected from a stream's first line:
JSON (the ``log``/``message``/``msg``/... field, punctuation-split), logfmt
(key/value pairs, time-like keys as ``<_>``) or punctuation splitting.
pitwall trains at query time over the query's newest lines (one Drain per
stream and level, as Loki keeps one per stream) instead of at ingest.
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Drain", "DrainConfig", "LogCluster", "detect_format", "patterns"]

PARAM = "<_>"
FORMAT_JSON, FORMAT_LOGFMT, FORMAT_UNKNOWN = "json", "logfmt", ""
_JSON_MESSAGE_KEYS = ("log", "message", "msg", "msg_", "_msg", "content")
_LOGFMT_RE = re.compile(r'^(\w+?=([^"]\S*?|".+?") )*?(\w+?=([^"]\S*?|".+?"))+$')
_VARIABLE_KEYS = frozenset({"ts", "time", "timestamp", "traceid"})  # case-insensitive; "t" exact
_KEEP_IN_TOKEN = frozenset("_-.:/")
_MAX_TOKENS_SPLIT = 127
_DEDUP_RE = re.compile(r"(?:<_>){2,}")


@dataclass(frozen=True)
class DrainConfig:
    """Loki's ``drain.DefaultConfig()``."""

    depth: int = 30
    sim_th: float = 0.3
    max_children: int = 15
    max_clusters: int = 300
    max_line_length: int = 3000
    min_tokens: int = 4
    max_tokens: int = 80

    @property
    def max_node_depth(self) -> int:
        return self.depth - 2


def detect_format(line: str) -> str:
    """Loki's ``DetectLogFormat``: JSON when braced, logfmt when every word is ``key=value``."""
    if len(line) < 2:
        return FORMAT_UNKNOWN
    if line[0] == "{" and line[-1] == "}":
        return FORMAT_JSON
    if _LOGFMT_RE.match(line):
        return FORMAT_LOGFMT
    return FORMAT_UNKNOWN


# ---------------------------------------------------------------- tokenizers


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def punctuation_tokens(line: str) -> tuple[list[str], list[int]]:
    """Words and single punctuation marks (``=`` too; ``_-.:/`` stay in words), and where spaces were."""
    tokens: list[str] = []
    spaces: list[int] = []
    start = 0
    for i, ch in enumerate(line):
        if len(tokens) >= _MAX_TOKENS_SPLIT:
            break
        if ch.isalnum() or ch in _KEEP_IN_TOKEN:
            continue
        if ch == " " or ch == "=" or _is_punct(ch):
            if i > start:
                tokens.append(line[start:i])
            if ch == " ":
                spaces.append(len(tokens) - 1)
            else:
                tokens.append(ch)
            start = i + 1
    if start < len(line):
        tokens.append(line[start:])
    return tokens, spaces


def punctuation_join(tokens: Sequence[str], spaces: Sequence[int]) -> str:
    out: list[str] = [" " * sum(1 for s in spaces if s < 0)]
    j = sum(1 for s in spaces if s < 0)
    for i, tok in enumerate(tokens):
        out.append(tok)
        while j < len(spaces) and spaces[j] == i:
            out.append(" ")
            j += 1
    return "".join(out)


def _logfmt_kv(line: str) -> list[tuple[str, str]] | None:
    """go-logfmt's decoding (bare keys have empty values); ``None`` on a syntax error."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] <= " ":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and line[i] > " " and line[i] not in '="':
            i += 1
        key = line[start:i]
        if not key:
            return None
        if i >= n or line[i] != "=":
            out.append((key, ""))
            continue
        i += 1
        if i < n and line[i] == '"':
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            if j >= n:
                return None
            try:
                out.append((key, orjson.loads(line[i:j + 1])))
            except orjson.JSONDecodeError:
                return None
            i = j + 1
            continue
        vstart = i
        while i < n and line[i] > " ":
            if line[i] in '="':
                return None
            i += 1
        out.append((key, line[vstart:i]))
    return out


def _logfmt_value(v: str) -> str:
    """go-logfmt's value encoding: quoted when it has spaces, ``=``, quotes or control characters."""
    if v and not any(c <= " " or c in '="\\' or c == "\x7f" for c in v):
        return v
    if not v:
        return ""
    return orjson.dumps(v).decode()


class Tokenizer:
    """One of Loki's line tokenizers, chosen by the stream's format."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt

    def tokenize(self, line: str) -> tuple[list[str], Any] | None:
        if self.format == FORMAT_LOGFMT:
            kv = _logfmt_kv(line)
            if kv is None:
                return None
            toks: list[str] = []
            for k, v in kv:
                variable = k == "t" or k.lower() in _VARIABLE_KEYS
                toks += [k, PARAM if variable else v]
            return toks, None
        if self.format == FORMAT_JSON:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
            msg = next((obj[k] for k in _JSON_MESSAGE_KEYS if isinstance(obj, dict)
                        and isinstance(obj.get(k), str)), None)
            return None if msg is None else punctuation_tokens(msg)
        return punctuation_tokens(line)

    def join(self, tokens: Sequence[str], state: Any) -> str:
        if self.format == FORMAT_LOGFMT:
            pairs = list(tokens) + ([""] if len(tokens) % 2 else [])
            return " ".join(f"{pairs[i]}={_logfmt_value(pairs[i + 1])}" if pairs[i + 1] != PARAM
                            else f"{pairs[i]}={PARAM}" for i in range(0, len(pairs), 2))
        text = punctuation_join(tokens, state)
        return f"{PARAM}{text}{PARAM}" if self.format == FORMAT_JSON else text


# ---------------------------------------------------------------- drain


@dataclass
class LogCluster:
    """A pattern: its tokens (``<_>`` for variables), spacing state and bucketed counts."""

    id: int
    tokens: list[str]
    state: Any
    size: int = 0
    samples: dict[int, int] = field(default_factory=dict)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    cluster_ids: list[int] = field(default_factory=list)


def _has_numbers(token: str) -> bool:
    return any(c.isnumeric() for c in token)


class Drain:
    """Loki's Drain: train lines with timestamps, read back the clusters."""

    def __init__(self, fmt: str, config: DrainConfig | None = None) -> None:
        self.config = config or DrainConfig()
        self.tokenizer = Tokenizer(fmt)
        self.root = _Node()
        self.clusters: OrderedDict[int, LogCluster] = OrderedDict()  # LRU order, newest last
        self._counter = 0

    def _get(self, cid: int) -> LogCluster | None:
        c = self.clusters.get(cid)
        if c is not None:
            self.clusters.move_to_end(cid)
        return c

    def train(self, line: str, bucket: int) -> LogCluster | None:
        """File one line (its sample counted in ``bucket``); ``None`` when Loki would skip it."""
        if len(line) > self.config.max_line_length:
            return None
        got = self.tokenizer.tokenize(line)
        if got is None:
            return None
        tokens, state = got
        if not self.config.min_tokens <= len(tokens) <= self.config.max_tokens:
            return None
        cluster = self._tree_search(tokens)
        if cluster is None:
            self._counter += 1
            cluster = LogCluster(self._counter, list(tokens), state)
            self.clusters[cluster.id] = cluster
            if len(self.clusters) > self.config.max_clusters:
                self.clusters.popitem(last=False)
            self._add_to_tree(cluster)
        else:
            for i, tok in enumerate(tokens):
                if cluster.tokens[i] != tok:
                    cluster.tokens[i] = PARAM
            self._get(cluster.id)
        cluster.size += 1
        cluster.samples[bucket] = cluster.samples.get(bucket, 0) + 1
        return cluster

    def pattern(self, cluster: LogCluster) -> str:
        """The cluster's pattern text, runs of ``<_>`` folded into one as Loki's deduping tokenizer."""
        return _DEDUP_RE.sub(PARAM, self.tokenizer.join(cluster.tokens, cluster.state))

    def _tree_search(self, tokens: Sequence[str]) -> LogCluster | None:
        node = self.root.children.get(str(len(tokens)))
        if node is None:
            return None
        if len(tokens) < 2:
            return self._get(node.cluster_ids[0]) if node.cluster_ids else None
        depth = 1
        for tok in tokens:
            if depth >= self.config.max_node_depth or depth == len(tokens):
                break
            nxt = node.children.get(tok) or node.children.get(PARAM)
            if nxt is None:
                return None
            node = nxt
            depth += 1
        return self._fast_match(node.cluster_ids, tokens)

    def _fast_match(self, ids: Sequence[int], tokens: Sequence[str]) -> LogCluster | None:
        best: LogCluster | None = None
        best_sim, best_params = -1.0, -1
        for cid in ids:
            c = self._get(cid)
            if c is None:
                continue
            same = params = 0
            for a, b in zip(c.tokens, tokens, strict=True):
                if a == PARAM:
                    params += 1
                elif a == b:
                    same += 1
            sim = same / len(c.tokens)
            if sim > best_sim or (sim == best_sim and params > best_params):
                best, best_sim, best_params = c, sim, params
        return best if best_sim >= self.config.sim_th else None

    def _add_to_tree(self, cluster: LogCluster) -> None:
        n = len(cluster.tokens)
        node = self.root.children.setdefault(str(n), _Node())
        if n == 0:
            node.cluster_ids.append(cluster.id)
            return
        depth = 1
        cfg = self.config
        for tok in cluster.tokens:
            if depth >= cfg.max_node_depth or depth >= n:
                node.cluster_ids = [c for c in node.cluster_ids if c in self.clusters] + [cluster.id]
                break
            node = self._child(node, tok)
            depth += 1

    def _child(self, node: _Node, tok: str) -> _Node:
        """The next node for ``tok``, as Loki's ``addSeqToPrefixTree`` grows the tree."""
        kids = node.children
        if tok in kids:
            return kids[tok]
        if _has_numbers(tok):
            return kids.setdefault(PARAM, _Node())
        limit = self.config.max_children
        if PARAM in kids:
            if len(kids) < limit:
                return kids.setdefault(tok, _Node())
            return kids[PARAM]
        if len(kids) + 1 < limit:
            return kids.setdefault(tok, _Node())
        return kids.setdefault(PARAM, _Node())


def patterns(entries: Iterable[tuple[Any, str, str, int]], step_ms: int, *,
             limit: int) -> list[dict[str, Any]]:
    """Loki's ``/patterns`` ``data`` from ``(stream key, level, line, ts_ms)`` entries, oldest first.

    One Drain per stream and level; equal patterns of different streams merge (as Loki's querier).
    Samples are ``[unix seconds, count]`` per ``step_ms`` bucket; the ``limit`` most frequent kept.
    """
    drains: dict[tuple[Any, str], Drain] = {}
    for key, level, line, ts_ms in entries:
        d = drains.get((key, level))
        if d is None:
            d = drains[(key, level)] = Drain(detect_format(line))
        d.train(line, ts_ms - ts_ms % step_ms)
    merged: dict[tuple[str, str], dict[int, int]] = {}
    for (_, level), d in drains.items():
        for c in d.clusters.values():
            text = d.pattern(c)
            if not text.strip() or text.replace(PARAM, "").strip() == "":
                continue  # all placeholders: nothing to show
            acc = merged.setdefault((text, level), {})
            for b, n in c.samples.items():
                acc[b] = acc.get(b, 0) + n
    ranked = sorted(merged.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:limit]
    out = []
    for (text, level), samples in ranked:
        item: dict[str, Any] = {"pattern": text}
        if level:
            item["level"] = level
        item["samples"] = [[b // 1000, n] for b, n in sorted(samples.items())]
        out.append(item)
    return out
