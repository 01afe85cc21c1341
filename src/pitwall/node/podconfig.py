"""A container's configuration from its pod: the volumes written to disk and the environment.

Both read the ConfigMaps, Secrets and Services they need through the
in-process client; a missing one raises ``ConfigError`` (the kubelet's
``CreateContainerConfigError``) or is reported as a mount error.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from pitwall.kube import KubeClient, NotFoundError
from pitwall.node.spec import (
    ConfigError,
    expand,
    field_ref,
    parse_quantity,
    service_env,
    source_data,
    valid_env_name,
)
from pitwall.node.volumes import link_mount, mount_env, project, write_atomic

__all__ = ["SA_MOUNT", "SA_VOLUME", "container_env", "pod_path", "service_account_volume", "sync_volumes"]

Obj = dict[str, Any]
# The kubelet's projected ServiceAccount token, at its usual path below the pod's root.
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_VOLUME = "kube-api-access"
TOKEN_SECONDS = 3600
TOKEN_REFRESH_S = 0.8 * TOKEN_SECONDS  # the kubelet renews at 80% of a token's life


async def service_account_volume(client: KubeClient, pod: Obj, volumes_dir: Path) -> Path | None:
    """Write (or renew) the pod's ServiceAccount token and namespace under ``volumes_dir``; None when the
    pod or its ServiceAccount opts out (``automountServiceAccountToken: false``) or the account is absent."""
    spec = pod.get("spec") or {}
    namespace = str((pod.get("metadata") or {}).get("namespace", ""))
    name = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    if spec.get("automountServiceAccountToken") is False:
        return None
    d = volumes_dir / SA_VOLUME
    token_file = d / "token"
    if token_file.exists() and time.time() - token_file.stat().st_mtime < TOKEN_REFRESH_S:
        return d
    try:
        sa = await client.get("v1", "ServiceAccount", name, namespace)
        if sa.get("automountServiceAccountToken") is False and spec.get("automountServiceAccountToken") is None:
            return None
        token, _exp = await client.create_token(namespace, name, pod=pod, seconds=TOKEN_SECONDS)
    except NotFoundError:
        return None
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in (("namespace", namespace), ("token", token)):
        tmp = d / f".{fname}.tmp"
        tmp.touch(mode=0o600)
        tmp.write_text(text)
        tmp.replace(d / fname)
    return d


async def sync_volumes(client: KubeClient, pod: Obj, volumes_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Write every volume of ``pod`` under ``volumes_dir``; (name -> path of the ready ones, errors)."""
    namespace = str((pod.get("metadata") or {}).get("namespace", ""))
    ready: dict[str, Path] = {}
    errors: list[str] = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        name = str(v.get("name"))
        path = volumes_dir / name
        try:
            if "configMap" in v or "secret" in v:
                kind = "ConfigMap" if "configMap" in v else "Secret"
                src = v.get("configMap") if kind == "ConfigMap" else v.get("secret")
                src = src or {}
                ref = str(src.get("name") or src.get("secretName") or "")
                try:
                    obj = await client.get("v1", kind, ref, namespace)
                    data = source_data(obj)
                except NotFoundError:
                    if not src.get("optional"):
                        raise ConfigError(f'{kind.lower()} "{ref}" not found') from None
                    data = {}
                write_atomic(path, project(data, src, kind=kind.lower(), name=ref))
            elif "hostPath" in v:
                hp = v.get("hostPath") or {}
                path = Path(str(hp.get("path")))
                if hp.get("type") in ("DirectoryOrCreate",) and not path.exists():
                    path.mkdir(parents=True, exist_ok=True)
                elif hp.get("type") == "FileOrCreate" and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                elif hp.get("type") and hp.get("type") != "" and not path.exists():
                    raise ConfigError(f"hostPath type check failed: {path} does not exist")
            elif "emptyDir" in v:
                path.mkdir(parents=True, exist_ok=True)
            else:
                raise ConfigError(f'volume "{name}": only configMap, secret, emptyDir and hostPath are supported')
            ready[name] = path
        except (ConfigError, OSError) as e:
            errors.append(f'MountVolume.SetUp failed for volume "{name}" : {e}')
    return ready, errors

