"""Course management routes (backups, reset, delete, import, audit log)."""

handlers: list[tuple] = []
