"""The alerting pillar: Prometheus rule evaluation (PromQL and LogQL rules) and the
Alertmanager-compatible notification pipeline (routing, grouping, inhibition, silences, notifiers).

``__all__`` is the pillar's public interface: what other pillars may import
(``from pitwall.alerting import RuleManager``), checked by ``tests/test_layout.py``.
Names load on first use (``pitwall.core.exports``), so ``pitwall.config`` can
import the settings modules cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.core.exports import lazy_exports

if TYPE_CHECKING:
    from pitwall.alerting.notify.alerts import StoredAlert, sort_alerts
    from pitwall.alerting.notify.errors import DeliveryError
    from pitwall.alerting.notify.matchers import Matcher as AlertMatcher
    from pitwall.alerting.notify.matchers import MatcherError
    from pitwall.alerting.notify.matchers import parse_matchers as parse_alert_matchers
    from pitwall.alerting.notify.notifiers.base import http_client as notifier_client
    from pitwall.alerting.notify.notifiers.base import post_json as notifier_post
    from pitwall.alerting.notify.people import ContactPager
    from pitwall.alerting.notify.pipeline import NotificationPipeline
    from pitwall.alerting.notify.silences import Silence
    from pitwall.alerting.rules.alerting_rule import AlertingRule
    from pitwall.alerting.rules.manager import RuleManager

_EXPORTS = {
    "AlertMatcher": "pitwall.alerting.notify.matchers:Matcher",
    "AlertingRule": "pitwall.alerting.rules.alerting_rule",
    "ContactPager": "pitwall.alerting.notify.people",
    "DeliveryError": "pitwall.alerting.notify.errors",
    "MatcherError": "pitwall.alerting.notify.matchers",
    "NotificationPipeline": "pitwall.alerting.notify.pipeline",
    "RuleManager": "pitwall.alerting.rules.manager",
    "Silence": "pitwall.alerting.notify.silences",
    "notifier_client": "pitwall.alerting.notify.notifiers.base:http_client",
    "notifier_post": "pitwall.alerting.notify.notifiers.base:post_json",
    "StoredAlert": "pitwall.alerting.notify.alerts",
    "sort_alerts": "pitwall.alerting.notify.alerts",
    "parse_alert_matchers": "pitwall.alerting.notify.matchers:parse_matchers",
}

__all__ = [
    "AlertMatcher",
    "AlertingRule",
    "ContactPager",
    "DeliveryError",
    "MatcherError",
    "NotificationPipeline",
    "RuleManager",
    "Silence",
    "StoredAlert",
    "notifier_client",
    "notifier_post",
    "parse_alert_matchers",
    "sort_alerts",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
