"""HTTPChaos and NetworkChaos, enforced by pitwall's service proxy through its fault table (``traffic.faults``).

Chaos Mesh injects these inside the target pods (a tproxy for HTTP, tc/netem
and iptables for the network). pitwall owns the path between a client and a
Service's endpoints instead: the service proxy on every cluster IP. So the
faults act on traffic that goes through a Service's cluster IP (and the mesh
routing behind it); pod-to-pod traffic by pod IP is not intercepted, and the
conditions say so (``AllInjected`` reason ``InjectedInServiceProxy``).

Approximations of the kernel's semantics, each documented in docs/chaos.md:
loss, duplicate and corrupt act on whole HTTP messages (HTTP ports) or TCP
connections/chunks, not on packets; delay delays each message or chunk;
bandwidth is a token bucket per sending pod (``rate``, ``buffer`` as the
bucket's depth, ``limit`` accepted: the proxy holds the sender back instead
of dropping, the effect TCP makes of tbf's drops anyway).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import random
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from pitwall.chaos.faults import FaultError
from pitwall.chaos.model import ChaosSpecError, parse_go_duration
from pitwall.kube import KubeClient, NotFoundError
from pitwall.traffic import FaultTable, HttpMessage

__all__ = ["HttpRule", "MeshHttpChaos", "MeshNetworkChaos", "NetRule", "TokenBucket", "glob_match",
           "merge_patch", "parse_rate", "validate_http", "validate_network"]

Obj = dict[str, Any]
NET_ACTIONS = ("netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth")
PROXY_NOTE = ("InjectedInServiceProxy: enforced by pitwall's service proxy for traffic through Service cluster "
              "IPs; pod-to-pod traffic by pod IP is not intercepted")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# tc's units (bits per second unless "bps": bytes per second), as Chaos Mesh passes them to tc
_RATE_UNITS = {"": 1 / 8, "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
               "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "tbps": 1e12}


# -- small parsers -----------------------------------------------------------------------------------


def _percent(value: Any, field: str) -> float:
    """Chaos Mesh's percent strings ("25", "0.5") as a probability in [0, 1]."""
    try:
        p = float(str(value if value is not None else "0").strip() or "0")
    except ValueError:
        raise ChaosSpecError(f'{field}: invalid percent "{value}"') from None
    if not 0.0 <= p <= 100.0:
        raise ChaosSpecError(f"{field}: {value} is not a percentage between 0 and 100")
    return p / 100.0


def _latency(value: Any, field: str) -> float:
    s = str(value or "0").strip()
    seconds = parse_go_duration(s, field)
    if seconds < 0:
        raise ChaosSpecError(f'{field}: negative duration "{value}"')
    return seconds


def parse_rate(text: str, field: str = "spec.bandwidth.rate") -> float:
    """tc's rate (``1mbps``, ``100kbit``, ``8000``) in bytes per second."""
    m = _RATE.match(str(text))
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _RATE_UNITS or float(m.group(1)) <= 0:
        raise ChaosSpecError(f'{field}: invalid rate "{text}" (a positive number with bit, kbit, mbit, gbit, '
                             "tbit, bps, kbps, mbps, gbps or tbps)")
    return float(m.group(1)) * _RATE_UNITS[unit]


class Correlated:
    """Uniform draws where each repeats the previous one with probability ``correlation``.

    netem mixes ``(1 - c) * uniform + c * previous``, which narrows the distribution, so a 25% loss with
    50% correlation loses about 7% (a known netem caveat); repeating the previous draw keeps the
    configured share exactly and still makes consecutive outcomes correlated by ``c``."""

    def __init__(self, correlation: float) -> None:
        self.c = correlation
        self.last = random.random()

    def next(self) -> float:
        if not self.c or random.random() >= self.c:
            self.last = random.random()
        return self.last


class _Chance:
    """A percent with its correlation: ``hit()`` is True that share of the draws."""

    def __init__(self, p: float, correlation: float) -> None:
        self.p = p
        self.rnd = Correlated(correlation)

    def hit(self) -> bool:
        return self.p > 0 and (self.p >= 1.0 or self.rnd.next() < self.p)


