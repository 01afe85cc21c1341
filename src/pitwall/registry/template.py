"""consul-template's templating language: Go's text/template (``core.gotemplate``, the engine Prometheus
and Alertmanager templates run on) with consul-template's functions.

The language is Go's, whole: actions, trimming, pipelines, variables, ``if``/``range``/``with``,
``define``/``template``/``block``, Go's builtins and ``printf``. consul-template's functions: ``key``,
``keyOrDefault``, ``keyExists``, ``ls``, ``tree``, ``service`` (``tag.name``, ``@dc`` and ``|filter`` forms),
``services``, ``env``; helpers ``toJSON``, ``toUpper``, ``toLower``, ``join``, ``split``, ``explode``,
``trimSpace``, ``replaceAll``, ``parseInt``, ``contains``. The data behind them comes from a ``Data``
(``templates.py`` reads the Consul KV and catalog through it and records what each render read). A template
is bounded: its size, output bytes and loop iterations (``core.gotemplate.Budget``).

The engine is synchronous and the data is read from the async KV store, so a render runs in a worker thread
whose functions wait on reads scheduled on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson

from pitwall.core.gofmt import go_sprint, go_type_name
from pitwall.core.gotemplate import Budget
from pitwall.core.gotemplate import Template as GoTemplate
from pitwall.core.gotemplate import TemplateError as GoTemplateError

__all__ = ["MAX_ITERATIONS", "MAX_OUTPUT_BYTES", "MAX_TEMPLATE_BYTES", "Data", "MissingKey", "Record",
           "Template", "TemplateError", "parse", "parse_service_query"]

MAX_TEMPLATE_BYTES = 256 * 1024
MAX_OUTPUT_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB
MAX_ITERATIONS = 100_000  # range iterations per render, over all loops
READ_TIMEOUT_S = 30.0  # one KV or catalog read the render waits for


class TemplateError(Exception):
    """A template that cannot be parsed or rendered; ``line``/``col`` (1-based, 0 when unknown) locate it."""

    def __init__(self, message: str, line: int = 0, col: int = 0) -> None:
        self.line, self.col, self.reason = line, col, message
        where = f"{line}:{col}: " if line and col else f"{line}: " if line else ""
        super().__init__(where + message)


class MissingKey(TemplateError):
    """``key`` read a key that does not exist: consul-template waits for it, so the render is held."""


class Record:
    """A struct-like value (a service instance, a KV pair): fields are attributes, so a missing field is an
    error in a template, as in Go."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getitem__(self, name: str) -> Any:
        return self.__dict__[name]

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.__dict__ == self.__dict__

    def __repr__(self) -> str:
        return f"Record({self.__dict__!r})"

    def _asdict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Data(Protocol):
    """What the template functions read (each call is also a dependency of the render)."""

    async def key(self, path: str) -> str | None: ...

    async def pairs(self, prefix: str) -> list[tuple[str, str, int]]: ...  # (full key, value, flags)

    async def service(self, name: str, tag: str, statuses: frozenset[str]) -> list[Record]: ...

    async def services(self) -> list[Record]: ...

    def env(self, name: str) -> str: ...


def _go_type(v: Any) -> str:
    return go_type_name(v)


def go_string(v: Any) -> str:
    return go_sprint(v)


# ---- functions ------------------------------------------------------------------------------------------

def _str(v: Any, what: str = "argument") -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a string, got {_go_type(v)}")
    return v


async def _key(d: Data, path: Any) -> str:
    v = await d.key(_str(path, "key"))
    if v is None:
        raise MissingKey(f'key "{path}" does not exist (the render waits for it)')
    return v


async def _key_or_default(d: Data, path: Any, default: Any) -> str:
    v = await d.key(_str(path, "key"))
    return _str(default, "default") if v is None else v


async def _key_exists(d: Data, path: Any) -> bool:
    return await d.key(_str(path, "key")) is not None


async def _list(d: Data, prefix: Any, recurse: bool) -> list[Record]:
    """consul-template's ``ls``/``tree``: pairs under ``prefix/``, keys relative to it; folders (keys ending
    in ``/``) skipped; ``ls`` keeps the top level only."""
    p = _str(prefix, "prefix").strip("/")
    base = p + "/" if p else ""
    out = []
    for full, value, flags in await d.pairs(base):
        rel = full[len(base):]
        if not rel or rel.endswith("/") or (not recurse and "/" in rel):
            continue
        out.append(Record(Key=rel, Value=value, Path=full, Flags=flags))
    return out


