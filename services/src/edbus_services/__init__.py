"""Example services built on edbus's public API (used by ``edbus demo``)."""
