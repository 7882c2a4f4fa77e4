"""Secrets and the keys they depend on: the secrets file format delivered to hosts, its validation, and what a KMS
key's state means for recoverability (the plan: the keys are the true root of trust; losing them loses every secret
even when the data survives).

The secrets file, version 1 (JSON, one per host; a host reads the one of its region)::

    {
      "format": "rehearsal-secrets/1",
      "key_id": "arn:aws:kms:us-east-1:123456789012:key/...",    # the KMS key the ciphertexts are under
      "region": "us-east-1",                                        # the region of that key
      "written_at": "2026-12-01T03:00:00+00:00",                    # optional
      "secrets": {"<name>": "<base64 of the KMS ciphertext blob>", ...},
      "canary": {"name": "<a name in secrets>", "sha256": "<hex sha256 of its plaintext>"}   # optional
    }

Names are ``[A-Za-z0-9_.-]``, 1-128 characters. No plaintext is ever in the file; the canary's plaintext is known only
by its digest, so a check can prove the canary decrypts to the right value without holding it.

Key state, read from the key's description (``describe_key``), never inferred from a decrypt: the local endpoint
(moto) keeps decrypting with a disabled key. A key ``Disabled`` or ``PendingDeletion`` (or a replica pending
deletion, or unavailable) in any region is a Sev0 finding.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rehearsal.errors import RehearsalError

FORMAT = "rehearsal-secrets/1"
FILE_KEYS = {"format", "key_id", "region", "written_at", "secrets", "canary"}
CANARY_NAME = "rehearsal-canary"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:key/[A-Za-z0-9-]+$")
_KEY_ID = re.compile(r"^(mrk-)?[A-Za-z0-9-]{8,}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SEV0_STATES = frozenset({"Disabled", "PendingDeletion", "PendingReplicaDeletion", "Unavailable"})


class SecretsFileError(RehearsalError):
    """A secrets file is malformed; the message names the file and the field."""

    kind = "verification_failed"


class KeysNotRecoverable(RehearsalError):
    """A key or the canary fails the recoverability check; the message names the key, region and finding."""

    kind = "verification_failed"


# ---------------------------------------------------------------------------------------------------- the file
@dataclass(frozen=True)
class SecretsFile:
    key_id: str
    region: str
    secrets: dict[str, str]  # name -> base64 ciphertext
    canary: dict | None = None  # {"name", "sha256"}
    written_at: str | None = None
    path: str = ""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"format": FORMAT, "key_id": self.key_id, "region": self.region, "secrets": dict(self.secrets)}
        if self.written_at:
            out["written_at"] = self.written_at
        if self.canary:
            out["canary"] = dict(self.canary)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def ciphertext(self, name: str) -> bytes:
        return base64.b64decode(self.secrets[name], validate=True)


def parse_secrets_file(raw: str | bytes | dict, where: str) -> SecretsFile:
    """Validate one secrets file; every problem is a ``SecretsFileError`` naming ``where`` and the field."""
    if isinstance(raw, bytes | str):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise SecretsFileError(f"{where}: not JSON ({exc})") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise SecretsFileError(f"{where}: must be a JSON object")
    if data.get("format") != FORMAT:
        raise SecretsFileError(f"{where}: format {data.get('format')!r} is not {FORMAT!r}")
    unknown = set(data) - FILE_KEYS
    if unknown:
        raise SecretsFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    region = data.get("region")
    if not isinstance(region, str) or not _REGION.match(region):
        raise SecretsFileError(f"{where}: region {region!r} is not a region name")
    key_id = data.get("key_id")
    if not isinstance(key_id, str) or not (_KEY_ARN.match(key_id) or _KEY_ID.match(key_id)):
        raise SecretsFileError(f"{where}: key_id {key_id!r} is not a KMS key id or ARN")
    arn = _KEY_ARN.match(key_id)
    if arn and arn.group(1) != region:
        raise SecretsFileError(f"{where}: key_id {key_id} is a key of {arn.group(1)}, but the file says region {region}")
    secrets = data.get("secrets")
    _check_secrets(secrets, where)
    canary = data.get("canary")
    _check_canary(canary, secrets, where)
    written_at = data.get("written_at")
    if written_at is not None and not isinstance(written_at, str):
        raise SecretsFileError(f"{where}: written_at must be an ISO-8601 string")
    return SecretsFile(key_id, region, dict(secrets), dict(canary) if canary else None, written_at, where)


def _check_secrets(secrets: object, where: str) -> None:
    if not isinstance(secrets, dict) or not secrets:
        raise SecretsFileError(f"{where}: secrets must be a non-empty object of name -> base64 ciphertext")
    for name, value in secrets.items():
        if not _NAME.match(name):
            raise SecretsFileError(f"{where}: secret name {name!r} is not [A-Za-z0-9_.-]{{1,128}}")
        if not isinstance(value, str) or not value:
            raise SecretsFileError(f"{where}: secrets.{name} must be a base64 string")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SecretsFileError(f"{where}: secrets.{name} is not valid base64") from None


def _check_canary(canary: object, secrets: dict, where: str) -> None:
    if canary is None:
        return
    if not isinstance(canary, dict) or set(canary) != {"name", "sha256"}:
        raise SecretsFileError(f"{where}: canary must be {{\"name\", \"sha256\"}}")
    if canary["name"] not in secrets:
        raise SecretsFileError(f"{where}: canary {canary['name']!r} is not among the secrets")
    if not isinstance(canary["sha256"], str) or not _SHA256.match(canary["sha256"]):
        raise SecretsFileError(f"{where}: canary.sha256 is not a hex sha256")


def read_secrets_file(path: Path | str) -> SecretsFile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecretsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_secrets_file(raw, str(path))


def canary_digest(plaintext: bytes) -> str:
    return hashlib.sha256(plaintext).hexdigest()


# ---------------------------------------------------------------------------------------------------- key state
@dataclass(frozen=True)
class KeyState:
    """One key in one region, as its description says (``state`` None: it could not be described, see ``error``)."""

    key_id: str
    region: str
    state: str | None
    deletion_date: str | None = None
    error: str | None = None  # NotFoundException, or why the description could not be read


@dataclass(frozen=True)
class Finding:
    severity: str  # Sev0 | Sev1
    subject: str  # "key <id> in <region>", "canary in <region>", "<file>"
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity}: {self.detail}"


def key_verdict(key: KeyState) -> Finding | None:
    """None when the key is ``Enabled``; otherwise the finding: Sev0 for a key disabled, pending deletion,
    unavailable or not found (every secret under it is lost); Sev1 for a state that cannot be read or a transient one."""
    subject = f"key {key.key_id} in {key.region}"
    if key.state == "Enabled":
        return None
    if key.state is None:
        if key.error and "NotFound" in key.error:
            return Finding("Sev0", subject, f"KMS key {key.key_id} does not exist in {key.region} ({key.error}): "
                                            "every secret under it is lost")
        return Finding("Sev1", subject, f"KMS key {key.key_id} in {key.region}: state could not be read ({key.error})")
    if key.state in SEV0_STATES:
        when = f", deletion on {key.deletion_date}" if key.deletion_date else ""
        return Finding("Sev0", subject, f"KMS key {key.key_id} in {key.region} is {key.state}{when}: the secrets under "
                                        "it cannot be decrypted once it takes effect (the key is the root of trust)")
    return Finding("Sev1", subject, f"KMS key {key.key_id} in {key.region} is {key.state}, not Enabled")


def describe_key_state(kms, key_id: str, region: str) -> KeyState:
    """Read one key's state from its description (a boto3 KMS client of ``region``)."""
    from botocore.exceptions import BotoCoreError, ClientError  # at call time: the plain package imports no AWS SDK

    try:
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return KeyState(key_id, region, None, error=f"{error.get('Code')}: {error.get('Message', '')}".rstrip(": "))
    except BotoCoreError as exc:
        return KeyState(key_id, region, None, error=f"{type(exc).__name__}: {exc}")
    deletion = meta.get("DeletionDate")
    return KeyState(key_id, region, meta.get("KeyState"), deletion.isoformat() if hasattr(deletion, "isoformat") else
                    (str(deletion) if deletion else None))


