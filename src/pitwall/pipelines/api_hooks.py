"""Push triggers over HTTP under ``/api/pipelines/v1/hooks``: pitwall's git ``post-receive`` hook
(``/git``, a bearer token with ``write``) and GitHub's push webhooks (``/github``, GitHub's headers, the
body signed with ``X-Hub-Signature-256``: HMAC-SHA256 keyed on ``pipelines.github_secret``; no bearer token,
the signature is the credential). Both record the pushed refs where the polls do, so a push runs once."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pitwall.core.errors import BadData, NotFound, TooLarge, Unauthorized
from pitwall.core.http_errors import error_router
from pitwall.core.tenancy import PRINCIPAL_KEY
from pitwall.pipelines.runner import PipelineRunner
from pitwall.pipelines.settings import PipelinesSettings
from pitwall.pipelines.watch import RefUpdate, RepoWatcher, fetch_commit

__all__ = ["GITHUB_HOOK_PATH", "GIT_HOOK_PATH", "Hooks", "hooks_router", "signature"]

PREFIX = "/api/pipelines/v1/hooks"
GIT_HOOK_PATH = f"{PREFIX}/git"
GITHUB_HOOK_PATH = f"{PREFIX}/github"
MAX_GIT_BODY = 1 << 20
MAX_GITHUB_BODY = 5 << 20  # read before the signature is checked; push payloads list 20 commits at most
MAX_REFS = 1000
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class Hooks:
    """What the hook routes need; ``settings`` is replaced on reload (a rotated secret applies at once)."""

    def __init__(self, watcher: RepoWatcher, runner: PipelineRunner, settings: PipelinesSettings) -> None:
        self.watcher = watcher
        self.runner = runner
        self.settings = settings


def signature(secret: bytes, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def _body(request: Request, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body larger than {limit} bytes")
    return bytes(buf)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadData(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadData("the body must be a JSON object")
    return doc


def _update(before: Any, after: Any, ref: Any) -> RefUpdate:
    if not (isinstance(before, str) and _SHA.fullmatch(before) and isinstance(after, str) and _SHA.fullmatch(after)):
        raise BadData("before and after must be full commit SHAs")
    if not isinstance(ref, str) or not ref.startswith("refs/") or len(ref) > 1024:
        raise BadData(f"ref must be a full ref name (refs/heads/...), not {ref!r}")
    return RefUpdate(before, after, ref)


def _who(request: Request, default: str) -> str:
    return str(getattr(request.scope.get(PRINCIPAL_KEY), "name", "") or default)


def hooks_router(hooks: Hooks) -> APIRouter:
    """``POST /git`` (pitwall's post-receive hook) and ``POST /github`` (GitHub's push webhook)."""
    r = error_router("native", prefix=PREFIX, tags=["pipelines"])

    @r.post("/git")
    async def git(request: Request) -> JSONResponse:
        """``{"repo": PATH, "project": NAME?, "refs": [{"before", "after", "ref"}]}``, as post-receive reads
        them from its standard input: pipelines for the pushed refs, at once."""
        body = _object(await _body(request, MAX_GIT_BODY))
        repo, project, refs = body.get("repo"), body.get("project"), body.get("refs")
        if not isinstance(repo, str) or not repo.startswith("/"):
            raise BadData("repo must be the repository's absolute path")
        if project is not None and (not isinstance(project, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", project)):
            raise BadData("project must be a name of letters, digits, '.', '_' and '-'")
        if not isinstance(refs, list) or not refs or len(refs) > MAX_REFS:
            raise BadData(f"refs must be a list of 1 to {MAX_REFS} {{before, after, ref}} objects")
        if not all(isinstance(u, dict) for u in refs):
            raise BadData("refs must be a list of {before, after, ref} objects")
        updates = [_update(u.get("before"), u.get("after"), u.get("ref")) for u in refs]
        path = Path(repo).resolve()
        if not (path / "HEAD").is_file() and not (path / ".git").exists():
            raise NotFound(f"{path} is not a git repository on the server")
        if project:
            await hooks.runner.store.project_for_path(str(path), project)
        started = await hooks.watcher.pushed(path, updates, user=_who(request, "push"))
        return JSONResponse({"pipelines": started})

    @r.post("/github")
    async def github(request: Request) -> JSONResponse:
        """GitHub's ``push`` (and ``ping``) webhook; the repository is the watched one (or a project's) named
        like GitHub's ``repository.name``, fetched from its ``origin`` when the pushed commit is not there."""
        secret = hooks.settings.github_webhook_secret()
        if not secret:
            raise Unauthorized("GitHub webhooks are off: set pipelines.github_secret (the webhook's secret)")
        raw = await _body(request, MAX_GITHUB_BODY)
        given = request.headers.get("x-hub-signature-256", "")
        if not hmac.compare_digest(signature(secret, raw).encode(), given.encode()):
            raise Unauthorized("X-Hub-Signature-256 does not match the body signed with the configured secret")
        event = request.headers.get("x-github-event", "")
        doc = _github_payload(raw, request.headers.get("content-type", ""))
        if event == "ping":
            return JSONResponse({"msg": "pong", "hook_id": doc.get("hook_id")})
        if event != "push":
            return JSONResponse({"msg": f"event {event!r} ignored: only push starts pipelines"}, status_code=202)
        u = _update(doc.get("before"), doc.get("after"), doc.get("ref"))
        if doc.get("deleted") is True or u.deleted:
            paths = await _github_repos(hooks, doc)
            for path in paths:  # forget the branch, start nothing
                await hooks.watcher.pushed(path, [u], user=_sender(doc))
            return JSONResponse({"msg": "branch deleted: nothing to run", "pipelines": []}, status_code=202)
        started: list[int] = []
        errors = []
        for path in await _github_repos(hooks, doc):
            why = await fetch_commit(path, u)
            if why:
                errors.append(f"{path}: {why}")
                continue
            started += await hooks.watcher.pushed(path, [u], user=_sender(doc))
        if errors and not started:
            raise BadData("; ".join(errors))
        return JSONResponse({"msg": "ok", "pipelines": started, "errors": errors}, status_code=202)

    return r


def _github_payload(raw: bytes, content_type: str) -> dict[str, Any]:
    """GitHub sends JSON, or ``payload=<JSON>`` form-encoded (the hook's content type setting)."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        form = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
        if "payload" not in form:
            raise BadData("a form-encoded GitHub delivery carries the JSON in its payload field")
        return _object(form["payload"][0].encode())
    return _object(raw)


def _sender(doc: dict[str, Any]) -> str:
    for key in ("pusher", "sender"):
        v = doc.get(key)
        if isinstance(v, dict) and isinstance(v.get("name") or v.get("login"), str):
            return str(v.get("name") or v.get("login"))
    return "github"


async def _github_repos(hooks: Hooks, doc: dict[str, Any]) -> list[Path]:
    """Local repositories (watched, or known projects') named as GitHub's ``repository.name``."""
    repo = doc.get("repository")
    name = repo.get("name") if isinstance(repo, dict) else None
    if not isinstance(name, str) or not name:
        raise BadData("repository.name is missing")
    candidates = [w.repo.expanduser().resolve() for w in hooks.watcher.watch]
    candidates += [Path(p["repo"]) for p in await hooks.runner.store.projects()]
    found = list(dict.fromkeys(p for p in candidates if p.name.removesuffix(".git") == name))
    if not found:
        raise NotFound(f"no watched repository or project named {name!r} (pipelines.watch)")
    return found