def glob_match(pattern: str, text: str) -> bool:
    """Wildcard match as chaos-tproxy's path rule: ``*`` any run of characters (``/`` included), ``?`` one."""
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# -- HTTPChaos -----------------------------------------------------------------------------------------


def validate_http(spec: Obj) -> None:
    """Refuse what Chaos Mesh's webhook refuses (and what the proxy could not do); the message names the field."""
    target = spec.get("target")
    if target not in ("Request", "Response"):
        raise ChaosSpecError(f'spec.target: Unsupported value: "{target}": supported values: "Request", "Response"')
    port = spec.get("port")
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise ChaosSpecError(f"spec.port: Invalid value: {port!r}: must be a port number")
    if spec.get("delay") is not None:
        _latency(spec["delay"], "spec.delay")
    replace = spec.get("replace") or {}
    if replace.get("body") is not None:
        try:
            base64.b64decode(str(replace["body"]), validate=True)
        except (binascii.Error, ValueError):
            raise ChaosSpecError("spec.replace.body: illegal base64 data (the body is bytes, base64 in JSON)") from None
    code = replace.get("code")
    if code is not None and (not isinstance(code, int) or not 100 <= code <= 599):
        raise ChaosSpecError(f"spec.replace.code: Invalid value: {code!r}: must be an HTTP status code")
    if target == "Request" and (code is not None or spec.get("code") is not None or spec.get("response_headers")):
        raise ChaosSpecError("spec.target: code, response_headers and replace.code need target Response")
    body = (spec.get("patch") or {}).get("body")
    if body is not None:
        if body.get("type") != "JSON":
            raise ChaosSpecError(f'spec.patch.body.type: Unsupported value: "{body.get("type")}": supported '
                                 'values: "JSON"')
        try:
            orjson.loads(str(body.get("value") or ""))
        except orjson.JSONDecodeError as e:
            raise ChaosSpecError(f"spec.patch.body.value: invalid JSON: {e}") from None
    for name in ("headers", "queries"):
        for i, pair in enumerate((spec.get("patch") or {}).get(name) or []):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ChaosSpecError(f"spec.patch.{name}[{i}]: a [name, value] pair is required")


