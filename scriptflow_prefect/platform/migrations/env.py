"""Alembic environment: runs on the connection handed over by `db.migrate`."""

from alembic import context

# Every feature's tables, so that the metadata is whole.
from scriptflow_prefect.accounts import models as _accounts  # noqa: F401
from scriptflow_prefect.notifications import models as _notifications  # noqa: F401
from scriptflow_prefect.platform.models import Base
from scriptflow_prefect.scripts import models as _scripts  # noqa: F401

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` CLI use: build an engine from the URL
    from scriptflow_prefect.platform.db import make_engine
    from scriptflow_prefect.platform.settings import get_settings

    connection = make_engine(get_settings().sqlalchemy_url).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite needs batch mode to alter tables
)
with context.begin_transaction():
    context.run_migrations()
