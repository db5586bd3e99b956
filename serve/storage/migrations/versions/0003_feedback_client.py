"""Feedback attributed to clients (issue 13): who reported each outcome.

Revision ID: 0003
Revises: 0002

``feedback.client`` names the client whose bearer token carried the feedback (a
``client_tokens_file`` name, ``service`` for the service's own token; NULL without tokens and for
rows stored before this revision). The learner caps the share of an update any one client's
feedback may carry (``placement.serve.learning.learner.label_weights``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable ``client`` column to ``feedback`` (existing rows: NULL, unattributed)."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("feedback")}
    if "client" not in columns:
        with op.batch_alter_table("feedback") as batch:
            batch.add_column(sa.Column("client", sa.Text))


def downgrade() -> None:
    """Drop ``feedback.client``."""
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("client")
