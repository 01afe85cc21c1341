"""CustomResourceDefinitions: the kinds they serve, and custom objects checked against their schema.

A CRD (apiextensions.k8s.io/v1) becomes one ``ResourceType`` per served
version. Custom objects are checked against the version's
``openAPIV3Schema`` as the apiserver's structural schemas do: types
(``x-kubernetes-int-or-string``, ``nullable``), ``required``, ``enum``,
``pattern``, bounds and lengths, ``anyOf``/``oneOf``/``allOf``/``not`` for
values; unknown fields are pruned unless ``x-kubernetes-preserve-unknown-
fields`` says otherwise; ``default`` values are filled in. CEL rules
(``x-kubernetes-validations``) are compiled when the CRD is written (a rule
that does not compile rejects it) and evaluated on every create and update
by ``kube.cel``, after the schema checks, as the apiserver does.

``kube.cel`` (and the CEL engine, ~18 MiB) is imported only when a schema
holds a rule: a CRD's rules are compile-checked when it is written unless it
is a shipped CRD unchanged (vendored and tested; ``trust_shipped``), and a
kind's rules are compiled on the first validation of one of its objects.
"""

from __future__ import annotations

import re
from typing import Any

from pitwall.kube.errors import Cause
from pitwall.kube.registry import STANDARD_VERBS, ResourceType
from pitwall.kube.validation import Errs, check_subdomain, validate_meta

__all__ = ["crd_status", "prune_and_default", "trust_shipped", "types_from_crd", "validate_crd", "validate_custom"]

Obj = dict[str, Any]

# CRD name -> version -> the schema pitwall ships: its rules need no compile check
_SHIPPED: dict[str, dict[str, Obj | None]] = {}
_HAS_RULES: dict[int, tuple[Obj, bool]] = {}  # id(schema) -> (schema, holds a rule); the schema pins the id
_MAX_HAS_RULES = 512


def trust_shipped(crds: list[Obj]) -> None:
    """Mark CRDs pitwall ships: a version written with exactly the shipped schema has its CEL rules not
    compile-checked (they are vendored and tested), so installing them does not load the CEL engine."""
    for crd in crds:
        versions = (crd.get("spec") or {}).get("versions") or []
        _SHIPPED[str((crd.get("metadata") or {}).get("name", ""))] = {
            str(v.get("name")): (v.get("schema") or {}).get("openAPIV3Schema") for v in versions}


