"""KV behaviour checked through py-consul; shared by the SQLite and etcd test modules."""

from __future__ import annotations

import base64
import json
import threading
import time

import consul
import httpx
import pytest
from consul.exceptions import ClientError, ConsulException


def kv_roundtrip(c: consul.Consul, ns: str) -> None:
    assert c.kv.put(f"{ns}/a", "one", flags=7) is True
    idx, e = c.kv.get(f"{ns}/a")
    assert e["Value"] == b"one" and e["Flags"] == 7 and e["Key"] == f"{ns}/a"
    assert e["CreateIndex"] == e["ModifyIndex"] and int(idx) == e["ModifyIndex"] and e["LockIndex"] == 0
    assert c.kv.put(f"{ns}/a", b"two") is True
    _, e2 = c.kv.get(f"{ns}/a")
    assert e2["Value"] == b"two" and e2["CreateIndex"] == e["CreateIndex"] and e2["ModifyIndex"] > e["ModifyIndex"]
    assert e2["Flags"] == 0  # a PUT without ?flags sets 0, as Consul does
    assert c.kv.get(f"{ns}/missing") == (c.kv.get(f"{ns}/missing")[0], None)
    assert c.kv.delete(f"{ns}/a") is True
    assert c.kv.get(f"{ns}/a")[1] is None


def kv_cas(c: consul.Consul, ns: str) -> None:
    assert c.kv.put(f"{ns}/c", "v1", cas=0) is True
    assert c.kv.put(f"{ns}/c", "again", cas=0) is False  # 0: only when absent
    _, e = c.kv.get(f"{ns}/c")
    assert c.kv.put(f"{ns}/c", "v2", cas=e["ModifyIndex"] + 1000) is False
    assert c.kv.put(f"{ns}/c", "v2", cas=e["ModifyIndex"]) is True
    assert c.kv.put(f"{ns}/c", "v3", cas=e["ModifyIndex"]) is False  # stale now
    _, e2 = c.kv.get(f"{ns}/c")
    assert e2["Value"] == b"v2"
    assert c.kv.delete(f"{ns}/c", cas=e["ModifyIndex"]) is False
    assert c.kv.delete(f"{ns}/c", cas=e2["ModifyIndex"]) is True
    assert c.kv.get(f"{ns}/c")[1] is None


def kv_recurse_and_keys(c: consul.Consul, ns: str) -> None:
    for k in ("web/port", "web/host", "web/tls/cert", "db/url", "top"):
        assert c.kv.put(f"{ns}/{k}", k)
    _, entries = c.kv.get(f"{ns}/web/", recurse=True)
    assert [e["Key"] for e in entries] == [f"{ns}/web/host", f"{ns}/web/port", f"{ns}/web/tls/cert"]
    assert [e["Value"] for e in entries] == [b"web/host", b"web/port", b"web/tls/cert"]
    _, keys = c.kv.get(f"{ns}/", keys=True)
    assert keys == [f"{ns}/{k}" for k in ("db/url", "top", "web/host", "web/port", "web/tls/cert")]
    _, dirs = c.kv.get(f"{ns}/", keys=True, separator="/")
    assert dirs == [f"{ns}/db/", f"{ns}/top", f"{ns}/web/"]
    assert c.kv.get(f"{ns}/nothing/", recurse=True)[1] is None
    assert c.kv.delete(f"{ns}/web/", recurse=True) is True
    _, keys = c.kv.get(f"{ns}/", keys=True)
    assert keys == [f"{ns}/db/url", f"{ns}/top"]


def kv_blocking(c: consul.Consul, ns: str) -> None:
    c.kv.put(f"{ns}/watched", "v0")
    idx, _ = c.kv.get(f"{ns}/watched")
    # A blocking read that times out: same index back, value unchanged, unrelated writes do not wake it.
    c.kv.put(f"{ns}/other", "noise")
    t0 = time.monotonic()
    idx2, e = c.kv.get(f"{ns}/watched", index=idx, wait="1s")
    assert time.monotonic() - t0 >= 0.9
    assert idx2 == idx and e["Value"] == b"v0"
    # A blocking read that wakes on a change.
    got: dict[str, object] = {}

    def reader() -> None:
        got["res"] = c.kv.get(f"{ns}/watched", index=idx, wait="30s")

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(0.3)
    assert th.is_alive()
    c.kv.put(f"{ns}/watched", "v1")
    th.join(10)
    assert not th.is_alive()
    new_idx, e = got["res"]  # type: ignore[misc]
    assert int(new_idx) > int(idx) and e["Value"] == b"v1"
    # A recursive watch wakes on a delete below its prefix.
    idx3, _ = c.kv.get(f"{ns}/", recurse=True)
    th = threading.Thread(target=lambda: got.__setitem__("tree", c.kv.get(f"{ns}/", recurse=True, index=idx3,
                                                                           wait="30s")))
    th.start()
    time.sleep(0.3)
    c.kv.delete(f"{ns}/other")
    th.join(10)
    assert not th.is_alive()
    tree_idx, entries = got["tree"]  # type: ignore[misc]
    assert int(tree_idx) > int(idx3) and [x["Key"] for x in entries] == [f"{ns}/watched"]


