"""Shared plumbing: WAL, limits, errors, component lifecycle. Imports no pillar."""
