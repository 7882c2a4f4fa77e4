"""VerifyKeysAndSecretsOperator: the root of trust recoverable, thin over ``rehearsal.secrets``: every region's KMS
key state read from its description (never inferred from a decrypt that worked), the surviving region's secrets file
validated and its canary decrypted there."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from rehearsal.errors import PreconditionFailed, VerificationFailed
from rehearsal.secrets import CANARY, check_canary, key_finding, parse_secrets_file
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import DrillStepOperator, now_iso


class VerifyKeysAndSecretsOperator(DrillStepOperator):
    """Fails, naming the key and its region, when any region's key is disabled or pending deletion (Sev0), when the
    surviving region's secrets file is malformed, or when its canary does not decrypt to the canary there."""

    template_fields: Sequence[str] = ("region",)

    def __init__(self, *, region: Any, aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.region, self.aws_conn_id = region, aws_conn_id

    def _client(self, service: str, region: str | None = None):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type=service, region_name=region).get_conn()

    def run_step(self, context: Context) -> dict:
        settings = current_environment().secrets or {}
        keys, files = settings.get("keys") or {}, settings.get("files") or {}
        if not keys:
            raise PreconditionFailed("the rehearsal_environment Variable names no secrets.keys (region -> KMS key): the "
                                     "root of trust cannot be checked")
        region = self.region.get("target_region") if isinstance(self.region, dict) else self.region
        if region not in keys or region not in files:
            raise PreconditionFailed(f"no key or secrets file is named for region {region!r} (keys: "
                                     f"{', '.join(sorted(keys))})")
        findings = [key_finding(r, k, self._client("kms", r).describe_key(KeyId=k)["KeyMetadata"])
                    for r, k in sorted(keys.items())]
        bad = [f for f in findings if not f.ok]
        source = f"s3://{settings.get('bucket')}/{files[region]}"
        raw = self._client("s3").get_object(Bucket=settings["bucket"], Key=files[region])["Body"].read()
        doc = parse_secrets_file(raw, source)
        if doc["region"] != region or doc["key_id"] != keys[region]:
            raise VerificationFailed(f"secrets file {source} names key {doc['key_id']} in {doc['region']}, not the key of "
                                     f"{region} ({keys[region]})")
        if bad:
            raise VerificationFailed("; ".join(f.detail for f in bad))
        import base64

        plaintext = self._client("kms", region).decrypt(CiphertextBlob=base64.b64decode(doc["secrets"][CANARY]),
                                                        KeyId=keys[region])["Plaintext"]
        canary = check_canary(plaintext, settings["canary_sha256"], source)
        return {"region": region, "keys": [f.to_dict() for f in findings], "secrets_file": source,
                "secrets": sorted(doc["secrets"]), "version": doc["version"], "verified_at": now_iso(),
                "detail": f"every key enabled ({', '.join(f'{f.region}' for f in findings)}); {source} valid "
                          f"(version {doc['version']}, {len(doc['secrets'])} secrets); {canary} in {region}"}
