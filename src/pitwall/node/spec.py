"""What a container's process gets, computed from the pod as the kubelet does: env, argv, quantities.

Pure functions over API objects (dicts): ``$(VAR)`` expansion with ``$$``
escapes, the Kubernetes service environment variables, resource quantities.
Reading referenced ConfigMaps and Secrets happens in ``pods.py``; this
module only combines what it is given.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["ConfigError", "expand", "field_ref", "parse_quantity", "service_env", "source_data"]

Obj = dict[str, Any]
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class ConfigError(Exception):
    """A container cannot be configured (missing ConfigMap key...): ``CreateContainerConfigError``."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, undefined ones kept, ``$$`` is ``$``."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:  # no closing paren: the rest is literal
                out.append(text[i:])
                break
            name = text[i + 2:end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append(text[i:i + 2])
            i += 2
    return "".join(out)


def parse_quantity(q: Any) -> float:
    """A resource quantity (``128Mi``, ``1G``, ``250m``, ``2``) as a number of base units."""
    if isinstance(q, (int, float)):
        return float(q)
    m = _QUANTITY.match(str(q).strip())
    if not m:
        raise ValueError(f"invalid quantity {q!r}")
    try:
        num = Decimal(m.group(1)) * (Decimal(10) ** int(m.group(2)[1:]) if m.group(2) else 1)
    except InvalidOperation:
        raise ValueError(f"invalid quantity {q!r}") from None
    return float(num * Decimal(_SUFFIX[m.group(3) or ""]))


def _env_key(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


def service_env(services: list[Obj]) -> dict[str, str]:
    """The variables the kubelet gives every container for each Service (docker links style)."""
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: str((s.get("metadata") or {}).get("name", ""))):
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        key = _env_key(str((svc.get("metadata") or {}).get("name", "")))
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        if not ports:
            continue
        env[f"{key}_SERVICE_HOST"] = ip
        env[f"{key}_SERVICE_PORT"] = str(ports[0].get("port"))
        for p in ports:
            if p.get("name"):
                env[f"{key}_SERVICE_PORT_{_env_key(str(p['name']))}"] = str(p.get("port"))
        first = ports[0]
        env[f"{key}_PORT"] = f"{str(first.get('protocol') or 'TCP').lower()}://{ip}:{first.get('port')}"
        for p in ports:
            proto = str(p.get("protocol") or "TCP")
            base = f"{key}_PORT_{p.get('port')}_{proto.upper()}"
            env[base] = f"{proto.lower()}://{ip}:{p.get('port')}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p.get("port"))
            env[f"{base}_ADDR"] = ip
    return env


_INDEXED = re.compile(r"^metadata\.(labels|annotations)\[['\"]?(.+?)['\"]?\]$")


def field_ref(pod: Obj, path: str) -> str:
    """The downward API value of ``fieldRef.fieldPath``."""
    m, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": m.get("name"), "metadata.namespace": m.get("namespace"), "metadata.uid": m.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict)),
        "status.hostIPs": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    idx = _INDEXED.match(path)
    if idx:
        return str((m.get(idx.group(1)) or {}).get(idx.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        d = m.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    raise ConfigError(f'unsupported fieldRef fieldPath "{path}"')


def source_data(obj: Obj) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys as bytes (``data``, ``binaryData`` / base64 ``data``, ``stringData``)."""
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(str(v))
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(str(v))
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
    return out


def valid_env_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))
