-- Migration 20261129_0008_ipv4_allocations: the dedicated-IPv4 add-on's allocation state (edge configuration). Each
-- app endpoint holds one IPv4 address. Applied after 0007, as the application role, with the sandbox's allocations:
-- every deployed app gets the next address of the documentation ranges (RFC 5737), in app order.
-- No UNIQUE constraint on the address: an allocator that hands one out twice is what the DR verification names
-- (rehearsal.edge_config), before and after a restore re-applies an export.
CREATE TABLE ipv4_allocations (app_id bigint PRIMARY KEY REFERENCES apps ON DELETE CASCADE,
                               address inet NOT NULL CHECK (family(address) = 4 AND masklen(address) = 32),
                               allocated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ipv4_allocations_address_idx ON ipv4_allocations (address);
INSERT INTO ipv4_allocations (app_id, address)
SELECT app_id, (ARRAY['192.0.2.0', '198.51.100.0', '203.0.113.0']::inet[])[1 + ((n - 1) / 254)::int] + (1 + (n - 1) % 254)
  FROM (SELECT app_id, row_number() OVER (ORDER BY app_id) AS n FROM deployments) d
 WHERE n <= 3 * 254;

INSERT INTO schema_migrations (version) VALUES ('20261129_0008_ipv4_allocations');
