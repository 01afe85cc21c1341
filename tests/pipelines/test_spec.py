"""``.gitlab-ci.yml`` processing: GitLab's merge rules, references, includes, and lint errors with file:line."""

from __future__ import annotations

import pytest

from pitwall.pipelines.plan import Context, PlannedPipeline, plan
from pitwall.pipelines.spec import CiConfig, load_config
from pitwall.pipelines.yamlload import SpecError

pytestmark = pytest.mark.timeout(30)


def cfg(main: str, **files: str) -> CiConfig:
    all_files = {".gitlab-ci.yml": main, **{k.replace("__", "/").replace("_yml", ".yml"): v for k, v in files.items()}}
    return load_config(all_files.get, lambda: list(all_files))


def planned(main: str, ref: str = "main", source: str = "push", tag: bool = False, **variables: str
            ) -> PlannedPipeline:
    env = {"CI_COMMIT_REF_NAME": ref, "CI_PIPELINE_SOURCE": source,
           ("CI_COMMIT_TAG" if tag else "CI_COMMIT_BRANCH"): ref, **variables}
    return plan(cfg(main), Context(ref=ref, is_tag=tag, source=source, variables=env,
                                   files=lambda: ["README.md", "src/app.py"], changed=lambda _: None))


def names(p: PlannedPipeline) -> list[str]:
    return [j.name for j in p.jobs]


def lint_error(main: str, **files: str) -> str:
    with pytest.raises(SpecError) as e:
        cfg(main, **files)
    return str(e.value)


def test_extends_deep_merges_hashes_and_replaces_arrays() -> None:
    c = cfg("""
.base:
  variables: {A: base, B: base}
  script: [echo base]
  retry: {max: 2, when: [script_failure]}
.mid:
  extends: .base
  variables: {B: mid, C: mid}
job:
  extends: [.mid]
  variables: {C: job}
  script: [echo job]
""")
    job = c.jobs["job"]
    assert {k: v for k, (v, _) in job.variables.items()} == {"A": "base", "B": "mid", "C": "job"}
    assert job.script == ["echo job"] and job.retry_max == 2 and job.retry_when == ("script_failure",)


def test_default_applies_unless_inherit_says_otherwise() -> None:
    c = cfg("""
default:
  before_script: [echo default]
  timeout: 10m
  interruptible: true
variables: {G1: one, G2: two}
a:
  script: [echo a]
b:
  script: [echo b]
  before_script: [echo own]
  inherit:
    default: [timeout]
    variables: [G2]
""")
    a, b = c.jobs["a"], c.jobs["b"]
    assert a.before_script == ["echo default"] and a.timeout_s == 600 and a.interruptible
    assert b.before_script == ["echo own"] and b.timeout_s == 600 and not b.interruptible
    p = plan(c, Context("main", False, "push", {}, lambda: [], lambda _: None))
    assert set(p.jobs[0].variables) == {"G1", "G2"} and set(p.jobs[1].variables) == {"G2"}


def test_reference_anchors_and_nested_scripts() -> None:
    c = cfg("""
.setup:
  script: [echo one, [echo two, echo three]]
.vars: &vars
  X: "1"
job:
  variables:
    <<: *vars
    Y: "2"
  script:
    - !reference [.setup, script]
    - echo four
""")
    job = c.jobs["job"]
    assert job.script == ["echo one", "echo two", "echo three", "echo four"]
    assert {k: v for k, (v, _) in job.variables.items()} == {"X": "1", "Y": "2"}


def test_include_local_with_glob_and_override() -> None:
    c = cfg("include:\n  - local: /ci/*.yml\nvariables: {V: main}\nbuild:\n  script: [echo main]\n",
            ci__a_yml="variables: {V: a, W: a}\nbuild:\n  stage: build\n  script: [echo a]\n",
            ci__b_yml="test:\n  script: [echo b]\n")
    assert c.files == [".gitlab-ci.yml", "ci/a.yml", "ci/b.yml"]
    assert c.jobs["build"].stage == "build" and c.jobs["build"].script == ["echo main"]
    assert c.variables == {"V": ("main", True), "W": ("a", True)} and "test" in c.jobs


