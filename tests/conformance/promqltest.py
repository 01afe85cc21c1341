"""An interpreter for Prometheus' promqltest scripts, run against our Engine.

Format: /work/shared/conformance/prometheus/promql/promqltest/README.md. The
scripts are the ones Prometheus itself runs (``promql/promqltest/testdata``),
found at ``<repo>/../shared/conformance/prometheus/promql/promqltest/testdata``.

Every case this runner does not execute is skipped for a reason listed in
``SKIP_FILES`` / ``SKIP_CASES`` or by one of the native-histogram rules in
``skip_reason`` -- all in this one place.

The scripts run over two storage backends (``BACKENDS``): the in-memory
``MemoryQuerier`` and the real ``MetricStore`` (DuckDB + WAL + head, with the
head flushed into DuckDB blocks after every ``load`` so both read paths are
used). Skips depend only on the script, so both must pass the same cases.
"""

from __future__ import annotations

import asyncio
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import promql_parser

from pitwall.core.errors import PitwallError
from pitwall.core.labels import Labels, labels_get
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.model import STALE_NAN, SampleBatch, is_stale
from pitwall.metrics.promql import Engine, QueryResult
from pitwall.metrics.promql.ast import Selector, walk
from pitwall.metrics.promql.ast import parse as parse_expr
from pitwall.metrics.store import Querier
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "conformance" / "prometheus" / "promql" / "promqltest" / "testdata"

# ---------------------------------------------------------------------------
# Skips: every case not run, with its reason, in one place.
# ---------------------------------------------------------------------------
NATIVE = "native histograms not supported"
SKIP_FILES: dict[str, str] = {
    "native_histograms.test": NATIVE,
    "duration_expression.test": "experimental duration expressions (e.g. foo[5m+1m], offset -step()): "
    "promql-parser 0.12 rejects 51 of 59 queries ('unexpected character inside brackets')",
    "extended_vectors.test": "experimental anchored/smoothed range-selector modifiers: "
    "promql-parser 0.12 rejects 135 of 169 queries ('invalid promql query')",
    "type_and_unit.test": "experimental __type__/__unit__ labels (feature flag type-and-unit-labels): they must "
    "be dropped with __name__ and ignored in vector matching, which binops.py/aggregations.py do not do",
    "start_timestamps.test": "experimental start (created) timestamps: MetricStore keeps no start timestamp "
    "per sample",
}
# file:line -> reason, for single cases.
_MIXED = f"{NATIVE}: the selector also matches native histogram series and expects an annotation about them"
SKIP_CASES: dict[str, str] = {
    **{
        f"aggregators.test:{n}": _MIXED
        for n in (239, 252, 378, 382, 386, 390, 404, 408, 412, 416, 520, 814, 817)
    },
    "operators.test:292": _MIXED,
    "functions.test:1649": f"{NATIVE}: counts samples of series that mix floats and native histograms",
}
NATIVE_RULES = (
    "load_with_nhcb builds native histograms",
    "expected value is a native histogram",
    "query reads a series that holds native histogram samples",
)


def skip_reason(file: str, case: EvalCase, native_series: set[Labels]) -> str | None:
    """Why a case is not run, or None."""
    if file in SKIP_FILES:
        return SKIP_FILES[file]
    key = f"{file}:{case.line}"
    if key in SKIP_CASES:
        return SKIP_CASES[key]
    if case.uses_native:
        return f"{NATIVE}: {NATIVE_RULES[1]}"
    # A case is skipped for reading native histograms when it names a metric
    # that has some, and one of its selectors matches such a series by labels.
    # (A selector matching them only by a regex on the name, with answers
    # that do not include them, runs: it shows native histograms are ignored.)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", case.expr))
    native_names = {labels_get(lb, "__name__") for lb in native_series}
    if names & native_names and _reads_any(case.expr, native_series):
        return f"{NATIVE}: {NATIVE_RULES[2]}"
    return None


def _reads_any(expr: str, series: set[Labels]) -> bool:
    """Whether a selector of ``expr`` matches one of ``series`` (by labels, at any time)."""
    try:
        nodes = walk(parse_expr(expr))
    except PitwallError:
        return False  # the case expects a parse error: it reads nothing
    for node in nodes:
        if not isinstance(node, Selector):
            continue
        for group in node.or_matchers or (node.matchers,):
            if any(all(m.matches(labels_get(lb, m.name)) for m in group) for lb in series):
                return True
    return False


