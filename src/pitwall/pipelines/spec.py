"""``.gitlab-ci.yml`` into job definitions, as GitLab's config processing does it.

Order (GitLab's): read the file and its ``include: local`` files (deep-merged, the including file wins),
resolve ``!reference`` tags, then per job: ``extends`` (multi-level deep merge of hashes; arrays and scalars
replaced), ``default`` for the keys it may set (unless ``inherit`` says otherwise), then validation. Unknown
keywords, and GitLab keywords pitwall does not run, are errors naming file, line and keyword. Rules and
``parallel`` are applied per pipeline by ``plan``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pitwall.pipelines.durations import parse_human_duration
from pitwall.pipelines.expr import ExprError, Expression, parse_expression
from pitwall.pipelines.yamlload import LineDict, Reference, SpecError, load_yaml

__all__ = ["CI_FILE", "ArtifactsSpec", "CacheSpec", "CiConfig", "ImageSpec", "JobSpec", "Need", "Rule", "ServiceSpec",
           "SpecError", "WorkflowSpec", "load_config"]

CI_FILE = ".gitlab-ci.yml"
DEFAULT_STAGES = ["build", "test", "deploy"]
MAX_INCLUDES = 150
MAX_EXTENDS_DEPTH = 11
MAX_REFERENCE_DEPTH = 10
MAX_PARALLEL = 200
MAX_JOBS = 1000
DEFAULT_TIMEOUT_S = 3600.0

JOB_KEYS = frozenset({"after_script", "allow_failure", "artifacts", "before_script", "cache", "coverage", "dependencies",
                      "environment", "extends", "image", "inherit", "interruptible", "needs", "parallel",
                      "resource_group", "retry", "rules", "script", "services", "stage", "start_in", "tags", "timeout",
                      "variables", "when", "only", "except"})
# GitLab keywords pitwall does not run: an error rather than a silently different pipeline.
UNSUPPORTED_JOB_KEYS = frozenset({"dast_configuration", "hooks", "identity", "id_tokens",
                                  "manual_confirmation", "pages", "release", "run", "secrets", "trigger"})
DEFAULT_KEYS = frozenset({"after_script", "artifacts", "before_script", "cache", "image", "interruptible", "retry",
                          "services", "tags", "timeout"})
UNSUPPORTED_DEFAULT_KEYS = frozenset({"hooks", "id_tokens"})
GLOBAL_KEYS = frozenset({"default", "include", "stages", "variables", "workflow"})
# Deprecated globals GitLab still reads as ``default``.
GLOBAL_AS_DEFAULT = frozenset({"before_script", "after_script", "cache", "image", "services"})
UNSUPPORTED_GLOBAL_KEYS = frozenset({"spec"})
IMAGE_KEYS = frozenset({"name", "entrypoint", "pull_policy"})
IMAGE_UNSUPPORTED_KEYS = frozenset({"docker", "kubernetes"})
SERVICE_KEYS = frozenset({"name", "alias", "entrypoint", "command", "variables", "pull_policy", "docker"})
PULL_POLICIES = frozenset({"always", "if-not-present", "never"})
MAX_SERVICES = 16
WHEN = frozenset({"on_success", "on_failure", "always", "manual", "delayed", "never"})
RETRY_WHEN = frozenset({"always", "unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
                        "runner_system_failure", "runner_unsupported", "stale_schedule", "job_execution_timeout",
                        "archived_failure", "unmet_prerequisites", "scheduler_failure", "data_integrity_failure"})
ONLY_REFS_KEYWORDS = frozenset({"branches", "tags", "api", "external", "pipelines", "pushes", "schedules",
                                "triggers", "web", "merge_requests", "chat", "external_pull_requests"})

FileReader = Callable[[str], str | None]
FileLister = Callable[[], list[str]]


@dataclass(frozen=True)
class Rule:
    """One entry of ``rules`` (or ``workflow:rules``)."""

    if_: Expression | None = None
    changes: tuple[str, ...] | None = None
    compare_to: str | None = None
    exists: tuple[str, ...] | None = None
    when: str | None = None
    allow_failure: bool | None = None
    start_in: float | None = None
    variables: dict[str, str] = field(default_factory=dict)
    auto_cancel: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Need:
    job: str
    artifacts: bool = True
    optional: bool = False
    matrix: tuple[tuple[tuple[str, str], ...], ...] = ()  # needs:parallel:matrix: the instances wanted


@dataclass(frozen=True)
class ArtifactsSpec:
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    when: str = "on_success"
    expire_in: float | None = None  # seconds; 0: never; None: the retention setting (GitLab's default: 30 days)
    name: str = ""
    junit: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheSpec:
    key: str = "default"
    key_files: tuple[str, ...] = ()
    key_prefix: str = ""
    paths: tuple[str, ...] = ()
    policy: str = "pull-push"
    when: str = "on_success"


@dataclass(frozen=True)
class OnlyExcept:
    refs: tuple[str, ...] = ()
    variables: tuple[Expression, ...] = ()
    changes: tuple[str, ...] = ()


@dataclass
class JobSpec:
    """A job after ``extends``, ``default`` and ``!reference``: what rules and ``parallel`` apply to."""

    name: str
    stage: str
    script: list[str]
    file: str = ""
    line: int = 0
    before_script: list[str] = field(default_factory=list)
    after_script: list[str] = field(default_factory=list)
    variables: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (value, expand)
    inherit_variables: bool | tuple[str, ...] = True
    when: str = "on_success"
    when_set: bool = False
    start_in: float | None = None
    allow_failure: bool | None = None  # None: GitLab's default for ``when``
    allow_failure_exit_codes: tuple[int, ...] = ()
    retry_max: int = 0
    retry_when: tuple[str, ...] = ("always",)
    retry_exit_codes: tuple[int, ...] = ()
    timeout_s: float | None = None
    needs: list[Need] | None = None
    dependencies: list[str] | None = None
    artifacts: ArtifactsSpec | None = None
    cache: list[CacheSpec] = field(default_factory=list)
    environment: dict[str, str] | None = None
    resource_group: str | None = None
    interruptible: bool = False
    rules: list[Rule] | None = None
    only: OnlyExcept | None = None
    except_: OnlyExcept | None = None
    parallel: int = 1
    matrix: list[dict[str, str]] = field(default_factory=list)
    tags: tuple[str, ...] = ()
    coverage: str | None = None  # a /regex/ over the log
    image: ImageSpec | None = None
    services: tuple[ServiceSpec, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    """One ``services:`` item: a container started before the job's script, reachable by its aliases."""

    name: str
    aliases: tuple[str, ...] = ()  # from ``alias`` (comma/space separated), besides the ones derived from name
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    variables: tuple[tuple[str, str], ...] = ()  # service-only, over the job's variables
    pull_policy: tuple[str, ...] | None = None  # None: the runner's policy (local images only)
    user: str | None = None  # docker:user


