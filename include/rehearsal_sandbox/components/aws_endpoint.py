"""The local AWS endpoint: a moto server on loopback, with the versioned backup bucket.

On a host of its own (``aws``, global: it outlives any region), as AWS is never on the Airflow worker.

Slice: ``{"url": "http://127.<n>.0.<h>:<port>", "pid": <moto's pid>, "bucket": "rehearsal-backups"}``.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import urllib.request

import boto3
from botocore.config import Config

from rehearsal.backups.store import BackupStore
from rehearsal.postgres.cluster import free_port
from rehearsal_sandbox.components.base import DaemonComponent, progress

BUCKET = "rehearsal-backups"
_CLIENT_LOCK = threading.Lock()


class AwsEndpoint(DaemonComponent):
    name = "aws_endpoint"
    daemon = "moto"

    @property
    def url(self) -> str:
        return self.state["url"]

    @property
    def bucket(self) -> str:
        return self.state.get("bucket", BUCKET)

    def up(self) -> None:
        from rehearsal_sandbox.hosts import GLOBAL

        progress("starting the local AWS endpoint (moto server)")
        host = self.sandbox.hosts.allocate("aws", GLOBAL, "aws").address
        port = free_port(host=host)
        env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
        self.state["url"] = f"http://{host}:{port}"
        # moto's server, serving a ranged GET from the requested bytes (as S3 does) instead of the whole object
        self.spawn([sys.executable, "-m", "rehearsal_sandbox.services.s3_server", "-H", host, "-p", str(port)], env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}: see {self.sandbox.dir / 'moto.log'}") from None
                time.sleep(0.1)
        s3 = self.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.state["bucket"] = BUCKET
        self.sandbox.save()

    def client(self, service: str, region: str | None = None):
        with _CLIENT_LOCK:  # boto3's default session is not safe to create clients from two threads at once
            return boto3.client(service, endpoint_url=self.url, region_name=region or self.region,
                                aws_access_key_id="testing", aws_secret_access_key="testing",
                                # Probes stay short; S3 completes multipart uploads of whole base backups.
                                config=Config(connect_timeout=2, read_timeout=600 if service == "s3" else 10,
                                              retries={"max_attempts": 2}))

    def store(self, cluster: str) -> BackupStore:
        return BackupStore(self.client("s3"), self.bucket, cluster)

    def status(self) -> dict[str, dict]:
        return self.daemon_status(self.state.get("url", "no url"))

    def down(self) -> None:
        self.stop()