# ---------------------------------------------------------------------------
# Script model
# ---------------------------------------------------------------------------


@dataclass
class Expect:
    kind: str  # fail, warn, info, no_warn, no_info, ordered
    match: str = ""  # "", "msg", "regex"
    text: str = ""


@dataclass
class Expected:
    labels: Labels
    values: list[float | None]  # None = no point at that step


@dataclass
class EvalCase:
    line: int
    expr: str
    instant: bool
    start_ms: int
    end_ms: int
    step_ms: int
    expects: list[Expect] = field(default_factory=list)
    series: list[Expected] = field(default_factory=list)
    scalar: float | None = None
    string: str | None = None
    range_vector: tuple[int, int, int] | None = None
    uses_native: bool = False


@dataclass
class Load:
    line: int
    interval_ms: int
    series: list[tuple[Labels, list[float | None]]]
    native_series: set[Labels]  # label sets that hold native histogram samples
    skipped: bool = False  # load_with_nhcb


@dataclass
class Clear:
    line: int


Command = Load | Clear | EvalCase

# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

_DUR = re.compile(r"^(\d+(?:ms|[smhdwy]))+$")


def parse_duration_ms(text: str) -> int:
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text) * 1000
    neg = text.startswith("-")
    body = text[1:] if neg else text
    if not _DUR.match(body):
        raise ValueError(f"bad duration {text!r}")
    if re.fullmatch(r"(0(ms|[smhdwy]))+", body):
        return 0
    td = promql_parser.parse_duration(body)
    ms = td.days * 86_400_000 + td.seconds * 1000 + td.microseconds // 1000
    return -ms if neg else ms


def _unquote(s: str) -> str:
    if s[0] == "`":
        return s[1:-1]
    body = s[1:-1]
    return bytes(body, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


_LABEL = re.compile(
    r'\s*([a-zA-Z_][a-zA-Z0-9_]*|"(?:\\.|[^"\\])*")\s*=\s*("(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`)\s*,?'
)


def parse_series(desc: str) -> Labels:
    """``name{a="b"}`` -> sorted label tuple."""
    desc = desc.strip()
    i = desc.find("{")
    d: dict[str, str] = {}
    name = desc if i < 0 else desc[:i]
    if name:
        d["__name__"] = name
    if i >= 0:
        body = desc[i + 1 : desc.rindex("}")]
        pos = 0
        while pos < len(body):
            if body[pos:].strip() == "":
                break
            m = _LABEL.match(body, pos)
            if m is None:
                # A bare quoted metric name: {"metric.name", a="b"}
                m2 = re.compile(r'\s*("(?:\\.|[^"\\])*")\s*,?').match(body, pos)
                if m2 is None:
                    raise ValueError(f"bad series {desc!r}")
                d["__name__"] = _unquote(m2.group(1))
                pos = m2.end()
                continue
            k = m.group(1)
            d[_unquote(k) if k.startswith('"') else k] = _unquote(m.group(2))
            pos = m.end()
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


def _split_series(line: str) -> tuple[str, str]:
    """Split ``series values...`` where the series may contain spaces inside braces."""
    depth = 0
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == "\\":
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return line[: i + 1], line[i + 1 :]
        elif ch.isspace() and depth == 0:
            return line[:i], line[i:]
    return line, ""


_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|Inf|inf|NaN|nan)"


def _num(s: str) -> float:
    if s.lower().endswith("inf"):
        return -math.inf if s.startswith("-") else math.inf
    return float(s)


def parse_values(text: str) -> list[float | None]:
    """The expanding notation: ``1 2+3x4 _x2 stale NaN``; None marks a missing point."""
    out: list[float | None] = []
    for tok in text.split():
        if tok == "_":
            out.append(None)
            continue
        if tok == "stale":
            out.append(STALE_NAN)
            continue
        m = re.fullmatch(r"_x(\d+)", tok)
        if m:
            out.extend([None] * int(m.group(1)))
            continue
        m = re.fullmatch(rf"({_NUM}|stale)(?:([-+])({_NUM}))?x(\d+)", tok)
        if m:
            start = STALE_NAN if m.group(1) == "stale" else _num(m.group(1))
            n = int(m.group(4))
            if m.group(2) is None:
                out.extend([start] * (n + 1))
            else:
                delta = _num(m.group(3)) * (-1 if m.group(2) == "-" else 1)
                k = start
                for _ in range(n + 1):
                    out.append(k)
                    k += delta
            continue
        out.append(_num(tok))
    return out