@dataclass(frozen=True)
class ImageSpec:
    """``image:``: run the job in this container image (the podman executor)."""

    name: str
    entrypoint: tuple[str, ...] | None = None  # None: the image's own
    pull_policy: tuple[str, ...] = ("always",)


@dataclass(frozen=True)
class WorkflowSpec:
    name: str = ""
    rules: list[Rule] | None = None
    auto_cancel_on_new_commit: str = "conservative"
    auto_cancel_on_job_failure: str = "none"


@dataclass
class CiConfig:
    """A whole pipeline definition."""

    stages: list[str]
    variables: dict[str, tuple[str, bool]]
    workflow: WorkflowSpec
    jobs: dict[str, JobSpec]
    files: list[str]


# ---------------------------------------------------------------- loading, includes, references


def load_config(read: FileReader, list_files: FileLister, path: str = CI_FILE) -> CiConfig:
    """Load ``path`` (and its local includes) through ``read`` (repository-relative path -> text or None)."""
    text = read(path)
    if text is None:
        raise SpecError(f"{path} not found in the repository")
    files: list[str] = []
    root = _with_includes(load_yaml(text, path), read, list_files, files, depth=0)
    root = _resolve_refs(root, root, 0)
    return _build(root, files or [path])


def _with_includes(doc: LineDict, read: FileReader, list_files: FileLister, files: list[str],
                   depth: int) -> LineDict:
    files.append(doc.file)
    if "include" not in doc:
        return doc
    inc = doc.pop("include")
    merged = LineDict().copy_meta(doc)
    for path, line in _include_paths(inc, doc, list_files):
        if len(files) >= MAX_INCLUDES or depth > 100:
            raise SpecError(f"Maximum of {MAX_INCLUDES} nested includes are allowed!", doc.file, line)
        text = read(path)
        if text is None:
            raise SpecError(f"Local file `{path}` does not exist!", doc.file, line)
        if path in files:
            continue  # GitLab includes a file once
        sub = _with_includes(load_yaml(text, path), read, list_files, files, depth + 1)
        merged = _deep_merge(merged, sub)
    return _deep_merge(merged, doc)  # type: ignore[no-any-return]


def _include_paths(inc: Any, doc: LineDict, list_files: FileLister) -> list[tuple[str, int]]:
    _, line = doc.where("include")
    items = inc if isinstance(inc, list) else [inc]
    out: list[tuple[str, int]] = []
    for it in items:
        if isinstance(it, LineDict):
            extra = sorted(set(it) - {"local"})
            if extra:
                kind = "include:" + extra[0]
                raise SpecError(f"`{kind}` is not supported by pitwall (only include:local)", *it.where(extra[0]))
            it = it.get("local")
        if not isinstance(it, str) or not it:
            raise SpecError("include config should be a string, a hash with local or an array of them",
                            doc.file, line)
        if it.startswith(("http://", "https://")):
            raise SpecError("remote includes are not supported by pitwall (only include:local)", doc.file, line)
        rel = it.lstrip("/")
        if "*" in rel:
            out.extend((p, line) for p in sorted(list_files()) if _glob_match(rel, p))
        else:
            out.append((rel, line))
    return out


def _glob_match(pattern: str, path: str) -> bool:
    """GitLab's path globs: ``*`` within a directory, ``**`` across directories."""
    if "**" not in pattern:
        return fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")
    head, _, tail = pattern.partition("**")
    if not path.startswith(head):
        return False
    rest = path[len(head):]
    tail = tail.lstrip("/")
    parts = rest.split("/")
    return any(_glob_match(tail, "/".join(parts[i:])) for i in range(len(parts))) if tail else True


def glob_match(pattern: str, path: str) -> bool:
    """Whether repository-relative ``path`` matches GitLab path glob ``pattern``."""
    return _glob_match(pattern.lstrip("/").removeprefix("./"), path)


