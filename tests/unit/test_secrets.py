"""The secrets file format, key-state verdicts and the canary, against moto's KMS in-process. moto keeps decrypting
with a disabled key: the verdicts come from the key's description, and these tests prove it."""
from __future__ import annotations

import base64
import json

import boto3
import pytest
from moto import mock_aws

from rehearsal.secrets import (
    FORMAT,
    KeyState,
    SecretsFile,
    SecretsFileError,
    canary_digest,
    check_canary,
    describe_key_state,
    key_verdict,
    parse_secrets_file,
)

ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
B64 = base64.b64encode(b"ciphertext").decode()


def document(**changes) -> dict:
    doc = {"format": FORMAT, "key_id": ARN, "region": "us-east-1", "secrets": {"rehearsal-canary": B64, "db": B64},
           "canary": {"name": "rehearsal-canary", "sha256": "0" * 64}}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def test_a_valid_file_parses_and_round_trips():
    parsed = parse_secrets_file(json.dumps(document()), "/hosts/agent-01/secrets.json")
    assert (parsed.key_id, parsed.region, sorted(parsed.secrets)) == (ARN, "us-east-1", ["db", "rehearsal-canary"])
    assert parse_secrets_file(parsed.dumps(), "again") == SecretsFile(ARN, "us-east-1", parsed.secrets, parsed.canary,
                                                                      None, "again")


@pytest.mark.parametrize(("doc", "message"), [
    ("{not json", "f.json: not JSON ("),
    (json.dumps([1]), "f.json: must be a JSON object"),
    (json.dumps(document(format="rehearsal-secrets/2")), "f.json: format 'rehearsal-secrets/2' is not 'rehearsal-secrets/1'"),
    (json.dumps(document(plaintext={"db": "hunter2"})), "f.json: unknown field(s) plaintext"),
    (json.dumps(document(region="mars")), "f.json: region 'mars' is not a region name"),
    (json.dumps(document(key_id="")), "f.json: key_id '' is not a KMS key id or ARN"),
    (json.dumps(document(region="us-west-2")),
     f"f.json: key_id {ARN} is a key of us-east-1, but the file says region us-west-2"),
    (json.dumps(document(secrets={})), "f.json: secrets must be a non-empty object of name -> base64 ciphertext"),
    (json.dumps(document(secrets={"db": "not base64!"}, canary=None)), "f.json: secrets.db is not valid base64"),
    (json.dumps(document(secrets={"bad name": B64}, canary=None)), "f.json: secret name 'bad name' is not"),
    (json.dumps(document(canary={"name": "missing", "sha256": "0" * 64})), "f.json: canary 'missing' is not among the secrets"),
    (json.dumps(document(canary={"name": "db", "sha256": "xyz"})), "f.json: canary.sha256 is not a hex sha256"),
])
def test_a_malformed_secrets_file_is_named_with_the_field(doc, message):
    with pytest.raises(SecretsFileError) as err:
        parse_secrets_file(doc, "f.json")
    assert str(err.value).startswith(message)


@pytest.fixture
def kms(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the session's local endpoint would be shared, not mocked
    with mock_aws():
        yield boto3.client("kms", region_name="us-west-2")


def test_a_disabled_or_pending_deletion_key_is_sev0_though_moto_still_decrypts(kms):
    meta = kms.create_key()["KeyMetadata"]
    key, key_id = meta["Arn"], meta["KeyId"]  # (moto changes a key's state by its id only)
    secret = kms.encrypt(KeyId=key, Plaintext=b"canary")["CiphertextBlob"]
    assert key_verdict(describe_key_state(kms, key, "us-west-2")) is None
    kms.disable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=secret)["Plaintext"] == b"canary"  # why the state is read, not the decrypt
    finding = key_verdict(describe_key_state(kms, key, "us-west-2"))
    assert (finding.severity, finding.subject) == ("Sev0", f"key {key} in us-west-2")
    assert finding.detail.startswith(f"KMS key {key} in us-west-2 is Disabled: ")
    kms.enable_key(KeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    state = describe_key_state(kms, key, "us-west-2")
    finding = key_verdict(state)
    assert finding.severity == "Sev0" and state.deletion_date
    assert finding.detail.startswith(f"KMS key {key} in us-west-2 is PendingDeletion, deletion on {state.deletion_date}")


def test_a_key_that_does_not_exist_is_sev0_and_an_unreadable_state_sev1(kms):
    missing = "arn:aws:kms:us-west-2:123456789012:key/00000000-0000-0000-0000-000000000000"
    finding = key_verdict(describe_key_state(kms, missing, "us-west-2"))
    assert finding.severity == "Sev0" and finding.detail.startswith(f"KMS key {missing} does not exist in us-west-2 (NotFoundException")
    assert key_verdict(KeyState("k", "eu-west-1", None, error="EndpointConnectionError")).severity == "Sev1"
    assert key_verdict(KeyState("k", "eu-west-1", "Creating")).detail == "KMS key k in eu-west-1 is Creating, not Enabled"


def test_the_canary_must_decrypt_to_its_recorded_digest(kms):
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = base64.b64encode(kms.encrypt(KeyId=key, Plaintext=b"the canary")["CiphertextBlob"]).decode()
    good = SecretsFile(key, "us-west-2", {"c": blob}, {"name": "c", "sha256": canary_digest(b"the canary")}, path="f.json")
    assert check_canary(kms, good) is None
    wrong = SecretsFile(key, "us-west-2", {"c": blob}, {"name": "c", "sha256": canary_digest(b"other")}, path="f.json")
    finding = check_canary(kms, wrong)
    assert (finding.severity, finding.detail) == ("Sev0", "canary c of f.json decrypts in us-west-2 to a value whose "
                                                          "sha256 is not the file's: wrong key or tampered ciphertext")
    other = kms.create_key()["KeyMetadata"]["Arn"]
    garbage = SecretsFile(other, "us-west-2", {"c": base64.b64encode(b"garbage").decode()},
                          {"name": "c", "sha256": canary_digest(b"x")}, path="f.json")
    finding = check_canary(kms, garbage)
    assert finding.severity == "Sev0" and finding.detail.startswith(f"canary c of f.json does not decrypt with {other} in us-west-2: ")
