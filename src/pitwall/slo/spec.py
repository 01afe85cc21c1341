"""SLO spec files -> ``SLOGroup``s: Sloth ``prometheus/v1``, Sloth's Kubernetes ``PrometheusServiceLevel``
(``sloth.slok.dev/v1``), OpenSLO ``v1alpha`` (as Sloth reads it) and OpenSLO ``v1``.

YAML is read with every scalar as its source text (``yaml.BaseLoader``) and
converted per field, so a label written ``tier: 2`` is the string ``"2"`` as
in Sloth (sigs.k8s.io/yaml turns scalars into a string field's text), and
each conversion error names its field: ``slos[0].objective: not a number: "x"``.
A file may hold several documents (``---``); each Sloth document is one
group. OpenSLO v1 ``SLO`` documents may reference ``SLI``, ``AlertPolicy``
and ``AlertCondition`` documents of the same file (or of the other files of
one ``load_files`` call) by name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pitwall.core.durations import parse_duration_ms
from pitwall.slo.errors import SpecError
from pitwall.slo.model import SLI, SLO, AlertMeta, PluginRef, SLOGroup

__all__ = ["MAX_SPEC_BYTES", "SPEC_OPENSLO_V1", "SPEC_OPENSLO_V1ALPHA", "SPEC_PROMETHEUS_V1", "SPEC_SLOTH_K8S",
           "load_documents", "load_files", "parse_k8s_object", "split_yaml"]

SPEC_PROMETHEUS_V1 = "prometheus/v1"
SPEC_SLOTH_K8S = "sloth.slok.dev/v1"
SPEC_OPENSLO_V1ALPHA = "openslo/v1alpha"
SPEC_OPENSLO_V1 = "openslo/v1"
MAX_SPEC_BYTES = 4 * 1024 * 1024  # a spec file larger than this is refused

_DAY_MS = 86_400_000
_SPLIT_RE = re.compile(r"(?m)^---")
_COMMENT_RE = re.compile(r"(?m)^#.*$")


def split_yaml(text: str) -> list[str]:
    """Documents of a multi-document file as Sloth splits them (whole-line comments dropped)."""
    text = _COMMENT_RE.sub("", text.strip())
    return [d.strip() for d in _SPLIT_RE.split(text) if d.strip()]


class _Node:
    """A parsed YAML value with its path, for typed access with errors naming the field."""

    def __init__(self, value: Any, path: str, where: str) -> None:
        self.value = value
        self.path = path
        self.where = where

    def fail(self, msg: str, sub: str = "") -> SpecError:
        field = f"{self.path}.{sub}" if self.path and sub else (sub or self.path or "(document)")
        return SpecError(f"{self.where}{field}: {msg}")

    def child(self, key: str) -> _Node:
        m = self.mapping()
        return _Node(m.get(key), f"{self.path}.{key}" if self.path else key, self.where)

    def mapping(self) -> dict[str, Any]:
        if self.value is None or self.value == "":
            return {}
        if not isinstance(self.value, dict):
            raise self.fail("must be a mapping")
        return self.value

    def items(self) -> list[_Node]:
        if self.value is None or self.value == "":
            return []
        if not isinstance(self.value, list):
            raise self.fail("must be a list")
        return [_Node(v, f"{self.path}[{i}]", self.where) for i, v in enumerate(self.value)]

    def text(self, key: str, default: str = "") -> str:
        v = self.mapping().get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self.fail("must be a string", key)
        return v

    def number(self, key: str) -> float:
        v = self.text(key, "0")
        try:
            return float(v)
        except ValueError:
            raise self.fail(f"not a number: {v!r}", key) from None

    def integer(self, key: str) -> int:
        v = self.text(key, "0")
        try:
            return int(v)
        except ValueError:
            raise self.fail(f"not an integer: {v!r}", key) from None

    def flag(self, key: str) -> bool:
        v = self.text(key, "false").lower()
        if v not in ("true", "false", "yes", "no", "on", "off"):
            raise self.fail(f"not a boolean: {v!r}", key)
        return v in ("true", "yes", "on")

    def labels(self, key: str) -> dict[str, str]:
        n = self.child(key)
        out = {}
        for k, v in n.mapping().items():
            if isinstance(v, (dict, list)):
                raise n.fail("must be a string", str(k))
            out[str(k)] = "" if v is None else v
        return out


_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # libyaml's parser when PyYAML has it


def _parse(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        raise SpecError(f"{where}could not unmarshal YAML spec: {e}") from None


def _spec_type(doc: Any) -> str:
    if not isinstance(doc, dict):
        return ""
    if "version" in doc and "apiVersion" not in doc:
        return "version"
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if api == SPEC_SLOTH_K8S and kind == "PrometheusServiceLevel":
        return SPEC_SLOTH_K8S
    if api == SPEC_OPENSLO_V1ALPHA and kind == "SLO":
        return SPEC_OPENSLO_V1ALPHA
    if api == SPEC_OPENSLO_V1 and kind in ("SLO", "SLI", "AlertPolicy", "AlertCondition"):
        return f"{SPEC_OPENSLO_V1}/{kind}"
    return ""


def load_documents(texts: Sequence[tuple[str, str]], default_period_ms: int = 30 * _DAY_MS) -> list[SLOGroup]:
    """Groups from ``(source name, text)`` pairs, in order; OpenSLO v1 references resolve across all of them."""
    parsed: list[tuple[str, _Node]] = []
    refs: dict[str, dict[str, _Node]] = {"SLI": {}, "AlertPolicy": {}, "AlertCondition": {}}
    for source, text in texts:
        if len(text.encode()) > MAX_SPEC_BYTES:
            raise SpecError(f"{source}: spec larger than {MAX_SPEC_BYTES} bytes")
        docs = split_yaml(text)
        for i, d in enumerate(docs):
            where = f"{source}: " if len(docs) == 1 else f"{source} (document {i + 1}): "
            node = _Node(_parse(d, where), "", where)
            t = _spec_type(node.value)
            if t.startswith(SPEC_OPENSLO_V1 + "/") and t != f"{SPEC_OPENSLO_V1}/SLO":
                name = node.child("metadata").text("name")
                refs[t.rsplit("/", 1)[1]][name] = node
                continue
            parsed.append((t, node))
    groups = []
    for t, node in parsed:
        if t == "version" and node.text("version") != SPEC_PROMETHEUS_V1:
            v = node.text("version")
            raise node.fail(f'invalid spec version {v!r}, should be "{SPEC_PROMETHEUS_V1}"', "version")
        groups.append(_load_one(t, node, default_period_ms, refs))
    return groups


def _load_one(t: str, node: _Node, period_ms: int, refs: dict[str, dict[str, _Node]]) -> SLOGroup:
    if t == "version":
        return _sloth(node, period_ms, k8s=False)
    if t == SPEC_SLOTH_K8S:
        return _sloth(node, period_ms, k8s=True)
    if t == SPEC_OPENSLO_V1ALPHA:
        return _openslo_v1alpha(node, period_ms)
    if t == f"{SPEC_OPENSLO_V1}/SLO":
        from pitwall.slo.openslo import openslo_v1

        return openslo_v1(node, period_ms, refs)
    raise node.fail("invalid spec, could not load with any of the supported spec types "
                    "(prometheus/v1, sloth.slok.dev/v1 PrometheusServiceLevel, openslo/v1alpha SLO, openslo/v1)")


def load_files(paths: Sequence[str | Path], default_period_ms: int = 30 * _DAY_MS) -> list[SLOGroup]:
    """Groups from spec files (see ``load_documents``)."""
    texts = []
    for p in paths:
        path = Path(p)
        try:
            if path.stat().st_size > MAX_SPEC_BYTES:
                raise SpecError(f"{p}: spec larger than {MAX_SPEC_BYTES} bytes")
            texts.append((str(p), path.read_text()))
        except OSError as e:
            raise SpecError(f"{p}: {e.strerror or e}") from None
    return load_documents(texts, default_period_ms)


def parse_k8s_object(obj: dict[str, Any], default_period_ms: int = 30 * _DAY_MS) -> SLOGroup:
    """A stored ``PrometheusServiceLevel`` (JSON types) -> group; scalars become their text as in YAML."""
    text = yaml.safe_dump(obj)
    m = obj.get("metadata") or {}
    node = _Node(_parse(text, ""), "", f"{m.get('namespace', '')}/{m.get('name', '')}: ")
    return _sloth(node, default_period_ms, k8s=True)


def _plugins(n: _Node) -> tuple[bool, list[PluginRef]]:
    chain = [PluginRef(p.text("id"), p.mapping().get("config"), p.integer("priority")) for p in n.child("chain").items()]
    for i, p in enumerate(chain):
        if not p.id:
            raise n.fail("plugin ID is required", f"chain[{i}].id")
    return n.flag("overridePrevious"), chain


def _sli_plugin(n: _Node) -> tuple[SLI, tuple[str, ...]]:
    """pitwall's built-in SLI plugin; Sloth's other SLI plugins are Go code, not loadable here."""
    from pitwall.slo.latency import PLUGIN_ID, histogram_latency_sli

    if n.text("id") != PLUGIN_ID:
        raise n.fail(f"SLI plugin {n.text('id')!r} is not available (SLI plugins are Go code loaded by Sloth); "
                     f"use events, raw or {PLUGIN_ID}", "id")
    opts = n.child("options")
    buckets = [b.strip() for b in opts.text("buckets").split(",") if b.strip()]
    try:
        lat = histogram_latency_sli(opts.text("metric"), opts.number("threshold"), buckets or None,
                                    opts.text("filter"))
    except SpecError as e:
        raise n.fail(e.message.partition(": ")[2], "options." + e.message.split(":")[0].rsplit(".", 1)[-1]) from None
    except ValueError as e:
        raise n.fail(f"not a number: {e}", "options.buckets") from None
    return lat.sli, (lat.note,) if lat.interpolated else ()


def _alert(alerting: _Node, which: str) -> AlertMeta:
    a = alerting.child(which)
    if a.flag("disable"):
        return AlertMeta(disable=True)
    return AlertMeta(disable=False, name=alerting.text("name"),
                     labels={**alerting.labels("labels"), **a.labels("labels")},
                     annotations={**alerting.labels("annotations"), **a.labels("annotations")})


def _sloth(node: _Node, period_ms: int, *, k8s: bool) -> SLOGroup:
    """Sloth's ``prometheus/v1`` spec or the ``spec`` of its PrometheusServiceLevel (camelCase keys)."""
    spec = node.child("spec") if k8s else node
    keys = {"slo_plugins": "sloPlugins", "error_ratio_query": "errorRatioQuery", "error_query": "errorQuery",
            "total_query": "totalQuery", "page_alert": "pageAlert", "ticket_alert": "ticketAlert"}

    def k(name: str) -> str:
        return keys.get(name, name) if k8s else name

    service = spec.text("service")
    labels = spec.labels("labels")
    group_override, group_chain = _plugins(spec.child(k("slo_plugins")))
    slos_node = spec.child("slos")
    if not slos_node.items():
        raise slos_node.fail("at least one SLO is required")
    slos = []
    for s in slos_node.items():
        override, chain = _plugins(s.child("plugins"))
        plugins = list(group_chain)
        if override:
            plugins = list(chain)
        else:
            plugins += chain
        sli_n = s.child("sli")
        events, raw = sli_n.child("events"), sli_n.child("raw")
        sli = SLI(error_query=events.text(k("error_query")), total_query=events.text(k("total_query")),
                  error_ratio_query=raw.text(k("error_ratio_query")))
        notes: tuple[str, ...] = ()
        if sli_n.mapping().get("plugin") is not None:
            sli, notes = _sli_plugin(sli_n.child("plugin"))
        if events.value is not None and raw.value is not None:
            raise sli_n.fail("only one SLI type is allowed (events or raw)")
        alerting = s.child("alerting")
        name = s.text("name")
        slos.append(SLO(
            id=f"{service}-{name}", name=name, service=service, sli=sli, period_ms=period_ms,
            objective=s.number("objective"), description=s.text("description"),
            labels={**labels, **s.labels("labels")},
            page=_alert(alerting, k("page_alert")), ticket=_alert(alerting, k("ticket_alert")),
            plugins=tuple(plugins), override_plugins=override or group_override, notes=notes))
    k8s_meta = None
    if k8s:
        m = node.child("metadata")
        k8s_meta = {"name": m.text("name"), "namespace": m.text("namespace"), "labels": m.labels("labels"),
                    "annotations": m.labels("annotations")}
    return SLOGroup(tuple(slos), SPEC_SLOTH_K8S if k8s else SPEC_PROMETHEUS_V1, k8s_meta)


