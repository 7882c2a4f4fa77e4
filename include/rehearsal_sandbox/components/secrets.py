"""Keys and secrets: a KMS key in each region on the local endpoint, and each region's secrets file
(``rehearsal.secrets``' format: ciphertexts only, naming its key) in the backup bucket under ``secrets/<region>/``,
the source hosts are delivered from. The canary's plaintext is never stored: only its sha256.

Slice: ``{"keys": {region: key_id}, "prefix": "secrets", "canary_sha256": ..., "files": {region: key}}``.
"""
from __future__ import annotations

import secrets as token

from rehearsal.secrets import CANARY, canary_digest, make_secrets_file
from rehearsal_sandbox.components.aws_endpoint import BUCKET
from rehearsal_sandbox.components.base import Component, ok, progress
from rehearsal_sandbox.hosts import REGIONS

PREFIX = "secrets"


class Secrets(Component):
    name = "secrets"

    def up(self) -> None:
        aws = self.sandbox.aws_endpoint
        canary = f"rehearsal-canary-{token.token_hex(8)}".encode()
        keys, files = {}, {}
        s3 = aws.client("s3")
        for region in REGIONS:
            kms = aws.client("kms", region)
            key_id = kms.create_key(Description=f"rehearsal sandbox secrets ({region})")["KeyMetadata"]["Arn"]
            api_token = f"api-token-{token.token_hex(12)}".encode()
            body = make_secrets_file(key_id, region, {
                CANARY: kms.encrypt(KeyId=key_id, Plaintext=canary)["CiphertextBlob"],
                "api_token": kms.encrypt(KeyId=key_id, Plaintext=api_token)["CiphertextBlob"]})
            key = f"{PREFIX}/{region}/secrets.json"
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            keys[region], files[region] = key_id, key
        self.state.update({"keys": keys, "files": files, "prefix": PREFIX, "bucket": BUCKET,
                           "canary_sha256": canary_digest(canary)})
        self.sandbox.save()
        progress(f"KMS keys in {', '.join(REGIONS)} and their secrets files under s3://{BUCKET}/{PREFIX}/")

    def down(self) -> None:
        """Nothing of its own runs: the keys and files go with the local endpoint."""
        self.state.clear()

    def environment(self) -> dict:
        return {k: self.state[k] for k in ("keys", "files", "bucket", "canary_sha256")} if self.state.get("keys") else {}

    def status(self) -> dict[str, dict]:
        if not self.state.get("keys"):
            return {self.name: ok(False, "not created")}
        return {self.name: ok(True, f"keys in {', '.join(self.state['keys'])}; files under s3://{BUCKET}/{PREFIX}/")}
