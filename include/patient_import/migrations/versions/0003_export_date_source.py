"""export date source: where each import's export date came from (issue 13)

Revision ID: 0003
Revises: 0002

`imports.exported_on_source` is `conf`, `file_name` or `landed` (contract §6); the report's
`export.exported_on_source` and `make import`'s summary show it. Imports made before this
migration did not record it and keep NULL.
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('imports', sa.Column('exported_on_source', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.drop_column('exported_on_source')
