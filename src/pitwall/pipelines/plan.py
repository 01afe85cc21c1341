"""One pipeline's jobs from a ``CiConfig``: ``workflow:rules``, each job's ``rules`` or ``only/except``,
``parallel`` expanded into GitLab's job names (``test 1/3``, ``test: [linux, 3.11]``), ``needs`` and
``dependencies`` resolved to those names and checked as GitLab checks them at pipeline creation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pitwall.pipelines.expr import Expression, parse_expression
from pitwall.pipelines.spec import (
    ArtifactsSpec,
    CacheSpec,
    CiConfig,
    ImageSpec,
    JobSpec,
    OnlyExcept,
    Rule,
    ServiceSpec,
    glob_match,
)
from pitwall.pipelines.yamlload import SpecError

__all__ = ["Context", "PlannedJob", "PlannedPipeline", "plan"]


@dataclass
class Context:
    """What rules look at: the ref, its kind, the trigger and variables, and the repository's files."""

    ref: str
    is_tag: bool
    source: str  # GitLab's CI_PIPELINE_SOURCE: push, web, api, schedule, trigger, ...
    variables: dict[str, str]  # predefined and pipeline variables (the user's win over predefined)
    files: Callable[[], list[str]]
    changed: Callable[[str | None], list[str] | None]  # files changed against compare_to; None: unknown


@dataclass
class PlannedJob:
    """One job of one pipeline, in plain types (stored with the pipeline, so retries survive restarts)."""

    name: str
    base: str
    stage: str
    stage_idx: int
    script: list[str]
    before_script: list[str]
    after_script: list[str]
    variables: dict[str, list[Any]]  # name -> [value, expand]
    when: str
    allow_failure: bool
    allow_failure_exit_codes: list[int]
    start_in: float | None
    retry_max: int
    retry_when: list[str]
    retry_exit_codes: list[int]
    timeout_s: float | None
    needs: list[list[Any]] | None  # [[name, artifacts], ...] once resolved; None: stage order
    dependencies: list[str] | None
    artifacts: dict[str, Any] | None
    cache: list[dict[str, Any]]
    environment: dict[str, str] | None
    resource_group: str | None
    interruptible: bool
    node_index: int = 0
    node_total: int = 1
    tags: list[str] = field(default_factory=list)
    coverage: str | None = None
    image: dict[str, Any] | None = None  # ImageSpec's fields; None: the shell executor
    services: list[dict[str, Any]] = field(default_factory=list)  # ServiceSpec's fields, in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PlannedJob:
        return PlannedJob(**d)

    @property
    def artifacts_spec(self) -> ArtifactsSpec | None:
        if self.artifacts is None:
            return None
        a = dict(self.artifacts)
        for k in ("paths", "exclude", "junit"):
            a[k] = tuple(a[k])
        return ArtifactsSpec(**a)

    @property
    def cache_specs(self) -> list[CacheSpec]:
        return [CacheSpec(**{**c, "key_files": tuple(c["key_files"]), "paths": tuple(c["paths"])})
                for c in self.cache]


@dataclass
class PlannedPipeline:
    name: str
    stages: list[str]
    variables: dict[str, list[Any]]  # global YAML variables (and workflow rule variables)
    jobs: list[PlannedJob]
    auto_cancel_on_new_commit: str
    auto_cancel_on_job_failure: str


def plan(cfg: CiConfig, ctx: Context) -> PlannedPipeline:
    """The jobs ``cfg`` runs in ``ctx``; ``SpecError`` when workflow rules filter the pipeline out or a
    ``needs``/``dependencies`` entry names a job that is not in it."""
    global_vars = {k: [v, e] for k, (v, e) in cfg.variables.items()}
    env = {**{k: v for k, (v, _) in cfg.variables.items()}, **ctx.variables}
    onc, ojf = cfg.workflow.auto_cancel_on_new_commit, cfg.workflow.auto_cancel_on_job_failure
    if cfg.workflow.rules is not None:
        rule = _first_match(cfg.workflow.rules, env, ctx)
        if rule is None or rule.when == "never":
            raise SpecError("Pipeline filtered out by workflow rules.")
        for k, v in rule.variables.items():
            global_vars[k] = [v, True]
            env.setdefault(k, v) if k in ctx.variables else env.__setitem__(k, v)
        onc = rule.auto_cancel.get("on_new_commit", onc)
        ojf = rule.auto_cancel.get("on_job_failure", ojf)
    jobs: list[PlannedJob] = []
    for spec in cfg.jobs.values():
        jobs.extend(_plan_job(spec, cfg, global_vars, ctx))
    if not jobs:
        raise SpecError("No stages / jobs for this pipeline.")
    _resolve_needs(jobs, cfg)
    return PlannedPipeline(name=cfg.workflow.name, stages=cfg.stages, variables=global_vars, jobs=jobs,
                           auto_cancel_on_new_commit=onc, auto_cancel_on_job_failure=ojf)


