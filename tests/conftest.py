"""Test-wide setup: the repository on sys.path, and a throwaway Airflow home set before Airflow is imported."""

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Airflow reads its configuration when first imported: point it at a session-private home with
# the project's DAGs and plugins, short retry delays, and no example DAGs.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="patient_import_airflow_"))
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "PATIENT_IMPORT_RETRIES": "1",
    "PATIENT_IMPORT_RETRY_DELAY_SECONDS": "1",
    "PATIENT_IMPORT_SETTLE_SECONDS": "0",
})
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


# ---------------------------------------------------------------- tiers (pyproject.toml, markers)

# A test that uses one of these fixtures is in that server's tier; `store_url`'s PostgreSQL variant
# is marked by its parameter. Session fixtures, so a server starts only when a test of its tier runs.
SERVER_FIXTURES = {"postgres_server": "postgres", "object_store": "object_store", "docker_compose": "compose"}
SERVER_TIERS = frozenset({"postgres", "object_store", "redis", "compose"})
TIERS = SERVER_TIERS | {"unit", "dag", "integration", "e2e"}


def pytest_collection_modifyitems(config, items):
    """Every test is in a tier: a server's when it uses one, else the one its module names, else
    `unit`. A unit test needs no server, no Airflow database and no install: `-m unit` starts none."""
    both = []
    for item in items:
        for fixture, marker in SERVER_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        names = {mark.name for mark in item.iter_markers()}
        if not names & TIERS:
            item.add_marker(pytest.mark.unit)
        elif "unit" in names and names & SERVER_TIERS:
            both.append(item.nodeid)
    if config is not None and hasattr(config, "workerinput"):  # an xdist worker: the longest scopes first
        items.sort(key=lambda item: start_rank(item.nodeid))
    if both:
        raise pytest.UsageError("unit tests use no server; these are marked unit and use one "
                                "(drop the module's `unit` mark, the conftest marks the rest):\n  "
                                + "\n  ".join(both))


# ---------------------------------------------------------------- workers (pytest-xdist, `make test`)

# `make test` runs the suite on cores + 1 workers with `--dist loadscope`, and a scope here is a module:
# module-scoped data (the hostile corpus's imports) is built once,
# and the figures a module gathers for `make reliability` (the fault ledger, the corpus figures) are
# written whole by one worker. The modules that share the session's Airflow stack (the `airflow`
# fixture, tests/e2e/conftest.py) are one scope, so the stack starts once. (pytest-xdist's own
# `xdist_group` cannot group here: it renames test ids, which pytest 9 no longer allows.)
SHARED_STACK_MODULES = frozenset({
    "tests/e2e/test_approval.py",
    "tests/e2e/test_import_results_browser.py",
    "tests/e2e/test_privacy.py",
    "tests/e2e/test_scheduled_sync.py",
    "tests/e2e/test_stack_unpause.py",
    "tests/e2e/test_trust_boundaries.py",
})


def pytest_itemcollected(item):
    """A test on the session's Airflow stack must be in SHARED_STACK_MODULES, or a worker of its
    own would start a second stack."""
    module = item.nodeid.split("::", 1)[0]
    if "airflow" in getattr(item, "fixturenames", ()) and module not in SHARED_STACK_MODULES:
        raise pytest.UsageError(f"{item.nodeid} uses the session's Airflow stack: "
                                "add its module to SHARED_STACK_MODULES in tests/conftest.py")


def scope_of(nodeid: str) -> str:
    """The scheduling scope of a test id: its module, or the shared stack's one scope."""
    module = nodeid.split("::", 1)[0]
    return "shared-airflow-stack" if module in SHARED_STACK_MODULES else module


