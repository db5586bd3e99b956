"""Alembic migrations of the placement store (shipped inside the package; :func:`placement.serve.storage.store.migrate` runs them)."""
