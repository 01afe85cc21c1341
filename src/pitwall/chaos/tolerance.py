"""Chaos Toolkit's tolerance types: how a steady-state probe's output is judged.

``true``/``false``, a string, an integer (compared to the output, or to its
``status`` for process/HTTP results), a list (two numbers: an inclusive
range; otherwise membership; ``status`` membership for dicts), and the
objects ``{"type": "regex"|"jsonpath"|"range"|"probe", ...}``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from pitwall.core import regex as user_regex

__all__ = ["ToleranceError", "jsonpath", "within_tolerance"]


class ToleranceError(ValueError):
    """A tolerance the format does not allow (the message says why)."""


_STEP = re.compile(r"\.\.(\w+|\*)|\.(\w+|\*)|\[(\d+|\*|'[^']*'|\"[^\"]*\")\]")


def jsonpath(path: str, value: Any) -> list[Any]:
    """Values ``path`` matches in ``value``: ``$``, ``.key``, ``..key`` (recursive), ``[n]``, ``[*]``,
    ``['key']`` (the subset of JSONPath experiments use)."""
    if not path.startswith("$"):
        raise ToleranceError(f"jsonpath {path!r} must start with $")
    cur = [value]
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ToleranceError(f"jsonpath {path!r}: cannot parse at {path[pos:]!r}")
        pos = m.end()
        if m.group(1) is not None:
            cur = [v for c in cur for v in _descend(c, m.group(1))]
        else:
            key = m.group(2) if m.group(2) is not None else m.group(3)
            cur = [v for c in cur for v in _child(c, key)]
    return cur


def _child(node: Any, key: str) -> list[Any]:
    if key == "*":
        return list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
    if key[:1] in "'\"":
        key = key[1:-1]
    if isinstance(node, list) and key.isdigit():
        i = int(key)
        return [node[i]] if i < len(node) else []
    if isinstance(node, dict) and key in node:
        return [node[key]]
    return []


def _descend(node: Any, key: str) -> list[Any]:
    out = _child(node, key)
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for c in children:
        out += _descend(c, key)
    return out


def _target(tolerance: dict[str, Any], value: Any) -> Any:
    target = tolerance.get("target")
    return value.get(target, value) if target and isinstance(value, dict) else value


def within_tolerance(tolerance: Any, value: Any, run_probe: Callable[[dict[str, Any], Any], Any]) -> bool:
    """Whether ``value`` is within ``tolerance``; ``run_probe(activity, value)`` runs a probe tolerance."""
    if isinstance(tolerance, bool):
        return bool(value == tolerance)
    if isinstance(tolerance, str):
        return bool(value == tolerance)
    if isinstance(tolerance, int):
        if isinstance(value, dict) and "status" in value:
            return bool(value["status"] == tolerance)
        return bool(value == tolerance)
    if isinstance(tolerance, list):
        if isinstance(value, dict) and "status" in value:
            return value["status"] in tolerance
        if len(tolerance) == 2:
            try:
                return bool(tolerance[0] <= value <= tolerance[1])
            except TypeError:
                return False
        return value in tolerance
    if isinstance(tolerance, dict):
        return _typed(tolerance, value, run_probe)
    return False


def _typed(tolerance: dict[str, Any], value: Any, run_probe: Callable[[dict[str, Any], Any], Any]) -> bool:
    kind = tolerance.get("type")
    if kind == "probe":
        try:
            return bool(run_probe(tolerance, value))
        except Exception:
            return False
    if kind == "regex":
        v = _target(tolerance, value)
        return isinstance(v, str) and user_regex.compile(str(tolerance.get("pattern", ""))).search(v) is not None
    if kind == "jsonpath":
        v = _target(tolerance, value)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if isinstance(v, str):
            with contextlib.suppress(json.JSONDecodeError):
                v = json.loads(v)
        values = jsonpath(str(tolerance.get("path", "")), v)
        result = len(values) > 0
        if tolerance.get("count") is not None:
            result = len(values) == tolerance["count"]
        if "expect" in tolerance:
            expect = tolerance["expect"]
            result = values == (expect if isinstance(expect, list) else [expect])
        return result
    if kind == "range":
        v = _target(tolerance, value)
        lo, hi = tolerance.get("range") or [None, None]
        try:
            return Decimal(str(lo)) <= Decimal(str(v)) <= Decimal(str(hi))
        except (InvalidOperation, TypeError):
            return False
    raise ToleranceError(f"unknown tolerance type {kind!r}")


def check_tolerance(tolerance: Any, where: str) -> None:
    """Refuse a tolerance Chaos Toolkit's validation refuses."""
    if tolerance is None:
        raise ToleranceError(f"{where}: hypothesis probe must have a tolerance entry")
    if isinstance(tolerance, bool | int | str | list):
        return
    if not isinstance(tolerance, dict):
        raise ToleranceError(f"{where}: hypothesis probe tolerance must either be an integer, a string, a boolean "
                             "or a pair of values for boundaries")
    kind = tolerance.get("type")
    if kind == "regex" and "pattern" not in tolerance:
        raise ToleranceError(f"{where}: hypothesis regex probe tolerance must have a `pattern` key")
    if kind == "regex":
        try:
            user_regex.compile(str(tolerance["pattern"]))
        except user_regex.RegexError as e:
            raise ToleranceError(f"{where}: tolerance.pattern: {e}") from None
    if kind == "jsonpath" and "path" not in tolerance:
        raise ToleranceError(f"{where}: hypothesis jsonpath probe tolerance must have a `path` key")
    if kind == "range":
        r = tolerance.get("range")
        if not isinstance(r, list) or len(r) != 2 or not all(isinstance(x, int | float) for x in r):
            raise ToleranceError(f"{where}: hypothesis range must be a sequence of two numbers")
    if kind not in ("regex", "jsonpath", "range", "probe"):
        raise ToleranceError(f"{where}: unknown tolerance type {kind!r}")
