"""The Alertmanager-compatible notification pipeline (routing, grouping, inhibition, silences, notifiers).

Public entry points live in ``wiring`` (for ``server.py``) and ``pipeline``;
this package file imports nothing so ``pitwall.config`` can load
``settings`` without pulling in the pipeline.
"""
