"""``pitwall rules test``: promtool-style unit tests for rule files.

Reads promtool's test file format (``rule_files``, ``evaluation_interval``,
``tests`` with ``input_series`` in expanding notation, ``alert_rule_test``,
``promql_expr_test``), evaluates every group at each evaluation step from
time 0 over an in-memory store, and reports like ``promtool test rules``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from pitwall.alerting.rules.alerting_rule import AlertingRule, AlertState
from pitwall.alerting.rules.base import OutSample, instant_query_func
from pitwall.alerting.rules.group import Group
from pitwall.alerting.rules.manager import RuleOptions, build_groups, expand_globs, promql_check
from pitwall.alerting.rules.rulefmt import GroupSpec, parse_rule_file
from pitwall.core.durations import format_duration_ms, parse_duration_ms
from pitwall.core.errors import PitwallError
from pitwall.core.gofmt import format_float
from pitwall.core.labels import Labels
from pitwall.metrics import STALE_NAN, Engine, MemoryQuerier, parse_matchers

__all__ = ["parse_values", "run_test_files"]

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|[Ii]nf|NaN)"
_EXPAND = re.compile(rf"({_NUM})(?:([-+])({_NUM}))?x(\d+)")


class TestFileError(Exception):
    """The test file itself is invalid."""


def _num(s: str) -> float:
    return float(s.replace("Inf", "inf").replace("NaN", "nan"))


def parse_values(text: str) -> list[float | None]:
    """Expanding notation (``1+2x3 _x2 stale 4``); None is a missing sample."""
    out: list[float | None] = []
    for tok in text.split():
        if tok == "_":
            out.append(None)
        elif tok == "stale":
            out.append(STALE_NAN)
        elif m := re.fullmatch(r"_x(\d+)", tok):
            out.extend([None] * int(m.group(1)))
        elif m := _EXPAND.fullmatch(tok):
            start, sign, step, n = m.group(1), m.group(2), m.group(3), int(m.group(4))
            a, b = _num(start), (_num(step) if step else 0.0) * (-1 if sign == "-" else 1)
            out.extend(a + i * b for i in range(n + 1))
        elif re.fullmatch(_NUM, tok):
            out.append(_num(tok))
        else:
            raise TestFileError(f'bad number or duration syntax: "{tok}"')
    return out


def parse_series(desc: str) -> Labels:
    try:
        matchers = parse_matchers(desc)
    except PitwallError as e:
        raise TestFileError(f"{e.message}") from None
    return tuple(sorted((m.name, m.value) for m in matchers if m.value != ""))


def _dur(v: Any, what: str) -> int:
    if v is None:
        return 0
    try:
        return parse_duration_ms(str(v))
    except ValueError:
        raise TestFileError(f'not a valid duration string: "{v}"') from None


@dataclass
class _AlertCase:
    eval_ms: int
    alertname: str
    exp: list[tuple[dict[str, str], dict[str, str]]]


@dataclass
class _ExprCase:
    expr: str
    eval_ms: int
    exp: list[tuple[str, float]]


@dataclass
class _TestGroup:
    interval_ms: int
    series: list[tuple[str, str]]
    alerts: list[_AlertCase]
    exprs: list[_ExprCase]
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    name: str = ""
    start_ms: int = 0


_FILE_KEYS = {"rule_files", "evaluation_interval", "group_eval_order", "tests", "fuzzy_compare"}
_GROUP_KEYS = {"interval", "input_series", "alert_rule_test", "promql_expr_test", "external_labels", "external_url",
               "name", "start_timestamp"}


def _check_keys(d: dict[str, Any], known: set[str], typ: str) -> None:
    for k in d:
        if k not in known:
            raise TestFileError(f"yaml: unmarshal errors:\n  field {k} not found in type {typ}")


def _start(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, (int, float)):
        return int(v * 1000)
    if isinstance(v, dt.datetime):
        return int(v.timestamp() * 1000)
    try:
        return int(dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise TestFileError(f"invalid start_timestamp: {v}") from None


def _test_group(raw: dict[str, Any], eval_ms: int) -> _TestGroup:
    _check_keys(raw, _GROUP_KEYS, "main.testGroup")
    alerts = []
    for a in raw.get("alert_rule_test") or []:
        exp = [(dict((e or {}).get("exp_labels") or {}), dict((e or {}).get("exp_annotations") or {}))
               for e in a.get("exp_alerts") or []]
        alerts.append(_AlertCase(_dur(a.get("eval_time"), "eval_time"), str(a.get("alertname") or ""), exp))
    exprs = []
    for p in raw.get("promql_expr_test") or []:
        samples = [(str(s.get("labels") or ""), float(s.get("value", 0))) for s in p.get("exp_samples") or []]
        exprs.append(_ExprCase(str(p.get("expr", "")), _dur(p.get("eval_time"), "eval_time"), samples))
    return _TestGroup(
        interval_ms=_dur(raw.get("interval"), "interval") or eval_ms,
        series=[(str(s["series"]), str(s.get("values", ""))) for s in raw.get("input_series") or []],
        alerts=alerts, exprs=exprs,
        external_labels={str(k): str(v) for k, v in (raw.get("external_labels") or {}).items()},
        external_url=str(raw.get("external_url") or ""), name=str(raw.get("name") or ""),
        start_ms=_start(raw.get("start_timestamp")))


def _labels_str(d: dict[str, str] | Labels) -> str:
    items = sorted(d.items()) if isinstance(d, dict) else list(d)
    return "{" + ", ".join(f'{k}="{v}"' for k, v in items) + "}"


def _alerts_str(items: list[tuple[dict[str, str], dict[str, str]]]) -> str:
    if not items:
        return "[]"
    parts = [f"{i}:\n  Labels:{_labels_str(lb)}\n  Annotations:{_labels_str(an)}" for i, (lb, an) in enumerate(items)]
    return "[\n" + ",\n".join(parts) + "\n]"


def _indent(text: str, prefix: str) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0], *(prefix + ln for ln in lines[1:])])


def _samples_str(items: list[tuple[Labels, float]]) -> str:
    if not items:
        return "nil"
    return ", ".join(f"{_labels_str(lb)} {format_float(v, 'E', -1)}" for lb, v in items)


def _equal(a: float, b: float, fuzzy: bool) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    return fuzzy and math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0)


class _Suite:
    """One test group: an in-memory store, the rule groups, and the checks."""

    def __init__(self, tg: _TestGroup, specs: list[GroupSpec], eval_ms: int, order: list[str], fuzzy: bool) -> None:
        self.tg, self.eval_ms, self.fuzzy = tg, eval_ms, fuzzy
        self.store = MemoryQuerier()
        for desc, values in tg.series:
            lbl = parse_series(desc)
            for i, v in enumerate(parse_values(values)):
                if v is not None:
                    self.store.add(lbl, tg.start_ms + i * tg.interval_ms, v)
        self.engine = Engine(default_subquery_step_ms=eval_ms)
        query = instant_query_func(lambda e, t, _tenant="default": self.engine.instant(self.store, e, t))
        opts = RuleOptions(default_interval_ms=eval_ms, external_labels=tg.external_labels,
                           external_url=tg.external_url)
        groups = build_groups(specs, query, opts, append=self._append, notify=None, restored=True, offload=False,
                              interval_ms=eval_ms)
        rank = {n: i for i, n in enumerate(order)}
        self.groups: list[Group] = sorted(groups, key=lambda g: rank.get(g.name, 0))

    async def _append(self, samples: list[OutSample]) -> None:
        for s in samples:
            self.store.add(s.labels, s.ts_ms, s.value)

    def run(self) -> list[str]:
        return asyncio.run(self._run())

    async def _run(self) -> list[str]:
        tg = self.tg
        errs: list[str] = []
        for a in tg.alerts:
            if not a.alertname:
                where = f" (in TestGroup {tg.name})" if tg.name else ""
                return [f"an item under alert_rule_test misses required attribute alertname at eval_time "
                        f"{format_duration_ms(a.eval_ms)}{where}"]
        max_ms = max([a.eval_ms for a in tg.alerts] + [p.eval_ms for p in tg.exprs] + [0])
        pending = sorted(tg.alerts, key=lambda a: a.eval_ms)
        ts = 0
        while ts <= max_ms:
            eval_errs = []
            for g in self.groups:
                await g.eval(tg.start_ms + ts)
                for r in g.rules:
                    if r.last_error:
                        eval_errs.append(f"    rule: {r.name}, time: {format_duration_ms(ts)}, err: {r.last_error}")
            if eval_errs:
                return errs + eval_errs
            while pending and ts <= pending[0].eval_ms < ts + self.eval_ms:
                errs.extend(self._check_alert(pending.pop(0)))
            ts += self.eval_ms
        for p in tg.exprs:
            errs.extend(self._check_expr(p))
        return errs

    def _check_alert(self, case: _AlertCase) -> list[str]:
        got: list[tuple[dict[str, str], dict[str, str]]] = []
        for g in self.groups:
            for r in g.rules:
                if isinstance(r, AlertingRule) and r.name == case.alertname:
                    got += [(dict(a.labels), dict(a.annotations)) for a in r.active.values()
                            if a.state == AlertState.FIRING]
        exp = [({**lb, "alertname": case.alertname}, an) for lb, an in case.exp]

        def key(x: tuple[dict[str, str], dict[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            return sorted(x[0].items()), sorted(x[1].items())

        got.sort(key=key)
        exp.sort(key=key)
        if got == exp:
            return []
        name = f"    name: {self.tg.name},\n" if self.tg.name else ""
        return [f"{name}    alertname: {case.alertname}, time: {format_duration_ms(case.eval_ms)}, \n"
                f"        exp:{_indent(_alerts_str(exp), '            ')}, \n"
                f"        got:{_indent(_alerts_str(got), '            ')}"]

    def _check_expr(self, case: _ExprCase) -> list[str]:
        head = f'    expr: "{case.expr}", time: {format_duration_ms(case.eval_ms)}'
        try:
            res = self.engine.instant(self.store, case.expr, self.tg.start_ms + case.eval_ms)
        except PitwallError as e:
            return [f"{head}, err: {e.message}"]
        got: list[tuple[Labels, float]]
        if res.result_type == "scalar":
            got = [((), float(res.values[0][0]))]
        elif res.result_type == "vector":
            got = [(lb, float(v[0])) for lb, v in zip(res.series, res.values, strict=True)]
        else:
            return [f"{head}, err: rule result is not a vector or scalar"]
        exp: list[tuple[Labels, float]] = []
        for text, v in case.exp:
            try:
                exp.append((parse_series(text) if text.strip() else (), v))
            except TestFileError as e:
                return [f'{head}, err: labels "{text}": {e}']
        got.sort(key=lambda s: s[0])
        exp.sort(key=lambda s: s[0])
        same = len(got) == len(exp) and all(
            g[0] == e[0] and _equal(g[1], e[1], self.fuzzy) for g, e in zip(got, exp, strict=True))
        if same:
            return []
        return [f"{head},\n        exp: {_samples_str(exp)}\n        got: {_samples_str(got)}"]


def run_test_file(path: str) -> list[str]:
    """Errors of one test file (empty when it passes)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        return [f"open {path}: {(e.strerror or str(e)).lower()}"]
    except yaml.YAMLError as e:
        return [f"yaml: {e}"]
    try:
        if not isinstance(raw, dict):
            raise TestFileError("yaml: unmarshal errors: expected a mapping")
        _check_keys(raw, _FILE_KEYS, "main.unitTestFile")
        eval_ms = _dur(raw.get("evaluation_interval"), "evaluation_interval") or 60_000
        order = [str(n) for n in raw.get("group_eval_order") or []]
        if len(set(order)) != len(order):
            dup = next(n for n in order if order.count(n) > 1)
            return [f"group name repeated in evaluation order: {dup}"]
        files = expand_globs([str(f) for f in raw.get("rule_files") or []], Path(path).parent)
        specs: list[GroupSpec] = []
        for f in files:
            got, errs = parse_rule_file(f, promql_check)
            if errs:
                return errs
            specs += got
        if order:
            known = {s.name for s in specs}
            missing = [n for n in order if n not in known]
            if missing:
                return [f"group name {missing[0]!r} in group_eval_order not found"]
        out: list[str] = []
        for rawtg in raw.get("tests") or []:
            tg = _test_group(rawtg, eval_ms)
            out += _Suite(tg, specs, eval_ms, order, bool(raw.get("fuzzy_compare"))).run()
        return out
    except TestFileError as e:
        return [str(e)]


def run_test_files(files: Sequence[str], out: TextIO, err: TextIO) -> int:
    """promtool's RulesUnitTest: prints per file, returns the exit code."""
    failed = False
    for f in files:
        print(f"Unit Testing:  {f}", file=out)
        errs = run_test_file(f)
        if errs:
            print("  FAILED:", file=err)
            for e in errs:
                print(e, file=err)
                print(file=out)
            failed = True
        else:
            print("  SUCCESS", file=out)
        print(file=out)
    return 1 if failed else 0
