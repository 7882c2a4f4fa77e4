"""Key and secret recoverability: every KMS key's state in every region, read from its description; the canary
decrypted in the surviving region; every secrets file validated. The verdicts are ``rehearsal.secrets``'.

The connection ``rehearsal_secrets`` (extra) says what to check::

    {"keys": {"us-east-1": "<key id or arn>", "us-west-2": "..."},
     "files": {"us-east-1": ["/path/to/secrets.json", ...], "us-west-2": [...]}, "canary": "rehearsal-canary"}

KMS is reached through the Amazon provider's base hook, one client per region (``aws_default``'s endpoint).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import Context

from rehearsal.errors import PreconditionFailed
from rehearsal.secrets import (
    Finding,
    KeysNotRecoverable,
    KeyState,
    SecretsFile,
    SecretsFileError,
    check_canary,
    describe_key_state,
    file_key_mismatch,
    key_verdict,
    keys_to_check,
    read_secrets_file,
)
from rehearsal_airflow.operators.base import DrillStepOperator, now_iso

SECRETS_CONN_ID = "rehearsal_secrets"


@dataclass
class Recoverability:
    """What one check found: keys, files, canaries, and the findings (Sev0 first)."""

    keys: list[KeyState] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # region -> valid files
    file_problems: dict[str, list[str]] = field(default_factory=dict)  # region -> what is wrong with its files
    canaries: dict[str, str] = field(default_factory=dict)  # region -> "ok" or the finding
    findings: list[Finding] = field(default_factory=list)

    @property
    def sev0(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "Sev0"]

    def checks(self) -> list[dict]:
        """Named checks for the report: ``key_state:<region>:<key>``, ``secrets_files:<region>``, ``canary:<region>``."""
        out = []
        for key in self.keys:
            verdict = key_verdict(key)
            out.append({"name": f"key_state:{key.region}:{key.key_id.rsplit('/', 1)[-1]}", "ok": verdict is None,
                        "detail": str(verdict) if verdict else f"KMS key {key.key_id} in {key.region} is Enabled",
                        "critical": True})
        for region, valid in sorted(self.files.items()):
            bad = self.file_problems.get(region, [])
            out.append({"name": f"secrets_files:{region}", "ok": not bad,
                        "detail": "; ".join(bad) if bad else f"{valid} secrets file(s) valid", "critical": True})
        for region, verdict in sorted(self.canaries.items()):
            out.append({"name": f"canary:{region}", "ok": verdict == "ok",
                        "detail": f"canary decrypts in {region} to its recorded digest" if verdict == "ok" else verdict,
                        "critical": True})
        return out


def check_recoverability(settings: dict, kms_for, regions: list[str] | None) -> Recoverability:
    """Read every key's state, validate every file, decrypt the canary in ``regions`` (None: every region with
    files). ``kms_for(region)`` gives a KMS client of that region."""
    listed: dict[str, str] = dict(settings.get("keys") or {})
    file_paths: dict[str, list[str]] = {r: list(p) for r, p in (settings.get("files") or {}).items()}
    result = Recoverability()
    valid: dict[str, list[SecretsFile]] = {}
    for region, paths in sorted(file_paths.items()):
        result.files[region] = 0
        for path in paths:
            try:
                parsed = read_secrets_file(path)
            except SecretsFileError as exc:
                problem: Finding | None = Finding("Sev1", path, f"malformed secrets file: {exc}")
                parsed = None
            else:
                problem = (Finding("Sev1", path, f"{path} says region {parsed.region}, but is delivered to hosts of "
                                                 f"{region}") if parsed.region != region else file_key_mismatch(listed, parsed))
            if problem:
                result.findings.append(problem)
                result.file_problems.setdefault(region, []).append(problem.detail)
            if parsed is not None and parsed.region == region:
                valid.setdefault(region, []).append(parsed)
                result.files[region] += 1
    clients: dict[str, Any] = {}

    def kms(region: str):
        if region not in clients:
            clients[region] = kms_for(region)
        return clients[region]

    for region, key_id in keys_to_check(listed, [f for files in valid.values() for f in files]):
        state = describe_key_state(kms(region), key_id, region)
        result.keys.append(state)
        verdict = key_verdict(state)
        if verdict:
            result.findings.append(verdict)
    for region in regions if regions is not None else sorted(valid):
        files = valid.get(region)
        if not files:
            why = f"no valid secrets file for {region}: the canary cannot be decrypted there"
            result.findings.append(Finding("Sev0", f"canary in {region}", why))
            result.canaries[region] = f"Sev0: {why}"
            continue
        verdict = check_canary(kms(region), files[0])
        result.canaries[region] = "ok" if verdict is None else str(verdict)
        if verdict:
            result.findings.append(verdict)
    result.findings.sort(key=lambda f: f.severity)
    return result


def secrets_settings(conn_id: str = SECRETS_CONN_ID) -> dict:
    """The secrets connection's extra (keys and files per region); ``PreconditionFailed`` naming it otherwise."""
    from airflow.sdk import BaseHook

    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except Exception as exc:  # noqa: BLE001 - say which connection is missing
        raise PreconditionFailed(f"the secrets connection {conn_id!r} cannot be read ({exc}): it lists the KMS keys "
                                 "per region and the secrets files") from exc
    if not extra.get("keys") and not extra.get("files"):
        raise PreconditionFailed(f"the secrets connection {conn_id!r} lists no key and no file")
    return extra


def kms_client(aws_conn_id: str, region: str):
    """A KMS client of ``region`` through the Amazon provider's base hook."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="kms", region_name=region).get_conn()


class VerifyKeysAndSecretsOperator(DrillStepOperator):
    """Keys and secrets recoverable: each KMS key's state in each region (``describe_key``; never inferred from a
    decrypt, which the local endpoint allows with a disabled key), the canary decrypted in the surviving ``region``
    (empty: every region), every secrets file valid. Any finding fails the step (``KeysNotRecoverable``); a key
    disabled or pending deletion is Sev0, named with its key and region.

    :param region: the surviving region (templated), where the canary must decrypt
    """

    template_fields: Sequence[str] = ("region",)

    def __init__(self, *, region: str | None = None, secrets_conn_id: str = SECRETS_CONN_ID,
                 aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.region = region
        self.secrets_conn_id = secrets_conn_id
        self.aws_conn_id = aws_conn_id

    def run_step(self, context: Context) -> dict:
        settings = secrets_settings(self.secrets_conn_id)
        result = check_recoverability(settings, lambda region: kms_client(self.aws_conn_id, region),
                                      [self.region] if self.region else None)
        record = {"keys": [k.__dict__ for k in result.keys], "files": result.files, "canaries": result.canaries,
                  "findings": [f.to_dict() for f in result.findings], "checks": result.checks(),
                  "severity": result.findings[0].severity if result.findings else None, "verified_at": now_iso()}
        if result.findings:
            raise KeysNotRecoverable(f"{len(result.sev0)} Sev0 and {len(result.findings) - len(result.sev0)} other "
                                     "finding(s): " + "; ".join(str(f) for f in result.findings))
        record["detail"] = (f"{len(result.keys)} KMS key(s) Enabled in {len({k.region for k in result.keys})} region(s); "
                            f"{sum(result.files.values())} secrets file(s) valid; canary decrypts in "
                            f"{', '.join(sorted(result.canaries))}")
        return record
