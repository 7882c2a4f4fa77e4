"""Backups as the platform takes them: base backups, logical dumps, archived WAL, and their manifests."""
