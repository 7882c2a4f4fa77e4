"""Drill logic that is not a single tool: guards, fault detection, path choice, measurement."""
