-- Control-plane state (the plan's critical assets), as the platform's migrations leave it.
CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orgs (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, plan text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE projects (id bigserial PRIMARY KEY, org_id bigint NOT NULL REFERENCES orgs, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE apps (id bigserial PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE envs (id bigserial PRIMARY KEY, app_id bigint NOT NULL REFERENCES apps, name text NOT NULL, config jsonb NOT NULL);
CREATE TABLE releases (id bigserial PRIMARY KEY, env_id bigint NOT NULL REFERENCES envs, version int NOT NULL,
                       desired_state jsonb NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE hosts (id bigserial PRIMARY KEY, hostname text NOT NULL UNIQUE, region text NOT NULL, status text NOT NULL,
                    last_seen_at timestamptz NOT NULL);
CREATE TABLE endpoints (id bigserial PRIMARY KEY, app_id bigint NOT NULL REFERENCES apps, host_id bigint NOT NULL REFERENCES hosts,
                        address inet NOT NULL, port int NOT NULL);
CREATE TABLE volumes (id bigserial PRIMARY KEY, app_id bigint NOT NULL REFERENCES apps, host_id bigint REFERENCES hosts,
                      size_gb int NOT NULL, snapshot_id text);
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, subject text NOT NULL, payload jsonb NOT NULL,
                     created_at timestamptz NOT NULL);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, actor text NOT NULL, action text NOT NULL, detail text NOT NULL,
                        created_at timestamptz NOT NULL);
CREATE TABLE heartbeat (seq bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp(), writer text NOT NULL);
CREATE INDEX releases_env_idx ON releases (env_id, version);
CREATE INDEX events_created_idx ON events (created_at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, created_at);
INSERT INTO schema_migrations (version) VALUES
  ('20260301_0001_initial'), ('20260415_0002_hosts_endpoints'), ('20260602_0003_volumes'),
  ('20260810_0004_events'), ('20261020_0005_audit_log');
