"""the per-row logs without foreign keys to imports (issue #14)

Revision ID: 0006
Revises: 0005

`import_rows` (one row per row read) and `patient_changes` (one entry per patient written or seen)
are the two tables an import fills with as many rows as its export has: a million for a
1,000,000-row export. On PostgreSQL their foreign key to `imports` is a trigger run once per
inserted row (a `SELECT ... FOR KEY SHARE` of the import): `EXPLAIN ANALYZE` of the load's inserts
at 1,000,000 rows showed 7.0 s in `import_rows_import_id_fkey` and 6.6 s in
`patient_changes_import_id_fkey`, more than the inserts themselves. The key adds nothing there:
the load writes both tables only in the transaction that reads and updates its `imports` row under
the practice's lock (`load.load_import`), and no import is ever deleted. Their `import_id` index
stays. The small tables (problems, counts, audit) keep theirs.

On SQLite the tables are rebuilt without the constraint (Alembic's batch mode), under the store's
write lock: about 5 s per million rows in each table, and the file keeps the space the old copies
took until a `VACUUM`.
"""

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# In the order a load takes them (the change log before the row outcomes, `load.load_import`):
# taken the other way, a migration beside a running load locks `import_rows` first, waits for
# `patient_changes`, and PostgreSQL ends the load as a deadlock.
_TABLES = ('patient_changes', 'import_rows')
# SQLite's foreign keys have no names: batch mode names them by this convention to drop them.
_SQLITE_NAMES = {'fk': 'fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s'}


def _name(table: str) -> str:
    if op.get_bind().dialect.name == 'sqlite':
        return f'fk_{table}_import_id_imports'
    return f'{table}_import_id_fkey'  # PostgreSQL's name for the key 0001 and 0004 created


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, naming_convention=_SQLITE_NAMES) as batch_op:
            batch_op.drop_constraint(_name(table), type_='foreignkey')


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, naming_convention=_SQLITE_NAMES) as batch_op:
            batch_op.create_foreign_key(_name(table), 'imports', ['import_id'], ['id'])
