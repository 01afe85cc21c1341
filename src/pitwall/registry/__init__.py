"""Consul's HTTP API over the revisioned state store: KV, txn, blocking queries, sessions and locks,
catalog and health, with every KV change recorded as config history and a change event."""

from pitwall.registry.blocking import ParkHeldQueries
from pitwall.registry.console import ChangeView, ConfigConsole, KeyRow
from pitwall.registry.wiring import RegistryPart, build_registry_part

__all__ = ["ChangeView", "ConfigConsole", "KeyRow", "ParkHeldQueries", "RegistryPart", "build_registry_part"]
