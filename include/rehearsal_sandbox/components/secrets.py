"""Secrets: a KMS key in each of the sandbox's regions on the local AWS endpoint (one key per region: moto does not
decrypt a multi-region key's ciphertext in its replica's region), a canary secret, and the secrets files delivered to
every fleet host, each the file of its host's region (``rehearsal.secrets``: format ``rehearsal-secrets/1``).

Slice (held by the home region's instance, which makes the keys of every region)::

    {"keys": {"us-east-1": "<key arn>", "us-west-2": "<key arn>"}, "canary": "rehearsal-canary",
     "files": {"us-east-1": ["<runtime>/hosts/agent-01/secrets.json", ...], "us-west-2": [...]}}

A host's file is ``<runtime>/hosts/<hostname>/secrets.json``. The connection ``rehearsal_secrets`` (the env file's
``AIRFLOW_CONN_REHEARSAL_SECRETS``) gives the operators the keys per region and the files per region.
"""
from __future__ import annotations

import base64
import json
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.config import Config

from rehearsal.secrets import CANARY_NAME, SecretsFile, canary_digest, describe_key_state, read_secrets_file
from rehearsal_sandbox.components.base import Component, ok, progress

KEY_REGIONS = ("us-east-1", "us-west-2")
ALIAS = "alias/rehearsal-secrets"
SECRET_NAMES = ("app-signing-key", "registry-token")  # sandbox secrets of the platform, random each time
FILE_NAME = "secrets.json"
CONN_ID = "rehearsal_secrets"


class Secrets(Component):
    name = "secrets"

    @property
    def home(self) -> bool:
        """The instance that owns every region's keys (the first key region's)."""
        return self.region == KEY_REGIONS[0]

    def kms(self, region: str):
        return boto3.client("kms", endpoint_url=self.peer("aws_endpoint").url, region_name=region,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}))

    @property
    def keys(self) -> dict[str, str]:
        return dict(self.state.get("keys", {}))

    @property
    def files(self) -> dict[str, list[str]]:
        return {r: list(paths) for r, paths in self.state.get("files", {}).items()}

    @property
    def root(self) -> Path:
        return self.sandbox.runtime / "hosts"

    def up(self) -> None:
        if not self.home:  # another region's hosts, made after the home region's: they get their files now
            home = self.sandbox.component(self.name, KEY_REGIONS[0])
            if home.keys:
                home.deliver()
            return
        if not self.state.get("keys"):
            progress(f"creating the secrets' KMS keys in {', '.join(KEY_REGIONS)}")
            keys = {}
            for region in KEY_REGIONS:
                kms = self.kms(region)
                meta = kms.create_key(Description=f"rehearsal secrets ({region})",
                                      Tags=[{"TagKey": "rehearsal:purpose", "TagValue": "secrets"}])["KeyMetadata"]
                kms.create_alias(AliasName=ALIAS, TargetKeyId=meta["KeyId"])
                keys[region] = meta["Arn"]
            self.state.update({"keys": keys, "canary": CANARY_NAME})
            self.sandbox.save()
        self.deliver()

    def deliver(self) -> dict[str, list[str]]:
        """Every fleet host of a key region gets its region's secrets file (encrypted anew each time). Returns the
        files per region."""
        plaintexts = {name: secrets.token_urlsafe(24).encode() for name in SECRET_NAMES}
        canary = f"rehearsal canary {secrets.token_hex(8)}".encode()
        files: dict[str, list[str]] = {}
        for region, key in self.keys.items():
            kms = self.kms(region)
            sealed = {name: base64.b64encode(kms.encrypt(KeyId=key, Plaintext=value)["CiphertextBlob"]).decode()
                      for name, value in {**plaintexts, CANARY_NAME: canary}.items()}
            document = SecretsFile(key, region, sealed, {"name": CANARY_NAME, "sha256": canary_digest(canary)},
                                   datetime.now(UTC).isoformat()).dumps()
            for host in self.sandbox.hosts.all(region):
                if host.role != "agent":
                    continue
                path = self.root / host.name / FILE_NAME
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(document)
                tmp.chmod(0o600)
                tmp.replace(path)
                files.setdefault(region, []).append(str(path))
        self.state["files"] = {r: sorted(paths) for r, paths in files.items()}
        self.sandbox.save()
        return self.files

    def connection_extra(self) -> dict:
        return {"keys": self.keys, "files": self.files, "canary": self.state.get("canary", CANARY_NAME)}

    def env_vars(self) -> dict[str, str]:
        """``AIRFLOW_CONN_REHEARSAL_SECRETS`` once the keys exist."""
        if not self.home or not self.keys:
            return {}
        return {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps({"conn_type": "generic", "extra": self.connection_extra()})}

    def status(self) -> dict[str, dict]:
        if not self.home:
            return {}
        if not self.keys:
            return {self.name: ok(False, "no keys")}
        parts, every = [], True
        for region, key in self.keys.items():
            state = describe_key_state(self.kms(region), key, region)
            files = self.files.get(region, [])
            readable = sum(1 for p in files if _readable(p))
            every = every and state.state == "Enabled" and readable == len(files)
            parts.append(f"{region} key {key.rsplit('/', 1)[-1]} {state.state or state.error}, {readable}/{len(files)} host files")
        return {self.name: ok(every, "; ".join(parts))}

    def down(self) -> None:
        """The keys go with the AWS endpoint; the hosts' files with the runtime folder (removed here too)."""
        if self.sandbox.sandbox_state.data.get("runtime"):
            shutil.rmtree(self.root, ignore_errors=True)
        for key in ("keys", "files", "canary"):
            self.state.pop(key, None)


def _readable(path: str) -> bool:
    try:
        read_secrets_file(path)
        return True
    except Exception:  # noqa: BLE001 - status only counts
        return False
