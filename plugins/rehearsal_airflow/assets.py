"""Assets that new backups update; verification runs when they change.

Named assets without an ``s3://`` URI: an s3 URI makes Airflow import the Amazon provider's S3 hook
(and boto3) while parsing every DAG that uses them. Where the backups live is in ``extra``.
"""
from __future__ import annotations

from airflow.sdk import Asset

BASE_BACKUPS = Asset(name="controlplane_base_backups", extra={"location": "<backup_bucket>/controlplane/base/"})
LOGICAL_DUMPS = Asset(name="controlplane_logical_dumps", extra={"location": "<backup_bucket>/controlplane/dump/"})
