"""OpenAPI v2 and v3 documents for the served kinds (upstream schemas; CRDs from their openAPIV3Schema).

``/openapi/v3`` lists one document per group-version (``serverRelativeURL``
with a content hash, as kube-apiserver does); each holds the paths of its
resources and the component schemas they reach. kubectl reads these for
``explain``, for server-side field validation support (it looks for the
``fieldValidation`` parameter on each kind's PATCH operation) and for
strategic-merge metadata in ``apply``. ``/openapi/v2`` is the same in
Swagger 2.0 form, as JSON only (kubectl's protobuf request gets 406 and it
falls back to what it compiled in).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pitwall.kube.openapi_pb import encode_document
from pitwall.kube.registry import Registry, ResourceType
from pitwall.kube.schemas import definitions

__all__ = ["OpenAPI"]

Obj = dict[str, Any]
K8S_VERSION = "v1.32.0"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def _reverse_group(group: str) -> str:
    return ".".join(reversed(group.split("."))) if group else "core"


def _crd_def_name(rt: ResourceType) -> str:
    return f"{_reverse_group(rt.group)}.{rt.version}.{rt.kind}"


def _def_name(rt: ResourceType) -> str:
    return _crd_def_name(rt) if rt.crd is not None else rt.definition


def _crd_schema(rt: ResourceType) -> Obj:
    s = copy.deepcopy(((rt.crd or {}).get("schema") or {}).get("openAPIV3Schema") or {"type": "object"})
    props = s.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}
    props["metadata"] = {"$ref": f"#/definitions/{_META}ObjectMeta",
                         "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}
    s["x-kubernetes-group-version-kind"] = [{"group": rt.group, "kind": rt.kind, "version": rt.version}]
    return s


def _list_schema(rt: ResourceType, item_ref: str) -> Obj:
    return {
        "description": f"{rt.list_kind} is a list of {rt.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": item_ref}},
            "kind": {"type": "string"},
            "metadata": {"$ref": f"#/definitions/{_META}ListMeta"},
        },
        "x-kubernetes-group-version-kind": [{"group": rt.group, "kind": rt.list_kind, "version": rt.version}],
    }


def _refs(node: Any, acc: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                acc.add(v.rsplit("/", 1)[-1])
            else:
                _refs(v, acc)
    elif isinstance(node, list):
        for e in node:
            _refs(e, acc)


def _v3(node: Any) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            ref = str(node["$ref"]).replace("#/definitions/", "#/components/schemas/")
            rest = {k: _v3(v) for k, v in node.items() if k != "$ref"}
            return {"allOf": [{"$ref": ref}], **rest} if rest else {"$ref": ref}
        return {k: _v3(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_v3(e) for e in node]
    return node


def _param(name: str, where: str, desc: str, v3: bool, required: bool = False, typ: str = "string") -> Obj:
    p: Obj = {"name": name, "in": where, "description": desc, "uniqueItems": True}
    if required:
        p["required"] = True
    if v3:
        p["schema"] = {"type": typ, "uniqueItems": True}
    else:
        p["type"] = typ
    return p


def _op(rt: ResourceType, action: str, verb_id: str, ref: str, v3: bool, body: bool = False,
        params: list[Obj] | None = None) -> Obj:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    gv = "".join(p.capitalize() for p in (rt.group.split(".")[0] or "core", rt.version))
    op: Obj = {
        "description": f"{action} the specified {rt.kind}",
        "operationId": f"{verb_id}{gv}{'Namespaced' if rt.namespaced else ''}{rt.kind}",
        "tags": [f"{rt.group.split('.')[0] or 'core'}_{rt.version}"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "kind": rt.kind, "version": rt.version},
        "parameters": params or [],
    }
    if v3:
        op["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": prefix + ref}}}},
                           "401": {"description": "Unauthorized"}}
        if body:
            op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": prefix + ref}}}, "required": True}
    else:
        op["responses"] = {"200": {"description": "OK", "schema": {"$ref": prefix + ref}},
                           "401": {"description": "Unauthorized"}}
        op["consumes"] = ["*/*"]
        op["produces"] = ["application/json", "application/yaml"]
        if body:
            op["parameters"] = [*op["parameters"], {"name": "body", "in": "body", "required": True,
                                                    "schema": {"$ref": prefix + ref}}]
    return op


def _paths(rt: ResourceType, v3: bool) -> Obj:
    base = "/api/v1" if not rt.group else f"/apis/{rt.group}/{rt.version}"
    coll = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    item_ref = _def_name(rt)
    list_ref = item_ref + "List" if rt.crd is None else _crd_def_name(rt) + "List"
    dry = _param("dryRun", "query", "When present, indicates that modifications should not be persisted.", v3)
    fm = _param("fieldManager", "query", "fieldManager is a name associated with the actor or entity that is making these changes.", v3)
    fv = _param("fieldValidation", "query", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict", v3)
    force = _param("force", "query", "Force is going to \"force\" Apply requests.", v3, typ="boolean")
    common = [_param("name", "path", f"name of the {rt.kind}", v3, True)]
    if rt.namespaced:
        common.append(_param("namespace", "path", "object name and auth scope, such as for teams and projects", v3, True))
    coll_common = common[1:]
    sel = [_param(n, "query", d, v3) for n, d in (
        ("labelSelector", "A selector to restrict the list of returned objects by their labels."),
        ("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
        ("continue", "The continue option should be set when retrieving more results from the server."),
        ("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from."))]
    sel.append(_param("limit", "query", "limit is a maximum number of responses to return for a list call.", v3, typ="integer"))
    sel.append(_param("watch", "query", "Watch for changes to the described resources.", v3, typ="boolean"))
    out: Obj = {
        coll: {
            "get": _op(rt, "list", "list", list_ref, v3, params=sel),
            "post": _op(rt, "post", "create", item_ref, v3, body=True, params=[dry, fm, fv]),
            "delete": _op(rt, "deletecollection", "deleteCollection", f"{_META}Status", v3),
            "parameters": coll_common,
        },
        f"{coll}/{{name}}": {
            "get": _op(rt, "get", "read", item_ref, v3),
            "put": _op(rt, "put", "replace", item_ref, v3, body=True, params=[dry, fm, fv]),
            "patch": _op(rt, "patch", "patch", item_ref, v3, params=[dry, fm, fv, force]),
            "delete": _op(rt, "delete", "delete", f"{_META}Status", v3, params=[dry]),
            "parameters": common,
        },
    }
    if v3:
        out[f"{coll}/{{name}}"]["patch"]["requestBody"] = {"content": {
            t: {"schema": {"$ref": f"#/components/schemas/{_META}Patch"}}
            for t in ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
                      *(() if rt.crd is not None else ("application/strategic-merge-patch+json",)))},
            "required": True}  # kubectl picks strategic merge for a kind only if its PATCH accepts it
    for sub in rt.subresources:
        if sub not in ("status", "scale"):
            continue
        ref = "io.k8s.api.autoscaling.v1.Scale" if sub == "scale" else item_ref
        out[f"{coll}/{{name}}/{sub}"] = {
            "get": _op(rt, "get", "read", ref, v3),
            "put": _op(rt, "put", "replace", ref, v3, body=True, params=[dry, fm, fv]),
            "patch": _op(rt, "patch", "patch", ref, v3, params=[dry, fm, fv, force]),
            "parameters": common,
        }
        for op in ("get", "put", "patch"):
            k = out[f"{coll}/{{name}}/{sub}"][op]
            k["operationId"] = k["operationId"] + sub.capitalize()
            if sub == "scale":
                k["x-kubernetes-group-version-kind"] = {"group": "autoscaling", "kind": "Scale", "version": "v1"}
    return out


def _described(rt: ResourceType) -> bool:
    """Whether a schema describes the kind (custom kinds, upstream kinds; not answered-only ones)."""
    return rt.crd is not None or rt.definition in definitions()


class OpenAPI:
    """Builds and caches the documents; the cache is dropped when the registry changes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[str, bytes] = {}
        registry.on_change(self._cache.clear)

    def _schemas(self, types: list[ResourceType]) -> Obj:
        defs = definitions()
        out: Obj = {}
        roots: set[str] = {f"{_META}Status", f"{_META}Patch", f"{_META}DeleteOptions", f"{_META}WatchEvent"}
        for rt in types:
            if rt.crd is not None:
                name = _crd_def_name(rt)
                out[name] = _crd_schema(rt)
                out[name + "List"] = _list_schema(rt, f"#/definitions/{name}")
                _refs(out[name], roots)
            elif rt.definition in defs:
                roots.add(rt.definition)
                out[rt.definition + "List"] = _list_schema(rt, f"#/definitions/{rt.definition}")
            if "scale" in rt.subresources:
                roots.add("io.k8s.api.autoscaling.v1.Scale")
        roots.add(f"{_META}ListMeta")
        todo = list(roots)
        while todo:
            n = todo.pop()
            if n in out or n not in defs:
                continue
            out[n] = defs[n]
            acc: set[str] = set()
            _refs(defs[n], acc)
            todo.extend(acc)
        return out

    def _gv_types(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.registry.resources(group, version) if _described(rt)]

    def v3_doc(self, group: str, version: str) -> bytes | None:
        key = f"v3:{group}/{version}"
        if key in self._cache:
            return self._cache[key]
        types = self._gv_types(group, version)
        if not types:
            return None
        paths: Obj = {}
        for rt in types:
            paths.update(_paths(rt, True))
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": K8S_VERSION},
               "paths": paths, "components": {"schemas": _v3(self._schemas(types))}}
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._cache[key] = body
        return body

    def v3_root(self) -> Obj:
        paths: Obj = {}
        for group, versions in self.registry.groups():
            for v in versions:
                rel = f"api/{v}" if not group else f"apis/{group}/{v}"
                doc = self.v3_doc(group, v)
                if doc is None:
                    continue
                h = hashlib.sha512(doc or b"").hexdigest().upper()[:128]
                paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={h}"}
        return {"paths": paths}

    def v2(self, protobuf: bool = False) -> bytes:
        """The v2 document as JSON, or as gnostic's protobuf (what kubectl fetches to validate a List)."""
        key = "v2pb" if protobuf else "v2"
        if key in self._cache:
            return self._cache[key]
        types = [rt for rt in self.registry if _described(rt)]
        paths: Obj = {}
        for rt in types:
            paths.update(_paths(rt, False))
        doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": K8S_VERSION}, "paths": paths,
               "definitions": self._schemas(types)}
        body = encode_document(doc) if protobuf else json.dumps(doc, separators=(",", ":")).encode()
        self._cache[key] = body
        return body
