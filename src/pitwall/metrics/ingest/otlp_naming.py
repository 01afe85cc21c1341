"""OTLP -> Prometheus names, labels and values, as Prometheus' OTLP receiver spells them.

Follows the ``prometheus/otlptranslator`` module with the settings Prometheus
3.x uses by default: translation strategy ``UnderscoreEscapingWithSuffixes``
(invalid characters escaped to ``_``, unit and type suffixes added),
``label_name_underscore_sanitization: true`` and
``label_name_preserve_multiple_underscores: true``.

Also holds the Go value renderings the translator relies on:
``strconv.FormatFloat(v, 'f', -1, 64)`` (``le`` and ``quantile`` labels),
pdata's ``Value.AsString`` (attribute values), and the attribute -> label and
exemplar conversions of ``prometheusremotewrite/helper.go``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

from pitwall.core.gofmt import format_float, format_float_f

__all__ = [
    "InvalidNameError",
    "MetricKind",
    "any_value_to_str",
    "attribute_labels",
    "attribute_pairs",
    "build_label_name",
    "build_metric_name",
    "build_unit",
    "exemplar_labels",
    "format_float_f",
    "set_label",
]

_MAX_EXEMPLAR_RUNES = 128  # OpenMetrics' limit on the characters of exemplar labels


class InvalidNameError(ValueError):
    """A metric or label name that normalises to nothing usable."""


class MetricKind(Enum):
    """The otlptranslator metric types that change a name's suffixes."""

    GAUGE = "gauge"
    MONOTONIC_COUNTER = "monotonic_counter"
    NON_MONOTONIC_COUNTER = "non_monotonic_counter"
    HISTOGRAM = "histogram"
    EXPONENTIAL_HISTOGRAM = "exponential_histogram"
    SUMMARY = "summary"


# UCUM unit -> Prometheus unit word (the classic map used by the default
# strategy; "1" maps to nothing, "{...}" annotations are dropped elsewhere).
UNIT_MAP: dict[str, str] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}

# The denominator of "x/y" units, singular as in "bytes_per_second".
PER_UNIT_MAP: dict[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

_INVALID_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_METRIC_CHAR = re.compile(r"[^a-zA-Z0-9:]")
_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_MULTI_UNDERSCORE = re.compile(r"__+")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """Main and ``per_`` suffixes of a UCUM unit, before character clean-up."""
    main_otel, sep, per_part = unit.partition("/")
    main_otel = main_otel.strip()
    main = ""
    if main_otel and "{" not in main_otel and "}" not in main_otel:
        main = UNIT_MAP.get(main_otel, main_otel)
    per = ""
    if sep and per_part:
        per_otel = per_part.strip()
        if per_otel and "{" not in per_otel and "}" not in per_otel:
            per = PER_UNIT_MAP.get(per_otel, per_otel)
        if per:
            per = "per_" + per
    return main, per


def _clean_unit(unit: str) -> str:
    """Escape a unit word to metric-name characters, collapse and left-trim ``_``."""
    escaped = _INVALID_METRIC_CHAR.sub("_", unit)
    return _MULTI_UNDERSCORE.sub("_", escaped).removeprefix("_")


def build_metric_name(name: str, unit: str, kind: MetricKind) -> str:
    """Prometheus metric name for an OTLP metric (``UnderscoreEscapingWithSuffixes``).

    ``http.server.duration`` in ``ms`` as a histogram gives
    ``http_server_duration_milliseconds``; a monotonic sum gets ``_total``; a
    gauge with unit ``1`` gets ``_ratio``. Raises ``InvalidNameError`` when the
    result is empty or only underscores.
    """
    # Splitting on runs of invalid characters (``_`` included) also collapses
    # repeated underscores, as the OpenTelemetry compatibility spec asks.
    tokens = [t for t in _INVALID_METRIC_CHARS.split(name) if t]
    main, per = _unit_suffixes(unit)
    tokens = _add_unit_tokens(tokens, _clean_unit(main), _clean_unit(per))
    if kind is MetricKind.MONOTONIC_COUNTER:
        tokens = [t for t in tokens if t != "total"]
        tokens.append("total")
    if unit == "1" and kind is MetricKind.GAUGE:
        tokens = [t for t in tokens if t != "ratio"]
        tokens.append("ratio")
    result = "_".join(tokens)
    if result and result[0].isdigit():
        result = "_" + result
    if not result:
        raise InvalidNameError(f"normalization for metric {name!r} resulted in empty name")
    if result != name and not result.strip("_"):
        raise InvalidNameError(f"normalization for metric {name!r} resulted in invalid name {result!r}")
    return result


def _add_unit_tokens(tokens: list[str], main: str, per: str) -> list[str]:
    """Append unit suffix tokens unless the name already carries them."""
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    if main:
        tokens.append(main)
    if per:
        tokens.append(per)
    return tokens


def build_unit(unit: str) -> str:
    """The Prometheus unit string for metadata (``By/s`` -> ``bytes_per_second``)."""
    main, per = _unit_suffixes(unit)
    main, per = _clean_unit(main), _clean_unit(per)
    if main and per:
        out = main + "_" + per
    else:
        out = main or per
    out = out.removeprefix("_")
    return out.removesuffix("_")


def build_label_name(name: str) -> str:
    """Prometheus label name for an OTLP attribute key.

    Invalid characters become ``_`` (repeats kept), a leading digit gets a
    ``key_`` prefix and a single leading underscore a ``key`` prefix
    (``__`` names are left alone). Raises ``InvalidNameError`` for an empty
    key or a result made only of underscores.
    """
    if not name:
        raise InvalidNameError("label name is empty")
    out = _INVALID_LABEL_CHAR.sub("_", name)
    first = out[0]
    if "0" <= first <= "9":
        out = "key_" + out
    elif first == "_" and not out.startswith("__"):
        out = "key" + out
    if not out.strip("_"):
        raise InvalidNameError(f"normalization for label name {name!r} resulted in invalid name {out!r}")
    return out


def format_float_json(v: float) -> str:
    """A double as pdata's ``AsString`` renders it (ES6 number formatting)."""
    if math.isnan(v) or math.isinf(v):
        go = "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
        return f"json: unsupported value: {go}"
    a = abs(v)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        out = format_float(v, "e")
        # Go trims the exponent's leading zero: e-07 -> e-7 (not e+21).
        n = len(out)
        if n >= 4 and out[n - 4] == "e" and out[n - 3] == "-" and out[n - 2] == "0":
            out = out[: n - 2] + out[n - 1]
        return out
    return format_float_f(v)


def _raw(value: Any) -> Any:
    """An AnyValue as the plain value pdata's ``AsRaw`` gives (for JSON rendering)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def _go_json(raw: Any) -> str:
    """Compact JSON as Go's encoding/json writes it: sorted keys, ES6 floats, HTML-safe."""
    text = _encode(raw)
    # These characters only occur inside JSON strings, so a textual replace is safe.
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _encode(o: Any) -> str:
    """Recursive JSON encoder for AsRaw values (json.dumps cannot emit Go's float form)."""
    if isinstance(o, bool):
        return "true" if o else "false"
    if o is None:
        return "null"
    if isinstance(o, float):
        return format_float_json(o)
    if isinstance(o, int):
        return str(o)
    if isinstance(o, str):
        return json.dumps(o, ensure_ascii=False)
    if isinstance(o, list):
        return "[" + ",".join(_encode(x) for x in o) + "]"
    items = sorted(o.items())
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _encode(v) for k, v in items) + "}"