def _deep_merge(base: Any, over: Any) -> Any:
    """GitLab's deep merge: hashes merge recursively; anything else in ``over`` replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = LineDict()
        if isinstance(base, LineDict):
            out.copy_meta(base)
        if isinstance(over, LineDict):
            out.copy_meta(over)
        for k, v in base.items():
            out[k] = v
        for k, v in over.items():
            out[k] = _deep_merge(base[k], v) if k in base else v
            if isinstance(over, LineDict) and k in over.lines:
                out.lines[k] = over.lines[k]
        return out
    return over


def _resolve_refs(node: Any, root: LineDict, depth: int) -> Any:
    if isinstance(node, Reference):
        if depth >= MAX_REFERENCE_DEPTH:
            raise SpecError("!reference: too many nested references", node.file, node.line)
        cur: Any = root
        for part in node.path:
            if not isinstance(cur, dict) or part not in cur:
                raise SpecError(f"!reference [{', '.join(node.path)}] could not be found", node.file, node.line)
            cur = cur[part]
        return _resolve_refs(cur, root, depth + 1)
    if isinstance(node, LineDict):
        out = LineDict().copy_meta(node)
        for k, v in node.items():
            out[k] = _resolve_refs(v, root, depth)
        return out
    if isinstance(node, list):
        return [_resolve_refs(v, root, depth) for v in node]
    return node


# ---------------------------------------------------------------- the whole file


def _build(root: LineDict, files: list[str]) -> CiConfig:
    for key in root:
        if not isinstance(key, str):
            raise SpecError(f"invalid key {key!r}", *root.where(key))
        if key in UNSUPPORTED_GLOBAL_KEYS:
            raise SpecError(f"`{key}` is not supported by pitwall", *root.where(key))
    default = _default(root)
    stages = _stages(root)
    variables = _variables(root.get("variables"), root, "variables", allow_description=True)
    workflow = _workflow(root)
    templates = {k: v for k, v in root.items() if isinstance(k, str) and k not in GLOBAL_KEYS
                 and k not in GLOBAL_AS_DEFAULT}
    jobs: dict[str, JobSpec] = {}
    for name, body in templates.items():
        if name.startswith("."):
            continue  # hidden: only a template
        if not isinstance(body, LineDict):
            raise SpecError(f"jobs:{name} config should be a hash", *root.where(name))
        merged = _extends(name, body, templates, [])
        merged = _apply_default(name, merged, default)
        jobs[name] = _job(name, merged, stages)
        if len(jobs) > MAX_JOBS:
            raise SpecError(f"more than {MAX_JOBS} jobs", *root.where(name))
    if not jobs:
        raise SpecError("jobs config should contain at least one visible job", root.file, 1)
    return CiConfig(stages=stages, variables=variables, workflow=workflow, jobs=jobs, files=files)


def _default(root: LineDict) -> LineDict:
    out = LineDict().copy_meta(root)
    for k in GLOBAL_AS_DEFAULT:
        if k in root:
            out[k] = root[k]
            out.lines[k] = root.lines.get(k, root.line)
    d = root.get("default")
    if d is None:
        return out
    if not isinstance(d, LineDict):
        raise SpecError("default config should be a hash", *root.where("default"))
    for k in d:
        if k in UNSUPPORTED_DEFAULT_KEYS:
            raise SpecError(f"default:{k} is not supported by pitwall", *d.where(k))
        if k not in DEFAULT_KEYS:
            raise SpecError(f"default config contains unknown keys: {k}", *d.where(k))
    return _deep_merge(out, d)  # type: ignore[no-any-return]


def _stages(root: LineDict) -> list[str]:
    raw = root.get("stages", DEFAULT_STAGES)
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise SpecError("stages config should be an array of strings", *root.where("stages"))
    flat = [s for s in raw if s not in (".pre", ".post")]
    return [".pre", *dict.fromkeys(flat), ".post"]


def _workflow(root: LineDict) -> WorkflowSpec:
    wf = root.get("workflow")
    if wf is None:
        return WorkflowSpec()
    if not isinstance(wf, LineDict):
        raise SpecError("workflow config should be a hash", *root.where("workflow"))
    for k in wf:
        if k not in ("rules", "name", "auto_cancel"):
            raise SpecError(f"workflow config contains unknown keys: {k}", *wf.where(k))
    name = wf.get("name", "")
    ac = wf.get("auto_cancel") or LineDict()
    if not isinstance(ac, dict) or set(ac) - {"on_new_commit", "on_job_failure"}:
        raise SpecError("workflow:auto_cancel config should be a hash of on_new_commit, on_job_failure",
                        *wf.where("auto_cancel"))
    onc = ac.get("on_new_commit", "conservative")
    ojf = ac.get("on_job_failure", "none")
    if onc not in ("conservative", "interruptible", "none") or ojf not in ("none", "all"):
        raise SpecError("workflow:auto_cancel has an unknown value", *wf.where("auto_cancel"))
    rules = _rules(wf, "workflow", workflow=True) if "rules" in wf else None
    return WorkflowSpec(name=str(name), rules=rules, auto_cancel_on_new_commit=onc, auto_cancel_on_job_failure=ojf)


def _extends(name: str, body: LineDict, templates: dict[str, Any], chain: list[str]) -> LineDict:
    ext = body.get("extends")
    if ext is None:
        return body
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError(f"{name}: nesting too deep in `extends`", *body.where("extends"))
    parents = [ext] if isinstance(ext, str) else ext
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise SpecError(f"{name}: extends config should be a string or an array of strings", *body.where("extends"))
    merged = LineDict().copy_meta(body)
    for p in parents:
        if p in chain or p == name:
            raise SpecError(f"{name}: circular dependency detected in `extends`", *body.where("extends"))
        parent = templates.get(p)
        if not isinstance(parent, LineDict):
            raise SpecError(f"{name}: unknown key in `extends` ({p})", *body.where("extends"))
        merged = _deep_merge(merged, _extends(p, parent, templates, [*chain, name]))
    own = LineDict((k, v) for k, v in body.items() if k != "extends").copy_meta(body)
    return _deep_merge(merged, own)  # type: ignore[no-any-return]


def _apply_default(name: str, job: LineDict, default: LineDict) -> LineDict:
    inherit = job.get("inherit")
    which: bool | list[str] = True
    if inherit is not None:
        if not isinstance(inherit, dict) or set(inherit) - {"default", "variables"}:
            raise SpecError(f"jobs:{name}:inherit config should be a hash of default, variables", *job.where("inherit"))
        which = inherit.get("default", True)
        if not isinstance(which, bool | list):
            raise SpecError(f"jobs:{name}:inherit:default should be a boolean or an array", *job.where("inherit"))
    out = LineDict().copy_meta(job)
    for k, v in default.items():
        if k not in job and (which is True or (isinstance(which, list) and k in which)):
            out[k] = v
            out.lines[k] = job.line
    out.update(job)
    return out


# ---------------------------------------------------------------- one job


def _job(name: str, d: LineDict, stages: list[str]) -> JobSpec:
    for k in d:
        if k in UNSUPPORTED_JOB_KEYS:
            raise SpecError(f"jobs:{name} uses `{k}`, which pitwall does not support", *d.where(k))
        if k not in JOB_KEYS:
            raise SpecError(f"jobs:{name} config contains unknown keys: {k}", *d.where(k))
    if "script" not in d:
        raise SpecError(f"jobs:{name} config should implement the script:, run:, or trigger: keyword", d.file, d.line)
    job = JobSpec(name=name, stage=_stage(name, d, stages), script=_script(name, d, "script"), file=d.file,
                  line=d.line)
    if not job.script:
        raise SpecError(f"jobs:{name}:script config should be a string or a nested array of strings up to 10 "
                        "levels deep", *d.where("script"))
    job.before_script = _script(name, d, "before_script")
    job.after_script = _script(name, d, "after_script")
    job.variables = _variables(d.get("variables"), d, f"jobs:{name}:variables")
    inherit = d.get("inherit")
    if isinstance(inherit, dict) and "variables" in inherit:
        iv = inherit["variables"]
        if not isinstance(iv, bool) and not (isinstance(iv, list) and all(isinstance(x, str) for x in iv)):
            raise SpecError(f"jobs:{name}:inherit:variables should be a boolean or an array", *d.where("inherit"))
        job.inherit_variables = iv if isinstance(iv, bool) else tuple(iv)
    _when(job, d)
    _allow_failure(job, d)
    _retry(job, d)
    if "timeout" in d:
        job.timeout_s = _duration(d, "timeout", name)
    _needs(job, d)
    if "dependencies" in d:
        deps = d["dependencies"]
        if not isinstance(deps, list) or not all(isinstance(x, str) for x in deps):
            raise SpecError(f"jobs:{name}:dependencies config should be an array of strings", *d.where("dependencies"))
        job.dependencies = list(deps)
    job.artifacts = _artifacts(name, d) if d.get("artifacts") is not None else None
    job.cache = _cache(name, d)
    job.environment = _environment(name, d)
    job.resource_group = _opt_str(name, d, "resource_group")
    job.interruptible = _bool(name, d, "interruptible", False)
    if "rules" in d:
        if "only" in d or "except" in d:
            raise SpecError(f"jobs:{name} config key may not be used with `rules`: only/except", *d.where("rules"))
        job.rules = _rules(d, f"jobs:{name}")
    job.only = _only_except(name, d, "only")
    job.except_ = _only_except(name, d, "except")
    _parallel(job, d)
    tags = d.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SpecError(f"jobs:{name}:tags config should be an array of strings", *d.where("tags"))
    job.tags = tuple(tags)
    job.coverage = _coverage(name, d)
    job.image = _image(name, d)
    job.services = _services(name, d)
    return job


def _image(name: str, d: LineDict) -> ImageSpec | None:
    """GitLab's ``image``: a name, or ``{name, entrypoint, pull_policy}``."""
    raw = d.get("image")
    if raw is None:
        return None
    where = d.where("image")
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise SpecError(f"jobs:{name}:image config should be a hash or a string", *where)
    for k in raw:
        if k in IMAGE_UNSUPPORTED_KEYS:
            raise SpecError(f"jobs:{name}:image uses `{k}`, which pitwall does not support", *where)
        if k not in IMAGE_KEYS:
            raise SpecError(f"jobs:{name}:image config contains unknown keys: {k}", *where)
    img = raw.get("name")
    if not isinstance(img, str) or not img.strip():
        raise SpecError(f"jobs:{name}:image:name config should be a non-empty string", *where)
    ep = raw.get("entrypoint")
    if ep is not None and (not isinstance(ep, list) or not all(isinstance(x, str) for x in ep)):
        raise SpecError(f"jobs:{name}:image:entrypoint config should be an array of strings", *where)
    pp = raw.get("pull_policy", ["always"])
    pp = [pp] if isinstance(pp, str) else pp
    if not isinstance(pp, list) or not pp or not set(pp) <= {"always", "if-not-present", "never"}:
        raise SpecError(f"jobs:{name}:image:pull_policy config should be always, if-not-present or never, or "
                        "an array of them", *where)
    return ImageSpec(name=img.strip(), entrypoint=tuple(ep) if ep is not None else None, pull_policy=tuple(pp))


