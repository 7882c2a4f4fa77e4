-- Migration 20261129_0007_volume_attachments: a volume's name, whether it is critical (restored first), and where it
-- is mounted on its host. Applied after 0006, as the application role; the sandbox's Volumes component then inserts
-- its real volumes (the seed inserts none).
ALTER TABLE volumes ADD COLUMN name text, ADD COLUMN critical boolean NOT NULL DEFAULT false, ADD COLUMN path text;

INSERT INTO schema_migrations (version) VALUES ('20261129_0007_volume_attachments');
