"""A started KubeAPI with Flagger's CRDs installed, over SQLite in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitwall.kube import KubeAPI
from pitwall.releases.crds import flagger_crds
from tests.conftest import SHARED
from tests.kube_fixture import started_kube

FLAGGER = SHARED / "conformance" / "wave2" / "flagger"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, flagger_crds()) as api:
        yield api


@pytest.fixture
async def mesh_kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """Flagger's CRDs and Istio's, as the server has them."""
    from pitwall.traffic.istio_crds import istio_crds

    async with started_kube(tmp_path, flagger_crds(), istio_crds()) as api:
        yield api
