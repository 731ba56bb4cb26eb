"""participants: admission (waiting, admitted, removed) and removed_at

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite can add a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table('participants') as batch:
        batch.add_column(sa.Column('admission', sa.String(length=16), server_default='admitted', nullable=False))
        batch.add_column(sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint('admission', "admission IN ('waiting', 'admitted', 'removed')")


def downgrade() -> None:
    with op.batch_alter_table('participants') as batch:
        batch.drop_constraint(op.f('ck_participants_admission'), type_='check')
        batch.drop_column('removed_at')
        batch.drop_column('admission')
