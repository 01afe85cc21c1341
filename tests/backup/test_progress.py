"""Progress of a self-backup: restic's JSON status messages reach the run, and ``pitwall backup self`` draws
them as a one-line bar on stderr (only when asked or on a terminal)."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.backup import Restic, SelfRun
from pitwall.cli import backup as cli_backup
from pitwall.cli._progress import ProgressLine, bar, human_bytes

pytestmark = pytest.mark.timeout(120)


def test_bar_and_sizes() -> None:
    assert bar(0.375, "uploading", "3.0 MiB of 8.0 MiB") == \
        "[#########---------------]  38% uploading  3.0 MiB of 8.0 MiB"
    assert bar(None, "copying the data directory") == "copying the data directory"
    assert bar(7.0, "x").startswith("[" + "#" * 24 + "] 100%")  # clamped
    assert [human_bytes(n) for n in (12, 1536, 5 * 2**30)] == ["12 B", "1.5 KiB", "5.0 GiB"]


def test_progress_line_redraws_in_place_and_clears() -> None:
    out = io.StringIO()
    line = ProgressLine(True, out)
    line.show("a long first line")
    line.show("short")
    line.done()
    assert out.getvalue() == "\ra long first line\rshort" + " " * 12 + "\r" + " " * 5 + "\r"
    quiet = io.StringIO()
    ProgressLine(None, quiet).show("x")  # a StringIO is not a terminal: nothing drawn
    assert quiet.getvalue() == ""


def test_the_cli_draws_the_servers_progress_while_it_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    states = iter([{"step": "copy"}, {"step": "upload", "percent_done": 0.5, "bytes_done": 4 << 20,
                                      "total_bytes": 8 << 20}])
    monkeypatch.setattr(cli_backup, "_running", lambda *a: next(states, None))
    out = io.StringIO()

    def slow() -> httpx.Response:
        time.sleep(1.3)
        return httpx.Response(200, json={"phase": "Completed"})

    resp = cli_backup._with_progress(ProgressLine(True, out), "http://x", None, "/r", slow)
    assert resp.json() == {"phase": "Completed"}
    drawn = out.getvalue()
    assert "\rcopying the data directory" in drawn
    assert "50% uploading  4.0 MiB of 8.0 MiB" in drawn
    assert drawn.endswith("\r")  # cleared before the result is printed


@pytest.mark.skipif(shutil.which("restic") is None, reason="needs Debian's restic")
async def test_restic_status_messages_reach_the_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "blob").write_bytes(bytes(range(256)) * 40_000)
    restic = Restic(str(tmp_path / "repo"), "pw")
    await restic.ensure()
    run = SelfRun(repository=restic.repo, started=time.time())
    seen: list[dict[str, Any]] = []

    def hook(status: dict[str, Any]) -> None:
        seen.append(status)
        run.on_status(status)

    summary = await restic.backup(data, on_status=hook)
    assert summary.snapshot_id and seen and all(s["message_type"] == "status" for s in seen)
    assert run.total_bytes == 256 * 40_000  # restic's own count of what it will upload
