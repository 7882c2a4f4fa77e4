-- Migration 20261129_0006_deployments: the live fleet's desired state (deployments), where it runs (placements),
-- what the hosts report (host_reports), and the audit of destructive changes. Applied after the seed (schema.sql is
-- the schema the seed fills), as the application role; the part after the superuser marker as postgres.
CREATE TABLE deployments (app_id bigint PRIMARY KEY REFERENCES apps, release_id bigint NOT NULL REFERENCES releases,
                          image text NOT NULL, replicas int NOT NULL CHECK (replicas BETWEEN 0 AND 10),
                          config jsonb NOT NULL DEFAULT '{}', generation bigint NOT NULL DEFAULT 1,
                          updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE placements (app_id bigint NOT NULL REFERENCES deployments ON DELETE CASCADE, slot int NOT NULL,
                         host_id bigint NOT NULL REFERENCES hosts, PRIMARY KEY (app_id, slot));
CREATE INDEX placements_host_idx ON placements (host_id);
CREATE TABLE host_reports (host_id bigint PRIMARY KEY REFERENCES hosts, reported_at timestamptz NOT NULL,
                           running jsonb NOT NULL);

-- An audit row's detail is JSON text; an API mutation's names its request_id, by which mutations are idempotent.
CREATE INDEX audit_log_request_id_idx ON audit_log (((detail::jsonb) ->> 'request_id'));

-- Destructive changes are audited: a statement that updates or deletes 50 rows or more of a critical table.
CREATE FUNCTION audit_bulk_change() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  n bigint;
BEGIN
  SELECT count(*) INTO n FROM changed_rows;
  IF n >= 50 THEN
    INSERT INTO audit_log (actor, action, detail, created_at)
    VALUES (session_user, CASE TG_OP WHEN 'UPDATE' THEN 'bulk_update' ELSE 'bulk_delete' END,
            json_build_object('table', TG_TABLE_NAME, 'rows', n)::text, clock_timestamp());
  END IF;
  RETURN NULL;
END $$;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['orgs', 'projects', 'apps', 'envs', 'releases', 'deployments', 'hosts', 'endpoints', 'volumes'] LOOP
    -- one trigger per event: a trigger with transition tables can have only one
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS changed_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_bulk_change()', t || '_audit_bulk_update', t);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS changed_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_bulk_change()', t || '_audit_bulk_delete', t);
  END LOOP;
END $$;

INSERT INTO schema_migrations (version) VALUES ('20261129_0006_deployments');

-- @superuser
-- A dropped table is audited (an event trigger: created by a superuser). Temporary tables are not; a drop of
-- audit_log itself is not refused for want of a place to write it.
CREATE FUNCTION audit_drop_table() RETURNS event_trigger LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  dropped record;
BEGIN
  FOR dropped IN SELECT * FROM pg_event_trigger_dropped_objects()
                  WHERE object_type = 'table' AND NOT is_temporary AND original LOOP
    BEGIN
      INSERT INTO audit_log (actor, action, detail, created_at)
      VALUES (session_user, 'drop_table', json_build_object('table', dropped.object_name)::text, clock_timestamp());
    EXCEPTION WHEN undefined_table OR insufficient_privilege THEN
      NULL;
    END;
  END LOOP;
END $$;
CREATE EVENT TRIGGER audit_drop_table ON sql_drop EXECUTE FUNCTION audit_drop_table();
