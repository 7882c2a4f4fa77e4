"""The sandbox: the reference platform drills run against here (local AWS endpoint, Postgres, backups)."""
