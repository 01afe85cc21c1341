"""Alembic migrations of the state store's tables (``storage/state.py``); applied by ``StateStore`` on open."""
