"""Secrets, the plan's root of trust: a documented, versioned file format delivered to hosts, naming the KMS key
that encrypts it and holding only ciphertexts; and the checks that say whether they can still be recovered.

Format ``rehearsal-secrets/1`` (JSON)::

    {"format": "rehearsal-secrets/1", "version": 3, "region": "us-west-2",
     "key_id": "arn:aws:kms:us-west-2:...:key/...", "secrets": {"<name>": "<base64 ciphertext>", ...}}

One file per region, each encrypted with that region's key (a region that is lost takes its key's availability with
it, not the secrets'). The canary (``canary``) is a secret of our own whose plaintext's sha256 is recorded: decrypting
it in the surviving region proves the secrets there can be read.

Key state is read, never inferred from a decrypt that worked: a disabled key (or one pending deletion) still
decrypts on some endpoints (the local one), and on AWS a key pending deletion is days from making every secret it
encrypted unreadable. Either is a Sev0 finding.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass

from rehearsal.errors import VerificationFailed

FORMAT = "rehearsal-secrets/1"
CANARY = "canary"
HEALTHY_KEY_STATES = ("Enabled",)


def parse_secrets_file(raw: bytes | str, source: str) -> dict:
    """The file's content, validated.

    :raises VerificationFailed: not JSON, another format, no key id, no secrets, a secret that is not base64 (named)"""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise VerificationFailed(f"secrets file {source} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise VerificationFailed(f"secrets file {source}: format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                                 f"not {FORMAT}")
    for key in ("key_id", "region", "version"):
        if not doc.get(key):
            raise VerificationFailed(f"secrets file {source} names no {key}")
    secrets = doc.get("secrets")
    if not isinstance(secrets, dict) or not secrets:
        raise VerificationFailed(f"secrets file {source} holds no secrets")
    for name, value in secrets.items():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise VerificationFailed(f"secrets file {source}: secret {name!r} is not base64 ciphertext") from None
    return doc


def make_secrets_file(key_id: str, region: str, ciphertexts: dict[str, bytes], version: int = 1) -> bytes:
    return json.dumps({"format": FORMAT, "version": version, "region": region, "key_id": key_id,
                       "secrets": {n: base64.b64encode(c).decode() for n, c in ciphertexts.items()}}, indent=1).encode()


@dataclass(frozen=True)
class KeyFinding:
    region: str
    key_id: str
    state: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def key_finding(region: str, key_id: str, metadata: dict) -> KeyFinding:
    """A key's state, read from its description: anything but Enabled is a Sev0 finding, named."""
    state = str(metadata.get("KeyState", "unknown"))
    if state in HEALTHY_KEY_STATES:
        return KeyFinding(region, key_id, state, True, f"key {key_id} in {region} is {state}")
    when = f" (deletion date {metadata['DeletionDate']})" if metadata.get("DeletionDate") else ""
    return KeyFinding(region, key_id, state, False,
                      f"Sev0: key {key_id} in {region} is {state}{when}: every secret it encrypts becomes unreadable")


def canary_digest(plaintext: bytes) -> str:
    return hashlib.sha256(plaintext).hexdigest()


def check_canary(plaintext: bytes, expected_sha256: str, source: str) -> str:
    """:raises VerificationFailed: the decrypted canary is not the canary (named)"""
    digest = canary_digest(plaintext)
    if digest != expected_sha256:
        raise VerificationFailed(f"the canary of {source} decrypted to something else (sha256 {digest}, expected "
                                 f"{expected_sha256})")
    return f"the canary of {source} decrypts to the canary"
