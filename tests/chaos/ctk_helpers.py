"""Functions and a control the runner tests call as Chaos Toolkit python providers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


class InterruptExecution(Exception):
    """Named as Chaos Toolkit's, which the runner honours by name."""


def value(v: Any) -> Any:
    return v


def touch(path: str) -> bool:
    Path(path).write_text("x")
    return True


def sleep_then(s: float, v: Any) -> Any:
    time.sleep(s)
    return v


def boom() -> None:
    raise RuntimeError("boom")


def before_activity_control(context: dict[str, Any], stop_at: str = "", **kwargs: Any) -> None:
    if context.get("name") == stop_at:
        raise InterruptExecution(f"stopped before {stop_at}")
