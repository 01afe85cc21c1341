"""The HTTP face of the Kubernetes API: paths, verbs, content negotiation, watch streams.

Paths as kube-apiserver serves them::

    /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>     discovery
    /api/v1/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]    core objects
    /apis/<group>/<version>/[namespaces/<ns>/]<resource>[/...]       grouped objects
    /openapi/v2, /openapi/v3[/<gv>], /version, /livez, /readyz, /healthz

Every error leaves as a ``Status`` object (``errors.status_response``); a
watch that fails after it started sends an ``ERROR`` event with the Status.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from pitwall.core.errors import PitwallError
from pitwall.core.tenancy import require_server_wide
from pitwall.kube import discovery
from pitwall.kube.convert import from_storage, to_storage
from pitwall.kube.errors import (
    BadRequest,
    InternalError,
    KubeError,
    MethodNotAllowed,
    NotAcceptable,
    NotFoundError,
    status_response,
)
from pitwall.kube.fields import check_fields, warning_headers
from pitwall.kube.http import (
    encoded_list_response,
    json_response,
    media_type,
    read_body,
    read_raw,
    truthy,
    wants_table,
)
from pitwall.kube.managed import apply_config
from pitwall.kube.meta import meta
from pitwall.kube.metricsapi import METRICS_GROUP, get_metrics, list_metrics
from pitwall.kube.openapi_pb import PROTOBUF_V2, accepts_protobuf
from pitwall.kube.patch import APPLY, JSON_PATCH, MERGE_PATCH, STRATEGIC, apply_patch
from pitwall.kube.registry import ResourceType
from pitwall.kube.reviews import REVIEW_GROUPS, review
from pitwall.kube.tables import table
from pitwall.kube.watch import watch_response

if TYPE_CHECKING:
    from pitwall.kube.server import KubeAPI

__all__ = ["SubresourceHandler", "kube_router"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
SubresourceHandler = Callable[[Request, ResourceType, str, str], Awaitable[Response]]


def _answer(fn: Callable[[Request], Awaitable[Response]],
            authorize: Callable[[Request], Awaitable[None]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            require_server_wide(request)  # the cluster is server-wide state: tokens must be allowed 'default'
            await authorize(request)  # Kubernetes RBAC (kube.rbac)
            return await fn(request)
        except PitwallError as e:
            return status_response(e)
        except Exception as e:
            log.exception("kube api: internal error", extra={"path": request.url.path})
            return status_response(InternalError(f"Internal error occurred: {type(e).__name__}: {e}"))

    return wrapped


def _field_manager(request: Request, default: str) -> str:
    fm = request.query_params.get("fieldManager")
    if fm:
        if len(fm) > 128:
            raise BadRequest("fieldManager: Too long: may not be more than 128 bytes")
        return fm
    ua = request.headers.get("user-agent", "")
    return ua.split("/", 1)[0][:128] or default


def _dry_run(request: Request) -> bool:
    vals = request.query_params.getlist("dryRun")
    for v in vals:
        if v != "All":
            raise BadRequest(f'Invalid dryRun parameter: {v!r}: supported values: "All"')
    return bool(vals)


class _Route(Route):
    """A route that can decline a path it would match (so /api/v1/query stays Prometheus'). Its requests
    are authorized by Kubernetes RBAC in the handler, and refused as a ``Status`` (``core.auth`` reads
    ``authorizes_itself`` and ``render_error``)."""

    authorizes_itself = True
    render_error = staticmethod(status_response)

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str],
                 owned: Callable[[str], bool] | None = None) -> None:
        super().__init__(path, endpoint, methods=methods, include_in_schema=False)
        self.owned = owned

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.NONE and self.owned is not None and not self.owned(scope["path"]):
            return Match.NONE, {}
        return match, child


class _Target:
    def __init__(self, rt: ResourceType, namespace: str, name: str, sub: str) -> None:
        self.rt, self.namespace, self.name, self.sub = rt, namespace, name, sub


def kube_router(api: KubeAPI) -> APIRouter:
    """Every route of the Kubernetes API. Add them with ``app.router.routes.extend(router.routes)``
    (``KubeAPI.install``): ``include_router`` would copy them as plain routes, and then the core
    catch-all must come after Prometheus' ``/api/v1/...`` routes."""
    r = APIRouter()
    reg, res = api.registry, api.resources

    def _handle(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        return _answer(fn, api.authorizer.check)

    def resolve(group: str, version: str, path: str) -> _Target:
        segs = [s for s in path.split("/") if s != ""]
        if not segs:
            raise NotFoundError.resource()
        namespace = ""
        if segs[0] == "namespaces" and len(segs) >= 3 and not (len(segs) == 3 and segs[2] in ("status", "finalize")):
            namespace, segs = segs[1], segs[2:]
        plural = segs[0]
        rt = reg.get(group, version, plural)
        if rt is None or len(segs) > 3:
            raise NotFoundError.resource()
        if namespace and not rt.namespaced:
            raise NotFoundError.resource()
        name = segs[1] if len(segs) > 1 else ""
        sub = segs[2] if len(segs) > 2 else ""
        if sub and sub not in rt.subresources:
            raise NotFoundError.resource()
        return _Target(rt, namespace, name, sub)

    # ---- discovery --------------------------------------------------------------------------------------
    @_handle
    async def api_root(request: Request) -> Response:
        agg = discovery.wants_aggregated(request.headers.get("accept", ""))
        if agg:
            return json_response(discovery.aggregated(reg, True, agg), media=agg)
        host = request.headers.get("host") or api.server_address
        return json_response(discovery.api_versions(host))

    @_handle
    async def apis_root(request: Request) -> Response:
        agg = discovery.wants_aggregated(request.headers.get("accept", ""))
        if agg:
            return json_response(discovery.aggregated(reg, False, agg), media=agg)
        return json_response(discovery.api_group_list(reg))

    @_handle
    async def core_v1(request: Request) -> Response:
        return json_response(discovery.api_resource_list(reg, "", "v1"))

    @_handle
    async def group_doc(request: Request) -> Response:
        group = request.path_params["group"]
        for g, vs in reg.groups():
            if g == group and g:
                return json_response(discovery.api_group(g, vs))
        raise NotFoundError.resource()

    @_handle
    async def group_version_doc(request: Request) -> Response:
        group, version = request.path_params["group"], request.path_params["version"]
        if not reg.resources(group, version):
            raise NotFoundError.resource()
        return json_response(discovery.api_resource_list(reg, group, version))

    # ---- objects ----------------------------------------------------------------------------------------
    @_handle
    async def core_objects(request: Request) -> Response:
        return await dispatch(request, resolve("", "v1", request.path_params["path"]))

    @_handle
    async def group_objects(request: Request) -> Response:
        p = request.path_params
        return await dispatch(request, resolve(p["group"], p["version"], p["path"]))

    async def dispatch(request: Request, t: _Target) -> Response:
        m = request.method
        rt = t.rt
        if rt.group == METRICS_GROUP and api.metrics_provider is not None:
            if m != "GET" or t.sub:
                raise MethodNotAllowed()
            q = request.query_params
            if t.name:
                return json_response(await get_metrics(api.metrics_provider, rt, t.namespace, t.name))
            return json_response(await list_metrics(api.metrics_provider, rt, t.namespace, q.get("labelSelector"),
                                                    q.get("fieldSelector")))
        if not t.name:
            if m == "GET":
                if request.query_params.get("watch", "false").lower() in ("1", "true", "t", "yes"):
                    _verb(rt, "watch")
                    return await watch_response(api, request, t.rt, t.namespace)
                _verb(rt, "list")
                return await list_(request, t)
            if m == "POST":
                _verb(rt, "create")
                if rt.group in REVIEW_GROUPS:
                    body = await read_body(request, protobuf_kind=(rt.group, rt.kind))
                    return json_response(await review(request, rt, body, api.authorizer), 201)
                return await create(request, t)
            if m == "DELETE":
                _verb(rt, "deletecollection")
                return await delete_collection(request, t)
            raise MethodNotAllowed()
        if t.sub == "scale":
            return await scale(request, t)
        if t.sub == "binding" and rt.group == "" and rt.plural == "pods":
            if m != "POST":
                raise MethodNotAllowed()
            body = await read_body(request, protobuf_kind=("", "Binding"))
            await res.bind(t.namespace, t.name, body, dry_run=_dry_run(request),
                           field_manager=_field_manager(request, "unknown"))
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "code": 201}, 201)
        if t.sub and t.sub not in ("status",):
            handler = api.subresource_handlers.get((rt.group, rt.plural, t.sub))
            if handler is None:
                raise NotFoundError.resource()
            return await handler(request, rt, t.namespace, t.name)
        if m == "GET":
            _verb(rt, "get")
            obj = await res.get(rt, t.namespace, t.name)
            return render_one(request, rt, obj)
        if m == "PUT":
            _verb(rt, "update")
            return await update(request, t)
        if m == "PATCH":
            _verb(rt, "patch")
            return await patch(request, t)
        if m == "DELETE" and not t.sub:
            _verb(rt, "delete")
            return await delete(request, t)
        raise MethodNotAllowed()

    def _verb(rt: ResourceType, verb: str) -> None:
        if verb not in rt.verbs:
            raise MethodNotAllowed()

    def render_one(request: Request, rt: ResourceType, obj: Obj, status: int = 200,
                   warnings: list[str] | None = None) -> Response:
        if wants_table(request):
            return json_response(table(rt, [obj], include_object=request.query_params.get("includeObject", "Metadata"),
                                       resource_version=str(meta(obj).get("resourceVersion", ""))), status,
                                 warning_headers(warnings or []))
        return json_response(obj, status, warning_headers(warnings or []))

    async def list_(request: Request, t: _Target) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise BadRequest(f"limit: Invalid value: {q.get('limit')!r}") from None
        found, rv, token = await res.list_encoded(
            t.rt, t.namespace, label_selector=q.get("labelSelector"), field_selector=q.get("fieldSelector"),
            limit=limit, continue_token=q.get("continue") or "", resource_version=q.get("resourceVersion") or "")
        if wants_table(request):
            return json_response(table(t.rt, [obj for obj, _ in found], include_object=q.get("includeObject", "Metadata"),
                                       resource_version=rv, continue_token=token))
        md: Obj = {"resourceVersion": rv}
        if token:
            md["continue"] = token
        return encoded_list_response({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version, "metadata": md},
                                     [raw for _, raw in found])

    async def create(request: Request, t: _Target) -> Response:
        body = await read_body(request, protobuf_kind=(t.rt.group, t.rt.kind))
        body, warnings = check_fields(request, t.rt, body)
        if not isinstance(body, dict):
            raise BadRequest("the body of the request was in an unknown format")
        obj = await res.create(t.rt, t.namespace, body, dry_run=_dry_run(request),
                               field_manager=_field_manager(request, "unknown"))
        return render_one(request, t.rt, obj, 201, warnings)

    async def update(request: Request, t: _Target) -> Response:
        body = await read_body(request, protobuf_kind=(t.rt.group, t.rt.kind))
        body, warnings = check_fields(request, t.rt, body)
        obj = await res.update(t.rt, t.namespace, t.name, body, subresource=t.sub, dry_run=_dry_run(request),
                               field_manager=_field_manager(request, "unknown"))
        return render_one(request, t.rt, obj, 200, warnings)

    async def patch(request: Request, t: _Target) -> Response:
        ct = media_type(request)
        rt = t.rt
        dry = _dry_run(request)
        body = await read_body(request)
        warnings: list[str] = []
        if ct == APPLY:
            manager = request.query_params.get("fieldManager", "")
            if not manager:
                raise BadRequest("PATCH, application/apply-patch+yaml requests require fieldManager")
            force = truthy(request.query_params.get("force")) if "force" in request.query_params else False
            if not isinstance(body, dict):
                raise BadRequest("error decoding YAML: the apply configuration must be an object")
            body, warnings = check_fields(request, rt, body)
            if meta(body).get("name") not in (None, t.name):
                raise BadRequest(f"the name of the object ({meta(body).get('name')}) does not match the name on "
                                 f"the URL ({t.name})")
            meta(body)["name"] = t.name
            for k in ("apiVersion", "kind"):
                if not body.get(k):
                    raise BadRequest(f"invalid object type: {k} is required")
            try:
                obj = await res.modify(rt, t.namespace, t.name,
                                       lambda old: to_storage(rt, apply_config(rt, from_storage(rt, old), body,
                                                                               manager, force)),
                                       subresource=t.sub, dry_run=dry, field_manager=manager, apply=True)
            except NotFoundError:
                if t.sub:
                    raise
                created = apply_config(rt, None, body, manager, force)
                obj = await res.create(rt, t.namespace, created, dry_run=dry, field_manager=manager, apply=True)
                return render_one(request, rt, obj, 201, warnings)
            return render_one(request, rt, obj, 200, warnings)
        if ct not in (JSON_PATCH, MERGE_PATCH, STRATEGIC):
            from pitwall.kube.errors import UnsupportedMedia

            raise UnsupportedMedia(f"the body of the request was in an unknown format - accepted media types "
                                   f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY}"
                                   + (f", {STRATEGIC}" if rt.crd is None else ""))

        def fn(old: Obj) -> Obj:
            view = from_storage(rt, old)
            patched = apply_patch(rt, ct, view, body)
            rv = meta(patched).get("resourceVersion")
            if rv and rv != meta(old).get("resourceVersion"):
                from pitwall.kube.errors import Conflict

                raise Conflict.modified(rt.plural, rt.group, t.name)
            checked, w = check_fields(request, rt, patched)
            warnings[:] = w
            return to_storage(rt, checked)

        obj = await res.modify(rt, t.namespace, t.name, fn, subresource=t.sub, dry_run=dry,
                               field_manager=_field_manager(request, "unknown"))
        return render_one(request, rt, obj, 200, warnings)

    async def _delete_options(request: Request) -> Obj:
        opts: Obj = {}
        if request.headers.get("content-length", "0") not in ("0", "") or \
                request.headers.get("transfer-encoding"):
            raw = await read_raw(request)
            if raw.strip():
                try:
                    opts = json.loads(raw)
                except ValueError:
                    raise BadRequest("the body of the request was in an unknown format") from None
        q = request.query_params
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise BadRequest(f"gracePeriodSeconds: Invalid value: {q['gracePeriodSeconds']!r}") from None
        if "orphanDependents" in q:
            opts["orphanDependents"] = truthy(q["orphanDependents"])
        if "dryRun" in q:
            opts["dryRun"] = q.getlist("dryRun")
        if opts.get("orphanDependents") is True and not opts.get("propagationPolicy"):
            opts["propagationPolicy"] = "Orphan"
        return opts

    async def delete(request: Request, t: _Target) -> Response:
        opts = await _delete_options(request)
        dry = bool(opts.get("dryRun")) or _dry_run(request)
        grace = opts.get("gracePeriodSeconds")
        obj, gone = await res.delete(t.rt, t.namespace, t.name, propagation=str(opts.get("propagationPolicy") or ""),
                                     preconditions=opts.get("preconditions"), dry_run=dry,
                                     grace_period=int(grace) if isinstance(grace, int) else None)
        if not gone:
            return render_one(request, t.rt, obj)  # 200 with the object, as upstream (202 only for a legacy flag)
        if t.rt.kind == "Pod" or t.rt.crd is not None:
            return render_one(request, t.rt, obj)
        details: Obj = {"name": t.name}
        if t.rt.group:
            details["group"] = t.rt.group
        details["kind"] = t.rt.plural
        details["uid"] = meta(obj).get("uid", "")
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": details})

    async def delete_collection(request: Request, t: _Target) -> Response:
        opts = await _delete_options(request)
        q = request.query_params
        lr = await res.list(t.rt, t.namespace, label_selector=q.get("labelSelector"),
                            field_selector=q.get("fieldSelector"))
        done = []
        for o in lr.items:
            with contextlib.suppress(NotFoundError):
                obj, _ = await res.delete(t.rt, meta(o).get("namespace", ""), meta(o)["name"],
                                          propagation=str(opts.get("propagationPolicy") or ""),
                                          dry_run=bool(opts.get("dryRun")))
                done.append(obj)
        return json_response({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version,
                              "metadata": {"resourceVersion": lr.resource_version}, "items": done})

    async def scale(request: Request, t: _Target) -> Response:
        from pitwall.kube.scale import scale_of, set_replicas

        rt = t.rt
        if request.method == "GET":
            return json_response(scale_of(rt, await res.get(rt, t.namespace, t.name)))
        if request.method not in ("PUT", "PATCH"):
            raise MethodNotAllowed()
        ct = media_type(request)
        body = await read_body(request)
        dry = _dry_run(request)

        def fn(old: Obj) -> Obj:
            cur = scale_of(rt, from_storage(rt, old))
            if request.method == "PUT":
                new = body
                rv = meta(new).get("resourceVersion") if isinstance(new, dict) else None
                if rv and rv != meta(old).get("resourceVersion"):
                    from pitwall.kube.errors import Conflict

                    raise Conflict.modified(rt.plural, rt.group, t.name)
            elif ct == APPLY:
                new = {**cur, "spec": {**cur.get("spec", {}), **(body.get("spec") or {})}}
            else:
                scale_rt = ResourceType(group="autoscaling", version="v1", kind="Scale", plural="scale",
                                        singular="scale", namespaced=True, definition="io.k8s.api.autoscaling.v1.Scale")
                new = apply_patch(scale_rt, ct, cur, body)
            replicas = (new.get("spec") or {}).get("replicas") if isinstance(new, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                from pitwall.kube.errors import Cause, Invalid

                raise Invalid("Scale", "autoscaling", t.name, [Cause(
                    "spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or equal to 0")])
            return set_replicas(rt, old, replicas)

        obj = await res.modify(rt, t.namespace, t.name, fn, dry_run=dry,
                               field_manager=_field_manager(request, "unknown"))
        return json_response(scale_of(rt, obj))

    # ---- misc -------------------------------------------------------------------------------------------
    @_handle
    async def version(request: Request) -> Response:
        return json_response(api.version_info)

    @_handle
    async def livez(request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    @_handle
    async def readyz(request: Request) -> Response:
        if not api.ready:
            raise KubeError("[-]pitwall-kube failed: not started", details={})
        return Response("ok", media_type="text/plain")

    @_handle
    async def openapi_v2(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if accepts_protobuf(accept):
            return Response(api.openapi.v2(protobuf=True), media_type=PROTOBUF_V2)
        if accept and "json" not in accept and "*/*" not in accept:
            raise NotAcceptable(f"only application/json and {PROTOBUF_V2} are served for /openapi/v2", details={})
        return Response(api.openapi.v2(), media_type="application/json")

    @_handle
    async def openapi_v3_root(request: Request) -> Response:
        return json_response(api.openapi.v3_root())

    @_handle
    async def openapi_v3_doc(request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        parts = path.split("/")
        if len(parts) == 2 and parts[0] == "api":
            doc = api.openapi.v3_doc("", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = api.openapi.v3_doc(parts[1], parts[2])
        else:
            doc = None
        if doc is None:
            raise NotFoundError.resource()
        headers = {"Cache-Control": "public, immutable"} if "hash" in request.query_params else {}
        return Response(doc, headers=headers, media_type="application/json")

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    def core_owned(path: str) -> bool:
        """Only served core resources (and namespaces) under /api/v1/: Prometheus' /api/v1/query & co. pass."""
        first = path[len("/api/v1/"):].split("/", 1)[0]
        return first == "namespaces" or reg.get("", "v1", first) is not None

    routes = [
        _Route("/api", api_root, ["GET"]),
        _Route("/api/v1", core_v1, ["GET"]),
        _Route("/api/v1/{path:path}", core_objects, all_methods, owned=core_owned),
        _Route("/apis", apis_root, ["GET"]),
        _Route("/apis/{group}", group_doc, ["GET"]),
        _Route("/apis/{group}/{version}", group_version_doc, ["GET"]),
        _Route("/apis/{group}/{version}/{path:path}", group_objects, all_methods),
        _Route("/version", version, ["GET"]),
        _Route("/livez", livez, ["GET"]),
        _Route("/readyz", readyz, ["GET"]),
        _Route("/healthz", livez, ["GET"]),
        _Route("/openapi/v2", openapi_v2, ["GET"]),
        _Route("/openapi/v3", openapi_v3_root, ["GET"]),
        _Route("/openapi/v3/{path:path}", openapi_v3_doc, ["GET"]),
    ]
    r.routes.extend(routes)
    return r
