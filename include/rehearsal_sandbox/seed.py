"""Generated control-plane data: about 200 MB at scale 1, of realistically compressible content; then the live
fleet (migration 0006): its hosts, and a deployment of each of its apps; migration 0007 gives volumes a name, a
critical flag and a path. The seed inserts no volume: the sandbox's volumes are real directories, and the Volumes
component inserts their rows (``rehearsal_sandbox.components.volumes``)."""
from __future__ import annotations

import os
from pathlib import Path

SCHEMA_SQL = Path(__file__).with_name("schema.sql")  # the schema the seed fills
MIGRATION_SQL = Path(__file__).with_name("schema_0006_deployments.sql")  # applied after the seed
VOLUMES_MIGRATION_SQL = Path(__file__).with_name("schema_0007_volume_attachments.sql")  # then this one
IPV4_MIGRATION_SQL = Path(__file__).with_name("schema_0008_ipv4.sql")  # then this one (with its allocations)
SCHEMA_VERSION = "20261129_0008_ipv4_allocations"
FLEET_APPS, FLEET_HOSTS = 100, 24

# Hex of md5 is ~2x compressible: far closer to real specs and logs than pgbench's ~55x.
_NOISE = "md5(random()::text) || md5(random()::text)"


def seed_lanes(scale: float = 1.0) -> list[list[str]]:
    """The seed as independent lanes: each lane in order, the lanes side by side on their own connections.

    Events and the audit log reference nothing, so they fill on their own connections while the
    foreign-key chain (orgs → … → releases) fills on a third.
    """
    statements = _statements(scale)
    lanes = [statements[:8], [statements[8]], [statements[9]]]
    # Then vacuum what each lane filled, as autovacuum would have in production: the hint bits and the
    # visibility map are set (and WAL-logged, the clusters have data checksums) here, once, rather than
    # by the first backup's or restore check's full scan.
    return [lane + [f"VACUUM (ANALYZE) {_table(s)}" for s in lane] for lane in lanes]


def _table(statement: str) -> str:
    return statement.split()[2]


def _statements(scale: float) -> list[str]:
    n = lambda base: max(1, int(base * scale))  # noqa: E731
    orgs, projects, apps, hosts = n(2_000), n(8_000), n(20_000), n(3_000)
    return [
        f"INSERT INTO orgs (name, plan, created_at) SELECT 'org-' || g, (ARRAY['free','team','enterprise'])[1 + g % 3], now() - g * interval '1 minute' FROM generate_series(1, {orgs}) g",
        f"INSERT INTO projects (org_id, name, created_at) SELECT 1 + g % {orgs}, 'project-' || g, now() FROM generate_series(1, {projects}) g",
        f"INSERT INTO apps (project_id, name, created_at) SELECT 1 + g % {projects}, 'app-' || g, now() FROM generate_series(1, {apps}) g",
        f"INSERT INTO envs (app_id, name, config) SELECT 1 + g % {apps}, (ARRAY['production','staging'])[1 + g % 2], jsonb_build_object('replicas', g % 7, 'token_ref', {_NOISE}) FROM generate_series(1, {apps * 2}) g",
        f"INSERT INTO hosts (hostname, region, status, last_seen_at) SELECT 'host-' || g, (ARRAY['eu-west-1','us-east-1'])[1 + g % 2], 'ready', now() FROM generate_series(1, {hosts}) g",
        f"INSERT INTO endpoints (app_id, host_id, address, port) SELECT 1 + g % {apps}, 1 + g % {hosts}, ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet, 8000 + g % 1000 FROM generate_series(1, {apps * 2}) g",
        # No rows: the volumes table holds exactly the sandbox's real volumes, inserted by the Volumes component.
        "INSERT INTO volumes (app_id, host_id, size_gb, snapshot_id) SELECT 1, 1, 1, NULL WHERE false",
        f"INSERT INTO releases (env_id, version, desired_state, created_at) SELECT 1 + g % {apps * 2}, g, jsonb_build_object('image', 'registry/app:' || {_NOISE}, 'env', {_NOISE} || {_NOISE} || {_NOISE}, 'cmd', {_NOISE}), now() - g * interval '1 second' FROM generate_series(1, {n(100_000)}) g",
        f"INSERT INTO events (kind, subject, payload, created_at) SELECT (ARRAY['deploy','scale','restart','health'])[1 + g % 4], 'app-' || g % {apps}, jsonb_build_object('detail', {_NOISE} || {_NOISE}), now() - g * interval '100 ms' FROM generate_series(1, {n(300_000)}) g",
        f"INSERT INTO audit_log (actor, action, detail, created_at) SELECT 'user-' || g % 5000, (ARRAY['login','deploy','update_config','delete'])[1 + g % 4], json_build_object('note', {_NOISE})::text, now() - g * interval '200 ms' FROM generate_series(1, {n(300_000)}) g",
    ]


def fleet_size() -> tuple[int, int]:
    """(apps, hosts) of the live fleet: ``SANDBOX_APPS`` (100) and ``SANDBOX_HOSTS`` (24)."""
    return int(os.environ.get("SANDBOX_APPS", FLEET_APPS)), int(os.environ.get("SANDBOX_HOSTS", FLEET_HOSTS))


def hostnames(hosts: int) -> list[str]:
    return [f"agent-{i:02d}" for i in range(1, hosts + 1)]


def migration(path: Path = MIGRATION_SQL) -> tuple[str, str]:
    """A migration (0006 by default) as (the application role's part, the superuser's part)."""
    owner, _, superuser = path.read_text().partition("-- @superuser")
    return owner, superuser


def fleet_statements(apps: int, hosts: int) -> list[str]:
    """The fleet's hosts (``agent-01``...: the first half in us-east-1, the rest in us-west-2) and one deployment of each of the first ``apps`` apps: its newest
    release, 1 to 3 replicas, generation 1. Placements are the scheduler's."""
    return [
        f"INSERT INTO hosts (hostname, region, status, last_seen_at) SELECT 'agent-' || lpad(g::text, 2, '0'), CASE WHEN g <= {(hosts + 1) // 2} THEN 'us-east-1' ELSE 'us-west-2' END, 'ready', now() FROM generate_series(1, {hosts}) g",
        f"""INSERT INTO deployments (app_id, release_id, image, replicas, config, generation, updated_at)
            SELECT a.id, r.id, r.desired_state ->> 'image', 1 + a.id % 3, jsonb_build_object('log_level', 'info', 'workers', 2), 1, now()
              FROM (SELECT id FROM apps ORDER BY id LIMIT {apps}) a
              CROSS JOIN LATERAL (SELECT r.id, r.desired_state FROM releases r JOIN envs e ON e.id = r.env_id
                                   WHERE e.app_id = a.id ORDER BY r.version DESC LIMIT 1) r""",
        "ANALYZE hosts, deployments",
    ]
