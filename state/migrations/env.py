"""Alembic environment: always run with a connection handed in by state.db."""

from alembic import context

from state.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("dropreel migrations run through state.db.check_and_migrate")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
