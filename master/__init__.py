"""The slapnode master: the catalog, computers, instance requests and allocation.

An ASGI app (FastAPI) over SQLAlchemy 2, migrated by Alembic. SQLite (WAL) by
default, PostgreSQL for real deployments. Imported as ``slapnode.master``.
"""