async def container_env(client: KubeClient, pod: Obj, spec: Obj, *, pod_ip: str, node_name: str, root: Path,
                        volumes: dict[str, Path], volume_error: str, proxy_url: str = "",
                        chaos_file: str = "") -> dict[str, str]:
    """The environment of one container as the kubelet builds it (service variables, then ``envFrom``,
    then ``env`` in order, each value expanded against what came before), plus pitwall's ``POD_IP``,
    ``PITWALL_POD_ROOT`` and ``PITWALL_MOUNT_<VOLUME>``, and ``HTTP_PROXY``/``http_proxy``/``NO_PROXY``/
    ``no_proxy`` for the pod's egress listener at ``proxy_url`` (when given; ``env`` may override them),
    ``LD_PRELOAD`` (``preload_env``; the chaos shim reads ``chaos_file`` when given); links each
    volumeMount under ``root``."""
    m = pod.get("metadata") or {}
    namespace, pod_name = str(m.get("namespace", "")), str(m.get("name", ""))
    pod_spec = pod.get("spec") or {}
    env: dict[str, str] = {"PATH": pod_path(),
                           "HOSTNAME": pod_name, "POD_IP": pod_ip,
                           "PITWALL_POD_ROOT": str(root)}
    env.update(preload_env(pod_ip, chaos_file))
    if proxy_url:
        env.update(proxy_env(proxy_url, pod_ip))
    for k in ("LANG", "LC_ALL", "TZ", "PYTHONPATH", "HOME", "VIRTUAL_ENV"):
        if k in os.environ:
            env[k] = os.environ[k]
    if pod_spec.get("enableServiceLinks", True) is not False:
        svcs = (await client.list("v1", "Service", namespace)).items
        env.update(service_env(svcs))
    for vm in spec.get("volumeMounts") or []:
        vname = str(vm.get("name"))
        vol = volumes.get(vname)
        if vol is None:
            raise ConfigError(f'volume "{vname}" is not ready: {volume_error or "not declared"}')
        target = vol / str(vm["subPath"]) if vm.get("subPath") else vol
        if vm.get("subPath") and not target.exists():
            target.mkdir(parents=True, exist_ok=True)
        link_mount(root, str(vm.get("mountPath", "")), target)
        env.setdefault(mount_env(vname), str(target))
    sa_dir = volumes.get(SA_VOLUME)
    if sa_dir is not None and not any(vm.get("mountPath") == SA_MOUNT for vm in spec.get("volumeMounts") or []):
        link_mount(root, SA_MOUNT, sa_dir)
        env.setdefault(mount_env(SA_VOLUME), str(sa_dir))
    cache: dict[tuple[str, str], dict[str, bytes] | None] = {}

    async def source(kind: str, name: str) -> dict[str, bytes] | None:
        if (kind, name) not in cache:
            try:
                cache[(kind, name)] = source_data(await client.get("v1", kind, name, namespace))
            except NotFoundError:
                cache[(kind, name)] = None
        return cache[(kind, name)]

    for ef in spec.get("envFrom") or []:
        kind = "ConfigMap" if "configMapRef" in ef else "Secret"
        ref = ef.get("configMapRef") or ef.get("secretRef") or {}
        data = await source(kind, str(ref.get("name")))
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
        for k, v in data.items():
            key = str(ef.get("prefix") or "") + k
            if valid_env_name(key):
                env[key] = v.decode(errors="replace")
    for e in spec.get("env") or []:
        name = str(e.get("name"))
        if "valueFrom" not in e:
            env[name] = expand(str(e.get("value", "")), env)
            continue
        vf = e.get("valueFrom") or {}
        if "fieldRef" in vf:
            env[name] = field_ref(_with_ip(pod, pod_ip, node_name), str((vf["fieldRef"] or {}).get("fieldPath", "")))
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            kind = "ConfigMap" if "configMapKeyRef" in vf else "Secret"
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
            data = await source(kind, str(ref.get("name")))
            key = str(ref.get("key"))
            if data is None or key not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found' if data is None else
                                  f'couldn\'t find key {key} in {kind} {namespace}/{ref.get("name")}')
            env[name] = data[key].decode(errors="replace")
        elif "resourceFieldRef" in vf:
            rf = vf["resourceFieldRef"] or {}
            res, _, what = str(rf.get("resource", "")).partition(".")
            val = ((spec.get("resources") or {}).get(res) or {}).get(what)
            div = parse_quantity(rf.get("divisor", "1"))
            env[name] = str(int(-(-parse_quantity(val) // div))) if val is not None else "0"
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom")
    return env

def proxy_env(url: str, pod_ip: str) -> dict[str, str]:
    """The variables that send a container's HTTP calls to its pod's egress listener at ``url`` (curl
    reads only the lower-case ``http_proxy``); calls to the pod itself and localhost stay direct."""
    no_proxy = f"localhost,127.0.0.1,{pod_ip}"
    return {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def preload_env(pod_ip: str, chaos_file: str = "") -> dict[str, str]:
    """``LD_PRELOAD`` of the libraries pitwall puts in pod processes, those that were built: the one that
    makes the pod's connections to loopback addresses leave from ``pod_ip`` (so Services, the mesh and
    NetworkChaos see which pod calls), and with ``chaos_file`` the chaos shim reading its faults there
    (TimeChaos, IOChaos). A container's own ``env`` may set ``LD_PRELOAD`` to something else (or empty)
    to opt out."""
    env: dict[str, str] = {}
    libs = []
    if _native_library("pitwall.node._podsource") and pod_ip:
        libs.append(_native_library("pitwall.node._podsource"))
        env["PITWALL_POD_SOURCE_IP"] = pod_ip
    if chaos_file and chaos_shim_library():
        libs.append(chaos_shim_library())
        env["PITWALL_CHAOS_FILE"] = chaos_file
    if libs:
        env["LD_PRELOAD"] = " ".join(libs)
    return env


def chaos_shim_library() -> str:
    """The chaos shim's path, or "" when it was not built (no C compiler at install)."""
    return _native_library("pitwall.node._chaosshim")


@functools.cache
def _native_library(module: str) -> str:
    spec = importlib.util.find_spec(module)  # located, never imported (no Python API)
    return spec.origin if spec is not None and spec.origin and os.path.exists(spec.origin) else ""


def pod_path() -> str:
    """A container's ``PATH``: the server's, with the directory of the server's own interpreter first.

    pitwall runs ``command`` on this host and ignores ``image``, so a manifest's ``python`` (as in an
    image's ``command: ["python", ...]``) must be the interpreter pitwall runs on (its virtualenv has the
    packages), not whatever ``python`` comes first on the PATH the server was started with.
    """
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    bindir = os.path.dirname(sys.executable)
    if not bindir or path.split(os.pathsep)[0] == bindir:
        return path
    return os.pathsep.join([bindir, *(d for d in path.split(os.pathsep) if d != bindir)])


def _with_ip(pod: Obj, pod_ip: str, node_name: str) -> Obj:
    p = dict(pod)
    p["status"] = {**(p.get("status") or {}), "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "hostIP": "127.0.0.1"}
    p["spec"] = {**(p.get("spec") or {}), "nodeName": node_name}
    return p
