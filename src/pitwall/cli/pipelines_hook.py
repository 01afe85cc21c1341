"""pitwall's ``post-receive`` hook for a bare repository: reports each push's refs to the server at once.

The hook is a small stdlib-only Python script; its settings (server URL, token, project) are in
``hooks/pitwall.json`` (mode 0600: the token). An existing ``post-receive`` is kept as
``post-receive.pitwall-chained`` and run first with the same input; its exit status is the hook's. Reporting
is bounded by a timeout and never fails the push (git has already updated the refs when post-receive runs):
a server that does not answer gets a warning on the pusher's terminal and the repository's poll, when it is
watched, starts the pipeline later.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["CHAINED", "CONFIG", "HOOK", "MARKER", "HookError", "install", "uninstall"]

HOOK = "post-receive"
CHAINED = "post-receive.pitwall-chained"
CONFIG = "pitwall.json"
MARKER = "# pitwall-post-receive-hook"
HOOK_PATH = "/api/pipelines/v1/hooks/git"

SCRIPT = f'''#!/usr/bin/env python3
{MARKER}: installed by `pitwall pipelines hook install`; reports pushed refs to pitwall.
import json, os, subprocess, sys, urllib.error, urllib.request

here = os.path.dirname(os.path.abspath(__file__))
data = sys.stdin.buffer.read()
code = 0
chained = os.path.join(here, "{CHAINED}")
if os.path.isfile(chained) and os.access(chained, os.X_OK):
    code = subprocess.run([chained, *sys.argv[1:]], input=data).returncode
try:
    with open(os.path.join(here, "{CONFIG}")) as f:
        cfg = json.load(f)
    refs = []
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3:
            refs.append({{"before": parts[0], "after": parts[1], "ref": parts[2]}})
    if refs:
        body = json.dumps({{"repo": cfg["repo"], "project": cfg.get("project"), "refs": refs}}).encode()
        headers = {{"Content-Type": "application/json"}}
        if cfg.get("token"):
            headers["Authorization"] = "Bearer " + cfg["token"]
        req = urllib.request.Request(cfg["url"], data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=float(cfg.get("timeout", 5))) as resp:
                ids = json.loads(resp.read() or b"{{}}").get("pipelines") or []
        except urllib.error.HTTPError as e:
            raise RuntimeError("HTTP %d: %s" % (e.code, e.read(2000).decode("utf-8", "replace").strip()))
        if ids:
            print("pitwall: started pipeline " + ", ".join("#%d" % i for i in ids))
        else:
            print("pitwall: push reported, no pipeline to run")
except Exception as e:
    print("pitwall: warning: the push was not reported (%s); pitwall's poll starts its pipeline if the "
          "repository is watched" % (e,), file=sys.stderr)
sys.exit(code)
'''


class HookError(Exception):
    """The repository cannot take the hook (not a git directory, unreadable hook)."""


def _hooks_dir(repo: Path) -> Path:
    repo = repo.expanduser().resolve()
    if (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        return repo / "hooks"
    if (repo / ".git" / "HEAD").is_file():
        return repo / ".git" / "hooks"
    raise HookError(f"{repo} is not a git repository")


def _ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")[:500]
    except OSError:
        return False


def install(repo: Path, server: str, token: str | None, project: str | None, timeout_s: float) -> str:
    """Install (or update) the hook in ``repo``; what was done, in words."""
    hooks = _hooks_dir(repo)
    hooks.mkdir(exist_ok=True)
    hook, chained = hooks / HOOK, hooks / CHAINED
    said = "updated" if _ours(hook) else "installed"
    if hook.exists() and not _ours(hook):
        if chained.exists():
            raise HookError(f"{chained} exists already: move one of the two hooks away first")
        hook.rename(chained)  # kept, run first by ours
        said += f" (the existing hook is kept and runs first: {CHAINED})"
    cfg = {"url": server.rstrip("/") + HOOK_PATH, "token": token or "", "project": project,
           "repo": str(hooks.parent.resolve() if hooks.parent.name != ".git" else hooks.parent.parent.resolve()),
           "timeout": timeout_s}
    cfg_path = hooks / CONFIG
    fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token: readable by the owner only
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=2)
    os.chmod(cfg_path, 0o600)
    tmp = hooks / f".{HOOK}.pitwall-tmp"
    tmp.write_text(SCRIPT)
    tmp.chmod(0o755)
    tmp.replace(hook)
    return f"{said}: {hook} reports pushes to {cfg['url']}"


def uninstall(repo: Path) -> str:
    """Remove the hook (and its settings), putting a chained hook back; what was done, in words."""
    hooks = _hooks_dir(repo)
    hook, chained = hooks / HOOK, hooks / CHAINED
    if not _ours(hook):
        return f"no pitwall hook in {hooks}: nothing to do"
    hook.unlink()
    (hooks / CONFIG).unlink(missing_ok=True)
    if chained.exists():
        chained.rename(hook)
        return f"removed; the previous hook is back at {hook}"
    return f"removed {hook}"
