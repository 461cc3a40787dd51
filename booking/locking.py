"""Serialising writers per resource, so that check-then-write booking logic cannot race.

PostgreSQL: a row lock on the resource (`SELECT … FOR UPDATE`); concurrent writers for the same resource
wait for each other, and READ COMMITTED then shows each the other's committed rows. The exclusion
constraint on reservations backs this up for overlaps. SQLite: the transaction must have been begun with
BEGIN IMMEDIATE (core.db.begin_write), which holds the database's single write lock until commit.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import Resource
from core.db import holds_write_lock
from core.errors import NotFound


def lock_resource(db: Session, resource_id: int) -> Resource:
    if db.get_bind().dialect.name == "sqlite":
        if not holds_write_lock(db):
            raise RuntimeError("booking writes on SQLite need a transaction begun by core.db.begin_write()")
        resource = db.get(Resource, resource_id)
    else:
        resource = db.scalar(select(Resource).where(Resource.id == resource_id).with_for_update(of=Resource))
    if resource is None:
        raise NotFound("resource", resource_id)
    return resource
