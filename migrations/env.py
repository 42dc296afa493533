"""Alembic environment of the findings store; the target is the ORM metadata.

The database URL comes from `config.attributes["url"]` (set by `auditor.store.migrate`)
or from the `sqlalchemy.url` main option.
"""

from alembic import context

from auditor.store.migrate import open_engine
from auditor.store.schema import Base

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: set config.attributes['url'] or sqlalchemy.url")

engine = open_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