def _services(name: str, d: LineDict) -> tuple[ServiceSpec, ...]:
    """GitLab's ``services``: an array of image names or ``{name, alias, entrypoint, command, variables,
    pull_policy, docker: {user}}``."""
    raw = d.get("services")
    if raw is None:
        return ()
    where = d.where("services")
    if not isinstance(raw, list):
        raise SpecError(f"jobs:{name}:services config should be an array of strings or hashes", *where)
    if len(raw) > MAX_SERVICES:
        raise SpecError(f"jobs:{name}:services config has more than {MAX_SERVICES} services", *where)
    return tuple(_service(f"jobs:{name}:services:{i}", item, where) for i, item in enumerate(raw))


def _service(at: str, raw: Any, where: tuple[str, int]) -> ServiceSpec:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise SpecError(f"{at} config should be a hash or a string", *where)
    for k in raw:
        if k not in SERVICE_KEYS:
            raise SpecError(f"{at} config contains unknown keys: {k}", *where)
    img = raw.get("name")
    if not isinstance(img, str) or not img.strip():
        raise SpecError(f"{at}:name config should be a non-empty string", *where)
    alias = raw.get("alias", "")
    if not isinstance(alias, str):
        raise SpecError(f"{at}:alias config should be a string", *where)
    aliases = tuple(alias.replace(",", " ").split())
    bad = [a for a in aliases if "$" not in a and not _ALIAS.fullmatch(a)]  # variables: checked by podman
    if bad:
        raise SpecError(f"{at}:alias {bad[0]!r} is not a valid host name", *where)
    lists: dict[str, tuple[str, ...] | None] = {}
    for k in ("entrypoint", "command"):
        v = raw.get(k)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise SpecError(f"{at}:{k} config should be an array of strings", *where)
        lists[k] = tuple(v) if v is not None else None
    pp = raw.get("pull_policy")
    pp = [pp] if isinstance(pp, str) else pp
    if pp is not None and (not isinstance(pp, list) or not pp or not set(pp) <= PULL_POLICIES):
        raise SpecError(f"{at}:pull_policy config should be always, if-not-present or never, or an array of them",
                        *where)
    variables = _variables(raw.get("variables"), raw if isinstance(raw, LineDict) else LineDict(), f"{at}:variables")
    return ServiceSpec(name=img.strip(), aliases=aliases, entrypoint=lists["entrypoint"], command=lists["command"],
                       variables=tuple((k, v) for k, (v, _) in variables.items()),
                       pull_policy=tuple(pp) if pp is not None else None, user=_service_user(at, raw, where))


