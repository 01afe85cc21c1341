from __future__ import annotations

import pytest

from pitwall.kube.errors import UnsupportedMedia
from pitwall.kube.protobuf import decode


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    tm = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, tm) + _field(2, raw)


def test_decode_configmap() -> None:
    meta = _field(1, b"cm") + _field(11, _field(1, b"app") + _field(2, b"web")) + _field(7, 0)
    raw = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v")) + _field(3, _field(1, b"bin") + _field(2, b"\x00"))
    obj = decode(_envelope("v1", "ConfigMap", raw), "", "ConfigMap")
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "web"}},
                   "data": {"k": "v"}, "binaryData": {"bin": "AA=="}}


def test_decode_int_or_string_and_pointers() -> None:
    port = _field(3, 80) + _field(4, _field(1, 1) + _field(3, b"http"))
    spec = _field(1, port) + _field(13, 0)
    obj = decode(_envelope("v1", "Service", _field(1, _field(1, b"s")) + _field(2, spec)), "", "Service")
    assert obj["spec"] == {"ports": [{"port": 80, "targetPort": "http"}]}
    dep = _field(2, _field(1, 0))  # replicas 0 is a pointer: kept
    assert decode(_envelope("apps/v1", "Deployment", dep), "apps", "Deployment")["spec"] == {"replicas": 0}


def test_unknown_fields_and_kinds_are_refused() -> None:
    with pytest.raises(UnsupportedMedia, match="field 99 of ConfigMap"):
        decode(_envelope("v1", "ConfigMap", _field(99, b"x")), "", "ConfigMap")
    with pytest.raises(UnsupportedMedia, match="kind Endpoints"):
        decode(_envelope("v1", "Endpoints", b""), "", "Endpoints")
    with pytest.raises(UnsupportedMedia, match="magic"):
        decode(b"{}", "", "ConfigMap")


def test_decode_binding_and_v1_hpa() -> None:
    raw = _field(1, _field(1, b"p")) + _field(2, _field(1, b"Node") + _field(3, b"n1"))
    assert decode(_envelope("v1", "Binding", raw), "", "Binding") == {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}
    ref = _field(1, b"Deployment") + _field(2, b"web") + _field(3, b"apps/v1")
    spec = _field(1, ref) + _field(2, 1) + _field(3, 4) + _field(4, 50)
    hpa = decode(_envelope("autoscaling/v1", "HorizontalPodAutoscaler", _field(1, _field(1, b"web")) + _field(2, spec)),
                 "autoscaling", "HorizontalPodAutoscaler")
    assert hpa["spec"] == {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                           "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50}
