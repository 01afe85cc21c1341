"""Releases: progressive delivery, its statistical judge and A/B reports."""