_EVAL = re.compile(
    r"^(eval|eval_fail|eval_warn|eval_info|eval_ordered)\s+"
    r"(?:instant\s+at\s+(\S+)|range\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+))\s+(.*)$"
)
_EXPECT = re.compile(r"^expect\s+(fail|warn|info|no_warn|no_info|ordered)(?:\s+(msg|regex)\s*:\s?(.*))?$")


def _body(lines: list[str], i: int) -> Iterator[tuple[int, str]]:
    while i < len(lines):
        s = lines[i].strip()
        if not s or s.startswith("#") or re.match(r"^(load|clear|eval)\b", s):
            return
        yield i, s
        i += 1


def parse_script(text: str) -> list[Command]:
    lines = text.split("\n")
    cmds: list[Command] = []
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if not s or s.startswith("#"):
            i += 1
            continue
        body = [] if s == "clear" else list(_body(lines, i + 1))
        if s == "clear":
            cmds.append(Clear(i + 1))
        elif s.startswith("load"):
            cmds.append(_parse_load(i + 1, s, [b for _, b in body]))
        elif s.startswith("eval"):
            cmds.append(_parse_eval(i + 1, s, [b for _, b in body]))
        else:
            raise ValueError(f"line {i + 1}: unknown command {s!r}")
        i += 1 + len(body)
    return cmds


def _parse_load(line: int, head: str, body: list[str]) -> Load:
    parts = head.split()
    nhcb = parts[0] == "load_with_nhcb"
    load = Load(line, parse_duration_ms(parts[1]), [], set(), skipped=nhcb)
    for b in body:
        desc, vals = _split_series(b)
        if desc.endswith("@st") or vals.lstrip().startswith("@st"):
            continue  # start timestamps are not stored (start_timestamps.test is skipped)
        labels = parse_series(desc)
        if "{{" in vals:
            load.native_series.add(labels)
            continue
        load.series.append((labels, parse_values(vals)))
    if nhcb:
        # Each classic histogram also becomes a native one under its base name.
        for labels, _ in load.series:
            d = dict(labels)
            name = d.get("__name__", "")
            if re.search(r"_(bucket|count|sum)$", name):
                d["__name__"] = re.sub(r"_(bucket|count|sum)$", "", name)
                d.pop("le", None)
                load.native_series.add(tuple(sorted(d.items())))
    return load


def _parse_eval(line: int, head: str, body: list[str]) -> EvalCase:
    m = _EVAL.match(head)
    if m is None:
        raise ValueError(f"line {line}: bad eval {head!r}")
    kind, at, start, end, step, expr = m.groups()
    if at is not None:
        t = parse_duration_ms(at)
        case = EvalCase(line, expr, True, t, t, 0)
    else:
        case = EvalCase(
            line, expr, False, parse_duration_ms(start), parse_duration_ms(end), parse_duration_ms(step)
        )
    if kind == "eval_fail":
        case.expects.append(Expect("fail"))
    elif kind == "eval_warn":
        case.expects.append(Expect("warn"))
    elif kind == "eval_info":
        case.expects.append(Expect("info"))
    elif kind == "eval_ordered":
        case.expects.append(Expect("ordered"))
    for b in body:
        _parse_body_line(case, b)
    return case