@pytest.mark.parametrize(("text", "files", "message"), [
    ("job:\n  script: [x]\n  scirpt: [y]\n", {}, ".gitlab-ci.yml:3: jobs:job config contains unknown keys: scirpt"),
    ("job:\n  script: [x]\n  secrets: {db: {}}\n", {}, ".gitlab-ci.yml:3: jobs:job uses `secrets`, which pitwall does not"),
    ("include: {local: ci.yml}\n", {"ci_yml": "job:\n  stage: nope\n  script: [x]\n"},
     "ci.yml:2: jobs:job chosen stage nope does not exist"),
    ("include: {local: missing.yml}\njob: {script: [x]}\n", {}, "Local file `missing.yml` does not exist!"),
    ("include: {remote: 'https://x/y.yml'}\n", {}, "`include:remote` is not supported by pitwall"),
    ("a:\n  extends: b\n  script: [x]\nb:\n  extends: a\n", {}, "circular dependency detected in `extends`"),
    ("a:\n  extends: .nope\n  script: [x]\n", {}, "a: unknown key in `extends` (.nope)"),
    ("a:\n  script: !reference [.x, script]\n", {}, ".gitlab-ci.yml:2: !reference [.x, script] could not be found"),
    ("a:\n  script: [x]\n  rules:\n    - if: $A ==\n", {}, "invalid expression syntax"),
    ("a:\n  script: [x]\n  rules:\n    - if: $A =~ /(/\n", {}, "invalid pattern"),
    ("a:\n  script: [x]\n  when: sometimes\n", {}, ".gitlab-ci.yml:3: jobs:a when should be one of"),
    ("a:\n  script: [x]\n  retry: 3\n", {}, "retry max must be 0, 1 or 2"),
    ("a:\n  script: [x]\n  parallel: 201\n", {}, "parallel config must be less than or equal to 200"),
    ("a:\n  script: [x]\n  when: delayed\n", {}, "start in should be a duration"),
    ("a:\n  script: [x]\n  rules: [{if: $X}]\n  only: [main]\n", {}, "may not be used with `rules`"),
    ("a:\n  script: [x]\n  artifacts: {paths: [../etc]}\n", {}, "must stay inside the project directory"),
    ("a:\n  stage: build\n", {}, "should implement the script:, run:, or trigger: keyword"),
    ("a: [1, 2]\n", {}, ".gitlab-ci.yml:1: jobs:a config should be a hash"),
    ("a:\n  script: [x\n", {}, "invalid YAML"),
    (".hidden:\n  script: [x]\n", {}, "at least one visible job"),
    ("a:\n  script: [x]\n  needs: [{pipeline: other}]\n", {}, "needs:pipeline is not supported"),
    ("a:\n  script: [x]\n  coverage: 'Total: 9'\n", {}, ".gitlab-ci.yml:3: jobs:a:coverage config must be a regular"),
    ("a:\n  script: [x]\n  coverage: '/(/'\n", {}, "coverage config must be a regular expression: invalid pattern"),
])
def test_lint_errors_name_file_line_and_keyword(text: str, files: dict[str, str], message: str) -> None:
    assert message in lint_error(text, **files)


def test_rules_if_changes_exists_when_and_variables() -> None:
    ci = """
variables: {DEPLOY: "yes"}
a:
  script: [x]
  rules:
    - if: $CI_COMMIT_BRANCH == "main" && ($DEPLOY == "yes" || $FORCE)
      variables: {TARGET: prod}
    - when: never
b:
  script: [x]
  rules:
    - exists: [src/**/*.py]
      when: manual
c:
  script: [x]
  rules:
    - if: $CI_COMMIT_REF_NAME =~ /^release-\\d+$/
      when: delayed
      start_in: 5 minutes
d:
  script: [x]
  rules:
    - exists: [Dockerfile]
e:
  script: [x]
  rules:
    - if: $UNSET == null && $CI_COMMIT_BRANCH != "dev"
      allow_failure: true
"""
    p = planned(ci)
    assert names(p) == ["a", "b", "e"]
    a, b, e = p.jobs
    assert a.variables["TARGET"] == ["prod", True] and a.when == "on_success"
    assert b.when == "manual" and b.allow_failure is False  # manual from rules blocks
    assert e.allow_failure is True
    r = planned(ci, ref="release-12")
    assert names(r) == ["b", "c", "e"] and r.jobs[1].when == "delayed" and r.jobs[1].start_in == 300


def test_only_except_refs_and_default_only() -> None:
    ci = """
a: {script: [x], only: [main, /^feature-.*$/]}
b: {script: [x], except: {refs: [tags]}}
c: {script: [x], only: {refs: [branches], variables: [$CI_PIPELINE_SOURCE == "web"]}}
d: {script: [x]}
e: {script: [x], only: [api]}
"""
    assert names(planned(ci)) == ["a", "b", "d"]
    assert names(planned(ci, ref="feature-x", source="web")) == ["a", "b", "c", "d"]
    assert names(planned(ci, ref="v1.0", tag=True, source="api")) == ["d", "e"]


