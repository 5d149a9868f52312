"""Helpers with no tsm_keras dependencies (the lowest layer of the package)."""
