"""catalog search indexes: live reservations by window (PostgreSQL)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 02:00:00.000000

Written by hand. Time-first catalog search (booking.catalog) asks which resources have a live reservation
overlapping a window. With a year of past reservations per resource, the b-tree on (resource_id, starts_at,
ends_at) and the exclusion constraint's GiST index (led by resource_id) are both probed once per resource;
a GiST index on the [) range of live reservations alone finds the few that overlap the window at once
(bench/catalog.py: 10,000 resources, 3 million reservations). It carries resource_id, starts_at and ends_at
(INCLUDE) so that the planner answers from the index alone (an index-only scan) instead of visiting a heap
page per reservation found. PostgreSQL only, like the exclusion constraint
it complements; SQLite keeps the b-tree. Free-text search already has its trigram index (0002).
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_reservation_live_window ON reservation USING gist "
                   "(tstzrange(starts_at, ends_at, '[)')) INCLUDE (resource_id, starts_at, ends_at) "
                   "WHERE state IN ('pending', 'confirmed')")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_reservation_live_window")
