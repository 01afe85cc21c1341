"""How the demo runner lays out a run."""

from __future__ import annotations

import socket

from pitwall.demo.runner import _ephemeral_low, free_port


def test_demo_ports_are_chosen_below_the_ephemeral_range() -> None:
    # Outgoing connections take ports from the ephemeral range; a demo child's port must not be one.
    low = _ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low - 4096 for p in ports)
    assert len(ports) > 1  # random, not handed out in sequence
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
