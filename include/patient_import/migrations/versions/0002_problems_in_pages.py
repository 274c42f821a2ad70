"""problems in pages: report position, paging indexes and per-code counts (issue 11)

Revision ID: 0002
Revises: 0001

`import_problems.position` is each problem's place in report order (SPEC §4) within its import, so
Import Results pages through them in SQL by index; `import_problem_counts` keeps, per import, code
and field, how many were found and how many are listed (warnings beyond 1,000 per code and field
are counted, not listed). Existing imports get both from the problems they already list.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('import_problems', sa.Column('position', sa.BigInteger(), nullable=True))
    # "row_number" is also the window function's name: quoted, it is the column.
    op.execute(
        'UPDATE import_problems SET position = ranked.n FROM ('
        ' SELECT id, ROW_NUMBER() OVER (PARTITION BY import_id ORDER BY'
        '  CASE WHEN "row_number" IS NULL THEN 0 ELSE 1 END, COALESCE("row_number", 0),'
        '  COALESCE(field, \'\'), code, id) - 1 AS n'
        ' FROM import_problems) AS ranked '
        'WHERE ranked.id = import_problems.id')
    op.drop_index('ix_import_problems_import_id', table_name='import_problems')
    op.create_index('ix_import_problems_position', 'import_problems', ['import_id', 'position'])
    op.create_index('ix_import_problems_severity', 'import_problems', ['import_id', 'severity', 'position'])
    op.create_index('ix_import_problems_code', 'import_problems', ['import_id', 'code', 'position'])
    op.create_index('ix_import_problems_account', 'import_problems', ['import_id', 'account_number', 'position'])

    op.create_table('import_problem_counts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('import_id', sa.String(length=80), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('field', sa.Text(), nullable=True),
    sa.Column('severity', sa.String(length=8), nullable=False),
    sa.Column('listed', sa.BigInteger(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['import_id'], ['imports.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_import_problem_counts_import_id', 'import_problem_counts', ['import_id'])
    op.execute(
        'INSERT INTO import_problem_counts (import_id, code, field, severity, listed, total) '
        'SELECT import_id, code, field, severity, COUNT(*), COUNT(*) FROM import_problems '
        'GROUP BY import_id, code, field, severity')


def downgrade() -> None:
    op.drop_index('ix_import_problem_counts_import_id', table_name='import_problem_counts')
    op.drop_table('import_problem_counts')
    for name in ('account', 'code', 'severity', 'position'):
        op.drop_index(f'ix_import_problems_{name}', table_name='import_problems')
    op.create_index('ix_import_problems_import_id', 'import_problems', ['import_id'])
    with op.batch_alter_table('import_problems', schema=None) as batch_op:
        batch_op.drop_column('position')
