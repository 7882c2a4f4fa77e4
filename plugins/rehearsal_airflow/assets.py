"""Assets that new backups update; verification runs when they change."""
from __future__ import annotations

from airflow.sdk import Asset

BASE_BACKUPS = Asset(name="controlplane_base_backups", uri="s3://rehearsal-backups/controlplane/base/")
LOGICAL_DUMPS = Asset(name="controlplane_logical_dumps", uri="s3://rehearsal-backups/controlplane/dump/")