def start_rank(nodeid: str) -> int:
    """Which scopes a worker takes first: the long ones (the shared stack, then the other end-to-end
    servers, then the DAG runs), so that neither worker is left with a long one at the end."""
    if scope_of(nodeid) != nodeid.split("::", 1)[0]:
        return 0
    return next((rank for rank, prefix in enumerate(("tests/e2e/", ("tests/faults/", "tests/integration/")), 1)
                 if nodeid.startswith(prefix)), 3)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadscope`, a scope is `scope_of` a test, handed out in collection order (the
    workers sort it by `start_rank`), not xdist's largest-first."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            config.option.loadscopereorder = False

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory):
    """Airflow's own metadata database (DagBag, `dag.test()`), migrated once per session.

    Under pytest-xdist every worker has an Airflow home of its own, yet `airflow db migrate` (a
    process importing Airflow and every model: about 4 s of CPU each) runs once per `make test`: the
    first worker to need it migrates its home and leaves a copy in the run's shared temporary
    folder; the others copy that (SQLite's backup API: a consistent copy of the same database).
    """
    import fcntl

    from scripts.airflow_db import sqlite_path

    home = Path(os.environ["AIRFLOW_HOME"])
    database = sqlite_path(home)
    # Shared only between workers' own databases: one named by an inherited
    # AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is one file for every worker (or a user's own), which a
    # copy would roll back under the others; `airflow db migrate` leaves a current one as it is.
    if not os.environ.get("PYTEST_XDIST_WORKER") or database is None or not database.is_relative_to(home):
        _migrate_airflow_db()
        return os.environ["AIRFLOW_HOME"]
    # The run's shared temporary folder (pytest-<n>, popen-gw<i>'s parent), one worker at a time.
    template = tmp_path_factory.getbasetemp().parent / "airflow_db_template.db"
    with open(f"{template}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if template.exists():
            _sqlite_copy(template, database)
        else:
            _migrate_airflow_db()
            partial = template.with_suffix(".partial")
            _sqlite_copy(database, partial)
            partial.replace(template)  # whole or not at all
    return os.environ["AIRFLOW_HOME"]


def _migrate_airflow_db() -> None:
    import subprocess

    result = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                            capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _sqlite_copy(source: Path, target: Path) -> None:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


# ---------------------------------------------------------------- patient stores (SQLite, PostgreSQL)


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL 15 server for the session (tools/harness/postgres.py).

    Skipped where the server binaries are missing, unless `CI` is set: CI must test PostgreSQL.
    """
    from tools.harness.postgres import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the store tests on PostgreSQL 15, but: {exc}")
        pytest.skip(f"PostgreSQL 15 not available: {exc}")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """The SQLAlchemy URL of an empty database (no tables) on the session's PostgreSQL server."""
    return postgres_server.create_database("patient_import")


@pytest.fixture(scope="session")
def _sqlite_store_template(tmp_path_factory) -> Path:
    from include.patient_import.store import create_store_engine, migrate

    path = tmp_path_factory.mktemp("store_template") / "patient_store.db"
    engine = create_store_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection's close folds the WAL into the file
    return path


@pytest.fixture(scope="session")
def _postgres_store_template(postgres_server) -> str:
    from include.patient_import.store import create_store_engine, migrate

    name = "store_template"
    engine = create_store_engine(postgres_server.create_database(name))
    migrate(engine)
    engine.dispose()  # a template database must have no connections
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """A fresh, migrated, empty patient store for each test, on each database: a copy of a
    template migrated once per session (a file copy; CREATE DATABASE ... TEMPLATE)."""
    if request.param == "sqlite":
        path = tmp_path / "patient_store.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_store_template"), path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"store_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name, template=request.getfixturevalue("_postgres_store_template"))
    yield url
    server.drop_database(name)


# ---------------------------------------------------------------- the file areas in an object store


@pytest.fixture(scope="session")
def object_store():
    """One local S3-compatible server for the session (tools/harness/object_store.py); the
    Airflow connection the storage URLs name is set in the environment for every process."""
    from tools.harness.object_store import ObjectStore, environment_without_credentials

    store = ObjectStore().start()
    with pytest.MonkeyPatch.context() as env:
        for key, value in (store.connection_env() | environment_without_credentials()).items():
            env.setenv(key, value)
        yield store
    store.stop()


@pytest.fixture
def s3_storage(object_store, monkeypatch) -> str:
    """`PATIENT_IMPORT_STORAGE` pointed at a fresh prefix of the session's object store."""
    root = object_store.new_root()
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", root)
    return root


# ---------------------------------------------------------------- the hostile corpus


@pytest.fixture(scope="session")
def hostile_corpus(tmp_path_factory) -> dict[str, Path]:
    """Every file of the hostile corpus (tools/corpus.py), written once per session: name -> path.
    Read-only: a test that imports one copies it first."""
    from tools.corpus import write_corpus

    return {item.name: path for item, path in write_corpus(tmp_path_factory.mktemp("hostile_corpus"))}


# ---------------------------------------------------------------- where a run's export_file may come from


@pytest.fixture(scope="session", autouse=True)
def export_roots(tmp_path_factory):
    """`PATIENT_IMPORT_EXPORT_ROOTS` (SPEC §7) set to the session's temporary folder: the tests'
    exports live there. Tests of the boundary itself set it as they need (monkeypatch)."""
    root = str(tmp_path_factory.getbasetemp())
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATIENT_IMPORT_EXPORT_ROOTS", root)
        yield root
