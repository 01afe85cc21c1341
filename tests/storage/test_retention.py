"""One retention rule for the metrics, logs and traces stores."""

from __future__ import annotations

from pitwall.storage.retention import expired_blocks


def test_whole_blocks_older_than_the_window_expire() -> None:
    # Blocks of 10 starting at 0..40; now 45, retention 20: cutoff 25, so blocks ending <= 25.
    assert expired_blocks([30, 0, 10, 20, 40], 10, 20, 45) == [0, 10]
    assert expired_blocks([0, 10], 10, 20, 40) == [0, 10]  # a block ending exactly at the cutoff goes


def test_zero_retention_keeps_everything() -> None:
    assert expired_blocks([0, 10, -20], 10, 0, 10**15) == []
