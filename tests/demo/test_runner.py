"""How the demo runner lays out a run."""

from __future__ import annotations

import socket
from pathlib import Path

from pitwall.demo.runner import DemoOptions, _ephemeral_low, free_port, run_demo


def test_demo_ports_are_chosen_below_the_ephemeral_range() -> None:
    # Outgoing connections take ports from the ephemeral range; a demo child's port must not be one.
    low = _ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low - 4096 for p in ports)
    assert len(ports) > 1  # random, not handed out in sequence
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_taken_listen_address_fails_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said: list[str] = []
        code = run_demo(DemoOptions(listen=f"127.0.0.1:{port}", work_dir=tmp_path / "work"), echo=said.append)
    assert code == 1
    assert said == [f"pitwall demo: cannot listen on 127.0.0.1:{port}: Address already in use "
                    "(is another pitwall running? choose another with --listen)"]
    assert not (tmp_path / "work").exists()  # no child, no work directory
