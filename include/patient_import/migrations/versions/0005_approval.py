"""approval: each import's columns and its approval (issue 15, contract §8)

Revision ID: 0005
Revises: 0004

`imports.export_columns` is the JSON list of the canonical fields the export had (recorded at validate),
so an import can be compared with the practice's last completed one. `imports.approval` is the
JSON of the approval decision: whether it waits, the reasons (codes and counts), the answer and
who gave it. Imports made before this migration keep NULL in both.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('imports', sa.Column('export_columns', sa.Text(), nullable=True))
    op.add_column('imports', sa.Column('approval', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.drop_column('approval')
        batch_op.drop_column('export_columns')
