"""Runs Chaos Toolkit experiments (``pitwall chaos run``) and writes Chaos Toolkit's journal.

The format is Chaos Toolkit's: ``steady-state-hypothesis`` (probes with
tolerances), ``method`` (actions and probes, ``pauses``, ``background``,
``ref``), ``rollbacks``, ``configuration`` (values, ``env`` entries, dynamic
``probe`` entries), ``secrets`` (inline or ``env``), ``${name}``
substitution, ``controls`` (Python modules with ``before_*_control`` /
``after_*_control`` hooks) and ``runtime`` strategies. Providers: ``python``
(a function of an importable module), ``process`` and ``http``.

The journal has Chaos Toolkit's shape (``status`` completed, failed,
aborted or interrupted, ``deviated``, ``steady_states`` before/after/during,
``run``, ``rollbacks``). One deliberate difference: the default rollback
strategy plays the rollbacks whatever the outcome (Chaos Toolkit's skips them
when the run failed or was interrupted, chaostoolkit#195, #258); ``never``
and ``deviated`` are honoured as written.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import itertools
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import httpx
import yaml

from pitwall import __version__
from pitwall.chaos.tolerance import ToleranceError, check_tolerance, within_tolerance

__all__ = ["ExperimentError", "Interrupted", "load_experiment", "run_experiment", "validate_experiment"]

log = logging.getLogger("pitwall.chaos.run")
Obj = dict[str, Any]
MAX_EXPERIMENT_BYTES = 4 << 20
HYPOTHESIS_STRATEGIES = ("default", "before-method-only", "after-method-only", "during-method-only",
                         "continuously", "skip")
ROLLBACK_STRATEGIES = ("default", "always", "never", "deviated")


class ExperimentError(ValueError):
    """An invalid experiment (the message names what is wrong, as Chaos Toolkit's validation does)."""


class ActivityFailed(Exception):
    """An activity raised or timed out: its run is ``failed``."""


class Interrupted(Exception):
    """A control or a signal interrupts the run (Chaos Toolkit's InterruptExecution)."""


# -- loading and validation ------------------------------------------------------


def load_experiment(path: Path) -> Obj:
    """Read a JSON or YAML experiment file (at most 4 MiB)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ExperimentError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_EXPERIMENT_BYTES:
        raise ExperimentError(f"{path}: experiment larger than {MAX_EXPERIMENT_BYTES} bytes")
    try:
        doc = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise ExperimentError(f"{path}: not a valid {'JSON' if path.suffix == '.json' else 'YAML'} document: {e}") \
            from None
    if not isinstance(doc, dict):
        raise ExperimentError("an empty experiment is not an experiment")
    return doc


def _check_activity(a: Any, where: str, refs: set[str]) -> None:
    if not isinstance(a, dict) or not a:
        raise ExperimentError(f"{where}: empty activity is no activity")
    if "ref" in a:
        if not isinstance(a["ref"], str) or not a["ref"]:
            raise ExperimentError(f"{where}: reference to activity must be non-empty strings")
        if a["ref"] not in refs:
            raise ExperimentError(f"{where}: referenced activity '{a['ref']}' could not be found in the experiment")
        return
    if not a.get("type"):
        raise ExperimentError(f"{where}: an activity must have a type")
    if a["type"] not in ("probe", "action"):
        raise ExperimentError(f"{where}: '{a['type']}' is not a supported activity type")
    if not a.get("name"):
        raise ExperimentError(f"{where}: an activity must have a name")
    p = a.get("provider")
    if not isinstance(p, dict) or not p:
        raise ExperimentError(f"{where}: an activity requires a provider")
    kind = p.get("type")
    if not kind:
        raise ExperimentError(f"{where}: a provider must have a type")
    if kind not in ("python", "process", "http"):
        raise ExperimentError(f"{where}: unknown provider type '{kind}'")
    if a.get("timeout") is not None and not isinstance(a["timeout"], int | float):
        raise ExperimentError(f"{where}: activity timeout must be a number")
    for k in ("before", "after"):
        v = (a.get("pauses") or {}).get(k)
        if isinstance(v, str) and not (v.startswith("${") and v.endswith("}")):
            raise ExperimentError(f"{where}: activity {k} pause must be a number or a pattern to a variable "
                                  "from the configuration or secrets")
    if "background" in a and not isinstance(a["background"], bool):
        raise ExperimentError(f"{where}: activity background must be a boolean")
    if kind == "python":
        if not p.get("module") or not p.get("func"):
            raise ExperimentError(f"{where}: a Python activity must have a module and a func")
        try:
            mod = importlib.import_module(str(p["module"]))
        except ImportError:
            raise ExperimentError(f"{where}: could not find Python module '{p['module']}' in activity "
                                  f"'{a['name']}'") from None
        if not hasattr(mod, str(p["func"])):
            raise ExperimentError(f"{where}: the Python module '{p['module']}' does not expose a function called "
                                  f"'{p['func']}' in {a['type']} '{a['name']}'")
    elif kind == "process":
        if not p.get("path"):
            raise ExperimentError(f"{where}: a process activity must have a path")
        if shutil.which(os.path.expanduser(str(p["path"]))) is None:
            raise ExperimentError(f"{where}: path '{p['path']}' cannot be found, in activity '{a['name']}'")
    elif not p.get("url"):
        raise ExperimentError(f"{where}: a HTTP activity must have a URL")


def _activities(exp: Obj) -> Iterator[Obj]:
    yield from (exp.get("steady-state-hypothesis") or {}).get("probes") or []
    yield from exp.get("method") or []
    yield from exp.get("rollbacks") or []


def validate_experiment(exp: Obj) -> None:
    """Chaos Toolkit's ``ensure_experiment_is_valid``: raise ``ExperimentError`` naming what is wrong."""
    if not exp:
        raise ExperimentError("an empty experiment is not an experiment")
    if not exp.get("title"):
        raise ExperimentError("experiment requires a title")
    if not exp.get("description"):
        raise ExperimentError("experiment requires a description")
    if any(t == "" or not isinstance(t, str) for t in exp.get("tags") or []):
        raise ExperimentError("experiment tags must be a non-empty string")
    refs = {str(a["name"]) for a in _activities(exp) if isinstance(a, dict) and a.get("name")}
    hypo = exp.get("steady-state-hypothesis")
    if hypo is not None:
        if not hypo.get("title"):
            raise ExperimentError("hypothesis requires a title")
        for i, p in enumerate(hypo.get("probes") or []):
            _check_activity(p, f"steady-state-hypothesis.probes[{i}]", refs)
            try:
                check_tolerance(p.get("tolerance"), f"steady-state-hypothesis.probes[{i}]")
            except ToleranceError as e:
                raise ExperimentError(str(e)) from None
    method = exp.get("method")
    if method is None:
        raise ExperimentError("an experiment requires a method, which can be empty for only checking steady "
                              "state hypothesis ")
    if not isinstance(method, list):
        raise ExperimentError("method: must be a list of activities")
    for i, a in enumerate(method):
        _check_activity(a, f"method[{i}]", refs)
    for i, a in enumerate(exp.get("rollbacks") or []):
        _check_activity(a, f"rollbacks[{i}]", refs)
    rt = exp.get("runtime") or {}
    if (rt.get("hypothesis") or {}).get("strategy", "default") not in HYPOTHESIS_STRATEGIES:
        raise ExperimentError(f"runtime.hypothesis.strategy: one of {', '.join(HYPOTHESIS_STRATEGIES)}")
    if (rt.get("rollbacks") or {}).get("strategy", "default") not in ROLLBACK_STRATEGIES:
        raise ExperimentError(f"runtime.rollbacks.strategy: one of {', '.join(ROLLBACK_STRATEGIES)}")


# -- configuration, secrets, substitution -----------------------------------------


class _Typed(Template):
    """``${x}`` alone keeps x's type; inside text it is formatted."""

    def typed(self, mapping: dict[str, Any]) -> Any:
        m = self.pattern.fullmatch(self.template)
        if m is not None and (m.group("braced") or m.group("named")) in mapping:
            return mapping[m.group("braced") or m.group("named")]
        return self.safe_substitute(mapping)


def substitute(data: Any, mapping: dict[str, Any]) -> Any:
    if isinstance(data, str):
        return _Typed(data).typed(mapping)
    if isinstance(data, list | tuple):
        return [substitute(v, mapping) for v in data]
    if isinstance(data, dict):
        return {k: substitute(v, mapping) for k, v in data.items()}
    return data


def load_configuration(raw: Obj, extra: Obj | None = None) -> Obj:
    """Static values and ``env`` entries; dynamic ``probe`` entries are resolved by ``resolve_dynamic``."""
    out: Obj = {}
    for key, v in (raw or {}).items():
        if key in (extra or {}):
            out[key] = (extra or {})[key]
        elif isinstance(v, dict) and v.get("type") == "env":
            if v["key"] in os.environ:
                val: Any = os.environ[v["key"]]
                t = v.get("env_var_type")
                if t == "int":
                    val = int(val)
                elif t == "float":
                    val = float(val)
                elif t == "bool":
                    val = val.lower() in ("1", "true", "yes", "on")
                elif t == "json":
                    val = json.loads(val)
                out[key] = val
            elif "default" in v:
                out[key] = v["default"]
            else:
                raise ExperimentError(f"Configuration makes reference to an environment key that does not "
                                      f"exist: {v['key']}")
        elif not (isinstance(v, dict) and v.get("type") == "probe"):
            out[key] = v
    for key, v in (extra or {}).items():
        out.setdefault(key, v)
    return out


def load_secrets(raw: Obj, config: Obj) -> dict[str, Obj]:
    out: dict[str, Obj] = {}
    for scope, entries in (raw or {}).items():
        out[scope] = {}
        for key, v in (entries or {}).items():
            if isinstance(v, dict) and v.get("type") == "env":
                if v["key"] in os.environ:
                    out[scope][key] = os.environ[v["key"]]
                elif "default" in v:
                    out[scope][key] = v["default"]
                else:
                    raise ExperimentError(f"Secrets make reference to an environment key that does not exist: "
                                          f"{v['key']}")
            else:
                out[scope][key] = substitute(v, config)
    return out


# -- providers ---------------------------------------------------------------------


def _call_python(p: Obj, args: Obj, config: Obj, secrets: dict[str, Obj]) -> Any:
    func = getattr(importlib.import_module(str(p["module"])), str(p["func"]))
    sig = inspect.signature(func)
    if "secrets" in p and "secrets" in sig.parameters:
        args["secrets"] = {}
        for s in p["secrets"]:
            args["secrets"].update(dict(secrets.get(s, {})))
    if "configuration" in sig.parameters:
        args["configuration"] = dict(config)
    try:
        return func(**args)
    except Exception as x:
        raise ActivityFailed(traceback.format_exception_only(type(x), x)[0].strip()) from x


def _call_process(p: Obj, args: Any, timeout: float | None) -> Obj:
    exe = shutil.which(os.path.expanduser(str(p["path"]))) or str(p["path"])
    shell = isinstance(args, str)
    if isinstance(args, str):
        cmd: Any = f"{shlex.quote(exe)} {args}"
    else:
        items = itertools.chain.from_iterable(args.items()) if isinstance(args, dict) else (args or [])
        cmd = [exe, *(str(x) for x in items if x not in (None, ""))]
    try:
        proc = subprocess.run(cmd, shell=shell, timeout=timeout, capture_output=True, env=os.environ)
    except subprocess.TimeoutExpired:
        raise ActivityFailed("process activity took too long to complete") from None
    except OSError as e:
        raise ActivityFailed(str(e)) from None
    return {"status": proc.returncode, "stdout": proc.stdout.decode(errors="replace"),
            "stderr": proc.stderr.decode(errors="replace")}


def _call_http(p: Obj, args: Any, config: Obj, mapping: dict[str, Any]) -> Obj:
    url = substitute(p["url"], mapping)
    method = str(p.get("method", "GET")).upper()
    headers = substitute(p.get("headers"), mapping)
    timeout = substitute(p.get("timeout"), mapping)
    to = tuple(timeout) if isinstance(timeout, list) else timeout
    kw: Obj = {"headers": headers, "timeout": to if to is not None else None}
    if method == "GET":
        kw["params"] = args
    elif headers and headers.get("Content-Type") == "application/json":
        kw["json"] = args
    else:
        kw["data"] = args
    try:
        with httpx.Client(verify=bool(p.get("verify_tls", True)), timeout=kw.pop("timeout")) as c:
            r = c.request(method, url, **kw)
    except httpx.HTTPError as e:
        raise ActivityFailed(f"failed to connect to {url}: {e}") from None
    body: Any = r.json() if r.headers.get("Content-Type") == "application/json" else r.text
    return {"status": r.status_code, "headers": dict(r.headers), "body": body}


# -- the run -------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Controls:
    """Experiment-level ``controls``: each a Python module whose ``<when>_<level>_control`` hooks are called."""

    def __init__(self, specs: list[Obj], config: Obj, secrets: dict[str, Obj]) -> None:
        self.config, self.secrets = config, secrets
        self.mods: list[tuple[Any, Obj]] = []
        for c in specs or []:
            p = c.get("provider") or {}
            if p.get("type") != "python" or not p.get("module"):
                raise ExperimentError(f"control '{c.get('name')}': a control needs a python provider with a module")
            self.mods.append((importlib.import_module(str(p["module"])), dict(p.get("arguments") or {})))
        for mod, args in self.mods:
            self._call(mod, "configure_control", args, {})

    def _call(self, mod: Any, fn_name: str, args: Obj, extra: Obj) -> None:
        fn = getattr(mod, fn_name, None)
        if fn is None:
            return
        params = inspect.signature(fn).parameters
        kw = {**{"configuration": self.config, "secrets": self.secrets}, **extra, **args}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kw = {k: v for k, v in kw.items() if k in params}
        try:
            fn(**kw)
        except Exception as e:
            if type(e).__name__ in ("InterruptExecution", "Interrupted"):
                raise Interrupted(str(e)) from e
            log.warning("control %s.%s failed: %s", mod.__name__, fn_name, e)

    def before(self, level: str, context: Any) -> None:
        for mod, args in self.mods:
            self._call(mod, f"before_{level}_control", args, {"context": context})

    def after(self, level: str, context: Any, state: Any) -> None:
        for mod, args in self.mods:
            self._call(mod, f"after_{level}_control", args, {"context": context, "state": state})

    def cleanup(self) -> None:
        for mod, args in self.mods:
            self._call(mod, "cleanup_control", args, {})


class Run:
    """One run of one experiment; ``journal`` is Chaos Toolkit's."""

    def __init__(self, exp: Obj, *, hypothesis_strategy: str | None = None, rollback_strategy: str | None = None,
                 hypothesis_frequency: float = 1.0, fail_fast: bool = False, extra_vars: Obj | None = None,
                 var_file: Obj | None = None, on_status: Callable[[Obj], None] | None = None) -> None:
        self.exp = exp
        rt = exp.get("runtime") or {}
        self.hypothesis_strategy = hypothesis_strategy or (rt.get("hypothesis") or {}).get("strategy", "default")
        self.rollback_strategy = rollback_strategy or (rt.get("rollbacks") or {}).get("strategy", "default")
        self.frequency = float((rt.get("hypothesis") or {}).get("frequency", hypothesis_frequency))
        self.fail_fast = bool((rt.get("hypothesis") or {}).get("fail_fast", fail_fast))
        # a var file (``--var-file``) adds or overrides configuration and secrets entries, as Chaos Toolkit's
        self.raw_config = {**(exp.get("configuration") or {}), **((var_file or {}).get("configuration") or {})}
        self.config = load_configuration(self.raw_config, extra_vars)
        self.secrets = load_secrets({**(exp.get("secrets") or {}), **((var_file or {}).get("secrets") or {})},
                                    self.config)
        self._resolve_dynamic()
        self.mapping = {**self.config, **{k: v for s in self.secrets.values() for k, v in s.items()}}
        self.controls = Controls(exp.get("controls") or [], self.config, self.secrets)
        self.refs = {str(a["name"]): a for a in _activities(exp) if isinstance(a, dict) and a.get("name")}
        self.on_status = on_status
        self.journal: Obj = {
            "chaoslib-version": f"pitwall-{__version__}", "platform": platform.platform(), "node": platform.node(),
            "experiment": copy.deepcopy(exp), "start": _now(), "status": None, "deviated": False,
            "steady_states": {"before": None, "after": None, "during": []}, "run": [], "rollbacks": [],
        }
        self._stop_hypothesis = threading.Event()
        self._lock = threading.Lock()

    def _resolve_dynamic(self) -> None:
        for key, v in self.raw_config.items():
            if isinstance(v, dict) and v.get("type") == "probe" and key not in self.config:
                mapping = {**self.config, **{k: x for s in self.secrets.values() for k, x in s.items()}}
                try:
                    self.config[key] = self._call(v, mapping)
                except ActivityFailed as e:
                    raise ExperimentError(f"configuration.{key}: the dynamic probe failed: {e}") from None

    # -- activities --

    def _call(self, a: Obj, mapping: dict[str, Any]) -> Any:
        p = a.get("provider") or {}
        args: Any = copy.deepcopy(p.get("arguments") if p.get("arguments") is not None else
                            ({} if p.get("type") == "python" else None))
        args = substitute(args, mapping) if args else args
        timeout = a.get("timeout", p.get("timeout"))
        kind = p.get("type")
        if kind == "python":
            return self._with_timeout(lambda: _call_python(p, args or {}, self.config, self.secrets), timeout)
        if kind == "process":
            return _call_process(p, args, timeout)
        return _call_http(p, args, self.config, mapping)

    @staticmethod
    def _with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
        if timeout is None:
            return fn()
        with ThreadPoolExecutor(max_workers=1) as ex:
            fut = ex.submit(fn)
            try:
                return fut.result(timeout=float(timeout))
            except TimeoutError:
                raise ActivityFailed("activity took too long to complete") from None

    def execute(self, a: Obj, runs: list[Obj] | None) -> Obj:
        """Chaos Toolkit's ``execute_activity``: pauses, the call, a run record appended to ``runs``."""
        if "ref" in a:
            a = self.refs[str(a["ref"])]
        self.controls.before("activity", a)
        pauses = substitute(a.get("pauses") or {}, self.mapping)
        if pauses.get("before"):
            time.sleep(float(pauses["before"]))
        log.info("%s: %s%s", str(a["type"]).title(), a.get("name"), " [in background]" if a.get("background") else "")
        start = datetime.now(UTC)
        run: Obj = {"activity": copy.deepcopy(a), "output": None, "start": start.isoformat()}
        if runs is not None:
            with self._lock:
                runs.append(run)
        try:
            run["output"] = self._call(a, self.mapping)
            run["status"] = "succeeded"
        except ActivityFailed as x:
            run["status"] = "failed"
            run["exception"] = traceback.format_exception(type(x), x, None)
            log.error("  => failed: %s", x)
        finally:
            end = datetime.now(UTC)
            run["end"] = end.isoformat()
            run["duration"] = (end - start).total_seconds()
        if pauses.get("after"):
            time.sleep(float(pauses["after"]))
        self.controls.after("activity", a, run)
        return run

    # -- hypothesis --

    def hypothesis(self) -> Obj | None:
        hypo = self.exp.get("steady-state-hypothesis")
        if not hypo:
            return None
        log.info("Steady state hypothesis: %s", hypo.get("title"))
        self.controls.before("hypothesis", hypo)
        state: Obj = {"steady_state_met": None, "probes": []}
        for probe in hypo.get("probes") or []:
            run = self.execute(probe, None)
            state["probes"].append(run)
            if run["status"] == "failed":
                run["tolerance_met"] = False
                state["steady_state_met"] = False
                break
            tol = probe.get("tolerance")
            tol = substitute(tol, self.mapping) if isinstance(tol, str) else tol
            met = within_tolerance(tol, run["output"], self._probe_tolerance)
            run["tolerance_met"] = met
            if not met:
                state["steady_state_met"] = False
                break
        else:
            state["steady_state_met"] = True
            log.info("Steady state hypothesis is met!")
        self.controls.after("hypothesis", hypo, state)
        return state

    def _probe_tolerance(self, tolerance: Obj, value: Any) -> Any:
        t = copy.deepcopy(tolerance)
        t.setdefault("provider", {}).setdefault("arguments", {})["value"] = value
        return self._call(t, self.mapping)

    def _has_ssh(self) -> bool:
        return bool((self.exp.get("steady-state-hypothesis") or {}).get("probes")) and \
            self.hypothesis_strategy != "skip"

    def _gate(self) -> bool:
        state = self.hypothesis()
        self.journal["steady_states"]["before"] = state
        if state is not None and not state["steady_state_met"]:
            self.journal["status"] = "failed"
            log.critical("Steady state probe '%s' is not in the given tolerance so failing this experiment",
                         state["probes"][-1]["activity"]["name"] if state["probes"] else "")
            return False
        return True

    def _deviation(self) -> None:
        state = self.hypothesis()
        self.journal["steady_states"]["after"] = state
        if state is not None and not state["steady_state_met"]:
            self.journal["deviated"] = True
            self.journal["status"] = "completed"
            if any(p["status"] != "succeeded" for p in state["probes"]):
                self.journal["status"] = "failed"
            log.critical("Steady state probe '%s' is not in the given tolerance so failing this experiment",
                         state["probes"][-1]["activity"]["name"] if state["probes"] else "")

    def _continuously(self) -> None:
        """Every ``frequency`` seconds during the method; with fail-fast a deviation fails the run at once."""
        while not self._stop_hypothesis.is_set():
            if self.journal["status"] in ("failed", "interrupted", "aborted"):
                return
            state = self.hypothesis()
            if state is None:
                return
            self.journal["steady_states"]["during"].append(state)
            if not state["steady_state_met"] and self.fail_fast:
                log.info("Terminating immediately the experiment: the steady state deviated")
                self.journal["status"] = "failed"
                return
            self._stop_hypothesis.wait(self.frequency)

    # -- method and rollbacks --

    def method(self) -> None:
        log.info("Playing your experiment's method now...")
        self.controls.before("method", self.exp)
        runs: list[Obj] = self.journal["run"]
        background: list[Future[Obj]] = []
        pool = ThreadPoolExecutor(max_workers=max(1, sum(1 for a in self.exp.get("method") or []
                                                         if a.get("background"))))
        try:
            for a in self.exp.get("method") or []:
                if a.get("background"):
                    background.append(pool.submit(self.execute, a, runs))
                else:
                    self.execute(a, runs)
                if self.journal["status"] in ("aborted", "failed", "interrupted"):
                    break
        finally:
            pool.shutdown(wait=True)
        self.controls.after("method", self.exp, runs)

    def _play_rollbacks(self) -> bool:
        s = self.rollback_strategy
        if s == "never":
            return False
        if s == "deviated":
            return bool(self.journal["deviated"])
        return True  # "default" and "always": whatever the outcome (see the module's docstring)

    def rollbacks(self) -> None:
        if not self._play_rollbacks():
            log.warning("Rollbacks were explicitly requested to not be played")
            return
        log.info("Let's rollback...")
        self.controls.before("rollback", self.exp)
        runs: list[Obj] = []
        self.journal["rollbacks"] = runs
        pool = ThreadPoolExecutor(max_workers=4)
        try:
            for a in self.exp.get("rollbacks") or []:
                if a.get("background"):
                    pool.submit(self.execute, a, runs)
                else:
                    self.execute(a, runs)
        finally:
            pool.shutdown(wait=True)
        self.controls.after("rollback", self.exp, runs)

    def run(self) -> Obj:
        """Run and return the journal (never raises for a failing activity)."""
        exp = self.exp
        exp["title"] = substitute(exp["title"], self.mapping)
        log.info("Running experiment: %s", exp["title"])
        started = time.time()
        strategy = self.hypothesis_strategy
        ssh = self._has_ssh()
        hypo_thread: threading.Thread | None = None
        try:
            try:
                self.controls.before("experiment", exp)
                ok = True
                if ssh and strategy in ("default", "before-method-only", "continuously"):
                    ok = self._gate()
                if ok:
                    if ssh and strategy in ("during-method-only", "continuously"):
                        hypo_thread = threading.Thread(target=self._continuously, daemon=True)
                        hypo_thread.start()
                    try:
                        self.method()
                    except Interrupted:
                        raise
                    except Exception:
                        self.journal["status"] = "aborted"
                        log.critical("Experiment ran into an unexpected fatal error, aborting now.", exc_info=True)
                    self._stop_hypothesis.set()
                    if hypo_thread is not None:
                        hypo_thread.join()
                    # a fail-fast deviation during the method stays failed (Chaos Toolkit rewrites it)
                    if self.journal["status"] not in ("interrupted", "aborted", "failed") and ssh and \
                            strategy in ("default", "after-method-only", "continuously"):
                        self._deviation()
            except Interrupted as i:
                self.journal["status"] = "interrupted"
                log.critical("%s", i)
            except KeyboardInterrupt:
                self.journal["status"] = "interrupted"
                log.warning("Received a termination signal (Ctrl-C)...")
            finally:
                self._stop_hypothesis.set()
            try:
                self.rollbacks()
            except (Interrupted, KeyboardInterrupt):
                self.journal["status"] = "interrupted"
            self.journal["end"] = _now()
            self.journal["duration"] = time.time() - started
            if self.journal["status"] not in ("completed", "failed", "aborted", "interrupted"):
                self.journal["status"] = "completed"
            log.info("Experiment ended with status: %s", "deviated" if self.journal["deviated"]
                     else self.journal["status"])
            with contextlib.suppress(Interrupted):
                self.controls.after("experiment", exp, self.journal)
        finally:
            self.controls.cleanup()
        if self.on_status is not None:
            self.on_status(self.journal)
        return self.journal


def run_experiment(exp: Obj, **options: Any) -> Obj:
    """Validate, then run ``exp``; SIGTERM interrupts it (the rollbacks still run)."""
    validate_experiment(exp)
    run = Run(exp, **options)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return run.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
