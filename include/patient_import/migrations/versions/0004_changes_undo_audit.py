"""changes, undo and audit (issue 15, SPEC §8)

Revision ID: 0004
Revises: 0003

`patient_changes` is the change log: per patient an import wrote, the values it replaced
(`before_*`) and wrote (`after_*`), so an undo can put them back and the changes file can list
them. `import_rows.changed_fields` names an updated row's changed fields; `imports.field_changes`
counts them per field (JSON). `imports.undone_at` / `undone_by` record an undo; `import_audit`
records who triggered, approved, undid an import and who downloaded which patient file.
Imports made before this migration have no change log and cannot be undone.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# The patient columns as of this migration (0001): frozen here, whatever the model says later.
_IMAGE = (
    ('last_name', sa.Text()), ('first_name', sa.Text()), ('middle_initial', sa.Text()),
    ('address1', sa.Text()), ('address2', sa.Text()), ('city', sa.Text()), ('state', sa.String(length=2)),
    ('zip', sa.String(length=10)), ('home_phone', sa.String(length=10)),
    ('home_phone_ext', sa.String(length=10)), ('cell_phone', sa.String(length=10)),
    ('cell_phone_ext', sa.String(length=10)), ('email', sa.Text()), ('birth_date', sa.Date()),
    ('gender', sa.String(length=1)), ('status', sa.String(length=8)), ('last_visit', sa.Date()),
    ('last_seen_exported_on', sa.Date()), ('updated_import_id', sa.String(length=80)),
)


def upgrade() -> None:
    op.add_column('imports', sa.Column('field_changes', sa.Text(), nullable=True))
    op.add_column('imports', sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('imports', sa.Column('undone_by', sa.Text(), nullable=True))
    op.add_column('import_rows', sa.Column('changed_fields', sa.Text(), nullable=True))
    op.create_table(
        'patient_changes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('import_id', sa.String(length=80), nullable=False),
        sa.Column('practice_id', sa.String(length=64), nullable=False),
        sa.Column('third_party_acct_number', sa.String(length=32), nullable=False),
        sa.Column('patient_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('reverted_at', sa.DateTime(timezone=True), nullable=True),
        *[sa.Column(f'before_{name}', kind, nullable=True) for name, kind in _IMAGE],
        *[sa.Column(f'after_{name}', kind, nullable=True) for name, kind in _IMAGE],
        sa.ForeignKeyConstraint(['import_id'], ['imports.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_patient_changes_import_id', 'patient_changes', ['import_id'])
    op.create_table(
        'import_audit',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('import_id', sa.String(length=80), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('who', sa.Text(), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['import_id'], ['imports.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_import_audit_import_id', 'import_audit', ['import_id'])


def downgrade() -> None:
    op.drop_index('ix_import_audit_import_id', table_name='import_audit')
    op.drop_table('import_audit')
    op.drop_index('ix_patient_changes_import_id', table_name='patient_changes')
    op.drop_table('patient_changes')
    with op.batch_alter_table('import_rows', schema=None) as batch_op:
        batch_op.drop_column('changed_fields')
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.drop_column('undone_by')
        batch_op.drop_column('undone_at')
        batch_op.drop_column('field_changes')