def _service_user(at: str, raw: dict[str, Any], where: tuple[str, int]) -> str | None:
    docker = raw.get("docker")
    if docker is None:
        return None
    if not isinstance(docker, dict):
        raise SpecError(f"{at}:docker config should be a hash", *where)
    for k in docker:
        if k != "user":
            raise SpecError(f"{at}:docker uses `{k}`, which pitwall does not support (only user)", *where)
    user = docker.get("user")
    if not isinstance(user, str | int) or isinstance(user, bool) or not str(user).strip():
        raise SpecError(f"{at}:docker:user config should be a non-empty string", *where)
    return str(user).strip()


_ALIAS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?")


def _coverage(name: str, d: LineDict) -> str | None:
    cov = d.get("coverage")
    if cov is None:
        return None
    if not isinstance(cov, str) or len(cov) < 3 or not cov.startswith("/") or not cov.endswith("/"):
        raise SpecError(f"jobs:{name}:coverage config must be a regular expression (/.../)", *d.where("coverage"))
    try:
        parse_expression(f'"" =~ {cov}')
    except ExprError as e:
        raise SpecError(f"jobs:{name}:coverage config must be a regular expression: {e}", *d.where("coverage")) \
            from None
    return cov[1:-1]


def _stage(name: str, d: LineDict, stages: list[str]) -> str:
    stage = d.get("stage", "test")
    if not isinstance(stage, str):
        raise SpecError(f"jobs:{name}:stage config should be a string", *d.where("stage"))
    if stage not in stages:
        raise SpecError(f"jobs:{name} chosen stage {stage} does not exist; available stages are "
                        + ", ".join(stages), *d.where("stage"))
    return stage


def _flatten(v: Any, depth: int) -> list[Any]:
    if not isinstance(v, list):
        return [v]
    if depth > 10:
        raise ValueError("nested too deep")
    out: list[Any] = []
    for x in v:
        out.extend(_flatten(x, depth + 1))
    return out


def _script(name: str, d: LineDict, key: str) -> list[str]:
    v = d.get(key)
    if v is None:
        return []
    try:
        lines = _flatten(v, 0)
    except ValueError:
        lines = [None]
    if not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in lines):
        raise SpecError(f"jobs:{name}:{key} config should be a string or a nested array of strings up to 10 "
                        "levels deep", *d.where(key))
    return [str(x) for x in lines]


def _variables(v: Any, parent: LineDict, where: str, allow_description: bool = False) -> dict[str, tuple[str, bool]]:
    key = where.rsplit(":", 1)[-1]
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise SpecError(f"{where} config should be a hash of key value pairs", *parent.where(key))
    out: dict[str, tuple[str, bool]] = {}
    for k, val in v.items():
        loc = v.where(k) if isinstance(v, LineDict) else parent.where(key)
        if not isinstance(k, str):
            raise SpecError(f"{where} config should be a hash of key value pairs", *loc)
        expand = True
        if isinstance(val, dict):
            allowed = {"value", "expand"} | ({"description", "options"} if allow_description else set())
            extra = set(val) - allowed
            if extra:
                raise SpecError(f"{where}:{k} config contains unknown keys: {sorted(extra)[0]}", *loc)
            expand = val.get("expand", True)
            if not isinstance(expand, bool):
                raise SpecError(f"{where}:{k}:expand should be a boolean", *loc)
            val = val.get("value", "")
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise SpecError(f"{where} config should be a hash of key value pairs, value can be a hash", *loc)
        out[k] = (str(val), expand)
    return out


def _when(job: JobSpec, d: LineDict) -> None:
    if "when" in d:
        w = d["when"]
        if w not in WHEN:
            raise SpecError(f"jobs:{job.name} when should be one of: " + ", ".join(sorted(WHEN)), *d.where("when"))
        job.when, job.when_set = w, True
    if "start_in" in d:
        if job.when != "delayed" and "rules" not in d:
            raise SpecError(f"jobs:{job.name} start in should be blank unless `when: delayed`", *d.where("start_in"))
        job.start_in = _duration(d, "start_in", job.name)
        if job.start_in > 7 * 86400:
            raise SpecError(f"jobs:{job.name} start in should not exceed the limit (1 week)", *d.where("start_in"))
    if job.when == "delayed" and job.start_in is None:
        raise SpecError(f"jobs:{job.name} start in should be a duration", *d.where("when"))


