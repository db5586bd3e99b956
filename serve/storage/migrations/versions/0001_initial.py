"""The initial schema: decisions (one row per batch), feedback, policy versions and events, meta.

Revision ID: 0001
Revises: (none)

Identical to the schema the store created before Alembic (``meta.schema_version`` 1): a
database written then already has these tables, and this revision adopts them unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite AUTOINCREMENT needs INTEGER


def upgrade() -> None:
    """Create the tables the store had before Alembic (those already there are adopted as they are)."""
    bind = op.get_bind()
    have = set(sa.inspect(bind).get_table_names())
    if "meta" not in have:
        op.create_table("meta", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
    if "targets" not in have:
        op.create_table(
            "targets",
            sa.Column("target_key", sa.Text, primary_key=True),
            sa.Column("target_id", sa.Text, nullable=False),
            sa.Column("target_json", sa.Text, nullable=False),
        )
    if "decision_batches" not in have:
        op.create_table(
            "decision_batches",
            sa.Column("batch_id", sa.Text, primary_key=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("n", sa.Integer, nullable=False),
            sa.Column("n_gpu", sa.Integer, nullable=False),
            sa.Column("n_explored", sa.Integer, nullable=False),
            sa.Column("target_key", sa.Text, sa.ForeignKey("targets.target_key"), nullable=False),
            sa.Column("speedup_min", sa.Float, nullable=False),
            sa.Column("energy_ratio_max", sa.Float, nullable=False),
            sa.Column("missing_power", sa.Text, nullable=False),
            sa.Column("max_slowdown", sa.Float),
            sa.Column("policy_version", sa.Text, nullable=False),
            sa.Column("columns", sa.LargeBinary, nullable=False),
            sqlite_with_rowid=False,
        )
    if "feedback" not in have:
        op.create_table(
            "feedback",
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("decision_id", sa.Text, nullable=False, unique=True),
            sa.Column("batch_id", sa.Text, sa.ForeignKey("decision_batches.batch_id"), nullable=False),
            sa.Column("received_at", sa.Float, nullable=False),
            sa.Column("payload_sha256", sa.Text, nullable=False),
            sa.Column("response_json", sa.Text, nullable=False),
            sa.Column("device", sa.Text, nullable=False),
            sa.Column("feasible", sa.Integer, nullable=False),
            sa.Column("both_measured", sa.Integer, nullable=False),
            sa.Column("outcome_json", sa.Text, nullable=False),
            sa.Column("other_json", sa.Text),
            sqlite_autoincrement=True,
        )
    if "policy_versions" not in have:
        op.create_table(
            "policy_versions",
            sa.Column("version", sa.Text, primary_key=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("path", sa.Text, nullable=False),
            sa.Column("parent", sa.Text),
            sa.Column("status", sa.Text, sa.CheckConstraint("status IN ('serving', 'retired', 'rejected')"),
                      nullable=False),
            sa.Column("thresholds_json", sa.Text, nullable=False),
            sa.Column("metrics_json", sa.Text, nullable=False),
        )
    if "policy_events" not in have:
        op.create_table(
            "policy_events",
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("kind", sa.Text, sa.CheckConstraint("kind IN ('register', 'promote', 'reject', 'rollback')"),
                      nullable=False),
            sa.Column("version", sa.Text, nullable=False),
            sa.Column("detail_json", sa.Text, nullable=False),
            sqlite_autoincrement=True,
        )
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    if bind.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first() is None:
        op.execute(meta.insert().values(key="schema_version", value="1"))  # read by code older than Alembic


def downgrade() -> None:
    """Drop every table of this revision."""
    for table in ("policy_events", "policy_versions", "feedback", "decision_batches", "targets", "meta"):
        op.drop_table(table)
