"""Rehearsal: the plain-Python domain of disaster-recovery drills (no Airflow imports)."""
