"""Local PostgreSQL: binaries, clusters run as an unprivileged user, bounded probes, restores."""