def _inherited(spec: JobSpec, global_vars: dict[str, list[Any]]) -> dict[str, list[Any]]:
    iv = spec.inherit_variables
    if iv is True:
        return dict(global_vars)
    if iv is False:
        return {}
    return {k: v for k, v in global_vars.items() if k in iv}


def _plan_job(spec: JobSpec, cfg: CiConfig, global_vars: dict[str, list[Any]], ctx: Context) -> list[PlannedJob]:
    variables = {**_inherited(spec, global_vars), **{k: [v, e] for k, (v, e) in spec.variables.items()}}
    env = {**{k: str(v[0]) for k, v in variables.items()}, **ctx.variables}
    when, allow_failure, start_in = spec.when, spec.allow_failure, spec.start_in
    if spec.rules is not None:
        rule = _first_match(spec.rules, env, ctx)
        if rule is None:
            return []
        when = rule.when or (spec.when if spec.when_set else "on_success")
        if rule.allow_failure is not None:
            allow_failure = rule.allow_failure
        elif when == "manual" and allow_failure is None:
            allow_failure = False  # manual from rules blocks, unlike job-level when: manual
        start_in = rule.start_in if rule.start_in is not None else start_in
        for k, v in rule.variables.items():
            variables[k] = [v, True]
    else:
        only = spec.only if spec.only is not None or spec.except_ is not None else OnlyExcept(("branches", "tags"))
        if only is not None and not _policy(only, env, ctx):
            return []
        if spec.except_ is not None and _policy(spec.except_, env, ctx):
            return []
    if when == "never":
        return []
    if when == "delayed" and start_in is None:
        raise SpecError(f"jobs:{spec.name} start in should be a duration", spec.file, spec.line)
    if allow_failure is None:
        allow_failure = when == "manual"
    out = []
    for i in range(spec.parallel):
        name, extra = _instance_name(spec, i)
        out.append(PlannedJob(
            name=name, base=spec.name, stage=spec.stage, stage_idx=cfg.stages.index(spec.stage),
            script=spec.script, before_script=spec.before_script, after_script=spec.after_script,
            variables={**variables, **{k: [v, True] for k, v in extra.items()}}, when=when,
            allow_failure=allow_failure, allow_failure_exit_codes=list(spec.allow_failure_exit_codes),
            start_in=start_in if when == "delayed" else None, retry_max=spec.retry_max,
            retry_when=list(spec.retry_when), retry_exit_codes=list(spec.retry_exit_codes), timeout_s=spec.timeout_s,
            needs=[[n.job, n.artifacts, n.optional, [list(map(list, c)) for c in n.matrix]] for n in spec.needs]
            if spec.needs is not None else None,
            dependencies=spec.dependencies,
            artifacts=asdict(spec.artifacts) if spec.artifacts is not None else None,
            cache=[asdict(c) for c in spec.cache], environment=spec.environment, resource_group=spec.resource_group,
            interruptible=spec.interruptible, node_index=i + 1 if spec.parallel > 1 else 0,
            node_total=spec.parallel, tags=list(spec.tags), coverage=spec.coverage,
            image=_image_dict(spec.image), services=[_service_dict(s) for s in spec.services]))
    return out


def _instance_name(spec: JobSpec, i: int) -> tuple[str, dict[str, str]]:
    if spec.matrix:
        combo = spec.matrix[i]
        return f"{spec.name}: [{', '.join(combo.values())}]", combo
    if spec.parallel > 1:
        return f"{spec.name} {i + 1}/{spec.parallel}", {}
    return spec.name, {}


