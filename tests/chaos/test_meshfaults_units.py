"""The pieces of HTTPChaos and NetworkChaos in the proxy: matching, rewriting, directions, parsing, the table."""

from __future__ import annotations

import itertools
import random

import pytest

from pitwall.chaos.meshfaults import (
    HttpRule,
    NetRule,
    glob_match,
    merge_patch,
    parse_rate,
    validate_http,
    validate_network,
)
from pitwall.chaos.model import ChaosSpecError
from pitwall.traffic import FaultTable, HttpMessage

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("pattern", "text", "want"), [
    ("/api/*", "/api/orders/7", True), ("/api/*", "/api", False), ("/a?c", "/abc", True), ("/a?c", "/ac", False),
    ("*", "/", True), ("/x/*/y", "/x/1/2/y", True), ("/x/*/y", "/x/1/2/z", False), ("/exact", "/exact", True),
    ("/exact", "/exact/", False), ("**/z", "/a/b/z", True),
])
def test_glob_match(pattern: str, text: str, want: bool) -> None:
    assert glob_match(pattern, text) is want


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {"a": "z",
                                                                                              "c": {"d": "e"}}
    assert merge_patch([1, 2], {"a": 1}) == {"a": 1}
    assert merge_patch({"a": 1}, [3]) == [3]


@pytest.mark.parametrize(("text", "bps"), [("1mbps", 1e6), ("8kbit", 1000.0), ("800", 100.0), ("1gbit", 1.25e8),
                                           ("100bps", 100.0)])
def test_parse_rate_as_tc(text: str, bps: float) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["fast", "-1mbps", "0kbit", "1 furlong"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ChaosSpecError, match=r"spec\.bandwidth\.rate"):
        parse_rate(text)


@pytest.mark.parametrize(("spec", "field"), [
    ({"target": "Sideways"}, "spec.target"),
    ({"target": "Request", "delay": "soon"}, "spec.delay"),
    ({"target": "Request", "replace": {"code": 418}}, "spec.target"),
    ({"target": "Response", "replace": {"code": 99}}, "spec.replace.code"),
    ({"target": "Response", "patch": {"body": {"type": "XML", "value": "<a/>"}}}, "spec.patch.body.type"),
    ({"target": "Response", "patch": {"body": {"type": "JSON", "value": "{"}}}, "spec.patch.body.value"),
    ({"target": "Request", "patch": {"headers": [["only-name"]]}}, r"spec.patch.headers\[0\]"),
    ({"target": "Request", "port": 70000}, "spec.port"),
])
def test_validate_http_names_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ChaosSpecError, match=field):
        validate_http(spec)


@pytest.mark.parametrize(("spec", "field"), [
    ({"action": "jam"}, "spec.action"),
    ({"action": "delay"}, "spec.delay"),
    ({"action": "delay", "delay": {"latency": "10 minutes"}}, "spec.delay.latency"),
    ({"action": "loss", "loss": {"loss": "150"}}, "spec.loss.loss"),
    ({"action": "loss", "loss": {"loss": "5", "correlation": "x"}}, "spec.loss.correlation"),
    ({"action": "partition", "direction": "sideways"}, "spec.direction"),
    ({"action": "partition", "direction": "from", "externalTargets": ["10.0.0.1"]}, "spec.direction"),
    ({"action": "bandwidth", "bandwidth": {"rate": "1mbps", "limit": 0, "buffer": 10}}, "spec.bandwidth.limit"),
])
def test_validate_network_names_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ChaosSpecError, match=field):
        validate_network(spec)


def _rule(direction: str, target: bool = True, external: list[str] | None = None) -> NetRule:
    spec: dict[str, object] = {"action": "partition", "direction": direction}
    if target:
        spec["target"] = {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}
    if external:
        spec["externalTargets"] = external
    r = NetRule(spec)
    r.sources["default/a"] = "10.0.0.1"
    if target:
        r.targets["target:default/db"] = "10.0.0.9"
    return r


