"""Prometheus' template functions on top of ``core.gotemplate``.

Alert labels and annotations are expanded as Prometheus expands them
(``template/template.go``): ``missingkey=zero``, ``$labels``/``$value``/
``$externalLabels``/``$externalURL`` defined by a prefix, and errors
wrapped as ``error executing template NAME: ...``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote_plus, urlparse

from pitwall.core import regex
from pitwall.core.durations import parse_duration_ms
from pitwall.core.gofmt import format_float, go_sprintf, go_type_name
from pitwall.core.gotemplate import Template, TemplateError, ZeroMap
from pitwall.core.labels import Labels

__all__ = ["FUNCTION_NAMES", "AlertTemplateData", "QueryVector", "TemplateSample", "expand"]

# (expr, at_ms) -> [(labels, value)]: what ``query`` needs.
QueryVector = Callable[[str, int], list[tuple[Labels, float]]]


class TemplateSample:
    """Prometheus' template ``sample``: ``.Labels`` (map[string]string) and ``.Value``."""

    def __init__(self, labels: Mapping[str, str], value: float) -> None:
        self.Labels = ZeroMap(dict(labels))
        self.Value = value

    def __go_str__(self) -> str:
        return f"{{{self.Labels} {format_float(self.Value)}}}"


class AlertTemplateData:
    """The dot of an alert template (``template.AlertTemplateData``)."""

    def __init__(self, labels: Mapping[str, str], external_labels: Mapping[str, str], external_url: str,
                 value: float) -> None:
        self.Labels = ZeroMap(dict(labels))
        self.ExternalLabels = ZeroMap(dict(external_labels))
        self.ExternalURL = external_url
        self.Value = value


class GoTime:
    """A ``time.Time`` in UTC; prints as Go does (``2022-01-25 12:36:43 +0000 UTC``)."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __go_str__(self) -> str:
        secs, frac = divmod(self.ns, 1_000_000_000)
        base = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        tail = f".{frac:09d}".rstrip("0") if frac else ""
        return f"{base}{tail} +0000 UTC"

    def Unix(self) -> int:
        return self.ns // 1_000_000_000

    def UnixMilli(self) -> int:
        return self.ns // 1_000_000


def to_float(v: Any) -> float:
    """Prometheus' ``convertToFloat``."""
    if isinstance(v, bool):
        raise ValueError("can't convert bool to float")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            if "_" in v:  # Python accepts digit separators, Go's ParseFloat does not
                raise ValueError(v)
            return float(v)
        except ValueError:
            raise ValueError(f'strconv.ParseFloat: parsing "{v}": invalid syntax') from None
    if isinstance(v, GoTime):
        return v.ns / 1e9
    raise ValueError(f"can't convert {go_type_name(v)} to float")


def _g4(v: float) -> str:
    return go_sprintf("%.4g", v)


def humanize(i: Any) -> str:
    v = to_float(i)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(i: Any) -> str:
    v = to_float(i)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanize_duration(i: Any) -> str:
    v = to_float(i)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def humanize_percentage(i: Any) -> str:
    return go_sprintf("%.4g%%", to_float(i) * 100)


def humanize_timestamp(i: Any) -> str:
    v = to_float(i)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    ns = v * 1e9
    if not -(2**63) <= ns < 2**63:
        raise ValueError(f"{format_float(v)} cannot be represented as a nanoseconds timestamp since it overflows int64")
    return GoTime(int(ns)).__go_str__()


def to_time(i: Any) -> GoTime:
    v = to_float(i)
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"cannot convert {format_float(v)} to time")
    return GoTime(int(v * 1e9))


def parse_duration(d: str) -> float:
    try:
        return parse_duration_ms(d) / 1000
    except ValueError:
        raise ValueError(f'not a valid duration string: "{d}"') from None


def split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``; None where Go returns an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1:].startswith(":"):
            return None
        return hostport[1:end], hostport[end + 2:]
    host, sep, port = hostport.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


def strip_port(hostport: str) -> str:
    parts = split_host_port(hostport)
    return hostport if parts is None else parts[0]


def strip_domain(hostport: str) -> str:
    parts = split_host_port(hostport)
    host, port = (hostport, "") if parts is None else parts
    try:
        ipaddress.ip_address(host)
        return hostport
    except ValueError:
        pass
    short = host.split(".", 1)[0]
    if parts is None:
        return short
    return f"{short}:{port}"


