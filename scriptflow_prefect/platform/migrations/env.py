"""Alembic environment: runs on the connection handed over by `db.migrate`."""

from alembic import context

from scriptflow_prefect.platform.db import make_engine
from scriptflow_prefect.platform.models import Base
from scriptflow_prefect.platform.settings import get_settings

# The revisions in versions/ are written by hand and need no models. The platform imports no
# feature, so Base.metadata holds the tables of the features imported so far: for
# `alembic revision --autogenerate`, import every feature's models first.
config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` CLI use: build an engine from the URL
    connection = make_engine(get_settings().sqlalchemy_url).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite needs batch mode to alter tables
)
with context.begin_transaction():
    context.run_migrations()