def test_directions_as_chaos_mesh() -> None:
    to = _rule("to")
    assert to.sides("10.0.0.1", "10.0.0.9") == (True, False)  # the selected pod's requests to the target
    assert to.sides("10.0.0.9", "10.0.0.1") == (False, True)  # its answers to the target
    assert to.sides("10.0.0.5", "10.0.0.9") == (False, False)
    frm = _rule("from")
    assert frm.sides("10.0.0.9", "10.0.0.1") == (True, False)
    assert frm.sides("10.0.0.1", "10.0.0.9") == (False, True)
    both = _rule("both")
    assert both.sides("10.0.0.1", "10.0.0.9") == (True, True)
    anyone = _rule("to", target=False)  # no target: every peer of the selected pods
    assert anyone.sides("10.0.0.1", "192.0.2.4") == (True, False)
    assert anyone.sides("192.0.2.4", "10.0.0.1") == (False, True)
    ext = _rule("to", target=False, external=["192.0.2.0/24", "example.com"])
    assert ext.sides("10.0.0.1", "192.0.2.4") == (True, False)
    assert ext.sides("10.0.0.1", "198.51.100.1") == (False, False)


def test_loss_rate_and_correlation() -> None:
    random.seed(7)
    r = NetRule({"action": "loss", "loss": {"loss": "25", "correlation": "50"}})
    n = 20000
    draws = [r.lost() for _ in range(n)]
    assert 0.22 < sum(draws) / n < 0.28  # the configured share, correlation or not
    # correlated: a loss follows a loss far more often than the 25% of independent draws
    after_loss = [b for a, b in itertools.pairwise(draws) if a]
    assert sum(after_loss) / len(after_loss) > 0.5
    none = NetRule({"action": "loss", "loss": {"loss": "0"}})
    assert not any(none.lost() for _ in range(1000))
    every = NetRule({"action": "loss", "loss": {"loss": "100"}})
    assert all(every.lost() for _ in range(1000))


async def test_corrupt_flips_one_byte_and_delay_zero_is_a_pass() -> None:
    r = NetRule({"action": "corrupt", "corrupt": {"corrupt": "100"}})
    data = bytes(range(64))
    out = await r.shape("10.0.0.1", data)
    assert len(out) == len(data) and sum(a != b for a, b in zip(out, data, strict=True)) == 1
    assert await NetRule({"action": "partition"}).shape("10.0.0.1", data) == data


async def test_http_rule_request_and_response() -> None:
    rule = HttpRule({"target": "Request", "path": "/a/*", "method": "GET", "request_headers": {"X-T": "1"},
                     "replace": {"path": "/b", "queries": {"q": "2"}, "headers": {"x-t": "9"}},
                     "patch": {"queries": [["z", "3"]], "headers": [["X-P", "p"]]}})
    msg = HttpMessage("GET", "/a/x?q=1&k=v", [("X-T", "1")], b"")
    assert await rule.on_request(msg)
    assert msg.target == "/b?k=v&q=2&z=3" and ("x-t", "9") in msg.headers and ("X-P", "p") in msg.headers
    other = HttpMessage("POST", "/a/x", [("X-T", "1")], b"")
    assert await rule.on_request(other) and other.target == "/a/x"
    abort = HttpRule({"target": "Response", "code": 500, "abort": True})
    req = HttpMessage("GET", "/", [], b"")
    assert await abort.on_response(req, HttpMessage("GET", "/", [], b"", 200))  # another code: untouched
    assert not await abort.on_response(req, HttpMessage("GET", "/", [], b"", 500))
    patch = HttpRule({"target": "Response", "patch": {"body": {"type": "JSON", "value": '{"x": 1}'}}})
    resp = HttpMessage("GET", "/", [], b'{"y": 2}', 200)
    assert await patch.on_response(req, resp) and resp.body == b'{"y":2,"x":1}'


def test_fault_table_keys_and_links() -> None:
    t = FaultTable()
    assert not t.active and t.link("1.1.1.1", "2.2.2.2") is None
    rule = HttpRule({"target": "Request", "abort": True})
    t.put_http("k1", "10.0.0.9", 8080, rule)
    assert t.active and t.http_for("10.0.0.9", 8080) == [rule] and t.http_for("10.0.0.9", 80) == []
    net = _rule("to")
    t.put_net("k2", net)
    link = t.link("10.0.0.1", "10.0.0.9")
    assert link is not None and link.up == [net] and link.down == [] and link.refused()
    assert t.keys() == {"k1", "k2"}
    assert t.remove("k1") and t.remove("k2") and not t.remove("k2")
    assert not t.active and t.http_for("10.0.0.9", 8080) == []