def kv_txn(c: consul.Consul, ns: str) -> None:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    res = c.txn.put([{"KV": {"Verb": "set", "Key": f"{ns}/t1", "Value": b64("a")}},
                     {"KV": {"Verb": "set", "Key": f"{ns}/t2", "Value": b64("b"), "Flags": 3}},
                     {"KV": {"Verb": "get", "Key": f"{ns}/t1"}}])
    assert res["Errors"] is None
    assert [r["KV"]["Key"] for r in res["Results"]] == [f"{ns}/t1", f"{ns}/t2", f"{ns}/t1"]
    assert res["Results"][0]["KV"]["Value"] is None and base64.b64decode(res["Results"][2]["KV"]["Value"]) == b"a"
    rev = res["Results"][0]["KV"]["ModifyIndex"]
    assert res["Results"][1]["KV"]["ModifyIndex"] == rev  # one transaction, one index
    # All or nothing: a failing check leaves the set undone, errors name the operation.
    with pytest.raises(ClientError) as err:
        c.txn.put([{"KV": {"Verb": "set", "Key": f"{ns}/t3", "Value": b64("c")}},
                   {"KV": {"Verb": "check-index", "Key": f"{ns}/t1", "Index": rev + 99}},
                   {"KV": {"Verb": "check-not-exists", "Key": f"{ns}/t2"}}])
    assert str(err.value).startswith("409")
    body = json.loads(str(err.value)[4:])
    assert body["Results"] is None
    assert [e["OpIndex"] for e in body["Errors"]] == [1, 2]
    assert "current modify index" in body["Errors"][0]["What"] and "exists" in body["Errors"][1]["What"]
    assert c.kv.get(f"{ns}/t3")[1] is None
    res = c.txn.put([{"KV": {"Verb": "get-tree", "Key": f"{ns}/t"}},
                     {"KV": {"Verb": "delete-tree", "Key": f"{ns}/t"}}])
    assert [r["KV"]["Key"] for r in res["Results"]] == [f"{ns}/t1", f"{ns}/t2"]
    assert c.kv.get(f"{ns}/t", recurse=True)[1] is None


def kv_bad_input(url: str, token: str, ns: str) -> None:
    h = {"X-Consul-Token": token}
    r = httpx.put(f"{url}/v1/kv/{ns}/big", content=b"x" * (512 * 1024 + 1), headers=h)
    assert r.status_code == 413
    assert r.text.startswith("Request body(524289 bytes) too large, max size: 524288 bytes.")
    r = httpx.put(f"{url}/v1/kv/{ns}/a%00b", content=b"x", headers=h)
    assert r.status_code == 400 and "invalid character" in r.text
    r = httpx.put(f"{url}/v1/kv/{ns}/..%2fetc", content=b"x", headers=h)
    assert r.status_code == 400 and "traversal" in r.text
    r = httpx.put(f"{url}/v1/kv/{ns}/k?cas=1&acquire=x", content=b"x", headers=h)
    assert r.status_code == 400 and r.text.startswith("Conflicting flags")
    ops = [{"KV": {"Verb": "set", "Key": f"{ns}/n{i}", "Value": ""}} for i in range(65)]
    r = httpx.put(f"{url}/v1/txn", json=ops, headers=h)
    assert r.status_code == 413 and r.text.strip() == "Transaction contains too many operations (65 > 64)"
    r = httpx.put(f"{url}/v1/txn", content=b"[{", headers=h)
    assert r.status_code == 400 and r.text.startswith("Failed to parse body")
    big = base64.b64encode(b"y" * (512 * 1024 + 1)).decode()
    r = httpx.put(f"{url}/v1/txn", json=[{"KV": {"Verb": "set", "Key": f"{ns}/b", "Value": big}}], headers=h)
    assert r.status_code == 413
    r = httpx.get(f"{url}/v1/kv/{ns}/x?index=abc", headers=h)
    assert r.status_code == 400 and r.text.strip() == "Invalid index"
    # nothing of the above was stored
    assert httpx.get(f"{url}/v1/kv/{ns}/?keys", headers=h).status_code == 404
    with pytest.raises(ConsulException):
        consul.Consul(host=url.split("//")[1].split(":")[0], port=int(url.rsplit(":", 1)[1]),
                      token=token).kv.put(f"{ns}/x", "v", acquire="no-such-session")