def _allow_failure(job: JobSpec, d: LineDict) -> None:
    if "allow_failure" not in d:
        return
    af = d["allow_failure"]
    if isinstance(af, bool):
        job.allow_failure = af
        return
    if isinstance(af, dict) and set(af) == {"exit_codes"}:
        codes = af["exit_codes"]
        codes = [codes] if isinstance(codes, int) else codes
        if isinstance(codes, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
            job.allow_failure = False
            job.allow_failure_exit_codes = tuple(codes)
            return
    raise SpecError(f"jobs:{job.name}:allow_failure config should be a boolean or a hash of exit_codes",
                    *d.where("allow_failure"))


def _retry(job: JobSpec, d: LineDict) -> None:
    r = d.get("retry")
    if r is None:
        return
    where = d.where("retry")
    if isinstance(r, int) and not isinstance(r, bool):
        r = {"max": r}
    if not isinstance(r, dict) or set(r) - {"max", "when", "exit_codes"}:
        raise SpecError(f"jobs:{job.name}:retry config should be an integer or a hash of max, when, exit_codes",
                        *where)
    mx = r.get("max", 0)
    if not isinstance(mx, int) or isinstance(mx, bool) or not 0 <= mx <= 2:
        raise SpecError(f"jobs:{job.name}:retry max must be 0, 1 or 2", *where)
    when = r.get("when", ["always"])
    when = [when] if isinstance(when, str) else when
    if not isinstance(when, list) or not all(w in RETRY_WHEN for w in when):
        raise SpecError(f"jobs:{job.name}:retry when is unknown", *where)
    codes = r.get("exit_codes", [])
    codes = [codes] if isinstance(codes, int) else codes
    if not isinstance(codes, list) or not all(isinstance(c, int) for c in codes):
        raise SpecError(f"jobs:{job.name}:retry exit_codes should be an integer or an array of integers", *where)
    job.retry_max, job.retry_when, job.retry_exit_codes = mx, tuple(when), tuple(codes)


def _duration(d: LineDict, key: str, name: str) -> float:
    try:
        s = parse_human_duration(d[key])
    except ValueError:
        s = -1.0
    if s <= 0:
        raise SpecError(f"jobs:{name}:{key} config should be a duration", *d.where(key))
    return s


def _needs(job: JobSpec, d: LineDict) -> None:
    if "needs" not in d:
        return
    raw = d["needs"]
    if not isinstance(raw, list):
        raise SpecError(f"jobs:{job.name}:needs config should be an array", *d.where("needs"))
    if len(raw) > 50:
        raise SpecError(f"jobs:{job.name}:needs config has too many entries (maximum: 50)", *d.where("needs"))
    needs: list[Need] = []
    for n in raw:
        if isinstance(n, str):
            needs.append(Need(n))
        elif isinstance(n, dict) and "job" in n and not set(n) - {"job", "artifacts", "optional", "parallel"}:
            if not isinstance(n["job"], str) or not isinstance(n.get("artifacts", True), bool) \
                    or not isinstance(n.get("optional", False), bool):
                raise SpecError(f"jobs:{job.name}:needs entry has a wrong type", *d.where("needs"))
            matrix = _needs_matrix(job.name, n.get("parallel"), d) if "parallel" in n else ()
            needs.append(Need(n["job"], n.get("artifacts", True), n.get("optional", False), matrix))
        elif isinstance(n, dict) and set(n) & {"pipeline", "project"}:
            key = sorted(set(n) & {"pipeline", "project"})[0]
            raise SpecError(f"jobs:{job.name}: needs:{key} is not supported by pitwall", *d.where("needs"))
        else:
            raise SpecError(f"jobs:{job.name}:needs config uses invalid types", *d.where("needs"))
    job.needs = needs


def _needs_matrix(name: str, par: Any, d: LineDict) -> tuple[tuple[tuple[str, str], ...], ...]:
    """``needs:parallel:matrix``: every combination it names, as sorted (variable, value) pairs."""
    if not isinstance(par, dict) or set(par) != {"matrix"} or not isinstance(par["matrix"], list):
        raise SpecError(f"jobs:{name}:needs:parallel should be a hash with matrix", *d.where("needs"))
    out: list[tuple[tuple[str, str], ...]] = []
    for entry in par["matrix"]:
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"jobs:{name}:needs:parallel:matrix should be an array of hashes", *d.where("needs"))
        combos: list[dict[str, str]] = [{}]
        for k, vals in entry.items():
            vals = vals if isinstance(vals, list) else [vals]
            combos = [{**c, str(k): str(v)} for c in combos for v in vals]
        out.extend(tuple(sorted(c.items())) for c in combos)
    return tuple(out)


def _paths(name: str, d: dict[str, Any], key: str, where: tuple[str, int]) -> tuple[str, ...]:
    v = d.get(key, [])
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise SpecError(f"jobs:{name}:{key} config should be an array of strings", *where)
    for p in v:
        if p.startswith("/") or ".." in p.split("/"):
            raise SpecError(f"jobs:{name}:{key} path {p!r} must stay inside the project directory", *where)
    return tuple(v)


