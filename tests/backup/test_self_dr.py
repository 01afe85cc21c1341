"""Disaster recovery of pitwall itself, end to end, through the real CLI and the real ``restic``.

A server (a subprocess, as users run it) takes metrics, logs, Kubernetes
objects and a silence; ``pitwall backup self`` runs while remote-write load
goes on; the repository is restored into a fresh directory with ``pitwall
restore self``; a second server starts on it. Every request acknowledged
before the backup began is there, every restored request is whole (the WAL
replayed cleanly), and query answers match the original server's for what
was restored. ``restic snapshots``/``ls``/``restore`` run by hand read the
same repository and give back the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest

from pitwall.metrics.ingest import prompb
from tests.conftest import free_port, start_pitwall_process, wait_ready

pytestmark = pytest.mark.timeout(300)

PASSWORD = "dr-test-password"
T0 = (int(time.time()) - 600) * 1000


def _write_body(req_id: str) -> bytes:
    w = prompb.WriteRequest()
    ts = w.timeseries.add()
    for k, v in (("__name__", "dr_total"), ("req", req_id)):
        lb = ts.labels.add()
        lb.name, lb.value = k, v
    for i in range(10):
        s = ts.samples.add()
        s.timestamp, s.value = T0 + i * 1000, float(i)
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def _restic(*args: str, repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["restic", "-r", str(repo), *args], capture_output=True, text=True, timeout=120,
                          env=_env(RESTIC_PASSWORD=PASSWORD), check=True)


def _kubectl(url: str, home: Path, *args: str, stdin: str | None = None) -> str:
    cfg = home / "kubeconfig"
    cfg.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "p",
        "clusters": [{"name": "p", "cluster": {"server": url}}], "users": [{"name": "p", "user": {}}],
        "contexts": [{"name": "p", "context": {"cluster": "p", "user": "p", "namespace": "default"}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env.update(KUBECONFIG=str(cfg), HOME=str(home))
    p = subprocess.run(["kubectl", f"--cache-dir={home / 'kcache'}", *args], input=stdin, capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _series_counts(url: str) -> dict[str, float]:
    """Samples per request series, as PromQL answers."""
    r = httpx.get(url + "/api/v1/query", params={"query": "count_over_time(dr_total[1h])",
                                                 "time": str(T0 / 1000 + 60)}, timeout=30)
    r.raise_for_status()
    return {s["metric"]["req"]: float(s["value"][1]) for s in r.json()["data"]["result"]}


def _log_count(url: str) -> int:
    r = httpx.get(url + "/loki/api/v1/query", params={"query": 'sum(count_over_time({job="dr"}[1h]))',
                                                      "time": str(int(time.time()))}, timeout=30)
    r.raise_for_status()
    res = r.json()["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


def _silences(url: str) -> list[str]:
    r = httpx.get(url + "/api/v2/silences", timeout=10)
    r.raise_for_status()
    return sorted(s["comment"] for s in r.json())


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class _Writer(threading.Thread):
    """Remote-write requests, one new series each, until stopped; remembers which were acknowledged."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.url, self.prefix = url, prefix
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as c:
            n = 0
            while not self.stop.is_set():
                rid = f"{self.prefix}-{n}"
                n += 1
                if c.post(self.url + "/api/v1/write", content=_write_body(rid)).status_code == 204:
                    self.acked.append(rid)


def _load(url: str, home: Path) -> None:
    """Logs, objects (through kubectl) and a silence: what the restore must bring back besides metrics."""
    now = time.time_ns()
    streams = [{"stream": {"job": "dr", "n": str(i % 3)}, "values": [[str(now - 10_000 * j), f"line {i} {j}"]
                                                                   for j in range(20)]} for i in range(6)]
    assert httpx.post(url + "/loki/api/v1/push", json={"streams": streams}, timeout=10).status_code == 204
    for i in range(5):
        _kubectl(url, home, "create", "configmap", f"dr-{i}", f"--from-literal=k={i}")
    sil = {"matchers": [{"name": "alertname", "value": "DR", "isRegex": False}], "startsAt": "2026-01-01T00:00:00Z",
           "endsAt": "2099-01-01T00:00:00Z", "createdBy": "dr", "comment": "dr-silence"}
    assert httpx.post(url + "/api/v2/silences", json=sil, timeout=10).status_code == 200


