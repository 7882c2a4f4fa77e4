"""The seed's lanes run side by side: no lane may insert into a table another lane's tables reference."""
from __future__ import annotations

import re

from rehearsal_sandbox import seed

TABLE = re.compile(r"INSERT INTO (\w+)")
REFERENCE = re.compile(r"CREATE TABLE (\w+) \((.*?)\);", re.S)


def references() -> dict[str, set[str]]:
    schema = seed.SCHEMA_SQL.read_text()
    return {table: set(re.findall(r"REFERENCES (\w+)", body)) for table, body in REFERENCE.findall(schema)}


def test_every_seeded_table_is_filled_once_and_lanes_share_no_foreign_key():
    lanes = [[TABLE.search(s).group(1) for s in lane if s.startswith("INSERT")] for lane in seed.seed_lanes(0.01)]
    filled = [t for lane in lanes for t in lane]
    assert len(filled) == len(set(filled))
    assert set(filled) == set(references()) - {"schema_migrations", "heartbeat"}
    refs = references()
    for i, lane in enumerate(lanes):
        others = {t for j, other in enumerate(lanes) if j != i for t in other}
        for table in lane:
            assert not refs[table] & others, f"{table} references a table filled in another lane"
        # within a lane, a table comes after every table it references
        for pos, table in enumerate(lane):
            assert refs[table] <= set(lane[:pos]), f"{table} is filled before a table it references"


def test_each_lane_vacuums_what_it_filled_after_filling_it():
    for lane in seed.seed_lanes(0.01):
        inserts = [TABLE.search(s).group(1) for s in lane if s.startswith("INSERT")]
        assert lane[len(inserts):] == [f"VACUUM (ANALYZE) {t}" for t in inserts]
