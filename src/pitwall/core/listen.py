"""``HOST:PORT`` listen addresses, as the server, the syslog receiver and ``pitwall demo`` take them."""

from __future__ import annotations


def split_listen(listen: str) -> tuple[str, int]:
    """``"[::1]:9090"`` -> ``("::1", 9090)``; an empty host means every interface (``0.0.0.0``)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
