"""``/api/backup/v1``: the admin API the ``pitwall backup`` CLI talks to (server-wide routes).

- ``POST /api/backup/v1/self`` ``{"repository": REPO, "password": PW}``: back up
  this server's data directory into REPO (created if absent); answers the run
  (``phase`` Completed, or Failed with ``reason`` and ``error``). Status 200
  when Completed; 403 wrong password, 409 repository locked, 502 repository
  unreachable, 504 timeout, 500 otherwise, each with the run as the body.
- ``GET /api/backup/v1/self/runs``: the runs since the server started, newest last.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pitwall.backup.restic import Restic, ResticError
from pitwall.backup.selfbackup import SelfBackup
from pitwall.core.errors import BadData, BodyTooLarge
from pitwall.core.http_errors import error_router

__all__ = ["backup_router"]

MAX_BODY_BYTES = 16 << 10
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


def backup_router(self_backup: SelfBackup) -> APIRouter:
    r = error_router("native", prefix="/api/backup/v1", tags=["backup"])

    @r.post("/self")
    async def backup_self(request: Request) -> JSONResponse:
        run = await self_backup.run(_restic_of(await _small_json(request)))
        status = 200 if run.phase == "Completed" else _STATUS.get(run.reason, 500)
        return JSONResponse(run.doc(), status_code=status)

    @r.get("/self/runs")
    async def runs() -> JSONResponse:
        return JSONResponse({"runs": [run.doc() for run in self_backup.runs]})

    return r