def _split_target(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


def _set_header(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    low = name.lower()
    return [(k, v) for k, v in headers if k.lower() != low] + [(name, value)]


def _headers_match(headers: list[tuple[str, str]], want: dict[str, Any]) -> bool:
    have = {k.lower(): v for k, v in headers}
    return all(have.get(str(k).lower()) == str(v) for k, v in want.items())


class HttpRule:
    """One HTTPChaos on one pod: Chaos Mesh's match (port, path glob, method, request headers; for a
    Response target also code and response headers) and its actions in Chaos Mesh's order: abort, delay,
    replace, patch."""

    def __init__(self, spec: Obj) -> None:
        validate_http(spec)
        self.target = str(spec["target"])
        self.port = int(spec.get("port") or 0)
        self.path = spec.get("path")
        self.method = spec.get("method")
        self.code = spec.get("code")
        self.request_headers: dict[str, Any] = dict(spec.get("request_headers") or {})
        self.response_headers: dict[str, Any] = dict(spec.get("response_headers") or {})
        self.abort = bool(spec.get("abort"))
        self.delay = _latency(spec["delay"], "spec.delay") if spec.get("delay") else 0.0
        self.replace: Obj = dict(spec.get("replace") or {})
        self.patch: Obj = dict(spec.get("patch") or {})
        body = self.replace.get("body")
        self.replace_body = base64.b64decode(str(body)) if body is not None else None
        pbody = self.patch.get("body")
        self.patch_body = orjson.loads(str(pbody.get("value"))) if pbody else None

    def _request_matches(self, req: HttpMessage) -> bool:
        path, _ = _split_target(req.target)
        if self.path is not None and not glob_match(str(self.path), path):
            return False
        if self.method is not None and str(self.method).upper() != req.method.upper():
            return False
        return _headers_match(req.headers, self.request_headers)

    async def on_request(self, req: HttpMessage) -> bool:
        if self.target != "Request" or not self._request_matches(req):
            return True
        if self.abort:
            return False
        if self.delay:
            await asyncio.sleep(self.delay)
        self._replace_request(req)
        self._patch_common(req)
        if self.patch.get("queries"):
            path, query = _split_target(req.target)
            pairs = parse_qsl(query, keep_blank_values=True) + [(str(k), str(v)) for k, v in self.patch["queries"]]
            req.target = f"{path}?{urlencode(pairs)}"
        return True

    def _replace_request(self, req: HttpMessage) -> None:
        r = self.replace
        path, query = _split_target(req.target)
        if r.get("path") is not None:
            path = str(r["path"])
        if r.get("queries"):
            pairs = parse_qsl(query, keep_blank_values=True)
            for k, v in r["queries"].items():
                pairs = [(pk, pv) for pk, pv in pairs if pk != k] + [(str(k), str(v))]
            query = urlencode(pairs)
        req.target = f"{path}?{query}" if query else path
        if r.get("method") is not None:
            req.method = str(r["method"]).upper()
        self._replace_common(req)

    def _replace_common(self, msg: HttpMessage) -> None:
        for k, v in (self.replace.get("headers") or {}).items():
            msg.headers = _set_header(msg.headers, str(k), str(v))
        if self.replace_body is not None:
            msg.body = self.replace_body

    def _patch_common(self, msg: HttpMessage) -> None:
        msg.headers = msg.headers + [(str(k), str(v)) for k, v in self.patch.get("headers") or []]
        if self.patch_body is not None:
            try:
                doc = orjson.loads(msg.body) if msg.body else None
            except orjson.JSONDecodeError:
                doc = None
            msg.body = orjson.dumps(merge_patch(doc, self.patch_body))

    async def on_response(self, req: HttpMessage, resp: HttpMessage) -> bool:
        if self.target != "Response" or not self._request_matches(req):
            return True
        if self.code is not None and int(self.code) != resp.status:
            return True
        if not _headers_match(resp.headers, self.response_headers):
            return True
        if self.abort:
            return False
        if self.delay:
            await asyncio.sleep(self.delay)
        self._replace_common(resp)
        if self.replace.get("code") is not None:
            resp.status = int(self.replace["code"])
        self._patch_common(resp)
        return True


# -- NetworkChaos -------------------------------------------------------------------------------------


def _external(spec: Obj) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for t in spec.get("externalTargets") or []:
        try:
            out.append(ipaddress.ip_network(str(t), strict=False))
        except ValueError:
            continue  # a host name: not resolved by the proxy (the condition says so)
    return out


def external_hostnames(spec: Obj) -> list[str]:
    names = []
    for t in spec.get("externalTargets") or []:
        try:
            ipaddress.ip_network(str(t), strict=False)
        except ValueError:
            names.append(str(t))
    return names


def validate_network(spec: Obj) -> None:
    """Chaos Mesh's webhook checks for the actions the proxy honours; the message names the field."""
    action = str(spec.get("action") or "delay")
    if action not in NET_ACTIONS:
        raise ChaosSpecError(f'spec.action: Unsupported value: "{action}"')
    direction = str(spec.get("direction") or "to")
    if direction not in ("to", "from", "both"):
        raise ChaosSpecError(f'spec.direction: Unsupported value: "{direction}": supported values: "to", "from", '
                             '"both"')
    if spec.get("externalTargets") and direction != "to":
        raise ChaosSpecError('spec.direction: Invalid value: "from": external targets cannot be used with `from` '
                             "and `both` direction in netem action yet")
    section = spec.get(action) if action not in ("netem", "partition") else None
    if action in ("delay", "loss", "duplicate", "corrupt", "bandwidth") and not section:
        raise ChaosSpecError(f"spec.{action}: Required value: the {action} action needs spec.{action}")
    NetRule(spec)  # parses every parameter


class TokenBucket:
    """A token bucket: ``rate`` bytes/s, ``burst`` bytes deep; senders take their bytes in FIFO order."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            while n > 0:
                piece = min(n, self.burst)
                now = time.monotonic()
                self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= piece:
                    self.tokens -= piece
                    n -= piece
                    continue
                await asyncio.sleep((piece - self.tokens) / self.rate)


class NetRule:
    """One NetworkChaos in the proxy: the pod IPs of its selector (``sources``) and of its target, the
    direction, and the action's parameters (a ``traffic.NetFault``)."""

    def __init__(self, spec: Obj) -> None:
        self.action = str(spec.get("action") or "delay")
        self.direction = str(spec.get("direction") or "to")
        target = spec.get("target")
        self.external = _external(spec)
        self.has_target = (isinstance(target, dict) and target.get("selector") is not None) or bool(
            spec.get("externalTargets"))
        self.sources: dict[str, str] = {}  # record -> pod IP
        self.targets: dict[str, str] = {}
        a = self.action
        both = a == "netem"
        d: Obj = (spec.get("delay") or {}) if a == "delay" or both else {}
        self.latency = _latency(d.get("latency"), "spec.delay.latency") if d else 0.0
        self.jitter = _latency(d.get("jitter"), "spec.delay.jitter") if d else 0.0
        self.delay_rnd = Correlated(_percent(d.get("correlation"), "spec.delay.correlation")) if d else None
        self.loss = self._chance(spec, "loss", "loss", a in ("loss",) or both)
        self.dup = self._chance(spec, "duplicate", "duplicate", a == "duplicate" or both)
        self.corrupt = self._chance(spec, "corrupt", "corrupt", a == "corrupt" or both)
        self.partition = a == "partition"
        self.bucket_rate = 0.0
        self.bucket_burst = 0
        if a == "bandwidth":
            bw = spec.get("bandwidth") or {}
            self.bucket_rate = parse_rate(str(bw.get("rate") or ""))
            for k in ("limit", "buffer"):
                if not isinstance(bw.get(k), int) or bw[k] <= 0:
                    raise ChaosSpecError(f"spec.bandwidth.{k}: Invalid value: {bw.get(k)!r}: must be a positive "
                                         "number of bytes")
            self.bucket_burst = int(bw["buffer"])
        self._buckets: dict[str, TokenBucket] = {}

    @staticmethod
    def _chance(spec: Obj, section: str, key: str, on: bool) -> _Chance | None:
        sec = spec.get(section) or {}
        if not on or not sec:
            return None
        return _Chance(_percent(sec.get(key), f"spec.{section}.{key}"),
                       _percent(sec.get("correlation"), f"spec.{section}.correlation"))

    def _is_source(self, ip: str) -> bool:
        return ip in self.sources.values()

    def _is_target(self, ip: str) -> bool:
        if not self.has_target:
            return True  # no target: every peer (netem on the selected pods' own interface)
        if ip in self.targets.values():
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.external)

    def sides(self, src_ip: str, dst_ip: str) -> tuple[bool, bool]:
        up = down = False
        if self.direction in ("to", "both"):  # packets from the selected pods to the target
            up |= self._is_source(src_ip) and self._is_target(dst_ip)
            down |= self._is_source(dst_ip) and self._is_target(src_ip)
        if self.direction in ("from", "both"):  # packets from the target to the selected pods
            up |= self._is_target(src_ip) and self._is_source(dst_ip)
            down |= self._is_target(dst_ip) and self._is_source(src_ip)
        return up, down

    def refuses(self) -> bool:
        return self.partition

    def lost(self) -> bool:
        return self.loss is not None and self.loss.hit()

    def duplicated(self) -> bool:
        return self.dup is not None and self.dup.hit()

    def _delay(self) -> float:
        if self.delay_rnd is None or (self.latency <= 0 and self.jitter <= 0):
            return 0.0
        if self.jitter <= 0:
            return self.latency
        return max(0.0, self.latency + self.jitter * (2.0 * self.delay_rnd.next() - 1.0))

    async def shape(self, sender_ip: str, data: bytes) -> bytes:
        wait = self._delay()
        if wait:
            await asyncio.sleep(wait)
        if self.bucket_rate and data:
            bucket = self._buckets.get(sender_ip)
            if bucket is None:
                bucket = self._buckets[sender_ip] = TokenBucket(self.bucket_rate, self.bucket_burst)
            await bucket.take(len(data))
        if data and self.corrupt is not None and self.corrupt.hit():
            i = random.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ (1 << random.randrange(8))]) + data[i + 1:]
        return data


