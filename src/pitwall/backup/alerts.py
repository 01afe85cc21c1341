"""The alert rules the backup capability ships, loaded into the rule manager (source ``backup:shipped``)
when the capability starts. Pure PromQL over the series the capability writes."""

from __future__ import annotations

from typing import Protocol

__all__ = ["RULES", "SOURCE", "RuleSink", "load_shipped_rules"]

SOURCE = "backup:shipped"

# "within 2x the schedule": the last success (or, never succeeded, the schedule's creation) is older than twice
# the cron interval. The `unless` branch keeps a schedule that never succeeded from being silent forever.
RULES = """\
groups:
- name: pitwall-backup
  rules:
  - alert: BackupScheduleMissed
    expr: |
      (time() - max by (name) (pitwall_backup_last_success_timestamp_seconds{kind=~"velero|self"}))
        > on (name) 2 * max by (name) (pitwall_backup_schedule_interval_seconds{kind=~"velero|self"})
      or
      (
        (time() - max by (name) (pitwall_backup_schedule_created_timestamp_seconds{kind=~"velero|self"}))
          > on (name) 2 * max by (name) (pitwall_backup_schedule_interval_seconds{kind=~"velero|self"})
        unless on (name) pitwall_backup_last_success_timestamp_seconds{kind=~"velero|self"}
      )
    labels:
      severity: critical
    annotations:
      summary: "Backup schedule {{ $labels.name }} has had no successful backup within twice its interval"
      description: "The last successful backup of {{ $labels.name }} is {{ $value | humanizeDuration }} old."
  - alert: RestoreDrillFailed
    expr: pitwall_restore_drill_success == 0
    labels:
      severity: critical
    annotations:
      summary: "Restore drill {{ $labels.drill }} failed"
      description: "See kubectl describe restoredrill and its status.message."
  - alert: BackupRepositoryCheckFailed
    expr: pitwall_backup_repository_check_success == 0
    labels:
      severity: critical
    annotations:
      summary: "restic check of {{ $labels.repository }} failed"
      description: "The repository's packs do not read back as written; run pitwall backup check --read-data."
"""


class RuleSink(Protocol):
    async def set_rule_groups(self, source: str, text: str) -> None: ...


async def load_shipped_rules(rules: RuleSink) -> None:
    """Load (or replace) the shipped groups."""
    await rules.set_rule_groups(SOURCE, RULES)