def any_value_to_str(value: Any) -> str:
    """An OTLP ``AnyValue`` as a label value, as pdata's ``Value.AsString`` renders it.

    Strings as is, booleans ``true``/``false``, integers in decimal, doubles in
    ES6 form, bytes in base64, arrays and maps as compact JSON, unset as "".
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind is None:
        return ""
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return format_float_json(float(value.double_value))
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        return _go_json(_raw(value))
    return ""


def attribute_pairs(attributes: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    """OTLP ``KeyValue``s as (key, value-as-string) pairs, in their order."""
    return tuple((kv.key, any_value_to_str(kv.value)) for kv in attributes)


def set_label(labels: dict[str, str], name: str, value: str) -> None:
    """Prometheus' ``labels.Builder.Set``: an empty value deletes the label."""
    if value:
        labels[name] = value
    else:
        labels.pop(name, None)


def attribute_labels(pairs: Sequence[tuple[str, str]], ignore: Sequence[str]) -> dict[str, str]:
    """Attributes as labels: sorted by key, names sanitised, values of colliding names joined with ``;``.

    Raises ``InvalidNameError`` for a key that cannot become a label name.
    """
    out: dict[str, str] = {}
    for key, value in sorted((p for p in pairs if p[0] not in ignore), key=lambda p: p[0]):
        name = build_label_name(key)
        existing = out.get(name, "")
        if existing:
            out[name] = existing + ";" + value
        else:
            set_label(out, name, value)
    return out


def exemplar_labels(exemplar: Any) -> tuple[float, tuple[tuple[str, str], ...]] | None:
    """Value and labels of an OTLP exemplar: ``trace_id``/``span_id`` in hex, then its
    filtered attributes (kept only if all labels fit in 128 characters).

    None for an exemplar without a value (Prometheus refuses those).
    """
    kind = exemplar.WhichOneof("value")
    if kind is None:
        return None
    value = float(exemplar.as_double) if kind == "as_double" else float(exemplar.as_int)
    pairs: dict[str, str] = {}
    runes = 0
    for name, raw in (("trace_id", exemplar.trace_id), ("span_id", exemplar.span_id)):
        if any(raw):  # an all-zero id is "empty" in pdata
            pairs[name] = raw.hex()
            runes += len(name) + len(pairs[name])
    attrs = attribute_pairs(exemplar.filtered_attributes)
    runes += sum(len(k) + len(v) for k, v in attrs)
    if runes <= _MAX_EXEMPLAR_RUNES:
        for k, v in attrs:
            pairs.setdefault(k, v)
    return value, tuple(sorted(pairs.items()))