def _artifacts(name: str, d: LineDict) -> ArtifactsSpec:
    a = d["artifacts"]
    where = d.where("artifacts")
    if not isinstance(a, dict):
        raise SpecError(f"jobs:{name}:artifacts config should be a hash", *where)
    allowed = {"paths", "exclude", "when", "expire_in", "name", "reports", "expose_as", "public", "access"}
    for k in a:
        if k == "untracked":
            raise SpecError(f"jobs:{name}: artifacts:untracked is not supported by pitwall", *where)
        if k not in allowed:
            raise SpecError(f"jobs:{name}:artifacts config contains unknown keys: {k}", *where)
    when = a.get("when", "on_success")
    if when not in ("on_success", "on_failure", "always"):
        raise SpecError(f"jobs:{name}:artifacts when should be on_success, on_failure or always", *where)
    expire: float | None = 0.0 if a.get("expire_in") == "never" else None
    if a.get("expire_in") is not None and a["expire_in"] != "never":
        try:
            expire = parse_human_duration(a["expire_in"])
        except ValueError:
            raise SpecError(f"jobs:{name}:artifacts expire in should be a duration", *where) from None
    junit: tuple[str, ...] = ()
    reports = a.get("reports") or {}
    if not isinstance(reports, dict):
        raise SpecError(f"jobs:{name}:artifacts:reports config should be a hash", *where)
    for k in reports:
        if k != "junit":
            raise SpecError(f"jobs:{name}: artifacts:reports:{k} is not supported by pitwall (only junit)", *where)
    if "junit" in reports:
        junit = _paths(name, reports, "junit", where)
    paths = _paths(name, a, "paths", where)
    return ArtifactsSpec(paths=paths, exclude=_paths(name, a, "exclude", where), when=when, expire_in=expire,
                         name=str(a.get("name", "")), junit=junit)


def _cache(name: str, d: LineDict) -> list[CacheSpec]:
    raw = d.get("cache")
    if raw is None:
        return []
    where = d.where("cache")
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > 4:
        raise SpecError(f"jobs:{name}:cache config has too many entries (maximum: 4)", *where)
    out: list[CacheSpec] = []
    for c in items:
        if not isinstance(c, dict):
            raise SpecError(f"jobs:{name}:cache config should be a hash", *where)
        for k in c:
            if k in ("untracked", "fallback_keys", "unprotect"):
                raise SpecError(f"jobs:{name}: cache:{k} is not supported by pitwall", *where)
            if k not in ("key", "paths", "policy", "when"):
                raise SpecError(f"jobs:{name}:cache config contains unknown keys: {k}", *where)
        key = c.get("key", "default")
        files: tuple[str, ...] = ()
        prefix = ""
        if isinstance(key, dict):
            if set(key) - {"files", "prefix"} or "files" not in key:
                raise SpecError(f"jobs:{name}:cache:key config should be a string or a hash of files, prefix", *where)
            files = _paths(name, key, "files", where)
            prefix = str(key.get("prefix", ""))
            key = ""
        elif not isinstance(key, str | int) or "/" in str(key) or str(key) in (".", ".."):
            raise SpecError(f"jobs:{name}:cache:key config cannot contain the \"/\" character", *where)
        policy = c.get("policy", "pull-push")
        if policy not in ("pull", "push", "pull-push"):
            raise SpecError(f"jobs:{name}:cache policy should be pull-push, push, or pull", *where)
        when = c.get("when", "on_success")
        if when not in ("on_success", "on_failure", "always"):
            raise SpecError(f"jobs:{name}:cache when should be on_success, on_failure or always", *where)
        out.append(CacheSpec(key=str(key), key_files=files, key_prefix=prefix, paths=_paths(name, c, "paths", where),
                             policy=policy, when=when))
    return out


def _environment(name: str, d: LineDict) -> dict[str, str] | None:
    e = d.get("environment")
    if e is None:
        return None
    where = d.where("environment")
    if isinstance(e, str):
        e = {"name": e}
    if not isinstance(e, dict) or "name" not in e:
        raise SpecError(f"jobs:{name}:environment config should be a string or a hash with name", *where)
    allowed = {"name", "url", "action", "on_stop", "auto_stop_in", "deployment_tier"}
    for k in e:
        if k not in allowed:
            raise SpecError(f"jobs:{name}: environment:{k} is not supported by pitwall", *where)
    if e.get("action", "start") not in ("start", "prepare", "stop", "verify", "access"):
        raise SpecError(f"jobs:{name}:environment action should be start, prepare, stop, verify or access", *where)
    return {k: str(v) for k, v in e.items()}