# -- the controller's faults ---------------------------------------------------------------------------


async def _pod_ip(client: KubeClient, target: str) -> tuple[str, str]:
    """The pod's IP and uid; ``FaultError`` while it has none."""
    ns, name = target.split("/")[:2]
    try:
        pod = await client.get("v1", "Pod", name, ns)
    except NotFoundError:
        raise FaultError(f'pods "{name}" not found') from None
    if pod["metadata"].get("deletionTimestamp"):
        raise FaultError(f"pod {ns}/{name} is being deleted")
    ip = str((pod.get("status") or {}).get("podIP") or "")
    if not ip:
        raise FaultError(f"pod {ns}/{name} has no IP yet")
    return ip, str(pod["metadata"].get("uid") or "")


def _exp_key(obj: Obj) -> str:
    m = obj["metadata"]
    return f"{obj.get('kind')}/{m['namespace']}/{m['name']}/{m.get('uid') or ''}"


class MeshHttpChaos:
    """HTTPChaos through the service proxy: one ``HttpRule`` per selected pod, on its IP and ``port``."""

    one_shot = False

    def __init__(self, client: KubeClient, table: FaultTable) -> None:
        self.client = client
        self.table = table
        self._uids: dict[str, str] = {}

    def check(self, obj: Obj) -> None:
        validate_http(obj.get("spec") or {})

    def note(self, obj: Obj) -> str:
        return PROXY_NOTE + ", on Service ports the mesh treats as HTTP (HTTP/1.1)"

    async def apply(self, obj: Obj, target: str) -> None:
        rule = HttpRule(obj.get("spec") or {})
        ip, uid = await _pod_ip(self.client, target)
        key = f"{_exp_key(obj)}/{target}"
        self.table.put_http(key, ip, rule.port, rule)
        self._uids[key] = uid

    async def recover(self, obj: Obj, target: str) -> None:
        key = f"{_exp_key(obj)}/{target}"
        self.table.remove(key)
        self._uids.pop(key, None)

    async def active(self, obj: Obj, target: str) -> bool:
        key = f"{_exp_key(obj)}/{target}"
        if self.table.get(key) is None:
            return False
        try:
            ip, uid = await _pod_ip(self.client, target)
        except FaultError:
            return False
        return self.table.http_ip(key) == ip and self._uids.get(key) == uid


