"""Rehearsal's Airflow layer: thin hooks, operators and callbacks over the plain ``rehearsal`` package."""
