# syntax=docker/dockerfile:1
# The project's Airflow image: the pinned official image, the project's locked dependencies and
# its code. Built by `docker compose build` (docs/production.md).
#
# The base image's Airflow version is uv.lock's apache-airflow version, and its Python the one
# pyproject.toml requires: tests/deploy/test_compose.py fails when they drift apart.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

# ---------------------------------------------------------------- requirements.txt from uv.lock
# Exported at build time, so uv.lock stays the one list of pins (no second, committed copy); only
# the project's dependencies, no dependency group (dev, bench).
FROM ${AIRFLOW_IMAGE} AS requirements
ARG UV_VERSION=0.13.9
COPY pyproject.toml uv.lock /home/airflow/project/
RUN pip install --no-cache-dir --quiet "uv==${UV_VERSION}" \
 && python -m uv export --project /home/airflow/project --frozen --no-default-groups --no-hashes \
        --no-emit-project --output-file /home/airflow/requirements.txt

# ---------------------------------------------------------------- the image
FROM ${AIRFLOW_IMAGE}
COPY --from=requirements /home/airflow/requirements.txt /home/airflow/requirements.txt
# Airflow is named again so pip can never move the image's Airflow; `pip check` fails the build
# when a locked pin breaks a provider that ships with the image (Celery, FAB, Postgres).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /home/airflow/requirements.txt \
 && pip check

# `include` imports from /opt/airflow, as it does from the repository root locally.
ENV PYTHONPATH=/opt/airflow \
    PATIENT_IMPORT_HOME=/opt/airflow/var

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 expectations/ /opt/airflow/expectations/
COPY --chown=airflow:0 config/ /opt/airflow/config/
