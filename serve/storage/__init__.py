"""Durable storage: the SQLAlchemy store (SQLite or PostgreSQL) and its Alembic migrations."""
