"""A started KubeAPI (SQLite, no HTTP) with the SLO CRDs built in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.kube import KubeAPI
from pitwall.slo.wiring import builtin_crds
from tests.kube_fixture import started_kube


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, builtin_crds()) as api:
        yield api