def check_canary(kms, secrets_file: SecretsFile) -> Finding | None:
    """Decrypt the file's canary with its key in its region and compare its digest; None when it matches."""
    from botocore.exceptions import BotoCoreError, ClientError

    subject = f"canary in {secrets_file.region}"
    if not secrets_file.canary:
        return Finding("Sev1", subject, f"{secrets_file.path}: names no canary secret")
    name = secrets_file.canary["name"]
    try:
        plaintext = kms.decrypt(CiphertextBlob=secrets_file.ciphertext(name), KeyId=secrets_file.key_id)["Plaintext"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return Finding("Sev0", subject, f"canary {name} of {secrets_file.path} does not decrypt with {secrets_file.key_id} "
                                        f"in {secrets_file.region}: {error.get('Code')}: {error.get('Message', '')}")
    except BotoCoreError as exc:
        return Finding("Sev1", subject, f"canary {name}: KMS in {secrets_file.region} did not answer ({exc})")
    if canary_digest(plaintext) != secrets_file.canary["sha256"]:
        return Finding("Sev0", subject, f"canary {name} of {secrets_file.path} decrypts in {secrets_file.region} to a "
                                        "value whose sha256 is not the file's: wrong key or tampered ciphertext")
    return None


def keys_to_check(listed: dict[str, str], files: Iterable[SecretsFile]) -> list[tuple[str, str]]:
    """(region, key id) pairs: every key the environment lists per region, and every key a secrets file names."""
    pairs = dict.fromkeys((region, key) for region, key in sorted(listed.items()))
    for f in files:
        pairs.setdefault((f.region, f.key_id))
    return list(pairs)


def file_key_mismatch(listed: dict[str, str], secrets_file: SecretsFile) -> Finding | None:
    """A file naming a key other than its region's listed key: hosts hold ciphertexts nobody checks."""
    expected = listed.get(secrets_file.region)
    if expected is None or expected == secrets_file.key_id or expected.endswith("/" + secrets_file.key_id) \
            or secrets_file.key_id.endswith("/" + expected):
        return None
    return Finding("Sev1", secrets_file.path, f"{secrets_file.path} names key {secrets_file.key_id}, but the key of "
                                              f"{secrets_file.region} is {expected}")
