"""Prometheus rule files: parsing and validation with promtool's messages.

The file format is Prometheus' (``groups:`` of recording and alerting
rules); Loki's ruler uses the same format with LogQL expressions, so the
expression check is a parameter. Errors carry YAML line:column positions
exactly as ``promtool check rules`` prints them, e.g.
``5:15: group "g", rule 1, "Bad": could not parse expression: ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pitwall.core.durations import parse_duration_ms
from pitwall.core.gotemplate import Template, TemplateError

__all__ = ["ExprCheck", "GroupSpec", "RuleSpec", "parse_rule_file", "parse_rules"]

# Returns an error message for an invalid expression, None when it parses.
ExprCheck = Callable[[str], "str | None"]

_GROUP_FIELDS = {"name", "interval", "query_offset", "limit", "rules", "labels"}
_RULE_FIELDS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
TEMPLATE_DEFS = (
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}"
    "{{$externalURL := .ExternalURL}}{{$value := .Value}}"
)


@dataclass(frozen=True)
class RuleSpec:
    """One rule as written in the file."""

    name: str
    expr: str
    alert: bool
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupSpec:
    """One rule group; ``interval_ms``/``query_offset_ms`` None means the global default."""

    name: str
    file: str
    rules: list[RuleSpec]
    interval_ms: int | None = None
    query_offset_ms: int | None = None
    limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def _pos(node: yaml.Node | None) -> str:
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node is not None else "0:0"


def _mapping(node: yaml.Node) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return {k.value: (k, v) for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}


def _tag(node: yaml.Node) -> str:
    return node.tag.rsplit(":", 1)[-1]


class _Decoder:
    """Walks the composed YAML tree, collecting errors in yaml.v3's style."""

    def __init__(self) -> None:
        self.unmarshal: list[str] = []
        self.errors: list[str] = []

    def type_error(self, node: yaml.Node, go_type: str) -> None:
        value = node.value if isinstance(node, yaml.ScalarNode) else ""
        shown = f"`{value}`" if value else ""
        self.unmarshal.append(
            f"line {node.start_mark.line + 1}: cannot unmarshal !!{_tag(node)} {shown}{' ' if shown else ''}"
            f"into {go_type}".replace("  ", " "))

    def string(self, node: yaml.Node | None) -> str:
        if node is None:
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self.type_error(node, "string")
            return ""
        return "" if _tag(node) == "null" else str(node.value)

    def integer(self, node: yaml.Node | None) -> int:
        if node is None:
            return 0
        if isinstance(node, yaml.ScalarNode) and _tag(node) == "int":
            return int(node.value, 0)
        self.type_error(node, "int")
        return 0

    def duration(self, node: yaml.Node | None) -> int | None:
        if node is None:
            return None
        text = self.string(node)
        try:
            return parse_duration_ms(text)
        except ValueError:
            self.errors.append(f'not a valid duration string: "{text}"')
            return 0

    def str_map(self, node: yaml.Node | None) -> dict[str, str]:
        if node is None or (isinstance(node, yaml.ScalarNode) and _tag(node) == "null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.type_error(node, "map[string]string")
            return {}
        return {self.string(k): self.string(v) for k, v in node.value}

    def check_fields(self, node: yaml.Node, known: set[str], go_type: str) -> None:
        for k, _v in node.value:
            if k.value not in known:
                self.unmarshal.append(f"line {k.start_mark.line + 1}: field {k.value} not found in type {go_type}")


def parse_rules(text: str, filename: str, expr_check: ExprCheck) -> tuple[list[GroupSpec], list[str]]:
    """Groups in ``text`` and the validation errors (promtool's wording, no file prefix)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        msg = f"yaml: {where}{problem}"
        return [], [msg, msg]  # promtool decodes twice and reports both
    if root is None:
        return [], []
    dec = _Decoder()
    group_nodes: list[tuple[yaml.Node, dict[str, tuple[yaml.Node, yaml.Node]]]] = []
    if not isinstance(root, yaml.MappingNode):
        dec.type_error(root, "rulefmt.RuleGroups")
    else:
        dec.check_fields(root, {"groups"}, "rulefmt.RuleGroups")
        groups_node = _mapping(root).get("groups", (None, None))[1]
        if isinstance(groups_node, yaml.SequenceNode):
            for gnode in groups_node.value:
                if not isinstance(gnode, yaml.MappingNode):
                    dec.type_error(gnode, "rulefmt.RuleGroup")
                    continue
                dec.check_fields(gnode, _GROUP_FIELDS, "rulefmt.RuleGroup")
                group_nodes.append((gnode, _mapping(gnode)))
        elif groups_node is not None and _tag(groups_node) != "null":
            dec.type_error(groups_node, "[]rulefmt.RuleGroup")
    groups = [_group(dec, filename, gnode, fields) for gnode, fields in group_nodes]
    if dec.unmarshal:
        return [], ["yaml: unmarshal errors:\n  " + "\n  ".join(dec.unmarshal)]
    if dec.errors:
        return [], dec.errors[:1]
    return groups, _validate(groups, group_nodes, expr_check)


def _group(dec: _Decoder, filename: str, gnode: yaml.Node, f: dict[str, tuple[yaml.Node, yaml.Node]]) -> GroupSpec:
    def val(key: str) -> yaml.Node | None:
        return f[key][1] if key in f else None

    rules: list[RuleSpec] = []
    rules_node = val("rules")
    if isinstance(rules_node, yaml.SequenceNode):
        for rnode in rules_node.value:
            if not isinstance(rnode, yaml.MappingNode):
                dec.type_error(rnode, "rulefmt.RuleNode")
                continue
            dec.check_fields(rnode, _RULE_FIELDS, "rulefmt.RuleNode")
            rules.append(_rule(dec, _mapping(rnode)))
    elif rules_node is not None and _tag(rules_node) != "null":
        dec.type_error(rules_node, "[]rulefmt.RuleNode")
    return GroupSpec(
        name=dec.string(val("name")),
        file=filename,
        rules=rules,
        interval_ms=dec.duration(val("interval")) or None,
        query_offset_ms=dec.duration(val("query_offset")),
        limit=dec.integer(val("limit")),
        labels=dec.str_map(val("labels")),
    )


def _rule(dec: _Decoder, f: dict[str, tuple[yaml.Node, yaml.Node]]) -> RuleSpec:
    def val(key: str) -> yaml.Node | None:
        return f[key][1] if key in f else None

    alert = dec.string(val("alert"))
    record = dec.string(val("record"))
    return RuleSpec(
        name=alert or record,
        expr=dec.string(val("expr")),
        alert=bool(alert) or not record,
        for_ms=dec.duration(val("for")) or 0,
        keep_firing_for_ms=dec.duration(val("keep_firing_for")) or 0,
        labels=dec.str_map(val("labels")),
        annotations=dec.str_map(val("annotations")),
    )


def _validate(groups: list[GroupSpec], nodes: list[tuple[yaml.Node, dict[str, tuple[yaml.Node, yaml.Node]]]],
              expr_check: ExprCheck) -> list[str]:
    errs: list[str] = []
    seen: set[str] = set()
    for g, (gnode, _f) in zip(groups, nodes, strict=True):
        if g.name == "":
            errs.append(f"{_pos(gnode)}: Groupname must not be empty")
        if g.name in seen:
            errs.append(f'{_pos(gnode)}: groupname: "{g.name}" is repeated in the same file')
        seen.add(g.name)
        for k, v in g.labels.items():
            errs.extend(_label_errors(k, v))
        rule_nodes = _rule_nodes(_f)
        for i, (r, rf) in enumerate(zip(g.rules, rule_nodes, strict=True), start=1):
            for msg in _rule_errors(r, rf, expr_check):
                errs.append(f'{msg[0]}group "{g.name}", rule {i}, "{r.name}": {msg[1]}')
    return errs


def _rule_nodes(f: dict[str, tuple[yaml.Node, yaml.Node]]) -> list[dict[str, tuple[yaml.Node, yaml.Node]]]:
    node = f.get("rules", (None, None))[1]
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [_mapping(r) for r in node.value if isinstance(r, yaml.MappingNode)]


def _label_errors(k: str, v: str) -> list[str]:
    # Prometheus 3 validates names as UTF-8: only empty names and __name__ are invalid.
    out = []
    if k == "" or k == "__name__":
        out.append(f"invalid label name: {k}")
    return out + ([] if isinstance(v, str) else [f"invalid label value: {v}"])


def _rule_errors(r: RuleSpec, f: dict[str, tuple[yaml.Node, yaml.Node]],
                 expr_check: ExprCheck) -> list[tuple[str, str]]:
    """(position prefix, message) pairs for one rule, in Prometheus' order."""
    def node(key: str) -> yaml.Node | None:
        return f[key][1] if key in f else None

    rec, alt = node("record"), node("alert")
    both = f"{_pos(rec)}: {_pos(alt)}: "
    has_record = "record" in f and bool(rec is not None and getattr(rec, "value", ""))
    has_alert = "alert" in f and bool(alt is not None and getattr(alt, "value", ""))
    out: list[tuple[str, str]] = []
    if has_record and has_alert:
        out.append((both, "only one of 'record' and 'alert' must be set"))
    if not has_record and not has_alert:
        out.append((both, "one of 'record' or 'alert' must be set"))
    expr_pos = f"{_pos(node('expr'))}: "
    if r.expr == "":
        out.append((expr_pos, "field 'expr' must be set in rule"))
    else:
        problem = expr_check(r.expr)
        if problem is not None:
            out.append((expr_pos, f"could not parse expression: {problem}"))
    if has_record:
        rp = f"{_pos(rec)}: "
        if r.annotations:
            out.append((rp, "invalid field 'annotations' in recording rule"))
        if r.for_ms:
            out.append((rp, "invalid field 'for' in recording rule"))
        if r.keep_firing_for_ms:
            out.append((rp, "invalid field 'keep_firing_for' in recording rule"))
        if "{" in r.name or "}" in r.name:
            out.append((rp, f"braces present in the recording rule name; should it be in expr?: {r.name}"))
    for k, v in r.labels.items():
        out.extend(("", e) for e in _label_errors(k, v))
    for k in r.annotations:
        if k == "":
            out.append(("", f"invalid annotation name: {k}"))
    if has_alert:
        out.extend(("", e) for e in template_errors(r))
    return out


def template_errors(r: RuleSpec) -> list[str]:
    """Labels and annotations must parse as templates (functions are checked by name)."""
    from pitwall.alerting.rules.templates import FUNCTION_NAMES

    funcs = dict.fromkeys(FUNCTION_NAMES, _noop)
    errs = []
    for kind, items in (("label", r.labels), ("annotation", r.annotations)):
        for k, text in items.items():
            try:
                Template(f"__alert_{r.name}", funcs).parse(TEMPLATE_DEFS + text)
            except TemplateError as e:
                errs.append(f'{kind} "{k}": {e.message}')
    return errs


def _noop(*_args: Any) -> None:
    return None


def parse_rule_file(path: str | Path, expr_check: ExprCheck) -> tuple[list[GroupSpec], list[str]]:
    """Groups of a file and its errors, each prefixed with the file name as promtool does."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        return [], [f"{path}: open {path}: {(e.strerror or str(e)).lower()}"]
    groups, errs = parse_rules(text, str(path), expr_check)
    return groups, [f"{path}: {e}" for e in errs]
