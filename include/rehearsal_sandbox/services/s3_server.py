"""The local AWS endpoint's process: moto's server, with a ranged GET served from the bytes it asks for.

moto 5.2 answers ``GET`` with ``Range: bytes=a-b`` by reading the whole object out of its buffer and slicing it:
a 16 MB range of a 1.1 GB object costs 0.7 s, so a download in parallel ranged GETs (what real S3 serves in
time proportional to each range, and what backup verification does) ran 5-20x slower than one stream here.
This reads only the range: the object's value is handed to moto's own range handling as a view that reads a
slice on demand. Everything else (headers, errors, If-Match, 416) is moto's own code.

Run as ``python -m rehearsal_sandbox.services.s3_server -H <host> -p <port>`` (moto.server's arguments).
"""
from __future__ import annotations

import re
import sys
import threading

SIMPLE_RANGE = re.compile(r"bytes=\d+-\d*")
_serving_range = threading.local()


class _LazyValue:
    """An object's bytes, read from its buffer one slice at a time (``len`` and ``[a:b]`` are all moto uses)."""

    def __init__(self, key) -> None:
        self._key = key

    def __len__(self) -> int:
        return self._key.size

    def __bool__(self) -> bool:
        return self._key.size > 0

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(self._key.size)
        with self._key.lock:
            self._key._value_buffer.seek(start)
            return self._key._value_buffer.read(max(0, stop - start))


def install() -> None:
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    whole_value = FakeKey.value

    def value(self):
        return _LazyValue(self) if getattr(_serving_range, "on", False) else whole_value.fget(self)

    FakeKey.value = property(value, whole_value.fset)
    key_response = S3Response.key_response

    def ranged_key_response(self, request, full_url, headers):
        ranged = request.method == "GET" and SIMPLE_RANGE.fullmatch(request.headers.get("range") or "") is not None
        _serving_range.on = ranged and "partNumber" not in full_url
        try:
            status, response_headers, body = key_response(self, request, full_url, headers)
        finally:
            _serving_range.on = False
        if isinstance(body, _LazyValue):  # a range moto answers with the whole object (e.g. bytes=9-3)
            body = body[0:len(body)]
        return status, response_headers, body

    S3Response.key_response = ranged_key_response


def main() -> None:
    install()
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
