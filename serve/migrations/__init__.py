"""Alembic migrations of the placement store (shipped inside the package; :func:`serve.store.migrate` runs them)."""