async def _ls(d: Data, prefix: Any) -> list[Record]:
    return await _list(d, prefix, False)


async def _tree(d: Data, prefix: Any) -> list[Record]:
    return await _list(d, prefix, True)


_SERVICE = re.compile(r"^(?:(?P<tag>[\w=:.\-]+)\.)?(?P<name>[\w\-]+)(?:@(?P<dc>[\w.\-]+))?$")
_STATUSES = frozenset({"passing", "warning", "critical", "maintenance"})


def parse_service_query(text: str) -> tuple[str, str, str, frozenset[str]]:
    """``[tag.]name[@dc][|filter,...]`` -> (name, tag, dc, statuses); the default filter is ``passing``
    (healthy instances only) and ``any`` means every status, as consul-template documents."""
    query, _, flt = text.partition("|")
    m = _SERVICE.match(query.strip())
    if m is None:
        raise ValueError(f"invalid service query {text!r} (want [tag.]name[@datacenter][|filter])")
    statuses: set[str] = set()
    for f in (flt.split(",") if flt else ["passing"]):
        f = f.strip()
        if f == "any":
            statuses |= _STATUSES
        elif f in _STATUSES:
            statuses.add(f)
        else:
            raise ValueError(f"unknown health filter {f!r} (any, passing, warning, critical, maintenance)")
    return m["name"], m["tag"] or "", m["dc"] or "", frozenset(statuses)


async def _service(d: Data, query: Any) -> list[Record]:
    name, tag, _dc, statuses = parse_service_query(_str(query, "service"))
    return await d.service(name, tag, statuses)


async def _services(d: Data) -> list[Record]:
    return await d.services()


def _to_plain(v: Any) -> Any:
    if isinstance(v, Record):
        return _to_plain(v._asdict())
    if isinstance(v, dict):
        return {str(k): _to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    return v


def _to_json(_d: Data, v: Any) -> str:
    return orjson.dumps(_to_plain(v), option=orjson.OPT_SORT_KEYS).decode()


def _explode(_d: Data, pairs: Any) -> dict[str, Any]:
    """``tree``/``ls`` pairs as a nested map split on ``/`` (consul-template's ``explode``)."""
    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"explode wants the pairs of ls or tree, got {_go_type(pairs)}")
    out: dict[str, Any] = {}
    for p in pairs:
        if not isinstance(p, Record) or "Key" not in p:
            raise TypeError("explode wants the pairs of ls or tree")
        *dirs, leaf = str(p["Key"]).split("/")
        node = out
        for d in dirs:
            nxt = node.setdefault(d, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"key {p['Key']!r} is both a value and a folder")
            node = nxt
        node[leaf] = p["Value"]
    return out


def _join(_d: Data, sep: Any, items: Any) -> str:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"join wants a list, got {_go_type(items)}")
    return _str(sep, "separator").join(go_string(x) for x in items)


def _split(_d: Data, sep: Any, s: Any) -> list[str]:
    s, sep = _str(s), _str(sep, "separator")
    if s == "":
        return []
    return s.split(sep) if sep else list(s)


_DECIMAL = re.compile(r"[-+]?[0-9]+")


def _parse_int(_d: Data, s: Any) -> int:
    """Base-10 int64, as consul-template's ``strconv.ParseInt(s, 10, 64)`` (no spaces, no underscores)."""
    try:
        if not _DECIMAL.fullmatch(_str(s)) or not -(2 ** 63) <= int(s) < 2 ** 63:
            raise ValueError(s)
        return int(s)
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{s}": invalid syntax') from None


def _contains(_d: Data, needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, str):
        return _str(needle) in haystack
    if isinstance(haystack, (list, tuple)):
        return needle in haystack
    if isinstance(haystack, dict):
        return needle in haystack
    raise TypeError(f"contains wants a list or string, got {_go_type(haystack)}")


_Read = Callable[[Coroutine[Any, Any, Any]], Any]


