"""The sandbox's side-by-side jobs (standby, base backup, dump): every failure is reported, by name."""
from __future__ import annotations

from concurrent.futures import Future

import pytest

from rehearsal_sandbox.platform import _results


def done(value=None, error: Exception | None = None) -> Future:
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
    return future


class Manifest:
    def __init__(self, backup_id: str) -> None:
        self.backup_id = backup_id


def test_results_are_the_backup_ids_and_other_results_as_they_are():
    standby = object()
    out = _results({"base_backup": done(Manifest("base-1")), "logical_dump": done(Manifest("dump-1")),
                    "standby": done(standby)})
    assert out == {"base_backup": "base-1", "logical_dump": "dump-1", "standby": standby}


def test_every_failed_job_is_named_in_one_error():
    with pytest.raises(RuntimeError) as err:
        _results({"base_backup": done(error=RuntimeError("pg_basebackup of primary failed: no space")),
                  "logical_dump": done(error=RuntimeError("pg_dump of primary failed: timeout")),
                  "standby": done(object())})
    assert str(err.value) == ("base backup: pg_basebackup of primary failed: no space; "
                              "logical dump: pg_dump of primary failed: timeout")


def test_env_file_values_read_back_exactly_as_quoted(tmp_path):
    import shlex

    from rehearsal_sandbox.platform import read_env_file

    values = {"PRIMARY_DSN": "host=127.0.0.1 password='p w$x'", "EMPTY": "", "JSON": '{"a": "b c"}'}
    env = tmp_path / "env"
    env.write_text("# comment\n" + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    assert read_env_file(env) == values