def _parse_body_line(case: EvalCase, b: str) -> None:
    em = _EXPECT.match(b)
    if em:
        text = (em.group(3) or "").strip()
        if em.group(1) == "fail" and len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        case.expects.append(Expect(em.group(1), em.group(2) or "", text))
        return
    if b.startswith("expected_fail_message"):
        case.expects.append(Expect("fail", "msg", b[len("expected_fail_message") :].strip()))
        return
    if b.startswith("expected_fail_regexp"):
        case.expects.append(Expect("fail", "regex", b[len("expected_fail_regexp") :].strip()))
        return
    sm = re.match(r"^expect\s+string\s+(.*)$", b)
    if sm:
        case.string = _unquote(sm.group(1).strip())
        return
    rm = re.match(r"^expect\s+range\s+vector\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)$", b)
    if rm:
        case.range_vector = tuple(parse_duration_ms(x) for x in rm.groups())  # type: ignore[assignment]
        return
    if re.fullmatch(_NUM, b):
        case.scalar = _num(b)
        return
    desc, vals = _split_series(b)
    if "{{" in vals:
        case.uses_native = True
        return
    case.series.append(Expected(parse_series(desc), parse_values(vals)))


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def almost_equal(a: float, b: float, eps: float = 1e-6) -> bool:
    """Prometheus' ``almost.Equal`` plus the stale-marker rule."""
    if is_stale(a) or is_stale(b):
        return is_stale(a) and is_stale(b)
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    min_normal = 2.2250738585072014e-308
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < eps * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < eps


class CaseFailure(Exception):
    pass


