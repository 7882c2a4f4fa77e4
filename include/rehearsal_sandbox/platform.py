"""The sandbox platform, as it was imported before it was split by component: the ``Sandbox`` facade is in
``rehearsal_sandbox.sandbox``, its parts in ``rehearsal_sandbox.components``, its state file in
``rehearsal_sandbox.state``. Everything that was importable from here still is.
"""
from __future__ import annotations

from rehearsal_sandbox.components.controlplane_db import _results
from rehearsal_sandbox.sandbox import (
    BUCKET,
    DB,
    PROVISIONER,
    RECORD,
    REGION,
    REPLICA_RECORD,
    STATE_DIR,
    ZONE,
    Sandbox,
    progress,
    read_env_file,
)

__all__ = ["BUCKET", "DB", "PROVISIONER", "RECORD", "REGION", "REPLICA_RECORD", "STATE_DIR", "ZONE", "Sandbox", "_results",
           "progress", "read_env_file"]
