"""Prometheus relabeling (``relabel_configs`` / ``metric_relabel_configs``).

Semantics follow Prometheus' ``model/relabel``: source label values are joined
with ``separator``, matched against a fully anchored ``regex``, and the action
decides what happens. ``$1``, ``${1}``, ``$name`` and ``$$`` in ``target_label``
and ``replacement`` expand as Go's ``regexp.Expand`` does (a ``$`` that starts
no valid reference stays literal; references to unknown or unmatched groups
become empty). Setting a label to the empty string deletes it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pitwall.core import regex
from pitwall.core.regex import Regex

__all__ = [
    "RelabelAction",
    "RelabelConfig",
    "compile_regex",
    "is_valid_label_name",
    "relabel",
]

NameScheme = Literal["utf8", "legacy"]

_LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Prometheus' ``relabelTarget``: a label name in which ``$var`` / ``${var}`` may appear. Nested
# repetition, so RE2: Python's ``re`` takes seconds on "$aaaaaaaaaaaaaaaaaaa!".
_RELABEL_TARGET = regex.compile(r"(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+", anchored=True)

DEFAULT_REGEX = "(.*)"
DEFAULT_SEPARATOR = ";"
DEFAULT_REPLACEMENT = "$1"


class RelabelAction(StrEnum):
    REPLACE = "replace"
    KEEP = "keep"
    DROP = "drop"
    KEEPEQUAL = "keepequal"
    DROPEQUAL = "dropequal"
    HASHMOD = "hashmod"
    LABELMAP = "labelmap"
    LABELDROP = "labeldrop"
    LABELKEEP = "labelkeep"
    LOWERCASE = "lowercase"
    UPPERCASE = "uppercase"


def is_valid_label_name(name: str, scheme: NameScheme = "utf8") -> bool:
    """Label name validity: any non-empty string under UTF-8 (Prometheus 3 default), else legacy."""
    if scheme == "legacy":
        return _LEGACY_LABEL_NAME.match(name) is not None
    return name != ""


def compile_regex(expr: str) -> Regex:
    """A Prometheus relabel regex: RE2, fully anchored (compiled once per distinct expression)."""
    return regex.compile(expr, anchored=True)


class RelabelConfig(BaseModel):
    """One relabeling rule, validated as Prometheus' ``relabel.Config.Validate`` does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_labels: list[str] | None = None
    separator: str = DEFAULT_SEPARATOR
    regex: str = DEFAULT_REGEX
    modulus: int = Field(default=0, ge=0)
    target_label: str = ""
    replacement: str = DEFAULT_REPLACEMENT
    action: RelabelAction = RelabelAction.REPLACE

    @field_validator("action", mode="before")
    @classmethod
    def _lower_action(cls, v: Any) -> Any:
        if v is None or v == "":
            raise ValueError("relabel action cannot be empty")
        if isinstance(v, str):
            low = v.lower()
            if low not in {a.value for a in RelabelAction}:
                raise ValueError(f'unknown relabel action "{v}"')
            return low
        return v

    @field_validator("regex", mode="before")
    @classmethod
    def _regex_compiles(cls, v: Any) -> Any:
        # An explicit null regex becomes the empty regex, as in Prometheus.
        if v is None:
            return ""
        if isinstance(v, str):
            compile_regex(v)  # RegexError is a ValueError with Go's text
        return v

    @model_validator(mode="after")
    def _validate(self) -> RelabelConfig:
        self._check("utf8")
        return self

    @property
    def compiled(self) -> Regex:
        """The anchored, compiled regex (compiled once per distinct expression)."""
        return compile_regex(self.regex)

    def _check(self, scheme: NameScheme) -> None:
        a = self.action
        A = RelabelAction
        tl = self.target_label
        if a is A.HASHMOD and self.modulus == 0:
            raise ValueError("relabel configuration for hashmod requires non-zero modulus")
        needs_target = {A.REPLACE, A.HASHMOD, A.LOWERCASE, A.UPPERCASE, A.KEEPEQUAL, A.DROPEQUAL}
        if a in needs_target and tl == "":
            raise ValueError(f"relabel configuration for {a.value} action requires 'target_label' value")
        if a is A.REPLACE:
            ok = (
                (_RELABEL_TARGET.matches(tl) if scheme == "legacy" else tl != "")
                if "$" in tl
                else is_valid_label_name(tl, scheme)
            )
            if not ok:
                raise ValueError(f'"{tl}" is invalid \'target_label\' for {a.value} action')
        if a in {A.LOWERCASE, A.UPPERCASE, A.KEEPEQUAL, A.DROPEQUAL, A.HASHMOD} and not is_valid_label_name(
            tl, scheme
        ):
            raise ValueError(f'"{tl}" is invalid \'target_label\' for {a.value} action')
        if a in {A.LOWERCASE, A.UPPERCASE, A.KEEPEQUAL, A.DROPEQUAL} and self.replacement != DEFAULT_REPLACEMENT:
            raise ValueError(f"'replacement' can not be set for {a.value} action")
        if a is A.LABELMAP:
            ok = (
                _RELABEL_TARGET.matches(self.replacement)
                if scheme == "legacy"
                else self.replacement != ""
            )
            if not ok:
                raise ValueError(f'"{self.replacement}" is invalid \'replacement\' for {a.value} action')
        if a in {A.KEEPEQUAL, A.DROPEQUAL} and (
            self.regex != DEFAULT_REGEX
            or self.modulus != 0
            or self.separator != DEFAULT_SEPARATOR
            or self.replacement != DEFAULT_REPLACEMENT
        ):
            raise ValueError(f"{a.value} action requires only 'source_labels' and `target_label`, and no other fields")
        if a in {A.LABELDROP, A.LABELKEEP} and (
            self.source_labels is not None
            or tl != ""
            or self.modulus != 0
            or self.separator != DEFAULT_SEPARATOR
            or self.replacement != DEFAULT_REPLACEMENT
        ):
            raise ValueError(f"{a.value} action requires only 'regex', and no other fields")

    def validate_names(self, scheme: NameScheme) -> None:
        """Re-check label-name rules under ``scheme`` (``legacy`` is stricter than the default)."""
        self._check(scheme)


