"""Storage of the control API: one SQLAlchemy Core schema (``tables``), one Alembic migration
history (``migrate``, ``migrations/``) and the ``Database`` wrapper that runs the same queries on
SQLite (embedded default) and PostgreSQL.
"""
