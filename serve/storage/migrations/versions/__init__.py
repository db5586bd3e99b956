"""The store's Alembic revisions, one module per schema change, applied in order by
:func:`placement.serve.storage.store.migrate`."""