def _opt_str(name: str, d: LineDict, key: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise SpecError(f"jobs:{name}:{key} config should be a string", *d.where(key))
    return v


def _bool(name: str, d: LineDict, key: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise SpecError(f"jobs:{name}:{key} config should be a boolean value", *d.where(key))
    return v


def _rules(d: LineDict, where: str, workflow: bool = False) -> list[Rule]:
    raw = d.get("rules")
    loc = d.where("rules")
    if not isinstance(raw, list):
        raise SpecError(f"{where}:rules config should be an array of hashes", *loc)
    allowed = {"if", "changes", "exists", "when", "variables"} | (
        {"auto_cancel"} if workflow else {"allow_failure", "start_in", "needs"})
    out: list[Rule] = []
    for r in raw:
        if isinstance(r, list):  # a !reference to a rules list
            out.extend(_rules(LineDict(rules=r).copy_meta(d), where, workflow))
            continue
        if not isinstance(r, dict):
            raise SpecError(f"{where}:rules config should be an array of hashes", *loc)
        rloc = (r.file, r.line) if isinstance(r, LineDict) else loc
        for k in r:
            if k == "needs" and not workflow:
                raise SpecError(f"{where}: rules:needs is not supported by pitwall", *rloc)
            if k not in allowed:
                raise SpecError(f"{where}:rules:rule config contains unknown keys: {k}", *rloc)
        out.append(_rule(r, where, rloc, workflow))
    return out


def _rule(r: dict[str, Any], where: str, loc: tuple[str, int], workflow: bool) -> Rule:
    expr = None
    if "if" in r:
        if not isinstance(r["if"], str):
            raise SpecError(f"{where}:rules:rule if should be a string", *loc)
        try:
            expr = parse_expression(r["if"])
        except ExprError as e:
            raise SpecError(f"{where}:rules:rule if invalid expression syntax: {e}", *loc) from None
    when = r.get("when")
    valid = ("always", "never") if workflow else tuple(WHEN)
    if when is not None and when not in valid:
        raise SpecError(f"{where}:rules:rule when unknown value: {when}", *loc)
    changes, compare_to = _rule_changes(r, where, loc)
    exists = None
    if "exists" in r:
        ex = r["exists"]
        ex = ex.get("paths") if isinstance(ex, dict) else ex
        ex = [ex] if isinstance(ex, str) else ex
        if not isinstance(ex, list) or not all(isinstance(p, str) for p in ex):
            raise SpecError(f"{where}:rules:rule exists should be an array of strings", *loc)
        exists = tuple(ex)
    af = r.get("allow_failure")
    if af is not None and not isinstance(af, bool):
        raise SpecError(f"{where}:rules:rule allow_failure should be a boolean value", *loc)
    start_in = None
    if "start_in" in r:
        try:
            start_in = parse_human_duration(r["start_in"])
        except ValueError:
            raise SpecError(f"{where}:rules:rule start_in should be a duration", *loc) from None
    variables = {k: v for k, (v, _) in _variables(r.get("variables"), LineDict(), f"{where}:rules:variables").items()}
    ac = r.get("auto_cancel") or {}
    if not isinstance(ac, dict):
        raise SpecError(f"{where}:rules:rule auto_cancel should be a hash", *loc)
    return Rule(if_=expr, changes=changes, compare_to=compare_to, exists=exists, when=when, allow_failure=af,
                start_in=start_in, variables=variables, auto_cancel={str(k): str(v) for k, v in ac.items()})


def _rule_changes(r: dict[str, Any], where: str, loc: tuple[str, int]) -> tuple[tuple[str, ...] | None, str | None]:
    if "changes" not in r:
        return None, None
    ch = r["changes"]
    compare_to = None
    if isinstance(ch, dict):
        if set(ch) - {"paths", "compare_to"}:
            raise SpecError(f"{where}:rules:changes config contains unknown keys", *loc)
        compare_to = ch.get("compare_to")
        ch = ch.get("paths")
    ch = [ch] if isinstance(ch, str) else ch
    if not isinstance(ch, list) or not all(isinstance(p, str) for p in ch):
        raise SpecError(f"{where}:rules:rule changes should be an array of strings", *loc)
    return tuple(ch), compare_to


def _only_except(name: str, d: LineDict, key: str) -> OnlyExcept | None:
    v = d.get(key)
    if v is None:
        return None
    where = d.where(key)
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        v = {"refs": v}
    if not isinstance(v, dict):
        raise SpecError(f"jobs:{name}:{key} config should be an array or a hash", *where)
    for k in v:
        if k == "kubernetes":
            raise SpecError(f"jobs:{name}: {key}:kubernetes is not supported by pitwall", *where)
        if k not in ("refs", "variables", "changes"):
            raise SpecError(f"jobs:{name}:{key} config contains unknown keys: {k}", *where)
    refs = v.get("refs", [])
    variables = v.get("variables", [])
    changes = v.get("changes", [])
    for lst, what in ((refs, "refs"), (variables, "variables"), (changes, "changes")):
        if not isinstance(lst, list) or not all(isinstance(x, str) for x in lst):
            raise SpecError(f"jobs:{name}:{key}:{what} config should be an array of strings", *where)
    exprs = []
    for x in variables:
        try:
            exprs.append(parse_expression(x))
        except ExprError as e:
            raise SpecError(f"jobs:{name}:{key}:variables invalid expression syntax: {e}", *where) from None
    for ref in refs:
        if ref.startswith("/") and ref.endswith("/") and len(ref) > 1:
            try:
                parse_expression(f'"" =~ {ref}')
            except ExprError as e:
                raise SpecError(f"jobs:{name}:{key}:refs: {e}", *where) from None
    return OnlyExcept(refs=tuple(refs), variables=tuple(exprs), changes=tuple(changes))


def _parallel(job: JobSpec, d: LineDict) -> None:
    p = d.get("parallel")
    if p is None:
        return
    where = d.where("parallel")
    if isinstance(p, int) and not isinstance(p, bool):
        if not 1 <= p <= MAX_PARALLEL:
            raise SpecError(f"jobs:{job.name}:parallel config must be less than or equal to {MAX_PARALLEL}", *where)
        job.parallel = p
        return
    if not isinstance(p, dict) or set(p) != {"matrix"} or not isinstance(p["matrix"], list):
        raise SpecError(f"jobs:{job.name}:parallel should be an integer or a hash with matrix", *where)
    combos: list[dict[str, str]] = []
    for entry in p["matrix"]:
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"jobs:{job.name}:parallel:matrix config should be an array of hashes", *where)
        part: list[dict[str, str]] = [{}]
        for k, vals in entry.items():
            vals = vals if isinstance(vals, list) else [vals]
            if not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in vals):
                raise SpecError(f"jobs:{job.name}:parallel:matrix values should be strings or arrays of strings",
                                *where)
            part = [{**c, str(k): str(x)} for c in part for x in vals]
        combos.extend(part)
    if not 1 <= len(combos) <= MAX_PARALLEL:
        raise SpecError(f"jobs:{job.name}:parallel:matrix config generates too many jobs (maximum is "
                        f"{MAX_PARALLEL})", *where)
    job.matrix = combos
    job.parallel = len(combos)
