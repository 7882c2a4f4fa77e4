"""The environment a task acts on, from the ``rehearsal_environment`` Variable (JSON), read at run time."""
from __future__ import annotations

from airflow.sdk import Variable

from rehearsal.environment import Environment


def current_environment() -> Environment:
    return Environment.from_mapping(Variable.get("rehearsal_environment", default=None, deserialize_json=True))
