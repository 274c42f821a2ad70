"""The production-like stack, checked offline: docker-compose.yml as Debian's docker-compose 1.29
resolves it (`config`, no Docker engine needed), the Dockerfile it builds, and the store migration
its init service runs."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from include.patient_import.store import airflow_store_url, url_from_connection

# Tier: `compose` where a test runs docker-compose, else unit (tests/conftest.py).

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init")
CODE_DIRS = ("dags", "plugins", "include", "expectations")
SHARED_SECRETS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY")
AIRFLOW_HOME = "/opt/airflow"


@pytest.fixture(scope="module")
def docker_compose() -> str:
    """Debian's docker-compose, installed by scripts/install_compose.sh when missing."""
    if shutil.which("docker-compose") is None:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "install_compose.sh")],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or shutil.which("docker-compose") is None:
            reason = f"docker-compose could not be installed: {done.stderr.strip()[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return shutil.which("docker-compose")


def compose(binary: str, *args: str) -> subprocess.CompletedProcess:
    # A clean environment: compose prefers the shell's variables to the env file's.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
                           "--env-file", str(ROOT / ".env.example"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def resolved(docker_compose) -> dict:
    """docker-compose.yml as compose resolves it with the placeholders of .env.example."""
    done = compose(docker_compose, "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def written() -> dict:
    """docker-compose.yml as written (anchors merged, `${...}` references not substituted)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def base_image() -> str:
    found = re.search(r"^ARG AIRFLOW_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert found, "the Dockerfile pins its base image in `ARG AIRFLOW_IMAGE=...`"
    return found.group(1)


def test_the_compose_file_is_valid_for_docker_compose_1_29(docker_compose):
    done = compose(docker_compose, "config", "-q")

    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr.upper(), done.stderr


def test_the_stack_has_every_service_of_the_issue(resolved):
    assert set(resolved["services"]) == {"airflow-db", "patient-store", "redis", *AIRFLOW_SERVICES}


def test_every_airflow_service_runs_the_project_image(resolved):
    for name in AIRFLOW_SERVICES:
        service = resolved["services"][name]
        assert Path(service["build"]["context"]) == ROOT, name
        assert service["image"] == resolved["services"]["airflow-apiserver"]["image"], name


@pytest.mark.parametrize("folder", CODE_DIRS)
def test_the_code_folders_are_baked_into_the_image(folder):
    copies = re.findall(r"^COPY (?:--\S+ )*(\S+) (\S+)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)

    assert (f"{folder}/", f"{AIRFLOW_HOME}/{folder}/") in copies


@pytest.mark.parametrize("folder", ("tools", "tests"))
def test_the_image_ships_no_tools_and_no_tests(folder):
    copies = re.findall(r"^COPY (?:--\S+ )*(\S+) (\S+)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    allowed = [line for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.startswith("!")]

    assert not [source for source, _ in copies if source.strip("/").split("/")[0] == folder]
    assert not [line for line in allowed if line[1:].strip("/").split("/")[0] == folder]


@pytest.mark.parametrize("folder", ("include", "dags", "plugins"))
def test_the_product_never_imports_tools_or_tests(folder):
    importing = [str(path.relative_to(ROOT)) for path in (ROOT / folder).rglob("*.py")
                 if re.search(r"^\s*(?:from|import)\s+(?:tools|tests)\b", path.read_text(encoding="utf-8"), re.M)]

    assert importing == []


@pytest.mark.parametrize("folder", ("scripts", "bench", "tools"))
def test_the_tools_never_import_the_tests(folder):
    importing = [str(path.relative_to(ROOT)) for path in (ROOT / folder).rglob("*.py")
                 if re.search(r"^\s*(?:from|import)\s+tests\b", path.read_text(encoding="utf-8"), re.M)]

    assert importing == []


@pytest.mark.parametrize("folder", CODE_DIRS)
def test_the_code_folders_mounted_are_the_repository_ones(resolved, folder):
    for name in AIRFLOW_SERVICES:
        mounts = {m.split(":")[1]: m.split(":")[0] for m in resolved["services"][name].get("volumes", [])}
        if f"{AIRFLOW_HOME}/{folder}" in mounts:
            assert Path(mounts[f"{AIRFLOW_HOME}/{folder}"]) == ROOT / folder, name


def test_the_image_pins_the_airflow_version_of_uv_lock():
    image = base_image()
    found = re.fullmatch(r"apache/airflow:(?P<airflow>[0-9.]+)-python(?P<python>[0-9.]+)", image)

    assert found, f"pin an exact apache/airflow:<version>-python<version> tag, not {image}"
    assert found["airflow"] == locked_version("apache-airflow")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert f">={found['python']}" in requires


def test_the_image_installs_the_locked_dependencies_not_pip_additional_requirements(resolved):
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")

    assert "uv export" in dockerfile and "--frozen" in dockerfile and "--no-default-groups" in dockerfile
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in COMPOSE_FILE.read_text(encoding="utf-8")
    for name in AIRFLOW_SERVICES:
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in resolved["services"][name]["environment"], name


def test_the_dockerfile_export_yields_the_locked_runtime_pins():
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        pytest.skip("uv is not installed (make install installs it)")
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    args = re.search(r"uv (export .*?) --output-file", dockerfile)[1].split()
    args = [a for a in args if a not in ("--project", "/home/airflow/project")]

    done = subprocess.run([uv, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    pins = dict(line.split(" ")[0].split("==") for line in done.stdout.splitlines() if "==" in line)
    assert pins["apache-airflow"] == locked_version("apache-airflow")
    assert pins["psycopg"] == locked_version("psycopg")
    assert "pytest" not in pins and "hypothesis" not in pins


def test_example_dags_are_not_loaded(resolved):
    for name in AIRFLOW_SERVICES:
        assert resolved["services"][name]["environment"]["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name


def test_the_patient_store_has_its_own_volume_and_no_published_port(resolved):
    store, metadata = resolved["services"]["patient-store"], resolved["services"]["airflow-db"]

    assert "ports" not in store
    store_volumes = {v.split(":")[0] for v in store["volumes"]}
    assert store_volumes == {"patient-store-data"} and store_volumes.isdisjoint(
        v.split(":")[0] for v in metadata["volumes"])
    assert store["image"].startswith("postgres:15")  # the major version the tests run against


def test_the_patient_store_keeps_statement_values_out_of_its_log(resolved):
    settings = " ".join(resolved["services"]["patient-store"]["command"])

    for setting in ("log_min_error_statement=panic", "log_error_verbosity=terse",
                    "log_parameter_max_length=0", "log_parameter_max_length_on_error=0"):
        assert setting in settings


@pytest.mark.parametrize("secret", SHARED_SECRETS)
def test_every_airflow_service_shares_the_same_secret_from_env(resolved, written, secret):
    references = {written["services"][name]["environment"][secret] for name in AIRFLOW_SERVICES}
    values = {resolved["services"][name]["environment"][secret] for name in AIRFLOW_SERVICES}

    assert len(references) == 1 and re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", references.pop())
    assert len(values) == 1 and values.pop() in env_example().values()


def test_the_secrets_come_from_a_git_ignored_env_file():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0
    if not ignored:
        assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert (ROOT / ".env.example").is_file()
    assert set(env_example()) >= {"AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
                                  "AIRFLOW_DB_PASSWORD", "PATIENT_STORE_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"}


def test_a_missing_secret_stops_compose(docker_compose, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(line for line in (ROOT / ".env.example").read_text().splitlines()
                                  if not line.startswith("AIRFLOW_JWT_SECRET=")), encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}

    done = subprocess.run([docker_compose, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
                           "--env-file", str(env_file), "config", "-q"],
                          capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode != 0 and "AIRFLOW_JWT_SECRET" in done.stderr


def test_workers_scale_without_names_or_ports(resolved):
    worker = resolved["services"]["airflow-worker"]

    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"] == "celery worker"
    assert resolved["services"]["airflow-apiserver"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_every_airflow_service_uses_the_preloading_celery_configuration(resolved):
    """The worker preloads the tasks' modules (include/celery_config.py); the scheduler publishes
    with the same configuration."""
    from include.celery_config import CELERY_CONFIG

    for name in AIRFLOW_SERVICES:
        option = resolved["services"][name]["environment"]["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]
        assert option == "include.celery_config.CELERY_CONFIG", name
    assert isinstance(CELERY_CONFIG, dict) and CELERY_CONFIG["broker_url"]


def test_the_init_service_migrates_both_databases_first(resolved):
    init = resolved["services"]["airflow-init"]
    script = " ".join(init["command"])

    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert "python -m include.patient_import.migrate_store" in script
    for name in AIRFLOW_SERVICES[:-1]:
        assert resolved["services"][name]["depends_on"]["airflow-init"]["condition"] == \
            "service_completed_successfully", name


def test_the_store_connection_reaches_the_store_as_airflow_reads_it(resolved, monkeypatch):
    from airflow.sdk.definitions.connection import Connection

    uri = resolved["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_PATIENT_STORE"]
    conn = Connection.from_uri(uri, conn_id="patient_store")
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_STORE", uri)

    url = sa.make_url(url_from_connection(conn.conn_type, conn.host, conn.login, conn.password, conn.port,
                                          conn.schema, conn.extra))
    assert (url.drivername, url.host, url.port, url.database, url.username) == (
        "postgresql+psycopg", "patient-store", 5432, "patient_store", "patient_import")
    assert url.password == env_example()["PATIENT_STORE_PASSWORD"]
    assert airflow_store_url() == url.render_as_string(hide_password=False)


def test_the_store_connection_may_also_be_json(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_STORE", '{"conn_type": "postgres", "host": "db", "login": "u", '
                                                     '"password": "p@ss", "port": 5433, "schema": "s"}')
    uri = airflow_store_url()

    assert uri == "postgresql+psycopg://u:p%40ss@db:5433/s"


@pytest.mark.integration
def test_migrate_store_creates_the_schema_from_the_connection_variable(postgres_server):
    url = sa.make_url(postgres_server.create_database("deploy_migrate"))
    airflow_uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
    env = {**os.environ, "AIRFLOW_CONN_PATIENT_STORE": airflow_uri, "PYTHONPATH": str(ROOT)}

    for _ in range(2):  # the init service runs on every `up`: a second run must be a no-op
        done = subprocess.run([sys.executable, "-m", "include.patient_import.migrate_store"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert url.password not in done.stdout + done.stderr

    engine = sa.create_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"patients", "imports", "import_rows", "import_problems", "practices", "alembic_version"} <= tables