# OpenSLO good/total ratio -> error ratio, exactly as Sloth writes it.
_OPENSLO_ERROR_RATIO = """
  1 - (
    (
      {good}
    )
    /
    (
      {total}
    )
  )
"""


def openslo_error_ratio(good: str, total: str) -> str:
    """Sloth's raw error-ratio query for an OpenSLO good/total ratio."""
    return _OPENSLO_ERROR_RATIO.format(good=good, total=total)


def _openslo_v1alpha(node: _Node, period_ms: int) -> SLOGroup:
    spec = node.child("spec")
    objectives = spec.child("objectives")
    if not objectives.items():
        raise objectives.fail("at least one SLO is required")
    tws = spec.child("timeWindows").items()
    if len(tws) > 1:
        raise spec.fail("only 1 time window is supported", "timeWindows")
    if tws:
        if tws[0].text("unit").lower() != "day":
            raise tws[0].fail("only days based time windows are supported", "unit")
        period_ms = tws[0].integer("count") * _DAY_MS
    service, name = spec.text("service"), node.child("metadata").text("name")
    slos = []
    for idx, o in enumerate(objectives.items()):
        ratio = o.child("ratioMetrics")
        if ratio.value is None:
            raise o.fail("missing ratioMetrics")
        good, total = ratio.child("good"), ratio.child("total")
        for part in (good, total):
            if part.text("source") not in ("prometheus", "sloth"):
                raise part.fail("prometheus or sloth query source is required", "source")
            if part.text("queryType") != "promql":
                raise part.fail(f"unsupported query type: {part.text('queryType')!r}", "queryType")
        if o.mapping().get("target") is None:
            raise o.fail("is required", "target")
        slos.append(SLO(
            id=f"{service}-{name}-{idx}", name=f"{name}-{idx}", service=service,
            sli=SLI(error_ratio_query=openslo_error_ratio(good.text("query"), total.text("query"))),
            period_ms=period_ms, objective=o.number("target") * 100, description=spec.text("description")))
    return SLOGroup(tuple(slos), SPEC_OPENSLO_V1ALPHA)


def period_of(text: str, node: _Node, key: str) -> int:
    """A duration field ("30d", "4w") in milliseconds, with an error naming it."""
    try:
        return parse_duration_ms(text)
    except ValueError as e:
        raise node.fail(str(e), key) from None
