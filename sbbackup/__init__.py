"""sbbackup: logical PostgreSQL backups that cannot silently lose data."""

__version__ = "0.1.0"