def _first_match(rules: list[Rule], env: dict[str, str], ctx: Context) -> Rule | None:
    for r in rules:
        if r.if_ is not None and not r.if_.evaluate(env):
            continue
        if r.changes is not None and not _changes(r.changes, r.compare_to, ctx):
            continue
        if r.exists is not None and not _exists(r.exists, ctx):
            continue
        return r
    return None


def _changes(patterns: tuple[str, ...], compare_to: str | None, ctx: Context) -> bool:
    changed = ctx.changed(compare_to)
    if changed is None:
        return True  # GitLab: no push to compare with (new ref, API or web pipeline) counts as changed
    return any(glob_match(p, f) for p in patterns for f in changed)


def _exists(patterns: tuple[str, ...], ctx: Context) -> bool:
    files = ctx.files()
    return any(glob_match(p, f) for p in patterns for f in files)


_SOURCES = {"api": "api", "web": "web", "schedules": "schedule", "pushes": "push", "triggers": "trigger",
            "pipelines": "pipeline", "external": "external", "chat": "chat", "merge_requests": "merge_request_event",
            "external_pull_requests": "external_pull_request_event"}


def _ref_matches(pattern: str, ctx: Context) -> bool:
    if pattern == "branches":
        return not ctx.is_tag and ctx.source != "merge_request_event"
    if pattern == "tags":
        return ctx.is_tag
    if pattern in _SOURCES:
        return ctx.source == _SOURCES[pattern]
    if len(pattern) > 1 and pattern.startswith("/") and pattern.rstrip("imsx").endswith("/"):
        expr: Expression = parse_expression(f"$REF =~ {pattern}")
        return expr.evaluate({"REF": ctx.ref})
    return pattern == ctx.ref


def _policy(p: OnlyExcept, env: dict[str, str], ctx: Context) -> bool:
    """Whether every given part of an only/except policy matches (each list matches on any entry)."""
    if p.refs and not any(_ref_matches(r, ctx) for r in p.refs):
        return False
    if p.variables and not any(e.evaluate(env) for e in p.variables):
        return False
    return not (p.changes and not _changes(p.changes, None, ctx))


def _resolve_needs(jobs: list[PlannedJob], cfg: CiConfig) -> None:
    by_base: dict[str, list[PlannedJob]] = {}
    for j in jobs:
        by_base.setdefault(j.base, []).append(j)
    for j in jobs:
        spec = cfg.jobs[j.base]
        if j.needs is not None:
            resolved: list[list[Any]] = []
            for name, artifacts, optional, matrix in j.needs:
                targets = by_base.get(name, [])
                if matrix:  # needs:parallel:matrix: only the instances whose matrix values are listed
                    targets = [t for t in targets if any(all(t.variables.get(k, [None])[0] == v for k, v in combo)
                                                         for combo in matrix)]
                if not targets:
                    if optional:
                        continue
                    if name in cfg.jobs:
                        raise SpecError(f"'{j.base}' job needs '{name}' job, but '{name}' does not exist in the "
                                        "pipeline. This might be because of the only, except, or rules keywords.",
                                        spec.file, spec.line)
                    raise SpecError(f"'{j.base}' job needs '{name}' job, but '{name}' is not in any previous stage",
                                    spec.file, spec.line)
                if any(t.stage_idx > j.stage_idx for t in targets):
                    raise SpecError(f"'{j.base}' job needs '{name}' job, but '{name}' is not in any previous stage",
                                    spec.file, spec.line)
                resolved.extend([t.name, artifacts] for t in targets)
            j.needs = resolved
        if j.dependencies is not None:
            deps: list[str] = []
            for name in j.dependencies:
                targets = by_base.get(name, [])
                if not targets or any(t.stage_idx >= j.stage_idx for t in targets):
                    raise SpecError(f"{j.base} job: undefined dependency: {name}", spec.file, spec.line)
                deps.extend(t.name for t in targets)
            j.dependencies = deps


def _service_dict(s: ServiceSpec) -> dict[str, Any]:
    return {"name": s.name, "aliases": list(s.aliases),
            "entrypoint": list(s.entrypoint) if s.entrypoint is not None else None,
            "command": list(s.command) if s.command is not None else None, "variables": dict(s.variables),
            "pull_policy": list(s.pull_policy) if s.pull_policy is not None else None, "user": s.user}


def _image_dict(image: ImageSpec | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {"name": image.name, "entrypoint": list(image.entrypoint) if image.entrypoint is not None else None,
            "pull_policy": list(image.pull_policy)}