def _start(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start_pitwall_process(data, port)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, timeout=60, proc=proc)
    return proc, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_backup_while_ingesting_restore_elsewhere_and_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small heads: flushes move data from the WALs into DuckDB while the backup runs, so the copy holds both.
    monkeypatch.setenv("PITWALL_STORAGE__HEAD_MAX_SAMPLES", "3000")
    monkeypatch.setenv("PITWALL_STORAGE__FSYNC", "false")
    repo, home = tmp_path / "repo", tmp_path / "home"
    home.mkdir()
    proc, url = _start(tmp_path / "a")
    proc_b = None
    try:
        _load(url, home)
        writer = _Writer(url, "w")
        writer.start()
        while len(writer.acked) < 300:
            time.sleep(0.05)
        acked_before = list(writer.acked)
        got = _cli("backup", "self", "--to", str(repo), "--server", url, "-o", "json", "--progress",
                   env=_env(RESTIC_PASSWORD=PASSWORD))  # the bar goes to stderr: stdout stays the run's JSON
        writer.stop.set()
        writer.join(30)
        assert got.returncode == 0, got.stderr
        run: dict[str, Any] = json.loads(got.stdout)
        assert run["phase"] == "Completed" and run["created_repository"] is True
        assert run["summary"]["data_added"] > 0 and run["wal"]["metrics"]
        source_counts, source_logs, source_silences = _series_counts(url), _log_count(url), _silences(url)
        changes = httpx.get(url + "/pagerduty/change_events", timeout=10).json()["change_events"]
        assert any(c["summary"].startswith(f"pitwall self-backup to {repo}: snapshot {run['snapshot_id']}")
                   for c in changes)

        # restic by hand reads what pitwall wrote
        snaps = json.loads(_restic("snapshots", "--json", repo=repo).stdout)
        assert [s["tags"] for s in snaps] == [["pitwall-self"]]
        assert snaps[0]["short_id"] == run["snapshot_id"]
        listed = _restic("ls", "latest", repo=repo).stdout.splitlines()
        for name in ("/pitwall-backup.json", "/telemetry.duckdb", "/revstore.db", "/state.db", "/wal/metrics"):
            assert name in listed
        assert not any(line.startswith("/.backup-staging") or line == "/lock" for line in listed)

        restored = tmp_path / "b"
        got = _cli("restore", "self", "--from", str(repo), "--data-dir", str(restored),
                   env=_env(RESTIC_PASSWORD=PASSWORD))
        assert got.returncode == 0, got.stderr
        by_hand = tmp_path / "by-hand"
        _restic("restore", "latest", "--target", str(by_hand), repo=repo)
        assert _hashes(by_hand) == _hashes(restored)

        proc_b, url_b = _start(restored)
        counts = _series_counts(url_b)
        assert set(acked_before) <= set(counts)  # everything acknowledged before the backup is back
        assert set(counts.values()) == {10.0}  # and every restored request whole: the WALs replayed cleanly
        assert {k: source_counts[k] for k in counts} == counts
        assert _log_count(url_b) == source_logs == 120
        assert _silences(url_b) == source_silences == ["dr-silence"]
        names = _kubectl(url_b, home, "get", "configmaps", "-o", "name").split()
        assert {f"configmap/dr-{i}" for i in range(5)} <= set(names)
        assert "k: \"3\"" in _kubectl(url_b, home, "get", "configmap", "dr-3", "-o", "yaml")
    finally:
        _stop(proc)
        if proc_b is not None:
            _stop(proc_b)
