"""Per-signature evidence (issue 12): the signature of each placed job, and every measured outcome of a signature.

Revision ID: 0002
Revises: 0001

``decision_signatures`` maps a decision to its job's structural signature (``placement.lab.signature``)
so that feedback on it becomes evidence; ``evidence`` keeps each measured run of a signature on a
target (from a probe carried with a placement, or from feedback), read by the decision path.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite AUTOINCREMENT needs INTEGER


def upgrade() -> None:
    """Add the ``decision_signatures`` table (a decision's architecture signature) and the
    ``evidence`` table of probe and feedback runs by signature."""
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "decision_signatures" not in have:
        op.create_table(
            "decision_signatures",
            sa.Column("decision_id", sa.Text, primary_key=True),
            sa.Column("signature", sa.Text, nullable=False),
            sa.Column("job_json", sa.Text, nullable=False),
            sqlite_with_rowid=False,
        )
    if "evidence" not in have:
        op.create_table(
            "evidence",
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("signature", sa.Text, nullable=False),
            sa.Column("target_key", sa.Text, nullable=False),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("source", sa.Text, sa.CheckConstraint("source IN ('probe', 'feedback')"), nullable=False),
            sa.Column("decision_id", sa.Text),
            sa.Column("job_json", sa.Text, nullable=False),
            sa.Column("device", sa.Text, sa.CheckConstraint("device IN ('cpu', 'gpu')"), nullable=False),
            sa.Column("feasible", sa.Integer, nullable=False),
            sa.Column("time_per_sample_s", sa.Float),
            sa.Column("power_w", sa.Float),
            sa.Column("power_method", sa.Text, nullable=False),
            sqlite_autoincrement=True,
        )
        op.create_index("evidence_by_signature", "evidence", ["signature", "target_key", "seq"])


def downgrade() -> None:
    """Drop the ``evidence`` and ``decision_signatures`` tables and the evidence index."""
    op.drop_index("evidence_by_signature", table_name="evidence")
    op.drop_table("evidence")
    op.drop_table("decision_signatures")