def _fmt(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def _check_error(case: EvalCase, err: PitwallError | None) -> bool:
    """Returns True when the case expected failure (and it matched)."""
    fails = [e for e in case.expects if e.kind == "fail"]
    if not fails:
        if err is not None:
            raise CaseFailure(f"unexpected error: {err.message}")
        return False
    if err is None:
        raise CaseFailure("expected error, query succeeded")
    for e in fails:
        if e.match == "msg" and err.message != e.text:
            raise CaseFailure(f"expected error {e.text!r}, got {err.message!r}")
        if e.match == "regex" and not re.search(e.text, err.message):
            raise CaseFailure(f"expected error matching {e.text!r}, got {err.message!r}")
    return True


def _check_annotations(case: EvalCase, res: QueryResult) -> None:
    for kind, got in (("warn", res.warnings), ("info", res.infos)):
        exps = [e for e in case.expects if e.kind == kind]
        if any(e.kind == f"no_{kind}" for e in case.expects) and got:
            raise CaseFailure(f"unexpected {kind} annotations: {got}")
        if not exps:
            continue

        def matches(e: Expect, a: str) -> bool:
            if e.match == "msg":
                return a == e.text
            if e.match == "regex":
                return re.search(e.text, a) is not None
            return True

        for e in exps:
            if not any(matches(e, a) for a in got):
                raise CaseFailure(f"expected {kind} {e.text!r}, got {got}")
        for a in got:
            if not any(matches(e, a) for e in exps):
                raise CaseFailure(f"unexpected {kind} annotation {a!r}")


def _check_vector(case: EvalCase, res: QueryResult) -> None:
    if case.scalar is not None:
        if res.result_type != "scalar":
            raise CaseFailure(f"expected scalar, got {res.result_type}")
        scalar = float(res.values[0][0])
        if not almost_equal(case.scalar, scalar):
            raise CaseFailure(f"expected scalar {case.scalar}, got {scalar}")
        return
    if res.result_type != "vector":
        raise CaseFailure(f"expected vector, got {res.result_type}")
    ordered = any(e.kind == "ordered" for e in case.expects)
    exp = {e.labels: e.values[0] for e in case.series}
    got = {lb: float(v[0]) for lb, v in zip(res.series, res.values, strict=True)}
    if len(got) != len(res.series):
        raise CaseFailure("result contains duplicate series")
    for lb, v in got.items():
        if lb not in exp:
            raise CaseFailure(f"unexpected series {_fmt(lb)} {v}; expected {[_fmt(x) for x in exp]}")
        ev = exp[lb]
        if ev is None or not almost_equal(ev, v):
            raise CaseFailure(f"series {_fmt(lb)}: expected {ev}, got {v}")
    missing = [lb for lb in exp if lb not in got]
    if missing:
        raise CaseFailure(f"missing series {[_fmt(x) for x in missing]}")
    if ordered and [e.labels for e in case.series] != list(res.series):
        raise CaseFailure(f"wrong order: {[_fmt(x) for x in res.series]}")


def _check_matrix(case: EvalCase, res: QueryResult, start: int, step: int) -> None:
    if res.result_type != "matrix":
        raise CaseFailure(f"expected matrix, got {res.result_type}")
    if list(res.series) != sorted(res.series):
        raise CaseFailure("matrix is not sorted by labels")
    got = {lb: (ts, v) for lb, ts, v in zip(res.series, res.timestamps, res.values, strict=True)}
    exp_map: dict[Labels, list[tuple[int, float]]] = {}
    for e in case.series:
        exp_map[e.labels] = [(start + i * step, v) for i, v in enumerate(e.values) if v is not None]
    for lb in got:
        if lb not in exp_map:
            raise CaseFailure(f"unexpected series {_fmt(lb)}")
    for lb, points in exp_map.items():
        if lb not in got:
            if not points:
                continue
            raise CaseFailure(f"missing series {_fmt(lb)}")
        ts, vals = got[lb]
        gp = list(zip(ts.tolist(), vals.tolist(), strict=True))
        if len(gp) != len(points) or any(
            a[0] != b[0] or not almost_equal(b[1], a[1]) for a, b in zip(gp, points, strict=True)
        ):
            raise CaseFailure(f"series {_fmt(lb)}: expected {points}, got {gp}")


_TIME_DEPENDENT = re.compile(r"\b(start|end|range|step)\s*\(")


def run_case(engine: Engine, querier: Querier, case: EvalCase) -> None:
    """Run one eval case; raises CaseFailure on a mismatch."""
    res: QueryResult | None = None
    err: PitwallError | None = None
    try:
        if case.instant:
            res = engine.instant(querier, case.expr, case.start_ms)
        else:
            res = engine.range(querier, case.expr, case.start_ms, case.end_ms, case.step_ms)
    except PitwallError as ex:
        err = ex
    if _check_error(case, err):
        return
    assert res is not None
    _check_annotations(case, res)
    if not case.instant:
        _check_matrix(case, res, case.start_ms, case.step_ms)
        return
    if case.string is not None:
        if res.result_type != "string" or res.string_value != case.string:
            raise CaseFailure(f"expected string {case.string!r}, got {res.result_type} {res.string_value!r}")
        return
    if case.range_vector is not None:
        start, _, step = case.range_vector
        _check_matrix(case, res, start, step)
        return
    _check_vector(case, res)
    _check_range_rerun(engine, querier, case)


def _check_range_rerun(engine: Engine, querier: Querier, case: EvalCase) -> None:
    """The instant result must equal the middle step of a t-1m..t+1m range query."""
    if any(e.kind == "ordered" for e in case.expects) or _TIME_DEPENDENT.search(case.expr):
        return
    t = case.start_ms
    try:
        res = engine.range(querier, case.expr, t - 60_000, t + 60_000, 60_000)
    except PitwallError as ex:
        raise CaseFailure(f"range re-run failed: {ex.message}") from ex
    middle: dict[Labels, float] = {}
    for lb, ts, vals in zip(res.series, res.timestamps, res.values, strict=True):
        hit = np.nonzero(ts == t)[0]
        if hit.shape[0]:
            middle[lb] = float(vals[hit[0]])
    exp: dict[Labels, float] = {}
    if case.scalar is not None:
        exp[()] = case.scalar
    else:
        for e in case.series:
            first = e.values[0] if e.values else None
            if first is not None:
                exp[e.labels] = first
    if set(middle) != set(exp) or any(not almost_equal(exp[k], v) for k, v in middle.items()):
        raise CaseFailure(f"range re-run differs at t: {middle} vs {exp}")


@dataclass
class FileReport:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)

    def summary(self, name: str) -> str:
        return f"{name}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped"


# ---------------------------------------------------------------------------
# Storage backends
# ---------------------------------------------------------------------------

Row = tuple[Labels, int, float]


class Backend(Protocol):
    """Where a script's ``load`` commands go and its queries read from."""

    def load(self, rows: list[Row]) -> None: ...

    def clear(self) -> None: ...

    def querier(self) -> Querier: ...

    def close(self) -> None: ...


class MemoryBackend:
    def __init__(self) -> None:
        self._q = MemoryQuerier()

    def load(self, rows: list[Row]) -> None:
        for labels, t, v in rows:
            self._q.add(labels, t, v)

    def clear(self) -> None:
        self._q.clear()

    def querier(self) -> Querier:
        return self._q

    def close(self) -> None:
        pass


