"""``/api/backup/v1``: the admin API the ``pitwall backup`` CLI talks to (server-wide routes).

- ``POST /api/backup/v1/self`` ``{"repository": REPO, "password": PW}``: back up
  this server's data directory into REPO (created if absent); answers the run
  (``phase`` Completed, or Failed with ``reason`` and ``error``). Status 200
  when Completed; 403 wrong password, 409 repository locked, 502 repository
  unreachable, 504 timeout, 500 otherwise, each with the run as the body.
- ``GET /api/backup/v1/self/runs``: the runs since the server started, newest last.
- ``POST /api/backup/v1/check`` ``{"repository", "password", "readData": false, "readDataSubset": ""}``:
  ``restic check`` of REPO run by the server, which records ``pitwall_backup_repository_check_success``
  (1/0); answers ``{"ok", "report"}`` or ``{"ok": false, "reason", "error"}`` (status 200 either way when the
  check ran; 400 for a bad request).
- ``GET /api/backup/v1/backups?namespace=NS``: Velero Backups (all namespaces without ``namespace``),
  ``{"items": [...]}``, newest first (with the control plane; 503 without).
- ``GET /api/backup/v1/backups/NS/NAME``: ``{"backup": ..., "restores": [...], "drills": [...],
  "events": [...]}``, the Restores and RestoreDrills naming it and its Events.
- ``GET /api/backup/v1/backups/NS/NAME/logs``: ``{"lines": [...]}``, its Events (the controller's record of
  the run: phases, item errors and warnings, hook failures) oldest first, as logfmt lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pitwall.backup.restic import Restic, ResticError
from pitwall.backup.selfbackup import SelfBackup
from pitwall.backup.velero import API_VERSION as VELERO
from pitwall.backup.views import MAX_LIST, backup_log_lines, describe_backup
from pitwall.core.errors import BadData, BodyTooLarge, NotFound, Unavailable
from pitwall.core.http_errors import error_router
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["backup_router"]

MAX_BODY_BYTES = 16 << 10
_SUBSET = re.compile(r"^(\d{1,6}/\d{1,6}|\d{1,3}(\.\d+)?%|\d{1,12}[KMGT]?)$")  # restic's --read-data-subset forms
_STATUS = {"wrong-password": 403, "locked": 409, "unreachable": 502, "no-repository": 502, "timeout": 504}


async def _small_json(request: Request) -> dict[str, Any]:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        doc = orjson.loads(bytes(buf) or b"{}")
    except orjson.JSONDecodeError as e:
        raise BadData(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadData("a JSON object is required")
    return doc


def _restic_of(doc: dict[str, Any]) -> Restic:
    repo, password = doc.get("repository"), doc.get("password")
    if not isinstance(repo, str) or not repo:
        raise BadData("repository: a restic repository (path or URL) is required")
    if not isinstance(password, str) or not password:
        raise BadData("password: the repository password is required (RESTIC_PASSWORD or RESTIC_PASSWORD_FILE)")
    try:
        return Restic(repo, password)
    except ResticError as e:
        raise BadData(e.message) from None


def _time(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("startTimestamp") or obj["metadata"].get("creationTimestamp") or "")


def _velero_routes(r: APIRouter, kube: Callable[[], KubeClient | None]) -> None:
    def client() -> KubeClient:
        c = kube()
        if c is None:
            raise Unavailable("the control plane is off (kube.enabled: false): there are no Velero Backups")
        return c

    async def backup(ns: str, name: str) -> dict[str, Any]:
        try:
            return await client().get(VELERO, "Backup", name, ns)
        except NotFoundError:
            raise NotFound(f"backup {ns}/{name} not found") from None

    @r.get("/backups")
    async def backups(namespace: str = "") -> JSONResponse:
        items = (await client().list(VELERO, "Backup", namespace, limit=MAX_LIST)).items
        return JSONResponse({"items": sorted(items, key=_time, reverse=True)})

    @r.get("/backups/{ns}/{name}")
    async def describe(ns: str, name: str) -> JSONResponse:
        return JSONResponse(await describe_backup(client(), await backup(ns, name)))

    @r.get("/backups/{ns}/{name}/logs")
    async def logs(ns: str, name: str) -> JSONResponse:
        return JSONResponse({"lines": await backup_log_lines(client(), await backup(ns, name))})


def backup_router(self_backup: SelfBackup, kube: Callable[[], KubeClient | None] = lambda: None) -> APIRouter:
    """The routes; ``kube`` gives the control plane's client (None when it is off)."""
    r = error_router("native", prefix="/api/backup/v1", tags=["backup"])
    _velero_routes(r, kube)

    @r.post("/self")
    async def backup_self(request: Request) -> JSONResponse:
        run = await self_backup.run(_restic_of(await _small_json(request)))
        status = 200 if run.phase == "Completed" else _STATUS.get(run.reason, 500)
        return JSONResponse(run.doc(), status_code=status)

    @r.post("/check")
    async def check(request: Request) -> JSONResponse:
        doc = await _small_json(request)
        restic = _restic_of(doc)
        subset = doc.get("readDataSubset") or None
        if subset is not None and (not isinstance(subset, str) or not _SUBSET.match(subset)):
            raise BadData("readDataSubset: n/t, a percentage (5%) or a size (500M), as restic takes it")
        ok, out = True, {}
        async with self_backup.locks.of(restic.repo):
            try:
                out["report"] = (await restic.check(read_data=bool(doc.get("readData")), subset=subset)).strip()
            except ResticError as e:
                ok, out = False, {"reason": e.reason, "error": e.message}
        self_backup.stats.set_gauge("pitwall_backup_repository_check_success", {"repository": restic.repo},
                                    1.0 if ok else 0.0)
        return JSONResponse({"ok": ok, "repository": restic.repo, **out})

    @r.get("/self/runs")
    async def runs() -> JSONResponse:
        return JSONResponse({"runs": [run.doc() for run in self_backup.runs]})

    return r