def _set(labels: dict[str, str], name: str, value: str) -> None:
    # Prometheus' labels.Builder.Set deletes a label set to "".
    if value == "":
        labels.pop(name, None)
    else:
        labels[name] = value


def _hashmod(val: str, modulus: int) -> int:
    # Prometheus: md5 of the value, last 8 bytes as a big-endian uint64, modulo.
    digest = hashlib.md5(val.encode("utf-8")).digest()
    return int.from_bytes(digest[8:], "big") % modulus


def _apply(cfg: RelabelConfig, lb: dict[str, str], scheme: NameScheme) -> bool:
    """Apply one rule in place; False means the label set is dropped."""
    src = cfg.source_labels or ()
    val = cfg.separator.join(lb.get(n, "") for n in src)
    rx = cfg.compiled
    a = cfg.action
    A = RelabelAction
    if a is A.REPLACE:
        _replace(cfg, lb, val, scheme)
    elif a is A.KEEP:
        return rx.matches(val)
    elif a is A.DROP:
        return not rx.matches(val)
    elif a is A.KEEPEQUAL:
        return lb.get(cfg.target_label, "") == val
    elif a is A.DROPEQUAL:
        return lb.get(cfg.target_label, "") != val
    elif a is A.LOWERCASE:
        _set(lb, cfg.target_label, val.lower())
    elif a is A.UPPERCASE:
        _set(lb, cfg.target_label, val.upper())
    elif a is A.HASHMOD:
        _set(lb, cfg.target_label, str(_hashmod(val, cfg.modulus)))
    elif a is A.LABELMAP:
        # Iterate over a snapshot: labels added by this rule are not revisited.
        for name, value in list(lb.items()):
            m = rx.search(name)
            if m is not None:
                _set(lb, m.expand(cfg.replacement), value)
    elif a is A.LABELDROP:
        for name in [n for n in lb if rx.matches(n)]:
            del lb[name]
    elif a is A.LABELKEEP:
        for name in [n for n in lb if not rx.matches(n)]:
            del lb[name]
    return True


def _replace(cfg: RelabelConfig, lb: dict[str, str], val: str, scheme: NameScheme) -> None:
    # Prometheus' fast path: nothing to expand and an empty input with the default regex.
    if (
        val == ""
        and cfg.regex == DEFAULT_REGEX
        and "$" not in cfg.target_label
        and "$" not in cfg.replacement
    ):
        _set(lb, cfg.target_label, cfg.replacement)
        return
    m = cfg.compiled.search(val)
    if m is None:
        return
    target = m.expand(cfg.target_label)
    if not is_valid_label_name(target, scheme):
        return
    res = m.expand(cfg.replacement)
    _set(lb, target, res)


def relabel(
    labels: dict[str, str],
    configs: Sequence[RelabelConfig],
    *,
    scheme: NameScheme = "utf8",
) -> dict[str, str] | None:
    """Apply ``configs`` in order to a copy of ``labels``; None when the set is dropped.

    Labels with empty values are removed from the result, as Prometheus
    treats an empty value as an absent label.
    """
    lb = {k: v for k, v in labels.items() if v != ""}
    for cfg in configs:
        if not _apply(cfg, lb, scheme):
            return None
    return lb
