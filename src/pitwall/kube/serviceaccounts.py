"""ServiceAccount tokens: JWTs for ``system:serviceaccount:<namespace>:<name>``, as kube-apiserver issues them.

Tokens are ES256 JWTs signed by a key kept in the data directory (created on
first use, 0600), with upstream's claims: ``iss``, ``sub``, ``aud``, ``exp``,
``iat``, ``nbf`` and ``kubernetes.io`` (namespace, serviceaccount name and
uid, and the pod they are bound to). They come from the TokenRequest API
(``POST .../serviceaccounts/<name>/token``, what ``kubectl create token``
sends) and from the node, which mounts one into every pod that does not opt
out (``automountServiceAccountToken: false``).

The authenticator accepts a token whose issuer is ours when its signature
and times are valid and the ServiceAccount (and the bound pod, if any) still
exists with the uid the token names, so deleting either revokes it. The
principal is the user ``system:serviceaccount:<ns>:<name>`` in the groups
``system:serviceaccounts`` and ``system:serviceaccounts:<ns>``: Kubernetes
RBAC (``kube.rbac``) decides what it may do, and ``rbac.bindings`` naming the
user may give it pitwall roles.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from pitwall.core.errors import Unauthorized
from pitwall.core.rbac import Policy
from pitwall.core.tenancy import DEFAULT_TENANT, Principal
from pitwall.kube.errors import BadRequest, Cause, Invalid, MethodNotAllowed, NotFoundError
from pitwall.kube.http import json_response, read_body
from pitwall.kube.registry import ResourceType
from pitwall.kube.resources import Resources

__all__ = ["DEFAULT_AUDIENCE", "ISSUER", "ServiceAccountTokens"]

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCE = ISSUER
DEFAULT_SECONDS = 3600
MIN_SECONDS = 600  # kube-apiserver refuses shorter requests
MAX_SECONDS = 1 << 32
Obj = dict[str, Any]


def _load_key(path: Path | None) -> ec.EllipticCurvePrivateKey:
    if path is not None and path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
        raise ValueError(f"{path}: not an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(pem)
        tmp.replace(path)
    return key


class ServiceAccountTokens:
    """Issues and verifies ServiceAccount tokens (see the module doc)."""

    def __init__(self, resources: Resources, key_path: Path | None = None, issuer: str = ISSUER) -> None:
        self.resources = resources
        self.key_path = key_path
        self.issuer = issuer
        self._key: ec.EllipticCurvePrivateKey | None = None

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:  # read (or made) on first use: building the API does no I/O
            self._key = _load_key(self.key_path)
        return self._key

    def _kid(self) -> str:
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return str(uuid.uuid5(uuid.NAMESPACE_OID, der.hex()))

    def _rt(self, plural: str) -> ResourceType:
        rt = self.resources.registry.get("", "v1", plural)
        assert rt is not None
        return rt

    async def issue(self, namespace: str, name: str, *, audiences: list[str] | None = None,
                    seconds: int = DEFAULT_SECONDS, pod: Obj | None = None) -> tuple[str, int]:
        """A token for ServiceAccount ``namespace/name`` (which must exist), bound to ``pod`` if given;
        (token, expiry as Unix seconds)."""
        sa = await self.resources.get(self._rt("serviceaccounts"), namespace, name)
        now = int(time.time())
        exp = now + seconds
        k8s: Obj = {"namespace": namespace,
                    "serviceaccount": {"name": name, "uid": str((sa.get("metadata") or {}).get("uid", ""))}}
        if pod is not None:
            m = pod.get("metadata") or {}
            k8s["pod"] = {"name": str(m.get("name", "")), "uid": str(m.get("uid", ""))}
        claims = {"iss": self.issuer, "sub": f"system:serviceaccount:{namespace}:{name}",
                  "aud": audiences or [DEFAULT_AUDIENCE], "exp": exp, "iat": now, "nbf": now,
                  "jti": str(uuid.uuid4()), "kubernetes.io": k8s}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self._kid()}), exp

    async def verify(self, token: str, audiences: list[str] | None = None) -> Obj:
        """The claims of a valid token of ours whose ServiceAccount and pod still exist."""
        try:
            claims: Obj = jwt.decode(token, self.key.public_key(), algorithms=["ES256"], issuer=self.issuer,
                                     audience=audiences or [DEFAULT_AUDIENCE], leeway=10,
                                     options={"require": ["exp", "iss", "sub"]})
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid service account token: {e}") from None
        k8s = claims.get("kubernetes.io") or {}
        ns, sa = str(k8s.get("namespace", "")), (k8s.get("serviceaccount") or {})
        try:
            live = await self.resources.get(self._rt("serviceaccounts"), ns, str(sa.get("name", "")))
            if str((live.get("metadata") or {}).get("uid")) != str(sa.get("uid")):
                raise Unauthorized("service account token: the ServiceAccount was deleted and re-created")
            pod = k8s.get("pod")
            if isinstance(pod, dict):
                live_pod = await self.resources.get(self._rt("pods"), ns, str(pod.get("name", "")))
                if str((live_pod.get("metadata") or {}).get("uid")) != str(pod.get("uid")):
                    raise Unauthorized("service account token: the pod it was bound to is gone")
        except NotFoundError:
            raise Unauthorized("service account token: its ServiceAccount or pod no longer exists") from None
        return claims

    def authenticator(self, policy: Policy) -> Any:
        """A ``core.auth.Authenticator`` for tokens of this issuer (None for other credentials)."""

        async def authenticate(scope: Scope, bearer: bytes) -> Principal | None:
            if bearer.count(b".") != 2:
                return None
            token = bearer.decode("latin-1")
            try:
                iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
            except jwt.PyJWTError:
                return None
            if iss != self.issuer:
                return None
            claims = await self.verify(token)
            sub = str(claims["sub"])
            ns = sub.split(":")[2]
            groups = frozenset({"system:serviceaccounts", f"system:serviceaccounts:{ns}"})
            return Principal(sub, frozenset(), frozenset({DEFAULT_TENANT}), policy.grants("user", sub, groups),
                             groups, "serviceaccount")

        return authenticate

    async def token_request(self, request: Request, rt: ResourceType, namespace: str, name: str) -> Response:
        """``POST .../serviceaccounts/<name>/token``: a TokenRequest answered with its status."""
        if request.method != "POST":
            raise MethodNotAllowed()
        body = await read_body(request, protobuf_kind=("authentication.k8s.io", "TokenRequest"))
        if not isinstance(body, dict):
            raise BadRequest("the body of the request was in an unknown format")
        spec = body.get("spec") or {}
        seconds = spec.get("expirationSeconds", DEFAULT_SECONDS)
        if not isinstance(seconds, int) or seconds < MIN_SECONDS or seconds > MAX_SECONDS:
            raise Invalid("TokenRequest", "authentication.k8s.io", name, [Cause(
                "spec.expirationSeconds", "FieldValueInvalid",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        auds = [str(a) for a in spec.get("audiences") or []] or None
        pod = None
        ref = spec.get("boundObjectRef")
        if isinstance(ref, dict) and ref.get("kind") == "Pod":
            pod = await self.resources.get(self._rt("pods"), namespace, str(ref.get("name", "")))
        token, exp = await self.issue(namespace, name, audiences=auds, seconds=seconds, pod=pod)
        out = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
               "spec": {**spec, "audiences": auds or [DEFAULT_AUDIENCE], "expirationSeconds": seconds},
               "status": {"token": token,
                          "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}}
        return json_response(out, 201)