def test_parallel_names_and_needs_expansion() -> None:
    p = planned("""
build:
  stage: build
  parallel:
    matrix:
      - PROVIDER: aws
        STACK: [monitoring, app]
      - PROVIDER: gcp
        STACK: data
test:
  parallel: 3
  needs: [build]
  script: [x]
deploy:
  stage: deploy
  needs: [{job: test, artifacts: false}]
  script: [x]
""".replace("  stage: build\n", "  stage: build\n  script: [x]\n", 1))
    assert names(p) == ["build: [aws, monitoring]", "build: [aws, app]", "build: [gcp, data]",
                        "test 1/3", "test 2/3", "test 3/3", "deploy"]
    assert p.jobs[0].variables["STACK"] == ["monitoring", True]
    assert p.jobs[3].node_index == 1 and p.jobs[3].node_total == 3
    assert [n for n, _ in p.jobs[3].needs or []] == ["build: [aws, monitoring]", "build: [aws, app]",
                                                     "build: [gcp, data]"]
    assert p.jobs[6].needs == [["test 1/3", False], ["test 2/3", False], ["test 3/3", False]]


def test_needs_parallel_matrix_picks_instances() -> None:
    p = planned("""
build:
  stage: build
  parallel:
    matrix:
      - PROVIDER: [aws, gcp]
        STACK: [app, data]
  script: [x]
deploy-aws:
  needs:
    - job: build
      artifacts: false
      parallel:
        matrix:
          - PROVIDER: aws
            STACK: [app, data]
  script: [x]
""")
    assert p.jobs[4].needs == [["build: [aws, app]", False], ["build: [aws, data]", False]]


def test_needs_and_dependencies_checked_against_the_pipeline() -> None:
    with pytest.raises(SpecError, match="'b' job needs 'a' job, but 'a' does not exist in the pipeline"):
        planned("a:\n  script: [x]\n  rules: [{if: $NOPE}]\nb:\n  needs: [a]\n  script: [x]\n")
    with pytest.raises(SpecError, match="'b' job needs 'c' job, but 'c' is not in any previous stage"):
        planned("b:\n  needs: [c]\n  script: [x]\nc:\n  stage: deploy\n  script: [x]\n")
    with pytest.raises(SpecError, match="undefined dependency: c"):
        planned("b:\n  dependencies: [c]\n  script: [x]\nc:\n  script: [x]\n")
    p = planned("b:\n  needs: [{job: gone, optional: true}]\n  script: [x]\n")
    assert p.jobs[0].needs == []


def test_workflow_rules_filter_and_set_variables() -> None:
    ci = """
workflow:
  name: "pipeline for $CI_COMMIT_REF_NAME"
  rules:
    - if: $CI_COMMIT_TAG
      when: never
    - if: $CI_PIPELINE_SOURCE == "push"
      variables: {LANE: push}
    - when: always
      auto_cancel: {on_new_commit: interruptible}
job: {script: [x]}
"""
    p = planned(ci)
    assert p.variables["LANE"] == ["push", True] and p.auto_cancel_on_new_commit == "conservative"
    assert planned(ci, source="web").auto_cancel_on_new_commit == "interruptible"
    with pytest.raises(SpecError, match="filtered out by workflow rules"):
        planned(ci, ref="v1", tag=True)


def test_job_keywords_parsed() -> None:
    c = cfg("""
deploy:
  stage: deploy
  script: [x]
  allow_failure: {exit_codes: [3, 4]}
  retry: {max: 1, when: [script_failure, job_execution_timeout], exit_codes: 137}
  timeout: 1h 30m
  artifacts:
    paths: [dist/]
    exclude: [dist/**/*.map]
    when: always
    expire_in: 1 week
    reports: {junit: [report.xml]}
  cache:
    key: {files: [poetry.lock], prefix: py}
    paths: [.venv/]
    policy: pull
  environment: {name: production, url: "https://example.com", action: start}
  resource_group: prod
  interruptible: false
""")
    j = c.jobs["deploy"]
    assert j.allow_failure is False and j.allow_failure_exit_codes == (3, 4)
    assert (j.retry_max, j.retry_when, j.retry_exit_codes) == (1, ("script_failure", "job_execution_timeout"), (137,))
    assert j.timeout_s == 5400
    assert j.artifacts is not None and j.artifacts.expire_in == 7 * 86400 and j.artifacts.junit == ("report.xml",)
    assert j.cache[0].key_files == ("poetry.lock",) and j.cache[0].key_prefix == "py" and j.cache[0].policy == "pull"
    assert j.environment == {"name": "production", "url": "https://example.com", "action": "start"}
    assert j.resource_group == "prod"


def test_stages_pre_and_post() -> None:
    c = cfg("stages: [a, b]\nx: {stage: .post, script: [x]}\ny: {stage: .pre, script: [x]}\nz: {stage: a, script: [x]}\n")
    assert c.stages == [".pre", "a", "b", ".post"]
    p = plan(c, Context("main", False, "push", {}, lambda: [], lambda _: None))
    assert {j.name: j.stage_idx for j in p.jobs} == {"x": 3, "y": 0, "z": 1}
