"""Alembic environment: runs on the connection the runner passes in (or the configured URL)."""

from alembic import context

from core.db import make_engine
from migrations.metadata import include_object, target_metadata

config = context.config


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()
