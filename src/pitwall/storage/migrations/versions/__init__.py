"""Migration scripts, one revision each, in order."""
