"""Alembic migrations of the LabShare schema; run them with `labshare db upgrade`."""