def _holds_rules(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    if s.get("x-kubernetes-validations"):
        return True
    return (any(_holds_rules(x) for x in (s.get("properties") or {}).values())
            or _holds_rules(s.get("additionalProperties")) or _holds_rules(s.get("items"))
            or any(_holds_rules(x) for x in s.get("allOf") or []))


def _has_rules(schema: Obj) -> bool:
    """Whether a version's schema holds any CEL rule, walked once per schema object."""
    hit = _HAS_RULES.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    got = _holds_rules(schema)
    if len(_HAS_RULES) >= _MAX_HAS_RULES:
        _HAS_RULES.clear()
    _HAS_RULES[id(schema)] = (schema, got)
    return got


def types_from_crd(crd: Obj) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out: list[ResourceType] = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subs = v.get("subresources") or {}
        out.append(ResourceType(
            group=str(spec.get("group", "")),
            version=str(v.get("name", "")),
            kind=str(names.get("kind", "")),
            plural=str(names.get("plural", "")),
            singular=str(names.get("singular") or str(names.get("kind", "")).lower()),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            verbs=STANDARD_VERBS,
            subresources=tuple(s for s in ("status", "scale") if s in subs),
            has_generation=True,
            crd=v,
            crd_name=str((crd.get("metadata") or {}).get("name", "")),
        ))
    return out


def crd_status(crd: Obj) -> Obj:
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    if names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", str(names["kind"]) + "List")
    from pitwall.kube.meta import now_rfc3339

    t = now_rfc3339()
    storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    old = crd.get("status") or {}
    stored = list(old.get("storedVersions") or [])
    for s in storage:
        if s not in stored:
            stored.append(s)
    return {
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": t, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored,
    }


def validate_crd(crd: Obj) -> list[Cause]:
    e = Errs()
    validate_meta(e, crd, "subdomain", False)
    spec = crd.get("spec") or {}
    group = spec.get("group")
    names = spec.get("names") or {}
    if not group:
        e.required("spec.group")
    elif "." not in str(group):
        e.invalid("spec.group", group, "should be a domain with at least one dot")
    else:
        check_subdomain(e, "spec.group", str(group))
    if not names.get("plural"):
        e.required("spec.names.plural")
    if not names.get("kind"):
        e.required("spec.names.kind")
    for f in ("plural", "singular"):
        v = names.get(f)
        if v and not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", str(v)):
            e.invalid(f"spec.names.{f}", v, "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                      "characters or '-', and must start and end with an alphanumeric character")
    name = (crd.get("metadata") or {}).get("name")
    if group and names.get("plural") and name != f"{names['plural']}.{group}":
        e.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        if scope is None:
            e.required("spec.scope")
        else:
            e.unsupported("spec.scope", scope, ["Cluster", "Namespaced"])
    versions = spec.get("versions") or []
    shipped = _SHIPPED.get(str(name), {})
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        e.invalid("spec.versions", versions, "must have exactly one version marked as storage version")
    for i, v in enumerate(versions):
        if not v.get("name"):
            e.required(f"spec.versions[{i}].name")
        sch = (v.get("schema") or {}).get("openAPIV3Schema")
        if sch is None:
            e.required(f"spec.versions[{i}].schema.openAPIV3Schema")
        elif sch.get("type") not in ("object", None):
            e.invalid(f"spec.versions[{i}].schema.openAPIV3Schema.type", sch.get("type"), "must be object at the root")
        elif shipped.get(str(v.get("name"))) != sch and _holds_rules(sch):
            from pitwall.kube.cel import check_crd_rules  # the CEL engine, only for a CRD with rules

            check_crd_rules(f"spec.versions[{i}].schema.openAPIV3Schema", sch, e.causes)
    return e.causes


# ---- custom objects -------------------------------------------------------------------------------------
_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


def _type_ok(t: str, v: Any, s: Obj) -> bool:
    if s.get("x-kubernetes-int-or-string"):
        return isinstance(v, (int, str)) and not isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    py = _TYPES.get(t)
    return py is None or (isinstance(v, py) and not (py is not bool and isinstance(v, bool)))


def _go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _check(e: Errs, path: str, v: Any, s: Obj) -> None:
    if v is None:
        if not s.get("nullable"):
            e.type_invalid(path, None, f'{path} in body must be of type {s.get("type", "object")}: "null"')
        return
    t = s.get("type")
    if t and not _type_ok(str(t), v, s):
        e.type_invalid(path, v, f'{path} in body must be of type {t}: "{_go_type(v)}"')
        return
    if "enum" in s and v not in s["enum"]:
        e.unsupported(path, v, [str(x) for x in s["enum"]])
    if isinstance(v, str):
        if "pattern" in s:
            try:
                ok = re.search(str(s["pattern"]), v) is not None
            except re.error:
                ok = True
            if not ok:
                e.invalid(path, v, f"{path} in body should match '{s['pattern']}'")
        if "maxLength" in s and len(v) > int(s["maxLength"]):
            e.causes.append(Cause(path, "FieldValueTooLong",
                                  f"Too long: may not be more than {s['maxLength']} bytes"))
        if "minLength" in s and len(v) < int(s["minLength"]):
            e.invalid(path, v, f"{path} in body should be at least {s['minLength']} chars long")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and (v < s["minimum"] or (s.get("exclusiveMinimum") and v == s["minimum"])):
            e.invalid(path, v, f"{path} in body should be greater than or equal to {s['minimum']}")
        if "maximum" in s and (v > s["maximum"] or (s.get("exclusiveMaximum") and v == s["maximum"])):
            e.invalid(path, v, f"{path} in body should be less than or equal to {s['maximum']}")
    if isinstance(v, list):
        if "maxItems" in s and len(v) > int(s["maxItems"]):
            e.causes.append(Cause(path, "FieldValueTooMany", f"Too many: {len(v)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(v) < int(s["minItems"]):
            e.invalid(path, v, f"{path} in body should have at least {s['minItems']} items")
        items = s.get("items")
        if isinstance(items, dict):
            for i, x in enumerate(v):
                _check(e, f"{path}[{i}]", x, items)
    if isinstance(v, dict):
        props = s.get("properties") or {}
        for r in s.get("required") or []:
            if r not in v:
                e.required(f"{path}.{r}" if path else str(r))
        for k, x in v.items():
            sub = props.get(k)
            if sub is None and isinstance(s.get("additionalProperties"), dict):
                sub = s["additionalProperties"]
            if isinstance(sub, dict):
                _check(e, f"{path}.{k}" if path else k, x, sub)
    for comb in ("allOf",):
        for sub in s.get(comb) or []:
            _check(e, path, v, {**sub, "type": sub.get("type")} if isinstance(sub, dict) else {})
    for comb in ("anyOf", "oneOf"):
        subs = [x for x in s.get(comb) or [] if isinstance(x, dict)]
        if subs:
            passing = 0
            for sub in subs:
                se = Errs()
                _check(se, path, v, sub)
                passing += not se.causes
            if passing == 0 or (comb == "oneOf" and passing > 1):
                e.invalid(path, v, f"{path} in body must validate {'one and only one' if comb == 'oneOf' else 'at least one'} schema ({comb})")
    if isinstance(s.get("not"), dict):
        se = Errs()
        _check(se, path, v, s["not"])
        if not se.causes:
            e.invalid(path, v, f"{path} in body must not validate the schema (not)")


def _non_nullable(s: Any) -> bool:
    """A schema position whose null is pruned (one the schema names, not marked ``nullable``)."""
    return isinstance(s, dict) and not s.get("nullable")


def prune_and_default(v: Any, s: Obj | None, root: bool = False) -> Any:
    """Drop fields the schema does not know (unless it preserves them) and fill in defaults."""
    if not isinstance(s, dict):
        return v
    if isinstance(v, dict):
        props = s.get("properties") or {}
        preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
        add = s.get("additionalProperties")
        out: Obj = {}
        for k, x in v.items():
            if root and k in ("apiVersion", "kind", "metadata"):
                out[k] = x
            elif x is None and _non_nullable(props.get(k, add)):
                continue  # nulls of non-nullable fields are pruned, as the apiserver does before defaulting;
                # a null where the schema preserves unknown fields is a value
            elif k in props:
                out[k] = prune_and_default(x, props[k])
            elif isinstance(add, dict):
                out[k] = prune_and_default(x, add)
            elif preserve or add is True or s.get("x-kubernetes-embedded-resource"):
                out[k] = x
        for k, p in props.items():
            if k not in out and isinstance(p, dict) and "default" in p:
                out[k] = prune_and_default(p["default"], p)
        return out
    if isinstance(v, list) and isinstance(s.get("items"), dict):
        return [prune_and_default(x, s["items"]) for x in v]
    return v


_BLOCKING = ("FieldValueTypeInvalid", "FieldValueNotSupported")


def validate_custom(rt: ResourceType, obj: Obj, old: Obj | None = None) -> list[Cause]:
    """Field errors of a custom object: metadata, its version's schema, then its CEL rules (``old`` on update)."""
    e = Errs()
    validate_meta(e, obj, "subdomain", rt.namespaced)
    schema = ((rt.crd or {}).get("schema") or {}).get("openAPIV3Schema")
    if isinstance(schema, dict):
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        s = dict(schema)
        s["properties"] = {k: v for k, v in (schema.get("properties") or {}).items()
                           if k not in ("apiVersion", "kind", "metadata")}
        _check(e, "", body, s)
        if any(c.reason in _BLOCKING for c in e.causes):
            # rules would see values of the wrong type: the apiserver skips them and says so
            e.causes.append(Cause("", "FieldValueInvalid", 'Invalid value: "null": some validation rules were not '
                                  "checked because the object was invalid; correct the existing errors to "
                                  "complete validation"))
        elif _has_rules(schema):
            from pitwall.kube.cel import validate_rules  # the CEL engine, only for a kind with rules

            e.causes.extend(validate_rules(schema, _rule_view(obj), _rule_view(old) if old else None))
    return e.causes


def _rule_view(obj: Obj) -> Obj:
    """The object as root rules see it: metadata reduced to name and generateName, as upstream."""
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}}
