"""Parallel ranged GETs against the sandbox's local S3 endpoint: an object comes back byte for byte, in order."""
from __future__ import annotations

import hashlib
import random

import pytest

pytestmark = pytest.mark.sandbox


def test_a_ranged_download_from_the_endpoint_reassembles_the_object_byte_for_byte(store, scratch_objects):
    data = random.Random(19).randbytes(5 * 1024 * 1024 + 12345)
    key = "controlplane-test-ranged/object"
    scratch_objects.put(key, data)
    received = bytearray()
    calls = store.api_calls
    size, digest = store.stream(key, received.extend, parallel=3, part_size=1024 * 1024)
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert bytes(received) == data
    assert store.api_calls - calls == 6  # the first part, then five more in parallel