def title(s: str) -> str:
    """Go's deprecated ``strings.Title``: upper-case letters that begin words."""
    out: list[str] = []
    prev_sep = True
    for c in s:
        out.append(c.upper() if prev_sep else c)
        prev_sep = not (c.isalnum() or c == "_") if ord(c) < 0x80 else c.isspace()
    return "".join(out)


def re_replace_all(pattern: str, repl: str, text: str) -> str:
    """Go's ``Regexp.ReplaceAllString`` (RE2): ``$1``/``${name}`` expand; unknown groups are empty."""
    return _compile(pattern).replace_all(text, repl)


def _compile(pattern: str) -> regex.Regex:
    return regex.compile(pattern)  # RegexError: a ValueError with Go's "error parsing regexp: ..."


def match(pattern: str, text: str) -> bool:
    """Go's ``regexp.MatchString``."""
    return _compile(pattern).matches(text)


def graph_link(expr: str) -> str:
    return f"/graph?g0.expr={quote_plus(expr, safe='-_.~')}&g0.tab=0"


def table_link(expr: str) -> str:
    return f"/graph?g0.expr={quote_plus(expr, safe='-_.~')}&g0.tab=1"


def first(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and v:
        return v[0]
    raise ValueError("first() called on vector with no elements")


def label(name: str, s: Any) -> str:
    if s is None:
        raise ValueError("nil pointer dereference")
    return str(s.Labels.get(name, ""))


def value(s: Any) -> float:
    if s is None:
        raise ValueError("nil pointer dereference")
    return float(s.Value)


def strvalue(s: Any) -> str:
    return str(s.Labels.get("__value__", ""))


def sort_by_label(name: str, v: list[Any]) -> list[Any]:
    return sorted(v, key=lambda s: s.Labels.get(name, ""))  # sorted() is stable, as sort.Stable


def args(*items: Any) -> dict[str, Any]:
    return {f"arg{i}": a for i, a in enumerate(items)}


FUNCTION_NAMES = (
    "query", "first", "label", "value", "strvalue", "args", "reReplaceAll", "safeHtml", "match", "title",
    "toUpper", "toLower", "graphLink", "tableLink", "sortByLabel", "stripPort", "stripDomain", "humanize",
    "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp", "toTime", "pathPrefix",
    "externalURL", "parseDuration", "tmpl",
)


def functions(query: QueryVector | None, ts_ms: int, external_url: str,
              tmpl: Callable[[str, Any], str]) -> dict[str, Callable[..., Any]]:
    """The function map of one expansion (``query`` runs at the evaluation time)."""

    def run_query(q: str) -> list[TemplateSample]:
        if query is None:
            raise ValueError("queries are not available in this template")
        return [TemplateSample(dict(lbl), v) for lbl, v in query(q, ts_ms)]

    path = urlparse(external_url).path if external_url else ""
    return {
        "query": run_query, "first": first, "label": label, "value": value, "strvalue": strvalue,
        "args": args, "reReplaceAll": re_replace_all, "safeHtml": lambda text: text, "match": match,
        "title": title, "toUpper": str.upper, "toLower": str.lower, "graphLink": graph_link,
        "tableLink": table_link, "sortByLabel": sort_by_label, "stripPort": strip_port,
        "stripDomain": strip_domain, "humanize": humanize, "humanize1024": humanize1024,
        "humanizeDuration": humanize_duration, "humanizePercentage": humanize_percentage,
        "humanizeTimestamp": humanize_timestamp, "toTime": to_time, "pathPrefix": lambda: path,
        "externalURL": lambda: external_url, "parseDuration": parse_duration, "tmpl": tmpl,
    }


def expand(text: str, name: str, data: Any, *, ts_ms: int, query: QueryVector | None = None,
           external_url: str = "") -> str:
    """Expand ``text`` as Prometheus' ``Expander.Expand``; raises TemplateError with its wrapping."""
    t = Template(name)

    def tmpl(tname: str, tdata: Any) -> str:
        return t.execute(tdata, name=tname)

    t.funcs(functions(query, ts_ms, external_url, tmpl)).option("missingkey=zero")
    try:
        t.parse(text)
    except TemplateError as e:
        raise TemplateError(f"error parsing template {name}: {e.message}") from e
    try:
        return t.execute(data)
    except TemplateError as e:
        raise TemplateError(f"error executing template {name}: {e.message}") from e