class StoreBackend:
    """The real ``MetricStore`` on an in-memory DuckDB, its WAL in a temp dir.

    Rows are appended in time order (the store rejects out-of-order samples
    per series); after each load the head is flushed into DuckDB blocks.
    ``clear`` replaces the store with a fresh one.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._tmp = tempfile.TemporaryDirectory(prefix="promqltest-")
        self._n = 0
        self._store = self._open()

    def _open(self) -> MetricStore:
        self._n += 1
        store = MetricStore(TelemetryDB(None), Path(self._tmp.name) / f"wal{self._n}", fsync=False)
        self._loop.run_until_complete(store.start())
        return store

    def _close_store(self) -> None:
        self._loop.run_until_complete(self._store.stop())
        self._store.db.close()

    def load(self, rows: list[Row]) -> None:
        if not rows:
            return
        # A script may give one series twice in a load; the later line wins,
        # as in Prometheus' test storage. The store itself rejects such clashes.
        last = {(lb, t): v for lb, t, v in rows}
        ordered = sorted(((lb, t, v) for (lb, t), v in last.items()), key=lambda r: r[1])
        store = self._store

        async def append() -> None:
            await store.append("default", SampleBatch.from_rows(ordered))
            await store.flush()

        self._loop.run_until_complete(append())

    def clear(self) -> None:
        self._close_store()
        self._store = self._open()

    def querier(self) -> Querier:
        return self._store.querier("default")

    def close(self) -> None:
        self._close_store()
        self._loop.close()
        self._tmp.cleanup()


BACKENDS: dict[str, type[MemoryBackend] | type[StoreBackend]] = {
    "memory": MemoryBackend,
    "store": StoreBackend,
}


def run_file(path: Path, backend: str = "memory") -> FileReport:
    engine = Engine(lookback_delta_ms=300_000, default_subquery_step_ms=60_000)
    store: Backend = BACKENDS[backend]()
    try:
        return _run_commands(path, engine, store)
    finally:
        store.close()


def _run_commands(path: Path, engine: Engine, store: Backend) -> FileReport:
    report = FileReport()
    native: set[Labels] = set()
    whole_file_skipped = path.name in SKIP_FILES
    for cmd in parse_script(path.read_text()):
        if whole_file_skipped and not isinstance(cmd, EvalCase):
            continue  # nothing will be queried: do not pay for loading
        if isinstance(cmd, Clear):
            store.clear()
            native = set()
        elif isinstance(cmd, Load):
            native |= cmd.native_series
            store.load(
                [(labels, i * cmd.interval_ms, v) for labels, vals in cmd.series for i, v in enumerate(vals) if v is not None]
            )
        else:
            reason = skip_reason(path.name, cmd, native)
            if reason is not None:
                report.skipped += 1
                report.skips.append(f"{path.name}:{cmd.line}: {reason}")
                continue
            try:
                run_case(engine, store.querier(), cmd)
                report.passed += 1
            except CaseFailure as ex:
                report.failed += 1
                report.failures.append(f"{path.name}:{cmd.line}: {cmd.expr}\n    {ex}")
            except Exception as ex:  # a crash is a failed case, reported with its type
                report.failed += 1
                report.failures.append(
                    f"{path.name}:{cmd.line}: {cmd.expr}\n    CRASH {type(ex).__name__}: {ex}"
                )
    return report


def main(show_skips: bool = False, backends: list[str] | None = None) -> None:
    for backend in backends or list(BACKENDS):
        total = FileReport()
        for path in sorted(TESTDATA.glob("*.test")):
            rep = run_file(path, backend)
            print(f"[{backend}] {rep.summary(path.name)}")
            for f in rep.failures:
                print("  FAIL", f)
            if show_skips:
                for sk in rep.skips:
                    print("  SKIP", sk)
            total.passed += rep.passed
            total.failed += rep.failed
            total.skipped += rep.skipped
        print(f"[{backend}] {total.summary('TOTAL')}")


if __name__ == "__main__":
    import sys

    main(show_skips="--skips" in sys.argv, backends=[a for a in sys.argv[1:] if a in BACKENDS] or None)