class MeshNetworkChaos:
    """NetworkChaos through the service proxy: one ``NetRule`` per experiment; each record adds its pod's IP
    to the selector's side (``ns/pod``) or the target's (``target:ns/pod``)."""

    one_shot = False

    def __init__(self, client: KubeClient, table: FaultTable) -> None:
        self.client = client
        self.table = table
        self._rules: dict[str, NetRule] = {}
        self._uids: dict[tuple[str, str], str] = {}

    def check(self, obj: Obj) -> None:
        validate_network(obj.get("spec") or {})

    def note(self, obj: Obj) -> str:
        names = external_hostnames(obj.get("spec") or {})
        extra = f"; externalTargets {', '.join(names)} are host names, not resolved: not honoured" if names else ""
        return PROXY_NOTE + extra

    def _rule(self, obj: Obj) -> tuple[str, NetRule]:
        key = _exp_key(obj)
        rule = self._rules.get(key)
        if rule is None or self.table.get(key) is not rule:
            rule = self._rules[key] = NetRule(obj.get("spec") or {})
        return key, rule

    async def apply(self, obj: Obj, target: str) -> None:
        side, _, pod = target.rpartition(":")
        key, rule = self._rule(obj)
        ip, uid = await _pod_ip(self.client, pod)
        (rule.targets if side == "target" else rule.sources)[target] = ip
        self._uids[(key, target)] = uid
        if self.table.get(key) is not rule:
            self.table.put_net(key, rule)

    async def recover(self, obj: Obj, target: str) -> None:
        key = _exp_key(obj)
        self._uids.pop((key, target), None)
        rule = self._rules.get(key)
        if rule is None:
            return
        rule.sources.pop(target, None)
        rule.targets.pop(target, None)
        if not rule.sources and not rule.targets:
            self.table.remove(key)
            del self._rules[key]

    async def active(self, obj: Obj, target: str) -> bool:
        key = _exp_key(obj)
        rule = self._rules.get(key)
        if rule is None or self.table.get(key) is not rule:
            return False
        ip = rule.sources.get(target) or rule.targets.get(target)
        try:
            now_ip, uid = await _pod_ip(self.client, target.rpartition(":")[2])
        except FaultError:
            return False
        return ip == now_ip and self._uids.get((key, target)) == uid
