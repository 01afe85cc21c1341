"""Differential test: pitwall's Loki API answers against Loki 3.x's, pinned from Loki's code.

Loki is in no registry here, so the expected answers in ``loki_answers/*.json`` are written out
by hand from Loki's code at grafana/loki main (after 3.8.0), for the push in the same file:

* stream labels: stream labels plus ``service_name`` (``discover_service_name``: first of
  service, app, ..., job) plus structured metadata, ``detected_level`` included
  (``pkg/distributor/field_detection.go``), plus parsed labels; with ``categorize-labels``
  streams keep their own labels and each value carries ``structuredMetadata``/``parsed``;
* log queries: entries in ``[start, end)``; ``limit`` counts entries across streams from the
  ``direction`` end; equal timestamps of one base stream order by the labels string
  (``iter.lessAscending`` / ``lessDescending``); streams sorted by labels string
  (``logqlmodel.Streams.Less``);
* metric range queries: start rounded down and end up to the step
  (``metricQuerySplitter.alignStartEnd``), windows ``(t - range, t]``, steps without samples
  absent, series sorted by labels.

Statistics are not compared (they describe work done, which differs by design).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.config import Settings, load_settings

pytestmark = pytest.mark.timeout(60)

ANSWERS = Path(__file__).parent / "loki_answers"
DOCS = {p.stem: json.loads(p.read_text()) for p in sorted(ANSWERS.glob("*.json"))}
CASES = [(doc, case) for doc in DOCS for case in DOCS[doc]["cases"]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Fixed 2023 timestamps: no age limit, no retention.
    return load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                         kube={"enabled": False},
                         logs={"retention": 0, "limits": {"reject_old_samples_max_age": 0}})


@pytest.fixture
async def pushed(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    for doc in DOCS.values():
        r = await client.post("/loki/api/v1/push", json=doc["push"])
        assert r.status_code == 204, r.text
    yield client


def _without_stats(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "stats"}


@pytest.mark.parametrize(("doc", "case"), CASES, ids=[c["name"] for _, c in CASES])
async def test_same_answer_as_loki(pushed: httpx.AsyncClient, doc: str, case: dict[str, Any]) -> None:
    r = await pushed.get(case["path"], params=case["params"], headers=case.get("headers", {}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    assert _without_stats(body["data"]) == case["expect"]


async def test_answers_survive_a_flush(pushed: httpx.AsyncClient) -> None:
    """The same answers from on-disk blocks as from the in-memory head."""
    app: Any = pushed.app  # type: ignore[attr-defined]
    store = app.state.components.logs.store
    for _ in range(50):  # the audit log's batch of the fixture's requests may land after a flush: flush it too
        await store.flush()
        if store.head_bytes == 0:
            break
        await asyncio.sleep(0.1)
    assert store.head_bytes == 0 and store.disk_blocks()
    for _, case in CASES:
        r = await pushed.get(case["path"], params=case["params"], headers=case.get("headers", {}))
        assert _without_stats(r.json()["data"]) == case["expect"], case["name"]