def _funcs(data: Data, read: _Read) -> dict[str, Callable[..., Any]]:
    """consul-template's functions over ``data``; ``read`` waits for one of its coroutines (from the render's
    worker thread, on the event loop)."""
    def key(path: Any) -> str:
        return str(read(_key(data, path)))

    def key_or_default(path: Any, default: Any) -> str:
        return str(read(_key_or_default(data, path, default)))

    def key_exists(path: Any) -> bool:
        return bool(read(_key_exists(data, path)))

    def ls(prefix: Any) -> list[Record]:
        return list(read(_ls(data, prefix)))

    def tree(prefix: Any) -> list[Record]:
        return list(read(_tree(data, prefix)))

    def service(query: Any) -> list[Record]:
        return list(read(_service(data, query)))

    def services() -> list[Record]:
        return list(read(_services(data)))

    def env(name: Any) -> str:
        return data.env(_str(name, "name"))

    def to_json(v: Any) -> str:
        return _to_json(data, v)

    def explode(pairs: Any) -> dict[str, Any]:
        return _explode(data, pairs)

    def to_upper(s: Any) -> str:
        return _str(s).upper()

    def to_lower(s: Any) -> str:
        return _str(s).lower()

    def join(sep: Any, items: Any) -> str:
        return _join(data, sep, items)

    def split(sep: Any, s: Any) -> list[str]:
        return _split(data, sep, s)

    def trim_space(s: Any) -> str:
        return _str(s).strip(" \t\n\r\v\f")

    def replace_all(old: Any, new: Any, s: Any) -> str:
        return _str(s).replace(_str(old), _str(new))

    def parse_int(s: Any) -> int:
        return _parse_int(data, s)

    def contains(needle: Any, haystack: Any) -> bool:
        return _contains(data, needle, haystack)

    return {"key": key, "keyOrDefault": key_or_default, "keyExists": key_exists, "ls": ls, "tree": tree,
            "service": service, "services": services, "env": env, "toJSON": to_json, "explode": explode,
            "toUpper": to_upper, "toLower": to_lower, "join": join, "split": split, "trimSpace": trim_space,
            "replaceAll": replace_all, "parseInt": parse_int, "contains": contains}


def _unbound(*_args: Any) -> Any:  # pragma: no cover - every execution binds the real functions
    raise RuntimeError("template functions are bound per render")


_NAMES = dict.fromkeys(_funcs(None, lambda c: None), _unbound)  # type: ignore[arg-type]
_WHERE = re.compile(r"^template: [^:]*:(\d+)(?::(\d+))?: (.*)$", re.S)


def _located(e: GoTemplateError) -> TemplateError:
    """The engine's error (``template: NAME:LINE[:COL]: ...``, Go's wording) with its position kept; a
    missing key or a render bound reached by a function stays what it was."""
    cause = e.__cause__
    m = _WHERE.match(str(e))
    line, col, msg = (int(m[1]), int(m[2] or 0), m[3]) if m else (0, 0, str(e))
    if isinstance(cause, TemplateError):
        return type(cause)(cause.reason, line or cause.line, col or cause.col)
    return TemplateError(msg, line, col)


class Template:
    """A parsed template; ``render`` may run many times (each time against fresh ``Data``)."""

    def __init__(self, tmpl: GoTemplate) -> None:
        self._tmpl = tmpl

    async def render(self, data: Data, *, max_output: int = MAX_OUTPUT_BYTES,
                     max_iterations: int = MAX_ITERATIONS) -> str:
        """The output; ``TemplateError`` (``MissingKey`` while a ``key`` is absent) when it cannot render."""
        loop = asyncio.get_running_loop()

        def read(coro: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(READ_TIMEOUT_S)

        budget = Budget(max_iterations, max_output)
        try:
            return await asyncio.to_thread(self._tmpl.execute, None, funcs=_funcs(data, read), budget=budget)
        except GoTemplateError as e:
            raise _located(e) from None


def parse(text: str) -> Template:
    """Parses ``text``; ``TemplateError`` names the line (and column where Go's parser does) of the first
    problem."""
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        return Template(GoTemplate("template", _NAMES).parse(text))
    except GoTemplateError as e:
        raise _located(e) from None
    except RecursionError:
        raise TemplateError("template nested deeper than the parser allows") from None
